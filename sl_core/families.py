"""Loss families for sweeps: `build_loss(family, digit_ids, **params) -> LossFn`.

A LossFn is `fn(logits [..., V], labels [...], *, num_items_in_batch=None) -> scalar`, with labels
already shifted (position i of labels is the target of position i of logits) and -100 ignored.

| family            | params (default)                                    | loss                              |
|-------------------|-----------------------------------------------------|-----------------------------------|
| `hard`            | -                                                   | CE                                |
| `label_smoothing` | smoothing (0.1)                                     | CE, uniform smoothing over V      |
| `gaussian`        | sigma (1.0)                                         | Gaussian soft CE on digits        |
| `ntl_was`         | ntl_weight (0.3)                                    | CE + w * NTL-WAS                  |
| `ntl_mse`         | ntl_weight (0.3)                                    | CE + w * NTL-MSE                  |
| `ntil`            | ntil_weight (0.3), digit_exp (1.2)                  | CE + w * sg(CE / EMD) * EMD_place |
| `soft_label`      | eta (required), lam (1.0), psi ("triangular"),      | soft-label CE (the paper)         |
|                   | psi_param (None), place_exponent (None)             |                                   |
| `value_aware`     | eta (required), lam (1.0), psi ("laplace"),         | value-aware soft-label CE         |
|                   | scale (None), place_exponent (None)                 |                                   |

A parameter given as None means "the default". `value_aware` takes a `NumericTokens` (or the ten
digit ids) as its second argument. See `sl_core.peers` for the definitions and citations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from sl_core import _validate as V
from sl_core.digits import NumericTokens
from sl_core.loss import soft_label_cross_entropy
from sl_core.peers import (
    gaussian_soft_cross_entropy, hard_cross_entropy, label_smoothing_cross_entropy, ntil_emd, ntl_mse, ntl_was,
)
from sl_core.psi import available_psi, psi_matrix
from sl_core.value_aware import value_aware_soft_label_cross_entropy, value_psi_matrix

__all__ = ["LossFn", "LOSS_FAMILIES", "FAMILY_PARAMS", "FAMILY_DEFAULTS", "build_loss"]

IGNORE_INDEX = -100
_REQUIRED = object()


class LossFn(Protocol):
    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, *,
                 num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor: ...


FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "hard": {},
    "label_smoothing": {"smoothing": 0.1},
    "gaussian": {"sigma": 1.0},
    "ntl_was": {"ntl_weight": 0.3},
    "ntl_mse": {"ntl_weight": 0.3},
    "ntil": {"ntil_weight": 0.3, "digit_exp": 1.2},
    "soft_label": {"eta": _REQUIRED, "lam": 1.0, "psi": "triangular", "psi_param": None, "place_exponent": None},
    "value_aware": {"eta": _REQUIRED, "lam": 1.0, "psi": "laplace", "scale": None, "place_exponent": None},
}
"""Each family's parameters and defaults (eta has none: it must be given)."""

FAMILY_PARAMS: dict[str, tuple[str, ...]] = {f: tuple(p) for f, p in FAMILY_DEFAULTS.items()}
"""The parameter names each family accepts (what a sweep config may set)."""

LOSS_FAMILIES: tuple[str, ...] = tuple(FAMILY_DEFAULTS)


def build_loss(family: str, digit_ids: Sequence[int] | torch.Tensor | NumericTokens, **params: Any) -> LossFn:
    """A loss callable for `family` with `params` validated now (ValueError naming the bad one).

    Args:
        family: one of LOSS_FAMILIES.
        digit_ids: the ten token ids of "0".."9" in order (`sl_core.digit_token_ids(tokenizer)`);
            for `value_aware`, a NumericTokens (`sl_core.numeric_token_values(tokenizer)`) or the ten ids.
        **params: the family's parameters (FAMILY_PARAMS[family]); None means the default.

    Returns:
        fn(logits [..., V], labels [...] shifted, *, num_items_in_batch=None) -> scalar loss.
    """
    if family not in FAMILY_DEFAULTS:
        raise ValueError(f"loss family: unknown {family!r}; choose one of {', '.join(LOSS_FAMILIES)}")
    allowed = FAMILY_DEFAULTS[family]
    for name in params:
        if name not in allowed:
            accepted = ", ".join(allowed) or "no parameters"
            raise ValueError(f"loss family {family!r} does not take parameter {name!r} (accepts: {accepted})")
    p = {k: (params[k] if params.get(k) is not None else d) for k, d in allowed.items()}
    for k, v in p.items():
        if v is _REQUIRED:
            raise ValueError(f"loss family {family!r} needs parameter {k!r}")
    if family == "value_aware":
        numeric = digit_ids if isinstance(digit_ids, NumericTokens) else \
            NumericTokens.from_digit_ids(V.check_digit_ids(digit_ids))
        return _value_aware(numeric, p)
    ids = V.check_digit_ids(digit_ids)
    return _BUILDERS[family](ids, p)


