"""The loss families of sl_core as data: names, parameters, defaults, bounds and the tokens each needs.

A loss family is declared by the decorator `loss_family` on its builder; `register_loss_family` adds it
(built-in or plug-in) to the one registry: its spec to `LOSS_FAMILY_SPECS`, its builder to
`family_builder`. The built-ins are declared that way in `sl_core.builtin_families`, one decorated
builder each, imported at the end of this module.
`sl_core.families.build_loss` validates the parameters here and calls the builder; `sweeps` derives its
config validation, search-space checks and preflight from it. It imports no torch, so a CLI or a spec
validator can read it cheaply.

Token requirements (`LossFamilySpec.tokens`):

| tokens    | families                                           | needs from the tokenizer                   |
|-----------|----------------------------------------------------|--------------------------------------------|
| `none`    | hard, label_smoothing                              | nothing                                    |
| `digits`  | soft_label, gaussian, ntl_was, ntl_mse, ntil, del  | single-digit tokens "0".."9" (numbers split|
|           |                                                    | into digits; see `sl_core.digit_token_groups`)|
| `numeric` | value_aware, dist2, smmd                           | any numeric tokens, merged ("260") or not  |

Families whose `tokens` is not `none` are distance-aware: their soft targets must reach the answer's
numeric tokens, which `sl_core.soft_target_coverage` measures.
"""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "REQUIRED", "DIST2_DISTANCES", "LossFamilySpec", "ParamSpec", "LOSS_FAMILY_SPECS", "family_spec",
    "check_family_params", "loss_family", "register_loss_family", "family_builder",
]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default of a parameter that has none: the caller must give it."""

DIST2_DISTANCES: tuple[str, ...] = ("squared", "absolute")
"""Distances d(v, t) between numeric values of DIST2Loss (`sl_core.numeric_peers.dist2_cross_entropy`)."""


def __getattr__(name: str) -> Any:
    if name == "VALUE_KERNELS":  # deprecated: the psi registry owns the kernels and their defaults
        import warnings

        from sl_core import psi

        warnings.warn("sl_core.registry.VALUE_KERNELS is deprecated: use sl_core.psi.value_kernels() and "
                      "sl_core.psi.psi_default_param(name)", DeprecationWarning, stacklevel=2)
        return {k: psi.psi_default_param(k) for k in psi.value_kernels()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a loss family.

    Attributes:
        name: keyword of `build_loss` and key of a sweep's `loss` section.
        default: the value used when the parameter is not given (or given as None); REQUIRED when
            there is none; None when "unset" means "the shape's own default" (psi_param, scale).
        kind: "real" (a finite float within the bounds) or "choice" (a name from `choices()`).
        low, high: bounds of a real parameter (None: unbounded on that side).
        low_open, high_open: whether the bound itself is excluded.
        choices: for "choice", a function returning the allowed names (read at call time, so
            user-registered psi shapes count).
        doc: one line for help texts.
    """

    name: str
    default: Any
    kind: Literal["real", "choice"] = "real"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: Callable[[], tuple[str, ...]] | None = None
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def bounds_text(self) -> str:
        """The allowed range, e.g. "[0, 1]" or "> 0"."""
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "any finite number"

    def check(self, value: Any, family: str) -> Any:
        """The validated value (a float or a choice name); ValueError naming the parameter otherwise."""
        if self.kind == "choice":
            allowed = self.choices() if self.choices else ()
            if not isinstance(value, str) or value not in allowed:
                close = difflib.get_close_matches(str(value), list(allowed), n=1)
                raise ValueError(f"{self.name}: unknown {value!r} for loss family {family!r}; "
                                 f"choose one of {', '.join(allowed)}"
                                 + (f"; did you mean {close[0]!r}?" if close else ""))
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            item = getattr(value, "item", None)  # a 0-d tensor or numpy scalar
            if not callable(item) or getattr(value, "ndim", 1) != 0:
                raise ValueError(f"{self.name} must be a real number, got {type(value).__name__} {value!r}")
            value = item()
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{self.name} must be finite, got {value!r}")
        too_low = self.low is not None and (v <= self.low if self.low_open else v < self.low)
        too_high = self.high is not None and (v >= self.high if self.high_open else v > self.high)
        if too_low or too_high:
            where = self.bounds_text() if self.low is None or self.high is None else f"in {self.bounds_text()}"
            raise ValueError(f"{self.name} must be {where}, got {value!r}")
        return v


