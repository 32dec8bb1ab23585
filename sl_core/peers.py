"""Peer losses for ablations, with the calling convention of `soft_label_cross_entropy`.

Every function takes logits [..., V], labels [...] (already shifted), digit_ids (the ten ids of
"0".."9", or [G, 10] groups of marked digit sets as in `soft_label_cross_entropy`: a digit target
is compared with the digits of its own group), ignore_index, reduction ("mean" | "sum" | "none") and num_items_in_batch.

Cross-entropy variants (hard, label smoothing, Gaussian) run through the same sparse-target
kernel as the soft labels (no vocabulary-sized target). The auxiliary number-token terms (NTL-WAS,
NTL-MSE, NTIL's EMD) only touch the rows whose label is a digit; their "mean" averages over those
digit rows, as in the papers' code. With num_items_in_batch (gradient accumulation) an auxiliary
mean is multiplied by (non-ignored tokens here / num_items_in_batch): summed over micro-batches
this is the token-weighted average of the micro-batch means (exact when every micro-batch has the
same share of digit tokens; Hugging Face only counts tokens, not digits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from sl_core import _validate as V
from sl_core._kernel import SparseTarget, compute_dtype, reduce_rows, sparse_cross_entropy
from sl_core.loss import digit_columns, soft_target
from sl_core.psi import psi_matrix

__all__ = [
    "hard_cross_entropy", "label_smoothing_cross_entropy", "gaussian_soft_cross_entropy",
    "ntl_was", "ntl_mse", "ntil_emd",
]

Ids = Sequence[int] | torch.Tensor


def _prepare(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, reduction: str,
             num_items_in_batch) -> tuple[int, float | torch.Tensor | None]:
    V.check_logits(logits)
    V.check_reduction(reduction)
    num_items = V.check_num_items(num_items_in_batch)
    V.check_labels(labels, logits.shape[:-1], logits.shape[-1], ignore_index)
    return logits.shape[-1], num_items


def hard_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids | None = None, *,
                       ignore_index: int = -100, reduction: str = "mean",
                       num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Plain (one-hot) cross-entropy, equal to `F.cross_entropy`; digit_ids is accepted and unused.

    Args:
        logits: [..., V]; labels: [...] already shifted. Returns a scalar or [...] for "none".

    Raises:
        ValueError: bad logits, labels, reduction, num_items_in_batch or digit_ids (named).

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from sl_core import hard_cross_entropy
        >>> _ = torch.manual_seed(0)
        >>> logits, labels = torch.randn(2, 5, 12), torch.tensor([[1, 2, 3, -100, 4], [5, 6, 7, 8, 9]])
        >>> torch.allclose(hard_cross_entropy(logits, labels), F.cross_entropy(logits.view(-1, 12), labels.view(-1)))
        True
    """
    vocab, num_items = _prepare(logits, labels, ignore_index, reduction, num_items_in_batch)
    if digit_ids is not None:
        V.check_digit_ids(digit_ids, vocab)
    t, valid = _onehot_target(labels, ignore_index, compute_dtype(logits.dtype))
    return reduce_rows(sparse_cross_entropy(logits, t), valid, labels.shape, reduction, num_items)


