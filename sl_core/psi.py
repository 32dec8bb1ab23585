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


@dataclass(frozen=True)
class PsiShape:
    """A registered shape: its function, default parameter and whether it takes a parameter."""

    name: str
    fn: PsiFn
    default_param: float | None
    takes_param: bool


_REGISTRY: dict[str, PsiShape] = {}


def register_psi(name: str, fn: PsiFn, *, default_param: float | None = None,
                 takes_param: bool = True, overwrite: bool = False, _validate: bool = True) -> None:
    """Add a psi shape to the registry.

    Args:
        name: the shape's name (what `psi=` and sweep configs use).
        fn: fn(t, param) -> ten weights psi(k | t), k = 0..9, a proper distribution. `param` is the
            user's value or `default_param`; shapes without a parameter receive None.
        default_param: used when the caller passes psi_param=None.
        takes_param: False for shapes without a parameter (passing one is then an error).
        overwrite: replace an existing shape of the same name instead of raising.

    The shape is validated immediately at its default parameter (finite, non-negative, rows sum to 1).

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
    if not callable(fn):
        raise ValueError(f"psi fn for {name!r} must be callable, got {type(fn).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"psi shape {name!r} is already registered (pass overwrite=True to replace it)")
    if default_param is not None:
        default_param = _check_positive(f"default_param of psi {name!r}", default_param)
    previous = _REGISTRY.get(name)
    _REGISTRY[name] = PsiShape(name, fn, default_param, takes_param)
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


def _triangular(t: int, h: float | None) -> list[float]:
    w = [max(0.0, float(h) - abs(k - t)) for k in range(NUM_DIGITS)]
    if w[t] <= 0.0:  # h <= 0 cannot happen after validation; keep the delta as the limit
        return [1.0 if k == t else 0.0 for k in range(NUM_DIGITS)]
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


def _uniform(t: int, _param: float | None) -> list[float]:
    return [1.0 / NUM_DIGITS] * NUM_DIGITS


def _gaussian(t: int, sigma: float | None) -> list[float]:
    return _normalise_log([-((k - t) ** 2) / 2.0 for k in range(NUM_DIGITS)], float(sigma) * float(sigma))


def _laplace(t: int, scale: float | None) -> list[float]:
    return _normalise_log([-float(abs(k - t)) for k in range(NUM_DIGITS)], float(scale))


def _check_positive(name: str, value: object) -> float:
    from sl_core.registry import ParamSpec

    return ParamSpec(name, None, low=0.0, low_open=True).check(value, "psi")


# Built-ins are checked by the tests (tests/test_psi.py), not at import: building a matrix needs torch.
register_psi("triangular", _triangular, default_param=2.0, _validate=False)
register_psi("binomial", _binomial, default_param=1.0, _validate=False)
register_psi("poisson", _poisson, default_param=1.0, _validate=False)
register_psi("uniform", _uniform, takes_param=False, _validate=False)
register_psi("gaussian", _gaussian, default_param=1.0, _validate=False)
register_psi("laplace", _laplace, default_param=1.0, _validate=False)