@dataclass(frozen=True)
class LossFamilySpec:
    """A loss family: its parameters and the tokens it needs (see the module docstring).

    `takes_backend`: the builder also receives `backend` ("torch" or "triton", see `sl_core.backend`).
    """

    name: str
    params: tuple[ParamSpec, ...]
    tokens: Literal["none", "digits", "numeric"]
    doc: str
    takes_backend: bool = False
    param_map: dict[str, ParamSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "param_map", {p.name: p for p in self.params})

    @property
    def distance_aware(self) -> bool:
        """Whether the family's targets depend on numeric token values (coverage applies)."""
        return self.tokens != "none"

    @property
    def defaults(self) -> dict[str, Any]:
        """Parameter name -> default (REQUIRED where none)."""
        return {p.name: p.default for p in self.params}


LOSS_FAMILY_SPECS: dict[str, LossFamilySpec] = {}
"""Every loss family by name, in the order tables list them (built-ins first; filled by `register_loss_family`)."""

_BUILDERS: dict[str, Callable[..., Any]] = {}
_BUILTIN_NAMES: set[str] = set()


def family_spec(family: str) -> LossFamilySpec:
    """The family's spec; ValueError naming the known families for an unknown name.

    Example:
        >>> from sl_core import family_spec
        >>> spec = family_spec("soft_label")
        >>> spec.tokens, spec.distance_aware
        ('digits', True)
        >>> spec.defaults
        {'eta': REQUIRED, 'lam': 1.0, 'psi': 'triangular', 'psi_param': None, 'place_exponent': None}
        >>> family_spec("hard").tokens
        'none'
        >>> family_spec("soft")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: loss family: unknown 'soft'; choose one of hard, label_smoothing, ...
    """
    spec = LOSS_FAMILY_SPECS.get(family) if isinstance(family, str) else None
    if spec is None:
        raise ValueError(f"loss family: unknown {family!r}; choose one of {', '.join(LOSS_FAMILY_SPECS)}")
    return spec


