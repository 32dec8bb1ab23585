"""Group statistics over seeds: mean, Student-t confidence interval, tests against a baseline,
multiple-comparison adjustment and the seeds a comparison needs for a given power.

Tests and intervals are scipy's (`ttest_rel`, `ttest_ind`); adjustment is statsmodels'
`multipletests`; power is statsmodels' `TTestPower` (paired) and `TTestIndPower` (unpaired).
These functions assume their values are seeds of one configuration: callers decide that
(`sweeps.report.groups`) and never pass a group that pools configurations. What they refuse to
claim: a test when the differences do not vary (`NO_VARIATION`), a power answer from fewer than
`MIN_POWER_PAIRS` pairs, and an interval outside a metric's known range (`summarize`'s bounds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from sweeps.report.choices import ADJUSTMENTS

TestKind = Literal["paired", "welch", "baseline", "none"]
# The --adjust names, each declared once with its statsmodels method and label: `choices.ADJUSTMENTS`.


@dataclass(frozen=True)
class Summary:
    """Mean, spread and two-sided Student-t confidence interval of one group's values.

    ``sd``, ``ci_low`` and ``ci_high`` are NaN when ``n < 2`` (no spread to estimate). Values that
    do not vary (two seeds both at exact_match 0.1; `varies`) have ``sd`` 0 and no interval
    (``ci_low``/``ci_high`` NaN, `no_spread`): a zero-width interval would claim the mean is known
    exactly, when more seeds or examples could differ. With
    `bounds`, the interval is the Student-t interval cut to the bounds (``cut`` says whether it
    was): the true mean of a metric that cannot leave [lo, hi] lies in [lo, hi], so the cut
    interval holds it exactly when the uncut one does (same coverage), and it never leaves them.
    ``minimum`` / ``maximum``: the smallest and largest value (the spread of a pooled group).
    """

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    confidence: float
    minimum: float = math.nan
    maximum: float = math.nan
    bounds: tuple[float, float] | None = None
    cut: bool = False

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    @property
    def no_spread(self) -> bool:
        """Two or more values, all equal (to rounding): no interval, see above."""
        return self.n >= 2 and self.sd == 0.0


def summarize(values: Sequence[float] | np.ndarray | pd.Series, confidence: float = 0.95,
              bounds: tuple[float, float] | None = None) -> Summary:
    """Mean and `confidence` CI, ``mean +- t_{(1+c)/2, n-1} * sd / sqrt(n)``; NaNs are dropped.

    Args:
        values: [N] metric values, one per run (seed).
        bounds: ``(lo, hi)`` the metric cannot leave (a share: ``(0, 1)``); the interval is cut
            to them (see `Summary`).
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    nan = float("nan")
    if n == 0:
        return Summary(0, nan, nan, nan, nan, confidence, bounds=bounds)
    mean, lo_x, hi_x = float(x.mean()), float(x.min()), float(x.max())
    if n < 2:
        return Summary(1, mean, nan, nan, nan, confidence, lo_x, hi_x, bounds)
    if not varies(x, x):
        return Summary(n, mean, 0.0, nan, nan, confidence, lo_x, hi_x, bounds)
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, df=n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    cut = False
    if bounds is not None:
        cut = low < bounds[0] or high > bounds[1]
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(n, mean, sd, low, high, confidence, lo_x, hi_x, bounds, cut)


