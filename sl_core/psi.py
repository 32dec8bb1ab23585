"""psi: the registry of soft-label shapes over the ten digits.

A shape is a function `fn(t, param) -> 10 weights`, the distribution psi(. | t) over the digits
0..9 for the target digit t. `psi_matrix(name, param)` stacks the ten rows into a [10, 10] matrix
(row t = psi(. | t)) and validates it: finite, non-negative, every row sums to 1.

Built-in shapes (d = |k - t| for candidate digit k, target digit t; each row is normalised over
the ten digits after the weights below are computed):

| name         | param (default)        | weight of digit k                                        |
|--------------|------------------------|----------------------------------------------------------|
| `triangular` | half-width h > 0 (2.0) | max(0, h - d): support d < h; h = 2 gives the neighbours  |
|              |                        | half the peak weight, h <= 1 is the one-hot delta         |
| `binomial`   | temperature tau > 0 (1)| Binom(k; n=9, p=(t + 0.5)/10) ** (1/tau); mode exactly t |
| `poisson`    | temperature tau > 0 (1)| Poisson(k; rate=t + 0.5) ** (1/tau), truncated to 0..9;  |
|              |                        | mode exactly t                                            |
| `uniform`    | none                   | 1 for all ten digits, the target included (label          |
|              |                        | smoothing restricted to the digits)                       |
| `gaussian`   | sigma > 0 (1.0)        | exp(-d^2 / (2 sigma^2))                                   |
| `laplace`    | scale b > 0 (1.0)      | exp(-d / b)                                               |

Weights are normalised in log space, so extreme parameters (tau -> 0, sigma -> 0) degrade to the
one-hot delta instead of 0/0.

Each shape owns its formula and its search range as data (`PsiShape`):

- Distance shapes (`triangular`, `gaussian`, `laplace`, `uniform`) are declared by a kernel
  `kernel(d, param) -> log-weight` of the distance d; the digit rows above are softmax over k of
  kernel(|k - t|, param), and the value-aware mode (`sl_core.value_aware`) applies the same kernel
  to distances in value units, so each formula is written once (`psi_kernel`, `value_kernels`).
  `binomial` and `poisson` depend on t itself, not only on d, so they have no kernel and are
  digit-only.
- `psi_search_range(name)` gives the range a sweep searches the parameter over, in digit units
  (`search_spaces/paper.yaml`), and `psi_search_range(name, "value")` the scale range of the
  value-aware mode in value units (`search_spaces/paper_value_aware.yaml`):

| name         | digits: low, high, log | value: low, high, log |
|--------------|------------------------|-----------------------|
| `triangular` | 1.5, 4.0, no           | 1.5, 6.0, no          |
| `binomial`   | 0.5, 2.0, yes          | (not a value kernel)  |
| `poisson`    | 0.5, 2.0, yes          | (not a value kernel)  |
| `uniform`    | no parameter (None)    | no parameter (None)   |
| `gaussian`   | 0.3, 2.0, no           | 0.5, 4.0, yes         |
| `laplace`    | 0.3, 2.0, no           | 0.5, 4.0, yes         |

This module imports no torch until a matrix or row is built.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a matrix is built: the registry itself is torch-free
    import torch

NUM_DIGITS = 10

PsiFn = Callable[[int, "float | None"], "Sequence[float] | torch.Tensor"]
"""fn(t, param) -> ten non-negative weights summing to 1 (psi(k | t) for k = 0..9)."""


PsiKernel = Callable[["torch.Tensor", "float | None"], "torch.Tensor"]
"""kernel(d, param) -> log-weights: d a float64 tensor of distances (>= 0, any shape), the result of the
same shape; -inf means weight 0. The distance d = 0 must get a finite log-weight."""

SearchRange = dict
"""{"low": float, "high": float, "log": bool}: a parameter's search range (0 < low < high)."""


@dataclass(frozen=True)
class PsiShape:
    """A registered shape: its formula, default parameter and search ranges.

    Attributes:
        name: what `psi=` and sweep configs use.
        fn: fn(t, param) -> ten weights psi(k | t) (for a kernel shape, derived from `kernel`).
        default_param: the parameter used when none is given (also the value-aware default scale).
        takes_param: False for shapes without a parameter.
        kernel: kernel(d, param) -> log-weight (`PsiKernel`) for distance shapes; None for shapes
            that are not a function of the distance alone (those are digit-only).
        search_range: the parameter's search range in digit units, None when not declared.
        value_search_range: the scale's search range of the value-aware mode in value units.
    """

    name: str
    fn: PsiFn
    default_param: float | None
    takes_param: bool
    kernel: PsiKernel | None = None
    search_range: SearchRange | None = None
    value_search_range: SearchRange | None = None


