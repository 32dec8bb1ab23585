"""Group statistics over seeds: mean, Student-t confidence interval, tests against a baseline."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

TestKind = Literal["paired", "welch", "baseline", "none"]


@dataclass(frozen=True)
class Summary:
    """Mean and two-sided Student-t confidence interval of one group's values.

    ``sd``, ``ci_low`` and ``ci_high`` are NaN when ``n < 2`` (no spread to estimate).
    """

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    confidence: float

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float] | np.ndarray | pd.Series, confidence: float = 0.95) -> Summary:
    """Mean and `confidence` CI, ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)``; NaNs are dropped.

    Args:
        values: [N] metric values, one per run (seed).
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, confidence)
    mean = float(x.mean())
    if n < 2:
        nan = float("nan")
        return Summary(1, mean, nan, nan, nan, confidence)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half, confidence)


@dataclass(frozen=True)
class Comparison:
    """A group against the baseline group.

    Attributes:
        diff: paired: mean of per-seed differences (group - baseline) over the matching seeds;
            welch: difference of the group means.
        p_value: two-sided p-value (NaN when no test could be run).
        test: ``paired`` (scipy ttest_rel over matching seeds), ``welch`` (ttest_ind with
            equal_var=False), ``baseline`` (this is the baseline group) or ``none``.
        n_pairs: number of matched seeds for a paired test, else 0.
        note: why Welch or no test was used, empty otherwise.
    """

    diff: float
    p_value: float
    test: TestKind
    n_pairs: int = 0
    note: str = ""


def _by_seed(values: pd.Series) -> pd.Series | None:
    """Values indexed by seed, or None when seeds are missing or repeat (no pairing possible)."""
    clean = values.dropna()
    if clean.index.hasnans or not clean.index.is_unique:
        return None
    return clean


def compare_to_baseline(values: pd.Series, baseline: pd.Series, *, min_pairs: int = 2) -> Comparison:
    """Test one group against the baseline, paired by seed when the seeds match.

    Args:
        values: [N] the group's metric values indexed by seed.
        baseline: [M] the baseline's metric values indexed by seed.
        min_pairs: fewest matching seeds for a paired test; with fewer, Welch's test is used.
    """
    a, b = values.dropna(), baseline.dropna()
    pa, pb = _by_seed(values), _by_seed(baseline)
    with warnings.catch_warnings():
        # Zero variance gives NaN p-values with a RuntimeWarning; NaN is shown as n/a.
        warnings.simplefilter("ignore", RuntimeWarning)
        if pa is not None and pb is not None:
            common = pa.index.intersection(pb.index).sort_values()
            if len(common) >= min_pairs:
                x, y = pa.loc[common].to_numpy(float), pb.loc[common].to_numpy(float)
                p = float(stats.ttest_rel(x, y).pvalue)
                note = "" if len(common) == len(pa) == len(pb) else (
                    f"paired over {len(common)} matching seeds of {len(pa)} and {len(pb)}")
                return Comparison(float(np.mean(x - y)), p, "paired", len(common), note)
            reason = ("no seed matches the baseline's" if len(common) == 0
                      else f"only {len(common)} seed matches the baseline's")
        else:
            reason = "seeds missing or repeated within a group"
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
        if len(a) < 2 or len(b) < 2:
            return Comparison(diff, float("nan"), "none", 0, "fewer than 2 runs in a group: no test")
        p = float(stats.ttest_ind(a.to_numpy(float), b.to_numpy(float), equal_var=False).pvalue)
    return Comparison(diff, p, "welch", 0, f"Welch's t-test ({reason})")


def significance_marker(p_value: float) -> str:
    """``***`` p<0.001, ``**`` p<0.01, ``*`` p<0.05, else empty (also for NaN)."""
    if not (p_value == p_value):  # NaN
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*")):
        if p_value < cut:
            return mark
    return ""
