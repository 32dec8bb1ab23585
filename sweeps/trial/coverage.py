"""Soft-target coverage: does a trial's loss reach the numeric tokens of the task's answers?

A distance-aware loss (soft labels, Gaussian, NTL, NTIL, value-aware) only changes the target of a
token whose id is one of its soft columns. If the answers are tokenized into other ids (a merged
"260", a word-start-marked "▁7" the loss does not know), the loss silently equals hard CE. This
module tokenizes answers exactly as the training batcher does and measures the share of numeric
answer tokens that get a soft target (`sl_core.soft_target_coverage`); 0 is an error, partial
coverage a warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sl_core.registry import family_spec
from sweeps.errors import SlsweepError

__all__ = ["CoverageError", "LossTokens", "loss_tokens", "measure_coverage", "coverage_warning",
           "COVERAGE_METRIC"]

COVERAGE_METRIC = "soft_target_coverage"


class CoverageError(SlsweepError):
    """A distance-aware loss reaches none of the answers' numeric tokens (it would equal hard CE)."""


@dataclass(frozen=True)
class LossTokens:
    """What a family's loss needs from the tokenizer, and the ids its soft targets reach."""

    family: str
    tokens: Any                 # None, [G, 10] digit groups, or sl_core.NumericTokens
    soft_ids: tuple[int, ...]   # empty for families that need no tokens

    @property
    def distance_aware(self) -> bool:
        return family_spec(self.family).distance_aware


def loss_tokens(family: str, tokenizer: Any, *, model: str) -> LossTokens:
    """The family's tokens from `tokenizer` (`sl_core.family_tokens`).

    Raises:
        SlsweepError: the tokenizer cannot serve the family; names the model and what to use instead.
    """
    import sl_core
    from sl_core.families import soft_columns

    try:
        tokens = sl_core.family_tokens(family, tokenizer)
    except ValueError as exc:
        raise SlsweepError(f"{model}: {' '.join(str(exc).split())}") from None
    return LossTokens(family, tokens, soft_columns(tokens))


def measure_coverage(lt: LossTokens, tokenizer: Any, answer_ids: Iterable[list[int]]) -> float | None:
    """Share in [0, 1] of numeric answer tokens with a soft target; None for hard / label_smoothing.

    Args:
        lt: the loss's tokens (`loss_tokens`).
        tokenizer: the tokenizer that produced `answer_ids`.
        answer_ids: each answer's token ids exactly as training sees them (`Batcher.answer_ids`).

    Raises:
        CoverageError: the share is 0 while the answers hold numeric tokens.
    """
    if not lt.distance_aware:
        return None
    import sl_core

    cov = sl_core.soft_target_coverage(answer_ids, lt.soft_ids, tokenizer)
    if cov.numeric and cov.covered == 0:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise CoverageError(
            f"loss family {lt.family!r} gives no soft target to any numeric answer token with the tokenizer "
            f"of {name} (answer tokens such as {list(cov.uncovered)} are not among its {len(lt.soft_ids)} "
            "soft columns), so it would equal hard CE; use loss family 'value_aware' (any numeric token) or "
            "a tokenizer that writes numbers as single digits")
    return cov.share


def coverage_warning(lt: LossTokens, share: float | None) -> str | None:
    """A one-line warning for partial coverage (None when full or not applicable)."""
    if share is None or share >= 1.0:
        return None
    return (f"loss family {lt.family!r} reaches {share:.1%} of the numeric answer tokens; the rest get "
            "one-hot targets (see docs/tokenizers.md)")