def label_smoothing_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids | None = None, *,
                                  smoothing: float = 0.1, ignore_index: int = -100, reduction: str = "mean",
                                  num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Uniform label smoothing over the whole vocabulary (Szegedy et al., CVPR 2016, "Rethinking the
    Inception Architecture"), as in `F.cross_entropy(label_smoothing=smoothing)`:
    q = (1 - smoothing) * onehot(y) + smoothing / V on every token, for every non-ignored target.

    Args:
        logits: [..., V]; labels: [...] already shifted; smoothing in [0, 1].

    Raises:
        ValueError: smoothing outside [0, 1], or bad logits, labels, reduction, num_items_in_batch.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from sl_core import label_smoothing_cross_entropy
        >>> _ = torch.manual_seed(0)
        >>> logits, labels = torch.randn(6, 12), torch.tensor([1, 2, 3, -100, 4, 5])
        >>> ours = label_smoothing_cross_entropy(logits, labels, smoothing=0.1)
        >>> torch.allclose(ours, F.cross_entropy(logits, labels, label_smoothing=0.1))
        True
    """
    vocab, num_items = _prepare(logits, labels, ignore_index, reduction, num_items_in_batch)
    eps = V.check_fraction("smoothing", smoothing)
    if digit_ids is not None:
        V.check_digit_ids(digit_ids, vocab)
    t, valid = _onehot_target(labels, ignore_index, compute_dtype(logits.dtype))
    if eps > 0:
        t.onehot = t.onehot * (1.0 - eps)
        t.uniform = torch.where(valid, eps, 0.0).to(t.onehot.dtype)
    return reduce_rows(sparse_cross_entropy(logits, t), valid, labels.shape, reduction, num_items)


def gaussian_soft_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids, *,
                                sigma: float = 1.0, ignore_index: int = -100, reduction: str = "mean",
                                num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian label smoothing on digit tokens, without a one-hot part: a digit target t gets
    q_k proportional to exp(-(k - t)^2 / (2 sigma^2)) over the ten digits; other targets use one-hot CE.
    The Gaussian-label-smoothing baseline of Zausinger et al., "Regress, Don't Guess" (ICML 2025),
    here averaged over all non-ignored tokens. sigma = 0 gives hard cross-entropy.

    Args:
        logits: [..., V]; labels: [...] already shifted; sigma >= 0 in digit units.

    Raises:
        ValueError: sigma < 0, digit_ids not ten ids (or [G, 10] groups) in [0, V), or bad logits,
            labels, reduction, num_items_in_batch.

    Example:
        >>> import torch
        >>> from sl_core import gaussian_soft_cross_entropy, hard_cross_entropy
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> _ = torch.manual_seed(0)
        >>> logits, labels = torch.randn(6, 12), torch.tensor([0, 2, 5, 11, -100, 7])
        >>> gaussian_soft_cross_entropy(logits, labels, digits, sigma=1.0).shape
        torch.Size([])
        >>> torch.allclose(gaussian_soft_cross_entropy(logits, labels, digits, sigma=0.0),
        ...                hard_cross_entropy(logits, labels))
        True
    """
    vocab, num_items = _prepare(logits, labels, ignore_index, reduction, num_items_in_batch)
    groups = V.check_digit_groups(digit_ids, vocab)
    sig = V.check_nonneg("sigma", sigma)
    cdt = compute_dtype(logits.dtype)
    cols, psi_m = digit_columns(groups, psi_matrix("gaussian", sig) if sig > 0 else torch.eye(10),
                                device=logits.device, dtype=cdt)
    t, valid = soft_target(labels, cols, psi_m, eta=1.0 if sig > 0 else 0.0, lam=1.0,
                           ignore_index=ignore_index, cdt=cdt)
    return reduce_rows(sparse_cross_entropy(logits, t), valid, labels.shape, reduction, num_items)


def ntl_was(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids, *, reweigh: bool = True,
            ignore_index: int = -100, reduction: str = "mean",
            num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Number Token Loss, Wasserstein variant (Zausinger et al., "Regress, Don't Guess", ICML 2025;
    `ntloss.NTLoss`): on each digit target t, sum_k |k - t| p_k with p the softmax over the ten digit
    logits. With reweigh (the `ntloss` default), the term becomes ntl * m + 1.01 * 9 * (1 - m), m being
    the full-vocabulary probability mass on the digits. Use as CE + weight * ntl_was.

    Args:
        logits: [..., V]; labels: [...] already shifted. "mean" averages over digit targets.

    Example:
        >>> import torch
        >>> from sl_core import ntl_was
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> logits = torch.zeros(3, 12)
        >>> _ = logits[:, digits[4]].fill_(20.0)  # every row predicts the digit 4
        >>> labels = torch.tensor([digits[7], digits[4], 0])  # targets: digit 7, digit 4, a non-digit token
        >>> [round(v, 3) for v in ntl_was(logits, labels, digits, reduction="none").tolist()]  # |4 - 7|, |4 - 4|
        [3.0, 0.0, 0.0]
        >>> ntl_was(logits, labels, digits).item()  # mean over the two digit targets
        1.5
    """
    return _number_token_term(logits, labels, digit_ids, "was", reweigh, ignore_index, reduction,
                              num_items_in_batch)


def ntl_mse(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids, *, reweigh: bool = True,
            ignore_index: int = -100, reduction: str = "mean",
            num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Number Token Loss, MSE variant (Zausinger et al., ICML 2025; `ntloss.NTLossDotProduct`): on each
    digit target t, (sum_k k p_k - t)^2 with p the softmax over the ten digit logits; reweigh as in
    `ntl_was` with maximal distance 81. Use as CE + weight * ntl_mse.

    Args:
        logits: [..., V]; labels: [...] already shifted. "mean" averages over digit targets.

    Example:
        >>> import torch
        >>> from sl_core import ntl_mse
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> logits = torch.zeros(3, 12)
        >>> _ = logits[:, digits[4]].fill_(20.0)  # every row predicts the digit 4
        >>> labels = torch.tensor([digits[7], digits[4], 0])  # targets: digit 7, digit 4, a non-digit token
        >>> [round(v, 3) for v in ntl_mse(logits, labels, digits, reduction="none").tolist()]  # (4 - 7)^2
        [9.0, 0.0, 0.0]
    """
    return _number_token_term(logits, labels, digit_ids, "mse", reweigh, ignore_index, reduction,
                              num_items_in_batch)


def ntil_emd(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids, *, digit_exp: float = 1.2,
             ignore_index: int = -100, reduction: str = "mean",
             num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """NTIL's token-level term (Fei et al., "Advancing Sequential Numerical Prediction in Autoregressive
    Models", ACL 2025): the earth mover's distance between the softmax over the ten digit logits and
    the one-hot digit target, EMD = sum_k |k - t| p_k, times the place weight digit_exp ** r, where r
    counts the digits after this one in its contiguous run of digit labels (0 for the last digit).
    "mean" averages over all digit targets of the batch (the reference code averages per sequence,
    then over sequences). NTIL's sequence-level terms are not included.

    Args:
        logits: [..., V]; labels: [...] already shifted; digit_exp > 0.

    Raises:
        ValueError: digit_exp <= 0, or bad logits, labels, digit_ids, reduction, num_items_in_batch.

    Example:
        The number "24" against a model that predicts 4 everywhere: the tens digit is off by 2 and
        weighs 1.2 ** 1, the units digit is right:

        >>> import torch
        >>> from sl_core import ntil_emd
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> logits = torch.zeros(1, 3, 12)
        >>> _ = logits[..., digits[4]].fill_(20.0)
        >>> labels = torch.tensor([[digits[2], digits[4], 0]])
        >>> [round(v, 3) for v in ntil_emd(logits, labels, digits, digit_exp=1.2, reduction="none")[0].tolist()]
        [2.4, 0.0, 0.0]
    """
    exp = V.check_positive("digit_exp", digit_exp)
    return _number_token_term(logits, labels, digit_ids, "emd", False, ignore_index, reduction,
                              num_items_in_batch, digit_exp=exp)


def _onehot_target(labels: torch.Tensor, ignore_index: int, cdt: torch.dtype) -> tuple[SparseTarget, torch.Tensor]:
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    w = valid.to(cdt)
    empty = torch.zeros(0, dtype=torch.long, device=flat.device)
    return SparseTarget(torch.where(valid, flat, torch.zeros_like(flat)), w.clone(), w, empty, empty,
                        torch.zeros(0, 0, dtype=cdt, device=flat.device)), valid


def _runs_after(is_digit: torch.Tensor) -> torch.Tensor:
    """For [..., T] bool: the number of digits after each digit in its contiguous run (last dim)."""
    d = is_digit.to(torch.int64)
    if d.dim() == 0:
        d = d.view(1)
    rc = d.flip(-1).cumsum(-1)
    after = torch.cummax(rc * (1 - d.flip(-1)), dim=-1).values
    return (rc - after - 1).flip(-1).clamp_min(0).view(is_digit.shape)


def _number_token_term(logits, labels, digit_ids, kind: str, reweigh: bool, ignore_index: int, reduction: str,
                       num_items_in_batch, digit_exp: float = 1.0) -> torch.Tensor:
    def term(z_d: torch.Tensor, td: torch.Tensor, after: torch.Tensor, full_rows) -> torch.Tensor:
        p = torch.softmax(z_d, dim=-1)
        digits = torch.arange(10, dtype=z_d.dtype, device=z_d.device)
        t = td.to(z_d.dtype)
        if kind == "mse":
            out = ((p * digits).sum(-1) - t) ** 2
            max_dist = 81.0
        else:
            out = (p * (digits.unsqueeze(0) - t.unsqueeze(1)).abs()).sum(-1)
            max_dist = 9.0
        if reweigh:
            # full-vocabulary probability mass on the digits: exp(lse(digit logits) - lse(row))
            mass = torch.exp(torch.logsumexp(z_d, -1) - torch.logsumexp(full_rows(), -1))
            out = out * mass + 1.01 * max_dist * (1.0 - mass)
        if kind == "emd" and digit_exp != 1.0:
            out = out * digit_exp ** after.to(z_d.dtype)
        return out
    return digit_row_term(logits, labels, digit_ids, term, ignore_index=ignore_index, reduction=reduction,
                          num_items_in_batch=num_items_in_batch)


DigitTerm = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[], torch.Tensor]], torch.Tensor]
"""term(z_d [M, 10], t [M] int64 target digit, after [M] int64 digits after it in its run,
full_rows() -> [M, V] those rows' logits) -> [M] per-row value, in the compute dtype of z_d."""


