"""Hugging Face drop-in: `transformers.Trainer(compute_loss_func=make_compute_loss_func(digit_ids, ...))`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from sl_core.digits import NumericTokens
from sl_core.families import IGNORE_INDEX, build_loss

__all__ = ["make_compute_loss_func", "shift_labels"]


def shift_labels(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """labels [..., T] -> [..., T] with shifted[..., i] = labels[..., i + 1] and ignore_index last.

    Same as transformers' ForCausalLMLoss: padding the labels instead of slicing the logits keeps the
    [..., T, V] logits untouched (no copy of the largest tensor of the step).

    Example:
        >>> import torch
        >>> from sl_core.hf import shift_labels
        >>> shift_labels(torch.tensor([[5, 6, 7, 8]])).tolist()
        [[6, 7, 8, -100]]
    """
    return torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]


def _logits_of(outputs: Any) -> torch.Tensor:
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, dict):
        logits = outputs.get("logits")
    if logits is None and isinstance(outputs, (tuple, list)) and outputs:
        logits = outputs[0]
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"outputs: expected a model output with .logits, got {type(outputs).__name__}")
    return logits


def make_compute_loss_func(
    digit_ids: Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | NumericTokens | None,
    family: str = "soft_label", **params: Any,
) -> Callable[..., torch.Tensor]:
    """A `compute_loss_func(outputs, labels, num_items_in_batch=None)` for `transformers.Trainer`.

    Args:
        digit_ids: what the family needs from the tokenizer: `sl_core.family_tokens(family, tokenizer)`
            (digit groups for digit families, NumericTokens for value_aware, None for hard /
            label_smoothing); ten digit ids also work for digit families.
        family: a loss family (`sl_core.families.LOSS_FAMILIES`), default the paper's soft labels.
        **params: the family's parameters, e.g. eta=0.08, lam=2.0, psi="triangular".

    The returned function takes the model outputs (any object with `.logits` [B, T, V]: causal LMs
    and image-text-to-text models alike) and the unshifted labels [B, T] the Trainer pops from the
    batch; it shifts them like the model's own loss (logits[..., i, :] predicts labels[..., i + 1])
    and divides by `num_items_in_batch` when the Trainer passes it (gradient accumulation), so
    accumulating micro-batches gives the loss and gradients of the full batch.

    Raises:
        ValueError: from `build_loss` (unknown family or parameter, unusable digit_ids) when built;
            when called, labels missing or not matching the logits' shape, or outputs without logits.

    Example:
        With a Trainer: `Trainer(model=model, args=args, train_dataset=ds, compute_loss_func=
        make_compute_loss_func(sl_core.family_tokens("soft_label", tokenizer), eta=0.1))`. Called
        directly on a model output and the unshifted labels:

        >>> import torch
        >>> from types import SimpleNamespace
        >>> from sl_core import build_loss, make_compute_loss_func
        >>> digits = list(range(2, 12))  # "0".."9" in a 12-token vocabulary
        >>> compute_loss = make_compute_loss_func(digits, "soft_label", eta=0.1, lam=2.0)
        >>> _ = torch.manual_seed(0)
        >>> outputs = SimpleNamespace(logits=torch.randn(2, 4, 12))  # what model(**batch) returns
        >>> labels = torch.tensor([[-100, 0, 5, 6], [-100, 1, 11, 2]])  # as in the batch, unshifted
        >>> loss = compute_loss(outputs, labels)
        >>> same = build_loss("soft_label", digits, eta=0.1, lam=2.0)(outputs.logits[:, :-1], labels[:, 1:])
        >>> torch.allclose(loss, same)
        True
    """
    loss_fn = build_loss(family, digit_ids, **params)

    def compute_loss_func(outputs: Any, labels: torch.Tensor | None,
                          num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("labels: compute_loss_func needs the batch's labels (the Trainer passes them "
                             "when the batch has a 'labels' key)")
        logits = _logits_of(outputs)
        if labels.shape != logits.shape[:-1]:
            raise ValueError(f"labels shape {tuple(labels.shape)} does not match logits shape "
                             f"{tuple(logits.shape)} without the vocabulary dimension")
        shifted = shift_labels(labels.to(logits.device))
        return loss_fn(logits, shifted, num_items_in_batch=num_items_in_batch)

    compute_loss_func.family = family  # type: ignore[attr-defined]
    compute_loss_func.params = dict(params)  # type: ignore[attr-defined]
    return compute_loss_func
