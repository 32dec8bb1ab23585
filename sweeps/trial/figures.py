"""Dataset-level figures of one task split: rows, answer range and histogram, soft-target coverage.

One function (`split_figures`) serves `slsweep data` (over the whole split a trial loads) and the
`slsweep run` preflight (over the records it reads first), and one (`split_line`) writes the line
both print, so the two never disagree on what a figure means.

Answer values are the numbers in each example's structured `target` (a count, the four box
coordinates on the task's grid, a chart value, numeric_vqa's tuple); a text target counts as a text
answer. Coverage is `sl_core.soft_target_coverage` over the answers' token ids exactly as training
supervises them (`Batcher.answer_ids`), per loss family (`sweeps.trial.coverage.LossTokens`); None for a
family that gives no soft target (`hard`, `label_smoothing`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AnswerFigures", "CoverageFigure", "SplitFigures", "answer_figures", "answer_values",
           "coverage_figure", "number_label", "split_figures", "split_line"]

HISTOGRAM_BINS = 10


def number_label(value: float) -> str:
    """A figure's number written as the data writes it (`sweeps.tasks.parsing.number_text`): 2601.0
    -> "2601", 2500000 -> "2500000", 0.123456789 -> "0.123456789"; never an exponent or a rounding."""
    from sweeps.tasks.parsing import number_text

    return number_text(value)


def answer_values(target: Any) -> list[float]:
    """The finite numbers of one structured target: an int/float -> [v], a sequence of numbers ->
    its numbers, text (or anything else) -> []."""
    if isinstance(target, bool):
        return []
    if isinstance(target, (int, float, np.integer, np.floating)):
        return [float(target)] if math.isfinite(float(target)) else []
    if isinstance(target, (tuple, list)):
        return [v for t in target for v in answer_values(t)]
    return []


@dataclass(frozen=True)
class AnswerFigures:
    """The answers of a split.

    Attributes:
        numeric: examples whose target holds at least one number.
        text: examples whose target holds none (text answers).
        min, max: the smallest and largest number over all targets (None without numbers).
        edges, counts: the histogram of every number: bin i is [edges[i], edges[i+1]) (the last
            bin closed); integer values get integer-aligned bins (one per value when at most
            `HISTOGRAM_BINS` distinct values span the range).
        integer: every value is an integer (the bins are then labelled by integers).
    """

    numeric: int
    text: int
    min: float | None
    max: float | None
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    integer: bool = False

    def histogram_text(self) -> str:
        """`0:3 1:5 2:7` (integer bins of width 1), `10-19:4 ...` (wider integer bins) or
        `[0.1,0.25):4 ...` (real-valued bins; numbers positional, never an exponent)."""
        parts = []
        for i, n in enumerate(self.counts):
            lo, hi = self.edges[i], self.edges[i + 1]
            if self.integer:
                label = number_label(lo) if hi - lo == 1 else f"{number_label(lo)}-{number_label(hi - 1)}"
            else:  # the outer edges are min and max; inner ones 3 significant digits ("1040", not "1.04e+03")
                last = i == len(self.counts) - 1
                lo_t = number_label(lo if i == 0 else float(f"{lo:.3g}"))
                hi_t = number_label(hi if last else float(f"{hi:.3g}"))
                label = f"[{lo_t},{hi_t}{']' if last else ')'}"
            parts.append(f"{label}:{n}")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        """Integer answers give integer `min`, `max` and `edges` (2601, not 2601.0)."""
        num = (lambda v: v if v is None else int(v)) if self.integer else (lambda v: v)
        return {"numeric": self.numeric, "text": self.text, "min": num(self.min), "max": num(self.max),
                "histogram": {"edges": [num(e) for e in self.edges], "counts": list(self.counts)}}


def answer_figures(targets: Sequence[Any], bins: int = HISTOGRAM_BINS) -> AnswerFigures:
    """Range and histogram of the numbers in `targets` (see `answer_values`)."""
    per = [answer_values(t) for t in targets]
    values = np.asarray([v for vs in per for v in vs], dtype=float)
    numeric = sum(1 for vs in per if vs)
    if values.size == 0:
        return AnswerFigures(numeric=0, text=len(per), min=None, max=None)
    lo, hi = float(values.min()), float(values.max())
    integer = bool(np.all(values == np.round(values)))
    if integer:
        width = max(1, math.ceil((hi - lo + 1) / bins))
        n_bins = math.ceil((hi - lo + 1) / width)
        edges = lo + width * np.arange(n_bins + 1, dtype=float)
    elif lo == hi:  # one value: one closed bin [v, v] (numpy would spread v - 0.5..v + 0.5 over ten)
        edges = np.array([lo, hi])
    else:
        edges = np.histogram_bin_edges(values, bins=bins)
    counts, _ = np.histogram(values, bins=edges)
    return AnswerFigures(numeric=numeric, text=len(per) - numeric, min=lo, max=hi,
                         edges=tuple(float(e) for e in edges), counts=tuple(int(c) for c in counts),
                         integer=integer)


@dataclass(frozen=True)
class CoverageFigure:
    """Soft-target coverage of one loss family on a split's answers (`sl_core.Coverage`).

    Attributes:
        family: the loss family.
        numeric_tokens: numeric tokens among the answers' supervised tokens.
        covered: those that get a soft target; None for a family without soft targets.
    """

    family: str
    numeric_tokens: int
    covered: int | None

    @property
    def share(self) -> float | None:
        """covered / numeric_tokens in [0, 1]; None without soft targets; 1.0 without numeric tokens."""
        if self.covered is None:
            return None
        return self.covered / self.numeric_tokens if self.numeric_tokens else 1.0

    def as_json(self) -> dict[str, Any]:
        return {"family": self.family, "numeric_tokens": self.numeric_tokens, "covered": self.covered,
                "share": self.share}


def coverage_figure(lt: Any, tokenizer: Any, answer_ids: Sequence[Sequence[int]]) -> CoverageFigure:
    """Coverage of the family `lt` (`sweeps.trial.coverage.LossTokens`) on `answer_ids` (each answer's ids
    as `Batcher.answer_ids` gives them, eos included). Unlike `sweeps.trial.coverage.measure_coverage`,
    a zero share is reported, not raised: a preview shows it."""
    import sl_core

    cov = sl_core.soft_target_coverage(answer_ids, lt.soft_ids, tokenizer)
    return CoverageFigure(lt.family, cov.numeric, cov.covered if lt.distance_aware else None)


@dataclass(frozen=True)
class SplitFigures:
    """Figures of one split.

    Attributes:
        split: "train" or "eval" (or a preflight label such as "train task.data_path").
        rows: examples in the split; None for a synthetic training stream (generated per step).
        sample: how many examples the figures were computed over.
        answers: range and histogram of the answers.
        coverage: one entry per loss family asked for.
        truncated: `rows` is only how many were read (the preflight reads the first records).
        note: where the figures come from when not from the whole split (e.g. "first 64 drawn").
    """

    split: str
    rows: int | None
    sample: int
    answers: AnswerFigures
    coverage: tuple[CoverageFigure, ...] = ()
    truncated: bool = False
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"split": self.split, "rows": self.rows, "generated": self.rows is None,
                **({"rows_truncated": True} if self.truncated else {}),
                "figures_over": self.sample, **({"note": self.note} if self.note else {}),
                "answers": self.answers.as_json(),
                "soft_target_coverage": [c.as_json() for c in self.coverage]}


def split_figures(split: str, examples: Sequence[Any], batcher: Any, loss_tokens: Sequence[Any], *,
                  rows: int | None, truncated: bool = False, note: str = "") -> SplitFigures:
    """Figures of `examples` (`sweeps.tasks.Example`), their answers tokenized by `batcher`
    (`sweeps.models.Batcher`) and measured against each `sweeps.trial.coverage.LossTokens`."""
    ids = [batcher.answer_ids(e.answer) for e in examples]
    coverage = tuple(coverage_figure(lt, batcher.tokenizer, ids) for lt in loss_tokens)
    return SplitFigures(split, rows, len(examples), answer_figures([e.target for e in examples]), coverage,
                        truncated, note)


def _coverage_text(coverage: Sequence[CoverageFigure]) -> str:
    """`soft-target coverage 100% (gaussian, soft_label); none needed (hard)`."""
    groups: dict[str, list[str]] = {}
    for c in coverage:
        share = c.share
        key = "none needed" if share is None else f"{share:.0%}" if share in (0.0, 1.0) else f"{share:.1%}"
        groups.setdefault(key, []).append(c.family)
    if not groups:
        return ""
    parts = [f"{k} ({', '.join(sorted(v))})" for k, v in groups.items() if k != "none needed"]
    text = f"soft-target coverage {'; '.join(parts)}" if parts else ""
    if "none needed" in groups:
        text += f"{'; ' if text else ''}no soft targets ({', '.join(sorted(groups['none needed']))})"
    return text


def split_line(fig: SplitFigures) -> str:
    """One line: `train: 5000 rows; answers 0..9 [0:12 1:9 ...]; soft-target coverage 100% (soft_label)`."""
    rows = ("generated per step" if fig.rows is None else f"{fig.rows}+ rows (the first {fig.rows} checked)"
            if fig.truncated else f"{fig.rows} row{'' if fig.rows == 1 else 's'}")
    if fig.note:
        rows += f" ({fig.note})"
    a = fig.answers
    if a.min is None:
        answers = f"{a.text} text answer{'' if a.text == 1 else 's'}"
    else:
        answers = f"answers {number_label(a.min)}..{number_label(a.max)} [{a.histogram_text()}]"
        if a.text:
            answers += f", {a.text} text answer{'' if a.text == 1 else 's'}"
    parts = [rows, answers]
    if fig.coverage:
        parts.append(_coverage_text(fig.coverage))
    return f"{fig.split}: " + "; ".join(p for p in parts if p)


def preflight_lines(samples: Sequence[tuple[str, Sequence[Any]]], batcher: Any, loss_tokens: Sequence[Any], *,
                    limit: int) -> list[str]:
    """The `slsweep run` preflight's line per split (`split_line`) over the examples it read:
    `samples` is `sweeps.driver.preflight.check_data`'s (label, examples) list, at most `limit` examples
    each (a read that returned fewer holds the whole split; synthetic data is generated per step)."""
    lines = []
    for label, examples in samples:
        synthetic = "synthetic" in label.split()
        lines.append(split_line(split_figures(
            label, examples, batcher, loss_tokens, rows=None if synthetic else len(examples),
            truncated=not synthetic and len(examples) >= limit,
            note=f"figures over the first {len(examples)} drawn" if synthetic else "")))
    return lines
