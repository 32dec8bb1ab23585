"""Loss families for sweeps: `build_loss(family, digit_ids, **params) -> LossFn`.

A LossFn is `fn(logits [..., V], labels [...], *, num_items_in_batch=None) -> scalar`, with labels
already shifted (position i of labels is the target of position i of logits) and -100 ignored.

Each family is declared once, by `sl_core.registry.loss_family` on its builder (its parameters,
defaults, bounds and token requirement): the built-ins in `sl_core.builtin_families`, plug-ins in
their own modules. `build_loss` validates the parameters against that declaration and calls the builder.

A parameter given as None means "the default". Digit families take the ten digit ids or [G, 10]
digit groups, `value_aware` a `NumericTokens` (or digit ids): `family_tokens(family, tokenizer)`
returns the right one. See `sl_core.peers` for the definitions and citations.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from sl_core import _validate as V
from sl_core.backend import check_backend
from sl_core.builtin_families import IGNORE_INDEX  # noqa: F401  (the label ignored: -100, as in Hugging Face)
from sl_core.digits import NumericTokens, digit_token_groups, numeric_token_values
# register_loss_family: re-exported (sl_core.families' public name); _BUILDERS: the registry's builders
from sl_core.registry import (  # noqa: F401
    _BUILDERS, LOSS_FAMILY_SPECS, check_family_params, family_builder, family_spec, register_loss_family,
)

__all__ = ["LossFn", "LOSS_FAMILIES", "FAMILY_PARAMS", "FAMILY_DEFAULTS", "build_loss", "family_tokens",
           "register_loss_family", "soft_columns"]

Tokens = Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | NumericTokens | None
"""What a family's loss needs from the tokenizer: digit ids / groups, NumericTokens, or None."""


class LossFn(Protocol):
    """What `build_loss` returns: fn(logits [..., V], labels [...], *, num_items_in_batch=None) -> scalar.

    labels are already shifted (labels[..., i] is the target of logits[..., i, :]) and -100 is
    ignored; with num_items_in_batch the summed loss is divided by it (gradient accumulation).

    Example:
        >>> import torch
        >>> from sl_core import LossFn, build_loss
        >>> fn: LossFn = build_loss("hard")
        >>> logits = torch.zeros(1, 3, 12)  # uniform over V = 12: every token's CE is log(12)
        >>> round(fn(logits, torch.tensor([[5, 7, -100]])).item(), 4)
        2.4849
        >>> round(fn(logits, torch.tensor([[5, 7, -100]]), num_items_in_batch=4).item(), 4)  # 2 * log(12) / 4
        1.2425
    """

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, *,
                 num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor: ...


FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {f: spec.defaults for f, spec in LOSS_FAMILY_SPECS.items()}
"""Each family's parameters and defaults (`sl_core.registry.REQUIRED` where there is none), from the registry."""

FAMILY_PARAMS: dict[str, tuple[str, ...]] = {f: tuple(p) for f, p in FAMILY_DEFAULTS.items()}
"""The parameter names each family accepts (what a sweep config may set)."""

LOSS_FAMILIES: tuple[str, ...] = tuple(LOSS_FAMILY_SPECS)


def family_tokens(family: str, tokenizer: Any) -> Tokens:
    """What `build_loss(family, ...)` needs from `tokenizer`, per the family's token requirement.

    Returns:
        None for families that need no tokens (hard, label_smoothing); the [G, 10] digit groups
        (`digit_token_groups`) for digit families; NumericTokens (`numeric_token_values`) for the
        numeric families (value_aware, dist2, smmd).

    Raises:
        ValueError: the tokenizer cannot serve the family (no single-digit tokens, merged digits);
            the message names the family and the one to use instead.

    Example:
        >>> from tokenizers import Tokenizer, models, pre_tokenizers as pre
        >>> from sl_core import family_tokens
        >>> vocab = {t: i for i, t in enumerate(["<unk>", "x", "=", *"0123456789"])}
        >>> tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        >>> tok.pre_tokenizer = pre.Sequence([pre.Whitespace(), pre.Digits(individual_digits=True)])
        >>> family_tokens("hard", tok) is None
        True
        >>> family_tokens("soft_label", tok)  # [G, 10] digit groups
        [[3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
        >>> len(family_tokens("value_aware", tok))  # NumericTokens: here the ten digits
        10
    """
    need = family_spec(family).tokens
    if need == "none":
        return None
    try:
        return digit_token_groups(tokenizer) if need == "digits" else numeric_token_values(tokenizer)
    except ValueError as exc:
        hint = ""
        if need == "digits":
            try:
                numeric_token_values(tokenizer)
                hint = "; loss families 'value_aware', 'dist2' and 'smmd' work on this tokenizer"
            except ValueError:
                hint = "; the tokenizer has no numeric tokens at all"
            hint += ", and 'hard' / 'label_smoothing' need no digit tokens"
        raise ValueError(f"loss family {family!r} cannot use this tokenizer: {str(exc).rstrip('.')}{hint}") from None