def interval_text(confidence: float, bounds: tuple[float, float] | None) -> str:
    """What `summarize`'s interval is, in words (for notes and captions)."""
    text = f"{confidence:.0%} Student-t interval over seeds"
    if bounds is not None:
        text += f", cut to the metric's range [{bounds[0]:g}, {bounds[1]:g}] (same coverage)"
    return text


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
        ci_low / ci_high: confidence interval of `diff` (paired: of the mean per-seed difference;
            welch: Welch's interval of the difference of means); NaN when no test was run.
        sd: the SD the power analysis uses: paired: SD of the per-seed differences; welch: the
            root mean square of the two groups' SDs; NaN when no test was run.
        n_group / n_base: runs in the group and in the baseline that entered the test.
    """

    diff: float
    p_value: float
    test: TestKind
    n_pairs: int = 0
    note: str = ""
    ci_low: float = math.nan
    ci_high: float = math.nan
    sd: float = math.nan
    n_group: int = 0
    n_base: int = 0


def _by_seed(values: pd.Series) -> pd.Series | None:
    """Values indexed by seed, or None when seeds are missing or repeat (no pairing possible)."""
    clean = values.dropna()
    if clean.index.hasnans or not clean.index.is_unique:
        return None
    return clean


NO_VARIATION = "no test: differences do not vary"
NO_VARIATION_UNPAIRED = "no test: values do not vary"
# A spread at or below this share of the values' magnitude is floating-point noise, not variation
# (0.45 - 0.325 and 0.55 - 0.425 differ by ~1e-17): a t statistic from it would be +-inf or noise.
RELATIVE_NOISE = 1e-9


def varies(values: np.ndarray, scale_of: np.ndarray) -> bool:
    """Whether `values` spread by more than `RELATIVE_NOISE` x the largest magnitude of `scale_of`
    (at least 1e-300): below it their SD is zero or rounding noise, and a t-test is undefined."""
    if values.size < 2:
        return False
    scale = max(float(np.max(np.abs(scale_of))) if scale_of.size else 0.0, 1e-300)
    return float(np.std(values, ddof=1)) > RELATIVE_NOISE * scale


def best_positions(means: Sequence[float] | np.ndarray, direction: Literal["max", "min"]) -> set[int]:
    """Positions of the best of `means` (NaN skipped) under `direction`; ties all count, and none
    when every finite mean ties or fewer than two are finite, since then nothing stands out.

    Means within `RELATIVE_NOISE` x their largest magnitude of each other are equal: the mean of
    three runs at 0.1 is 0.10000000000000002, which is no better than one run at 0.1.
    """
    values = np.asarray(means, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < 2:  # one group is the best of nothing
        return set()
    tol = RELATIVE_NOISE * max(float(np.max(np.abs(finite))), 1e-300)
    best = float(np.max(finite) if direction == "max" else np.min(finite))
    if bool(np.all(np.abs(finite - best) <= tol)):
        return set()
    return {i for i, v in enumerate(values) if np.isfinite(v) and abs(v - best) <= tol}


def compare_to_baseline(values: pd.Series, baseline: pd.Series, *, min_pairs: int = 2,
                        confidence: float = 0.95) -> Comparison:
    """Test one group against the baseline, paired by seed when the seeds match.

    Args:
        values: [N] the group's metric values indexed by seed.
        baseline: [M] the baseline's metric values indexed by seed.
        min_pairs: fewest matching seeds for a paired test; with fewer, Welch's test is used.
        confidence: level of the interval of the difference (scipy's ``confidence_interval``).

    Returns test ``none`` (no p-value, no interval; `note` says why) when the paired differences
    (or, unpaired, both groups' values) do not vary (`varies`): scipy would give t = +-inf and
    p = 0 for a constant nonzero difference, which claims a certainty two runs cannot give.
    """
    a, b = values.dropna(), baseline.dropna()
    pa, pb = _by_seed(values), _by_seed(baseline)
    with warnings.catch_warnings():
        # Near-constant data is caught above; scipy's warnings for the rest are not the reader's.
        warnings.simplefilter("ignore", RuntimeWarning)
        if pa is not None and pb is not None:
            common = pa.index.intersection(pb.index).sort_values()
            if len(common) >= min_pairs:
                x, y = pa.loc[common].to_numpy(float), pb.loc[common].to_numpy(float)
                if not varies(x - y, np.concatenate([x, y])):
                    return Comparison(float(np.mean(x - y)), math.nan, "none", len(common), NO_VARIATION,
                                      n_group=len(common), n_base=len(common))
                res = stats.ttest_rel(x, y)
                ci = res.confidence_interval(confidence)
                note = "" if len(common) == len(pa) == len(pb) else (
                    f"paired over {len(common)} matching seeds of {len(pa)} and {len(pb)}")
                return Comparison(float(np.mean(x - y)), float(res.pvalue), "paired", len(common), note,
                                  float(ci.low), float(ci.high), float(np.std(x - y, ddof=1)),
                                  len(common), len(common))
            reason = ("no seed matches the baseline's" if len(common) == 0
                      else f"only {len(common)} seed matches the baseline's")
        else:
            reason = "seeds missing or repeated within a group"
        diff = float(a.mean() - b.mean()) if len(a) and len(b) else float("nan")
        if len(a) < 2 or len(b) < 2:
            return Comparison(diff, float("nan"), "none", 0, "no test: fewer than 2 runs in a group")
        xa, xb = a.to_numpy(float), b.to_numpy(float)
        both = np.concatenate([xa, xb])
        if not (varies(xa, both) or varies(xb, both)):
            return Comparison(diff, math.nan, "none", 0, NO_VARIATION_UNPAIRED, n_group=len(xa), n_base=len(xb))
        res = stats.ttest_ind(xa, xb, equal_var=False)
        ci = res.confidence_interval(confidence)
        sd = math.sqrt((xa.var(ddof=1) + xb.var(ddof=1)) / 2)
    return Comparison(diff, float(res.pvalue), "welch", 0, f"Welch's t-test ({reason})",
                      float(ci.low), float(ci.high), sd, len(xa), len(xb))


def adjust_pvalues(p_values: Sequence[float] | np.ndarray, method: str = "holm",
                   alpha: float = 0.05) -> np.ndarray:
    """p-values adjusted for multiple comparisons over all finite entries of `p_values`.

    Args:
        p_values: [K] raw p-values; NaN entries (no test) are left NaN and not counted.
        method: a name of `sweeps.report.choices.ADJUSTMENTS`: ``holm`` (Holm-Bonferroni,
            family-wise error), ``bh`` (Benjamini-Hochberg, false discovery rate), ``none`` (raw
            p-values returned), or one a plug-in declared there.
        alpha: the family-wise / FDR level passed to statsmodels (does not change the values).

    Returns:
        [K] float array (statsmodels.stats.multitest.multipletests, ``pvals_corrected``).

    Raises:
        ValueError: unknown `method`.
    """
    if method not in ADJUSTMENTS:
        raise ValueError(f"unknown adjustment '{method}' (choose {', '.join(ADJUSTMENTS)})")
    sm_method = ADJUSTMENTS.get(method)
    p = np.asarray(p_values, dtype=float)
    out = p.copy()
    finite = np.isfinite(p)
    if sm_method is None or not finite.any():
        return out
    from statsmodels.stats.multitest import multipletests

    out[finite] = multipletests(p[finite], alpha=alpha, method=sm_method)[1]
    return out


MAX_SEEDS = 100_000  # beyond this a difference is, in practice, undetectable
MIN_POWER_PAIRS = 3  # fewer: the SD the power analysis needs rests on 1 degree of freedom or none
ROUGH_POWER_PAIRS = 5  # fewer: the SD is rough, so is the answer (marked "~")


def power_pairs(comparison: Comparison) -> int:
    """The sample a comparison's SD comes from: seed pairs (paired), the smaller group (Welch)."""
    if comparison.test == "paired":
        return comparison.n_pairs
    if comparison.test == "welch":
        return min(comparison.n_group, comparison.n_base)
    return 0


def power_is_rough(comparison: Comparison) -> bool:
    """Whether a power answer rests on fewer than `ROUGH_POWER_PAIRS` pairs (runs per group)."""
    return power_pairs(comparison) < ROUGH_POWER_PAIRS


def seeds_for_power(comparison: Comparison, *, alpha: float = 0.05, power: float = 0.8,
                    mde: float | None = None) -> float:
    """Seeds per group needed to detect a difference with a two-sided t-test at `alpha`.

    The effect size is ``d = delta / sd`` with ``delta = |mde|`` (default: the observed
    ``|comparison.diff|``) and the comparison's SD (paired: SD of per-seed differences; welch:
    root mean square of the group SDs). Paired comparisons use statsmodels ``TTestPower``
    (a one-sample test of the differences; the result counts seed pairs), unpaired ones
    ``TTestIndPower`` with equal group sizes (the result counts runs per group). Computed only
    from at least `MIN_POWER_PAIRS` pairs (runs per group); below `ROUGH_POWER_PAIRS` the answer
    is rough (`power_is_rough`).

    Returns:
        The smallest whole number of seeds (>= 2) reaching `power`; ``inf`` when the difference is
        0 or more than `MAX_SEEDS` seeds would be needed; NaN when no SD is known (no test), the
        SD does not vary, or fewer than `MIN_POWER_PAIRS` pairs back it.
    """
    if comparison.test not in ("paired", "welch") or not math.isfinite(comparison.sd):
        return math.nan
    if power_pairs(comparison) < MIN_POWER_PAIRS or comparison.sd <= 0:
        return math.nan
    delta = abs(mde) if mde is not None else abs(comparison.diff)
    if not math.isfinite(delta):
        return math.nan
    if delta == 0:
        return math.inf
    from statsmodels.stats.power import TTestIndPower, TTestPower

    d = delta / comparison.sd
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter for effects far from detectable
        try:
            if comparison.test == "paired":
                n = TTestPower().solve_power(effect_size=d, alpha=alpha, power=power,
                                             alternative="two-sided")
            else:
                n = TTestIndPower().solve_power(effect_size=d, alpha=alpha, power=power, ratio=1.0,
                                                alternative="two-sided")
        except (ValueError, RuntimeError, ZeroDivisionError):
            return math.inf
    n = float(np.asarray(n).item())
    if not math.isfinite(n) or n > MAX_SEEDS:
        return math.inf
    return float(max(2, math.ceil(n - 1e-9)))


def significance_marker(p_value: float) -> str:
    """``***`` p<0.001, ``**`` p<0.01, ``*`` p<0.05, else empty (also for NaN)."""
    if not (p_value == p_value):  # NaN
        return ""
    for cut, mark in ((0.001, "***"), (0.01, "**"), (0.05, "*")):
        if p_value < cut:
            return mark
    return ""