def _hard(ids: list[int], p: dict[str, Any]) -> LossFn:
    def hard(logits, labels, *, num_items_in_batch=None):
        return hard_cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, num_items_in_batch=num_items_in_batch)
    return hard


def _label_smoothing(ids: list[int], p: dict[str, Any]) -> LossFn:
    eps = V.check_fraction("smoothing", p["smoothing"])

    def label_smoothing(logits, labels, *, num_items_in_batch=None):
        return label_smoothing_cross_entropy(logits, labels, smoothing=eps, ignore_index=IGNORE_INDEX,
                                             num_items_in_batch=num_items_in_batch)
    return label_smoothing


def _gaussian(ids: list[int], p: dict[str, Any]) -> LossFn:
    sigma = V.check_nonneg("sigma", p["sigma"])

    def gaussian(logits, labels, *, num_items_in_batch=None):
        return gaussian_soft_cross_entropy(logits, labels, ids, sigma=sigma, ignore_index=IGNORE_INDEX,
                                           num_items_in_batch=num_items_in_batch)
    return gaussian


def _ntl(term: Callable[..., torch.Tensor]) -> Callable[[list[int], dict[str, Any]], LossFn]:
    def builder(ids: list[int], p: dict[str, Any]) -> LossFn:
        w = V.check_nonneg("ntl_weight", p["ntl_weight"])

        def ntl(logits, labels, *, num_items_in_batch=None):
            ce = hard_cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, num_items_in_batch=num_items_in_batch)
            if w == 0:
                return ce
            return ce + w * term(logits, labels, ids, ignore_index=IGNORE_INDEX,
                                 num_items_in_batch=num_items_in_batch)
        ntl.__name__ = term.__name__
        return ntl
    return builder


def _ntil(ids: list[int], p: dict[str, Any]) -> LossFn:
    w = V.check_nonneg("ntil_weight", p["ntil_weight"])
    exp = V.check_positive("digit_exp", p["digit_exp"])

    def ntil(logits, labels, *, num_items_in_batch=None):
        ce = hard_cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, num_items_in_batch=num_items_in_batch)
        if w == 0:
            return ce
        emd = ntil_emd(logits, labels, ids, digit_exp=exp, ignore_index=IGNORE_INDEX,
                       num_items_in_batch=num_items_in_batch)
        # NTIL rescales the EMD term to the magnitude of CE (stop-gradient ratio), then weights it
        return ce + w * (ce / (emd + 1e-10)).detach() * emd
    return ntil


def _soft_label(ids: list[int], p: dict[str, Any]) -> LossFn:
    eta = V.check_fraction("eta", p["eta"])
    lam = V.check_nonneg("lam", p["lam"])
    if p["psi"] not in available_psi():
        raise ValueError(f"psi: unknown shape {p['psi']!r}; registered shapes: {', '.join(available_psi())}")
    psi_matrix(p["psi"], p["psi_param"])  # validates psi_param now
    place = V.check_optional_nonneg("place_exponent", p["place_exponent"])

    def soft_label(logits, labels, *, num_items_in_batch=None):
        return soft_label_cross_entropy(logits, labels, ids, eta=eta, lam=lam, psi=p["psi"], psi_param=p["psi_param"],
                                        ignore_index=IGNORE_INDEX, num_items_in_batch=num_items_in_batch,
                                        place_exponent=place)
    return soft_label


def _value_aware(numeric: NumericTokens, p: dict[str, Any]) -> LossFn:
    eta = V.check_fraction("eta", p["eta"])
    lam = V.check_nonneg("lam", p["lam"])
    value_psi_matrix(numeric, p["psi"], p["scale"])  # validates psi and scale now
    place = V.check_optional_nonneg("place_exponent", p["place_exponent"])

    def value_aware(logits, labels, *, num_items_in_batch=None):
        return value_aware_soft_label_cross_entropy(logits, labels, numeric, eta=eta, lam=lam, psi=p["psi"],
                                                    scale=p["scale"], ignore_index=IGNORE_INDEX,
                                                    num_items_in_batch=num_items_in_batch, place_exponent=place)
    return value_aware


_BUILDERS: dict[str, Callable[[list[int], dict[str, Any]], LossFn]] = {
    "hard": _hard,
    "label_smoothing": _label_smoothing,
    "gaussian": _gaussian,
    "ntl_was": _ntl(ntl_was),
    "ntl_mse": _ntl(ntl_mse),
    "ntil": _ntil,
    "soft_label": _soft_label,
}