_REGISTRY: dict[str, PsiShape] = {}


def register_psi(name: str, fn: PsiFn | None = None, *, kernel: PsiKernel | None = None,
                 default_param: float | None = None, takes_param: bool = True,
                 search_range: SearchRange | None = None, value_search_range: SearchRange | None = None,
                 overwrite: bool = False, _validate: bool = True) -> None:
    """Add a psi shape to the registry.

    Args:
        name: the shape's name (what `psi=` and sweep configs use).
        fn: fn(t, param) -> ten weights psi(k | t), k = 0..9, a proper distribution. `param` is the
            user's value or `default_param`; shapes without a parameter receive None.
        kernel: instead of `fn`, kernel(d, param) -> log-weight of the distance d (`PsiKernel`):
            the digit rows are softmax_k kernel(|k - t|, param) and the shape also works in the
            value-aware mode (`sl_core.value_aware`). Give exactly one of `fn` and `kernel`.
        default_param: used when the caller passes psi_param=None.
        takes_param: False for shapes without a parameter (passing one is then an error).
        search_range: {"low", "high", "log"} the range sweeps search the parameter over (digit
            units); value_search_range: the same for the value-aware scale (value units).
        overwrite: replace an existing shape of the same name instead of raising.

    Raises:
        ValueError: an empty name, not exactly one of fn / kernel, a non-callable, a non-positive
            default, a malformed search range, a name already registered, or a shape whose rows at
            the default parameter are not distributions (validated immediately).

    Example:
        A shape that keeps 1 - p on the target and gives p to the next digit up (down for 9):

        >>> from sl_core import psi_matrix, register_psi
        >>> def next_up(t, p):
        ...     row = [0.0] * 10
        ...     row[t], row[t + 1 if t < 9 else t - 1] = 1.0 - p, p
        ...     return row
        >>> register_psi("next_up", next_up, default_param=0.25)
        >>> psi_matrix("next_up")[9].tolist()[7:]
        [0.0, 0.25, 0.75]

        It is now a `psi=` of every soft-label loss and of sweep specs (`loss.psi: next_up`).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"psi name must be a non-empty string, got {name!r}")
    if (fn is None) == (kernel is None):
        raise ValueError(f"psi {name!r}: give exactly one of fn and kernel")
    if not callable(fn if kernel is None else kernel):
        what = "fn" if kernel is None else "kernel"
        raise ValueError(f"psi {what} for {name!r} must be callable, got {type(fn or kernel).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"psi shape {name!r} is already registered (pass overwrite=True to replace it)")
    if default_param is not None:
        default_param = _check_positive(f"default_param of psi {name!r}", default_param)
    search_range = _check_range(f"search_range of psi {name!r}", search_range)
    value_search_range = _check_range(f"value_search_range of psi {name!r}", value_search_range)
    if value_search_range is not None and kernel is None:
        raise ValueError(f"value_search_range of psi {name!r}: only a kernel shape works in the value-aware mode")
    if kernel is not None:
        fn = _kernel_row(kernel)
    previous = _REGISTRY.get(name)
    _REGISTRY[name] = PsiShape(name, fn, default_param, takes_param, kernel, search_range, value_search_range)
    _cached_matrix.cache_clear()
    if not _validate:
        return
    try:
        psi_matrix(name, None)
    except ValueError:
        if previous is None:
            del _REGISTRY[name]
        else:
            _REGISTRY[name] = previous
        _cached_matrix.cache_clear()
        raise


def available_psi() -> tuple[str, ...]:
    """Names of the registered shapes, built-ins first.

    Example:
        >>> from sl_core import available_psi
        >>> available_psi()[:6]
        ('triangular', 'binomial', 'poisson', 'uniform', 'gaussian', 'laplace')
    """
    return tuple(_REGISTRY)


def value_kernels() -> tuple[str, ...]:
    """Names of the shapes declared by a kernel of the distance: the kernels of the value-aware mode."""
    return tuple(n for n, s in _REGISTRY.items() if s.kernel is not None)


def psi_kernel(name: str) -> PsiKernel:
    """The shape's kernel(d, param) -> log-weight (`PsiKernel`).

    Raises:
        ValueError: unknown shape, or a shape that is not a kernel of the distance (binomial,
            poisson), naming the kernels there are.
    """
    shape = _shape(name)
    if shape.kernel is None:
        raise ValueError(f"psi: shape {name!r} is not a kernel of the distance; kernels: {', '.join(value_kernels())}")
    return shape.kernel


def psi_search_range(name: str, units: str = "digits") -> SearchRange | None:
    """The range sweeps search shape `name`'s parameter over, as {"low": float, "high": float, "log": bool}.

    Args:
        name: a registered shape.
        units: "digits" (psi_param of `soft_label`, distances between digits) or "value" (scale of
            `value_aware`, distances between token values).

    Returns:
        A new dict (sample log-uniformly when "log" is True); None for a shape without a parameter
        (uniform) or one registered without a range for these units. Torch-free.

    Raises:
        ValueError: unknown shape or units.
    """
    shape = _shape(name)
    if units not in ("digits", "value"):
        raise ValueError(f"units must be 'digits' or 'value', got {units!r}")
    r = shape.search_range if units == "digits" else shape.value_search_range
    return None if r is None or not shape.takes_param else dict(r)


def psi_takes_param(name: str) -> bool:
    """Whether shape `name` takes a parameter (`psi_param`); ValueError for an unknown name."""
    return _shape(name).takes_param


def psi_default_param(name: str) -> float | None:
    """The parameter a shape uses when psi_param is None."""
    return _shape(name).default_param


def psi_matrix(name: str, param: float | None = None) -> torch.Tensor:
    """The shape's [10, 10] float64 matrix; row t is psi(. | t), a distribution over the digits 0..9.

    Args:
        name: a registered shape (see `available_psi()`).
        param: the shape's parameter (> 0); None uses the shape's default.

    Raises:
        ValueError: unknown name (argument `psi`), a non-positive or superfluous parameter
            (argument `psi_param`), or a shape function that returns an invalid distribution.

    Example:
        >>> from sl_core import psi_matrix
        >>> psi_matrix("triangular")[4].tolist()  # half-width 2: neighbours get half the peak
        [0.0, 0.0, 0.0, 0.25, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]
        >>> [round(p, 3) for p in psi_matrix("laplace", 0.5)[0, :4].tolist()]
        [0.865, 0.117, 0.016, 0.002]
        >>> psi_matrix("uniform", 2.0)
        Traceback (most recent call last):
        ...
        ValueError: psi_param: shape 'uniform' takes no parameter, got 2.0
    """
    shape = _shape(name)
    if param is not None:
        if not shape.takes_param:
            raise ValueError(f"psi_param: shape {name!r} takes no parameter, got {param!r}")
        param = _check_positive(f"psi_param (for shape {name!r})", param)
    return _cached_matrix(name, param).clone()


def validate_psi_rows(matrix: torch.Tensor, what: str = "psi") -> torch.Tensor:
    """Check that a [K, K] matrix has finite, non-negative rows summing to 1; returns it as float64."""
    import torch

    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise ValueError(f"{what} must be a square [K, K] matrix, got {shape}")
    m = matrix.detach().to(torch.float64)
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{what} has non-finite entries")
    if bool((m < 0).any()):
        raise ValueError(f"{what} has negative entries")
    sums = m.sum(dim=1)
    bad = (sums - 1.0).abs() > 1e-6
    if bool(bad.any()):
        row = int(bad.nonzero()[0])
        raise ValueError(f"{what} row {row} sums to {float(sums[row]):.6g}, not 1")
    return m


def _shape(name: str) -> PsiShape:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"psi: unknown shape {name!r}; registered shapes: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


@functools.lru_cache(maxsize=256)
def _cached_matrix(name: str, param: float | None) -> torch.Tensor:
    import torch

    shape = _REGISTRY[name]
    p = shape.default_param if param is None else param
    rows = []
    for t in range(NUM_DIGITS):
        try:
            row = torch.as_tensor(shape.fn(t, p), dtype=torch.float64).flatten()
        except Exception as exc:  # noqa: BLE001 - a user's shape may raise anything: one ValueError
            raise ValueError(f"psi shape {name!r} failed for target digit {t}: {exc}") from exc
        if row.numel() != NUM_DIGITS:
            raise ValueError(f"psi shape {name!r} returned {row.numel()} weights for digit {t}, expected 10")
        rows.append(row)
    return validate_psi_rows(torch.stack(rows), what=f"psi shape {name!r} (param={p!r})")


def _normalise_log(logw: Sequence[float], temperature: float = 1.0) -> list[float]:
    """softmax(logw / temperature), shifted by the max first so it never divides 0 by 0."""
    m = max(logw)
    if temperature <= 0.0:  # a parameter so small that it underflowed: the limit is the delta
        peak = logw.index(m)
        return [1.0 if k == peak else 0.0 for k in range(len(logw))]
    w = [math.exp((x - m) / temperature) for x in logw]
    s = sum(w)
    return [x / s for x in w]


def _binomial(t: int, tau: float | None) -> list[float]:
    n, p = NUM_DIGITS - 1, (t + 0.5) / NUM_DIGITS
    logw = [math.log(math.comb(n, k)) + k * math.log(p) + (n - k) * math.log1p(-p)
            for k in range(NUM_DIGITS)]
    return _normalise_log(logw, float(tau))


def _poisson(t: int, tau: float | None) -> list[float]:
    rate = t + 0.5
    logw = [k * math.log(rate) - rate - math.lgamma(k + 1) for k in range(NUM_DIGITS)]
    return _normalise_log(logw, float(tau))


def _kernel_row(kernel: PsiKernel) -> PsiFn:
    """fn(t, param) of a kernel shape: softmax over the digits k of kernel(|k - t|, param)."""
    def row(t: int, param: float | None) -> torch.Tensor:
        import torch

        d = (torch.arange(NUM_DIGITS, dtype=torch.float64) - t).abs()
        return torch.softmax(kernel(d, param), dim=0)
    return row


# Kernels: log-weights of the distance d (a float64 tensor), written with tensor methods only so this
# module needs no torch import. Each stays finite at d = 0 for every parameter > 0 (no 0/0).
def _triangular_kernel(d: torch.Tensor, h: float | None) -> torch.Tensor:
    """log max(0, h - d): support d < h."""
    return (float(h) - d).clamp(min=0.0).log()


def _uniform_kernel(d: torch.Tensor, _param: float | None) -> torch.Tensor:
    """0: every candidate the same weight."""
    return d * 0.0


def _gaussian_kernel(d: torch.Tensor, sigma: float | None) -> torch.Tensor:
    """-d^2 / (2 sigma^2), as -(d / sigma)^2 / 2 so that a tiny sigma never makes 0/0."""
    return -((d / float(sigma)) ** 2) / 2.0


def _laplace_kernel(d: torch.Tensor, scale: float | None) -> torch.Tensor:
    """-d / b."""
    return -d / float(scale)


def _check_range(what: str, r: object) -> SearchRange | None:
    if r is None:
        return None
    if not isinstance(r, dict) or not {"low", "high"} <= set(r) or not set(r) <= {"low", "high", "log"}:
        raise ValueError(f"{what} must be a dict with keys low, high and optionally log, got {r!r}")
    low, high = _check_positive(f"{what} low", r["low"]), _check_positive(f"{what} high", r["high"])
    if not low < high:
        raise ValueError(f"{what}: low must be < high, got {low!r}, {high!r}")
    log = r.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{what}: log must be true or false, got {log!r}")
    return {"low": low, "high": high, "log": log}


def _check_positive(name: str, value: object) -> float:
    from sl_core.registry import ParamSpec

    return ParamSpec(name, None, low=0.0, low_open=True).check(value, "psi")


# Built-ins are checked by the tests (tests/test_psi.py), not at import: building a matrix needs torch.
# The search ranges are those of search_spaces/paper.yaml (digits) and paper_value_aware.yaml (value).
register_psi("triangular", kernel=_triangular_kernel, default_param=2.0,
             search_range={"low": 1.5, "high": 4.0}, value_search_range={"low": 1.5, "high": 6.0}, _validate=False)
register_psi("binomial", _binomial, default_param=1.0,
             search_range={"low": 0.5, "high": 2.0, "log": True}, _validate=False)
register_psi("poisson", _poisson, default_param=1.0,
             search_range={"low": 0.5, "high": 2.0, "log": True}, _validate=False)
register_psi("uniform", kernel=_uniform_kernel, takes_param=False, _validate=False)
register_psi("gaussian", kernel=_gaussian_kernel, default_param=1.0, search_range={"low": 0.3, "high": 2.0},
             value_search_range={"low": 0.5, "high": 4.0, "log": True}, _validate=False)
register_psi("laplace", kernel=_laplace_kernel, default_param=1.0, search_range={"low": 0.3, "high": 2.0},
             value_search_range={"low": 0.5, "high": 4.0, "log": True}, _validate=False)