def check_family_params(family: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of `family`, validated, defaults filled in (None given means the default).

    Raises:
        ValueError: unknown family, a parameter the family does not take, a required one missing,
            or a value out of its bounds (the message names the parameter).

    Example:
        >>> from sl_core.registry import check_family_params
        >>> check_family_params("gaussian", {})
        {'sigma': 1.0}
        >>> check_family_params("gaussian", {"sigma": -1})
        Traceback (most recent call last):
        ...
        ValueError: sigma must be >= 0, got -1
    """
    spec = family_spec(family)
    for name in params:
        if name not in spec.param_map:
            accepted = ", ".join(spec.param_map) or "no parameters"
            raise ValueError(f"loss family {family!r} does not take parameter {name!r} (accepts: {accepted})")
    out: dict[str, Any] = {}
    for p in spec.params:
        value = params.get(p.name)
        if value is None:
            if p.required:
                raise ValueError(f"loss family {family!r} needs parameter {p.name!r}")
            out[p.name] = p.default
        else:
            out[p.name] = p.check(value, family)
    return out


def loss_family(*, params: tuple[ParamSpec, ...] | dict[str, Any] = (), tokens: str = "digits",
                name: str | None = None, doc: str = "", takes_backend: bool = False,
                ) -> Callable[[Callable[..., Any] | str], Callable[..., Any]]:
    """Declare a loss family: decorate its builder `builder(digit_ids, **params) -> LossFn`.

    The builder receives what `tokens` asks for (None, the [G, 10] digit groups or NumericTokens,
    see the module docstring) and the family's parameters validated with defaults filled in, and
    returns `fn(logits [..., V], labels [...] shifted, *, num_items_in_batch=None) -> scalar`.
    `register_loss_family(builder)` (or a sweep's `loss.family: pkg.mod:builder`) adds it to
    LOSS_FAMILY_SPECS. Instead of a function, the decorator also takes its "module:function" path
    (`loss_family(...)("pkg.mod:builder")`): the module is imported on the first build, so the
    declaration stays import-free (a plug-in module that imports torch, named in a spec).

    Args:
        params: ParamSpecs, or a mapping name -> default (an unbounded real parameter each).
        tokens: "none", "digits" or "numeric".
        name: the family's name (default: "module:function", the dotted path sweeps use).
        doc: one line for tables and help (default: the builder's docstring, cut to 80 characters).
        takes_backend: pass the builder `backend` too ("torch" or "triton").

    Returns:
        The decorator; it returns the builder with a `family_spec` attribute (for a path, a callable
        that imports and calls the function).

    Raises:
        ValueError: tokens is not one of the three, or the path is not "module:function".

    Example:
        Declaring a family only describes it (nothing is registered yet; see
        `sl_core.register_loss_family` for the rest):

        >>> from sl_core import loss_family
        >>> @loss_family(params={"weight": 0.5}, tokens="digits", name="my_digit_loss",
        ...              doc="CE plus a digit penalty")
        ... def my_digit_loss(digit_groups, weight):
        ...     ...  # return fn(logits, labels, *, num_items_in_batch=None) -> scalar
        >>> spec = my_digit_loss.family_spec
        >>> spec.name, spec.tokens, spec.defaults, spec.doc
        ('my_digit_loss', 'digits', {'weight': 0.5}, 'CE plus a digit penalty')
    """
    if tokens not in ("none", "digits", "numeric"):
        raise ValueError(f"tokens must be 'none', 'digits' or 'numeric', got {tokens!r}")
    specs = tuple(ParamSpec(k, v) for k, v in params.items()) if isinstance(params, dict) else tuple(params)

    def wrap(builder: Callable[..., Any] | str) -> Callable[..., Any]:
        if isinstance(builder, str):
            builder = _LazyBuilder(builder)
            family = name or builder.path
        else:
            family = name or f"{builder.__module__}:{builder.__name__}"
        builder.family_spec = LossFamilySpec(family, specs, tokens, doc or (builder.__doc__ or "").strip()[:80],
                                             takes_backend)
        return builder
    return wrap


class _LazyBuilder:
    """A builder given as "module:function": imported on its first call."""

    def __init__(self, path: str) -> None:
        module, _, attr = path.partition(":")
        if not module or not attr:
            raise ValueError(f"a builder path must be 'module:function', got {path!r}")
        self.path = path
        self.__doc__ = None
        self._fn: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._fn is None:
            module, _, attr = self.path.partition(":")
            self._fn = getattr(importlib.import_module(module), attr)
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<loss family builder {self.path}>"


def register_loss_family(builder: Callable[..., Any], *, _builtin: bool = False) -> str:
    """Add a loss family declared with `loss_family` to the registry; returns its name.

    The builder is called as `builder(digit_ids, **params)` (params validated, defaults filled in;
    `backend` too when declared with takes_backend). Registering the same declaration again is a
    no-op apart from replacing the builder.

    Raises:
        ValueError: `builder` was not declared with `loss_family`, or its name is a built-in's or is
            registered with other parameters.

    Example:
        A family "scaled_ce" (hard CE times a factor), registered, then built like a built-in:

        >>> import torch
        >>> from sl_core import build_loss, hard_cross_entropy, loss_family, register_loss_family
        >>> @loss_family(params={"factor": 1.0}, tokens="none", name="scaled_ce")
        ... def scaled_ce(tokens, factor):
        ...     def fn(logits, labels, *, num_items_in_batch=None):
        ...         return factor * hard_cross_entropy(logits, labels, num_items_in_batch=num_items_in_batch)
        ...     return fn
        >>> register_loss_family(scaled_ce)
        'scaled_ce'
        >>> logits, labels = torch.zeros(4, 12), torch.tensor([1, 2, 3, 4])
        >>> round(build_loss("scaled_ce", factor=2.0)(logits, labels).item(), 4)  # 2 * log(12)
        4.9698
    """
    spec = getattr(builder, "family_spec", None)
    if not isinstance(spec, LossFamilySpec) or not callable(builder):
        raise ValueError("a loss family plug-in must be a builder decorated with @sl_core.registry.loss_family(...)")
    if spec.name in _BUILTIN_NAMES:
        if _builtin:
            raise ValueError(f"two built-in loss families are named {spec.name!r} (sl_core/builtin_families.py)")
        raise ValueError(f"loss family {spec.name!r} is built in")
    old = LOSS_FAMILY_SPECS.get(spec.name)
    if old is not None and old != spec:
        raise ValueError(f"loss family {spec.name!r} is already registered with other parameters")
    LOSS_FAMILY_SPECS[spec.name] = spec
    _BUILDERS[spec.name] = builder
    if _builtin:
        _BUILTIN_NAMES.add(spec.name)
    return spec.name


def family_builder(family: str) -> Callable[..., Any]:
    """The builder registered for `family` (ValueError naming the known families for an unknown one)."""
    return _BUILDERS[family_spec(family).name]


# The built-in families: each declared once, with its builder, in sl_core.builtin_families (no torch
# there either), registered as that module is imported, here.
from sl_core import builtin_families  # noqa: E402,F401