def digit_row_term(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids, term: DigitTerm, *,
                   ignore_index: int = -100, reduction: str = "mean",
                   num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """An auxiliary term evaluated on the rows whose label is a digit, reduced as the module docstring says.

    Each digit row gets its own group's ten logits (a "▁7" target sees "▁0".."▁9"), the target digit
    and its place in its contiguous run of digit labels along the last dimension.

    Args:
        logits: [..., V]; labels: [...] already shifted; digit_ids: ten ids or [G, 10] groups.
        term: see `DigitTerm`.

    Returns:
        Scalar (mean over digit rows, or sum), or [...] per-position values (0 off digit rows) for "none".
    """
    vocab, num_items = _prepare(logits, labels, ignore_index, reduction, num_items_in_batch)
    groups = V.check_digit_groups(digit_ids, vocab)
    cdt = compute_dtype(logits.dtype)
    dev = logits.device
    table = torch.tensor(groups, dtype=torch.long, device=dev)  # [G, 10]
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    digit_of = torch.full((vocab,), -1, dtype=torch.long, device=dev)
    digit_of[table.flatten()] = torch.arange(10, device=dev).repeat(len(groups))
    group_of = torch.zeros((vocab,), dtype=torch.long, device=dev)
    group_of[table.flatten()] = torch.arange(len(groups), device=dev).repeat_interleave(10)
    safe = torch.where(valid, flat, torch.zeros_like(flat))
    t = torch.where(valid, digit_of[safe], -1)
    is_d = t >= 0
    rows = is_d.nonzero().squeeze(1)
    lead = logits.shape[:-1]
    per_row = torch.zeros(flat.shape, dtype=cdt, device=dev)
    if rows.numel():
        index = torch.unravel_index(rows, lead) if len(lead) != 1 else (rows,)
        cols = table[group_of[safe[rows]]]  # [M, 10]: the digit group of each row's target
        z_d = logits[tuple(i.unsqueeze(1) for i in index) + (cols,)].to(cdt)  # [M, 10]
        after = _runs_after(is_d.view(lead)).reshape(-1)[rows]
        per_row = per_row.index_put((rows,), term(z_d, t[rows], after, lambda: logits[index].to(cdt)))
    return reduce_term_rows(per_row, is_d, valid, labels.shape, reduction, num_items)


def reduce_term_rows(per_row: torch.Tensor, is_row: torch.Tensor, valid: torch.Tensor, shape: torch.Size,
                     reduction: str, num_items: float | torch.Tensor | None) -> torch.Tensor:
    """Reduce an auxiliary term's values [N] (0 off its rows `is_row` [N]): "mean" over its rows, scaled
    by (non-ignored rows / num_items) when num_items is given (see the module docstring)."""
    if reduction == "none":
        return per_row.view(shape)
    total = per_row.sum()
    if reduction == "sum":
        return total
    mean = total / is_row.sum().clamp_min(1).to(per_row.dtype)
    if num_items is not None:
        local = valid.sum().to(per_row.dtype)
        mean = mean * local / (num_items.to(device=per_row.device, dtype=per_row.dtype)
                               if isinstance(num_items, torch.Tensor) else num_items)
    return mean
