"""What a group of trial runs is, and so what it supports (used by tables, plots and the HTML page).

A configuration is `sweeps.report.runs.config_key` without the seed (`configuration_ids`): every
resolved parameter equal. A group of observations is then either

- a **replicate group**: one configuration under one or more seeds. Only these get confidence
  intervals and tests (their seeds are draws of the same thing); or
- a **pooled group**: several configurations (a `--by` that leaves other parameters free, or a
  search sweep whose trials all differ). Its mean is a mean over different things: shown with its
  spread (min-max over the runs), never a confidence interval, never a test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sweeps.report.runs import configuration_ids


@dataclass(frozen=True)
class Makeup:
    """Configurations and seeds of one group of observations.

    Attributes:
        n: observations (one per configuration and seed; replicates already merged).
        configs: distinct configurations.
        seeds: distinct seeds.
        per_config: (fewest, most) observations of one configuration.
    """

    n: int
    configs: int
    seeds: int
    per_config: tuple[int, int]

    @property
    def replicate(self) -> bool:
        """One configuration: its spread over seeds is seed noise, so intervals and tests apply."""
        return self.configs <= 1

    def text(self) -> str:
        """``1 configuration, 3 seeds`` / ``3 configurations, 1 seed each``."""
        if self.configs <= 1:
            return f"1 configuration, {self.n} seed{'s' if self.n != 1 else ''}"
        lo, hi = self.per_config
        each = f"{lo} seed{'s' if lo != 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"
        return f"{self.configs} configurations, {each} each"


def makeup(frame: pd.DataFrame, ids: pd.Series | None = None) -> Makeup:
    """The `Makeup` of the observations in `frame` (`ids`: their `configuration_ids`, if known)."""
    ids = configuration_ids(frame) if ids is None else ids.loc[frame.index]
    counts = ids.value_counts()
    seeds = int(frame["seed"].nunique(dropna=True)) if "seed" in frame else 0
    per = (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)
    return Makeup(len(frame), int(len(counts)), seeds, per)


def describe(makeups: Sequence[Makeup], noun: str = "row") -> str:
    """One sentence of counts: how many groups are replicate groups (and of how many seeds) and how
    many pool configurations, e.g. ``5 rows are one configuration each (3 seeds each); 2 rows pool
    configurations (3 configurations, 1 seed each; 2 configurations, 1 seed each)``."""
    reps = [m for m in makeups if m.replicate and m.n]
    pooled = [m for m in makeups if not m.replicate]
    parts = []
    if reps:
        ns = sorted({m.n for m in reps})
        seeds = f"{ns[0]} seed{'s' if ns[0] != 1 else ''} each" if len(ns) == 1 else f"{ns[0]}-{ns[-1]} seeds"
        if len(reps) == 1:
            parts.append(f"1 {noun} is one configuration ({seeds.removesuffix(' each')})")
        else:
            parts.append(f"{len(reps)} {noun}s are one configuration each ({seeds})")
    if pooled:
        kinds = list(dict.fromkeys(m.text() for m in pooled))
        verb = "pools" if len(pooled) == 1 else "pool"
        parts.append(f"{len(pooled)} {noun}{'s' if len(pooled) != 1 else ''} {verb} configurations "
                     f"({'; '.join(kinds)})")
    return "; ".join(parts)


def association(frame: pd.DataFrame, metric_col: str, col: str) -> float:
    """How much of `metric_col`'s variation `col` accounts for, in [0, 1].

    Categorical `col`: the between-group share of the sum of squares (eta squared); numeric: the
    squared Spearman rank correlation. Rows missing either value are left out; NaN when fewer
    than 3 rows or no variation remain.
    """
    sub = frame[[col, metric_col]].dropna()
    y = pd.to_numeric(sub[metric_col], errors="coerce")
    if len(sub) < 3 or y.nunique() < 2 or sub[col].nunique() < 2:
        return float("nan")
    if pd.api.types.is_numeric_dtype(sub[col]):
        rho = sub[col].rank().corr(y.rank())
        return float(rho**2) if np.isfinite(rho) else float("nan")
    total = float(((y - y.mean()) ** 2).sum())
    between = float(sum(len(g) * (g.mean() - y.mean()) ** 2 for _, g in y.groupby(sub[col])))
    return between / total if total > 0 else float("nan")


def most_associated(frame: pd.DataFrame, metric_col: str, candidates: Iterable[str]) -> tuple[str | None, float]:
    """The candidate column with the largest `association` with the metric, and that value
    (``(None, nan)`` when no candidate varies). Simple on purpose: a one-variable measure on
    the drawn trials, so the figure can say what it used."""
    best: tuple[str | None, float] = (None, float("nan"))
    for col in candidates:
        if col not in frame:
            continue
        score = association(frame, metric_col, col)
        if np.isfinite(score) and (best[0] is None or score > best[1]):
            best = (col, score)
    return best
