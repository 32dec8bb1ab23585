"""Argument checks shared by the losses. Every error a caller can cause is a ValueError naming the argument."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import torch

REDUCTIONS = ("mean", "sum", "none")


def check_fraction(name: str, value: Any) -> float:
    """A real number in [0, 1] (eta, smoothing)."""
    v = _real(name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def check_nonneg(name: str, value: Any) -> float:
    """A finite real number >= 0 (lam, loss weights)."""
    v = _real(name, value)
    if v < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def check_positive(name: str, value: Any) -> float:
    """A finite real number > 0 (shape parameters, scales)."""
    v = _real(name, value)
    if v <= 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_real(name: str, value: Any) -> float:
    """Any finite real number."""
    return _real(name, value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex:
            value = value.item()
        else:
            raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def check_optional_nonneg(name: str, value: Any) -> float | None:
    """None, or a finite real number >= 0 (place_exponent)."""
    return None if value is None else check_nonneg(name, value)


class SoftLabelArgs(NamedTuple):
    """The checked scalar arguments every soft-label loss takes."""

    eta: float
    lam: float
    num_items: float | torch.Tensor | None
    place_exponent: float | None


def check_soft_label_args(eta: Any, lam: Any, reduction: Any, num_items_in_batch: Any,
                          place_exponent: Any) -> SoftLabelArgs:
    """eta in [0, 1], lam >= 0, a known reduction, num_items_in_batch and place_exponent (or None)."""
    eta_f, lam_f = check_fraction("eta", eta), check_nonneg("lam", lam)
    check_reduction(reduction)
    return SoftLabelArgs(eta_f, lam_f, check_num_items(num_items_in_batch),
                         check_optional_nonneg("place_exponent", place_exponent))


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    return reduction


def check_logits(logits: Any, name: str = "logits") -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name} must have shape [..., V] with V >= 1, got {tuple(logits.shape)}")
    return logits


def check_labels(labels: Any, batch_shape: Sequence[int], vocab: int, ignore_index: int,
                 logits_name: str = "logits") -> torch.Tensor:
    """Integer labels whose shape equals `batch_shape` and values lie in [0, vocab) or equal ignore_index."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(batch_shape):
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match {logits_name} shape "
            f"{tuple(batch_shape) + (vocab,)} without its last (vocabulary) dimension"
        )
    if labels.numel():
        bad = ((labels < 0) | (labels >= vocab)) & (labels != ignore_index)
        if bool(bad.any()):
            value = int(labels[bad].flatten()[0])
            raise ValueError(
                f"labels must lie in [0, {vocab}) (the vocabulary size of {logits_name}) or equal "
                f"ignore_index={ignore_index}; found {value}"
            )
    return labels


def check_digit_ids(digit_ids: Any, vocab: int | None = None, name: str = "digit_ids") -> list[int]:
    """Ten distinct token ids (for the digits 0..9, in order), each in [0, vocab) when vocab is known."""
    groups = check_digit_groups(digit_ids, vocab, name)
    if len(groups) != 1:
        raise ValueError(f"{name} must hold exactly 10 token ids (digits 0..9), got {len(groups)} groups of 10")
    return groups[0]


def check_digit_groups(digit_ids: Any, vocab: int | None = None, name: str = "digit_ids") -> list[list[int]]:
    """Digit token ids as G >= 1 groups of ten ("0".."9", "▁0".."▁9", ...): all distinct, in [0, vocab).

    Accepts ten ids (one group), a [G, 10] nested sequence or a [10] / [G, 10] integer tensor.
    """
    if isinstance(digit_ids, torch.Tensor):
        digit_ids = digit_ids.tolist()
    if isinstance(digit_ids, (str, bytes)) or not isinstance(digit_ids, Sequence):
        raise ValueError(f"{name} must be a sequence of 10 token ids, got {type(digit_ids).__name__}")
    rows = list(digit_ids)
    nested = bool(rows) and all(isinstance(r, (Sequence, torch.Tensor)) and not isinstance(r, (str, bytes))
                                for r in rows)
    groups = [list(r.tolist() if isinstance(r, torch.Tensor) else r) for r in rows] if nested else [rows]
    for g in groups:
        if len(g) != 10:
            raise ValueError(f"{name} must hold exactly 10 token ids (digits 0..9) per group, got {len(g)}")
        for i in g:
            if isinstance(i, bool) or not isinstance(i, int):
                raise ValueError(f"{name} must hold integer token ids, got {i!r}")
    flat = [i for g in groups for i in g]
    if len(set(flat)) != len(flat):
        raise ValueError(f"{name} must hold {len(flat)} distinct token ids, got {groups if nested else flat}")
    if vocab is not None and any(i < 0 or i >= vocab for i in flat):
        raise ValueError(f"{name} must lie in [0, {vocab}) (the logits' vocabulary), got {groups if nested else flat}")
    return [[int(i) for i in g] for g in groups]


def check_numeric_tokens(digit_ids: Any, vocab: int | None = None, name: str = "digit_ids") -> Any:
    """The NumericTokens of `digit_ids`: a NumericTokens as is, digit ids or [G, 10] groups through
    `NumericTokens.from_digit_ids`; every id in [0, vocab) when vocab is known (ValueError otherwise)."""
    from sl_core.digits import NumericTokens

    if not isinstance(digit_ids, NumericTokens):
        if isinstance(digit_ids, (str, bytes)) or not isinstance(digit_ids, (Sequence, torch.Tensor)):
            raise ValueError(f"{name} must be a NumericTokens (sl_core.numeric_token_values) or digit token ids, "
                             f"got {type(digit_ids).__name__}")
        return NumericTokens.from_digit_ids(check_digit_groups(digit_ids, vocab, name))
    if vocab is not None and any(i < 0 or i >= vocab for i in digit_ids.ids):
        raise ValueError(f"{name}: token ids must lie in [0, {vocab}) (the logits' vocabulary)")
    return digit_ids


F = TypeVar("F", bound=Callable[..., Any])


def renamed_argument(old: str, new: str) -> Callable[[F], F]:
    """Accept keyword `old` as a deprecated alias of `new` (DeprecationWarning; TypeError if both are given)."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {new!r} and its deprecated alias {old!r}")
                warnings.warn(f"{fn.__name__}({old}=...) is deprecated: the argument is now called {new!r}",
                              DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)
        return inner  # type: ignore[return-value]
    return wrap


def check_num_items(num_items_in_batch: Any) -> float | torch.Tensor | None:
    """None, a positive number, or a positive scalar tensor (kept as a tensor to avoid a device sync)."""
    if num_items_in_batch is None:
        return None
    if isinstance(num_items_in_batch, torch.Tensor):
        if num_items_in_batch.numel() != 1:
            raise ValueError(
                f"num_items_in_batch must be a scalar, got a tensor of shape {tuple(num_items_in_batch.shape)}"
            )
        return num_items_in_batch.reshape(())
    v = _real("num_items_in_batch", num_items_in_batch)
    if v <= 0:
        raise ValueError(f"num_items_in_batch must be > 0, got {num_items_in_batch!r}")
    return v