@V.renamed_argument("tokens", "digit_ids")
def soft_columns(digit_ids: Tokens) -> tuple[int, ...]:
    """The token ids a family's soft targets reach (empty for None): digit groups flattened or NumericTokens.ids.

    `digit_ids` is what `family_tokens` returns (`tokens=` is a deprecated alias).
    """
    if digit_ids is None:
        return ()
    if isinstance(digit_ids, NumericTokens):
        return digit_ids.ids
    return tuple(i for g in V.check_digit_groups(digit_ids) for i in g)


def build_loss(family: str, digit_ids: Tokens = None, *, backend: str = "auto", **params: Any) -> LossFn:
    """A loss callable for `family` with `params` validated now (ValueError naming the bad one).

    Args:
        family: one of LOSS_FAMILIES (`sl_core.registry.LOSS_FAMILY_SPECS`).
        digit_ids: what the family needs from the tokenizer (`family_tokens(family, tokenizer)`):
            ten digit ids or [G, 10] groups for digit families; NumericTokens (or digit ids) for
            the numeric families (`value_aware`, `dist2`, `smmd`); ignored (may be None) for `hard`
            and `label_smoothing`.
        backend: "auto", "torch" or "triton": the engine of the soft-label families (`soft_label`,
            `value_aware`, `dist2`; see `sl_core.backend`); the other families always run on torch.
        **params: the family's parameters (FAMILY_PARAMS[family]); None means the default.

    Returns:
        fn(logits [..., V], labels [...] shifted, *, num_items_in_batch=None) -> scalar loss.

    Raises:
        ValueError: unknown family or parameter, a missing required one (eta), a value out of its
            bounds, or digit_ids the family cannot use.

    Example:
        Tokens 2..11 of a 12-token vocabulary are the digits "0".."9" here (in practice:
        `family_tokens("soft_label", tokenizer)`):

        >>> import torch
        >>> import torch.nn.functional as F
        >>> from sl_core import build_loss
        >>> digits = list(range(2, 12))
        >>> loss_fn = build_loss("soft_label", digits, eta=0.1, lam=2.0, psi="gaussian")
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 5, 12, requires_grad=True)  # [B, T, V]
        >>> labels = torch.tensor([[1, 6, 7, -100, -100], [0, 1, 11, 2, 3]])  # shifted, -100 ignored
        >>> loss = loss_fn(logits, labels)
        >>> loss.shape, loss.dtype
        (torch.Size([]), torch.float32)
        >>> loss.backward()
        >>> hard = build_loss("soft_label", digits, eta=0.0)  # eta = 0, lam = 1: plain cross-entropy
        >>> torch.allclose(hard(logits, labels), F.cross_entropy(logits.view(-1, 12), labels.view(-1)))
        True
        >>> build_loss("soft_label", digits, eta=1.5)
        Traceback (most recent call last):
        ...
        ValueError: eta must be in [0, 1], got 1.5
    """
    spec = family_spec(family)
    p = check_family_params(family, params)
    backend = check_backend(backend)
    if spec.takes_backend:
        p["backend"] = backend
    builder = family_builder(family)
    if spec.tokens == "none":
        if digit_ids is not None and not isinstance(digit_ids, NumericTokens):
            V.check_digit_groups(digit_ids)  # given but malformed: say so rather than ignore it
        return builder(None, **p)
    if digit_ids is None:
        raise ValueError(f"loss family {family!r} needs digit_ids (sl_core.family_tokens({family!r}, tokenizer))")
    if spec.tokens == "numeric":
        numeric = digit_ids if isinstance(digit_ids, NumericTokens) else \
            NumericTokens.from_digit_ids(V.check_digit_groups(digit_ids))
        return builder(numeric, **p)
    if isinstance(digit_ids, NumericTokens):
        raise ValueError(f"loss family {family!r} takes digit ids, not NumericTokens "
                         "(those are for value_aware, dist2 and smmd)")
    return builder(V.check_digit_groups(digit_ids), **p)
