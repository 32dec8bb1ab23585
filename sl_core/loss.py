"""Soft-label cross-entropy on digit tokens (Wang et al., ICCV 2025), without a vocabulary-sized target.

For a target token that is one of the ten digit tokens, digit t, the target distribution is

    q_SL(t) = (1 - eta) * onehot(t) + eta * psi(. | t)      (psi over the ten digit ids)

and the token's loss is multiplied by lam; every other target token uses one-hot cross-entropy.
With N_r regular and N_n numeric target tokens,

    L = 1 / (N_r + N_n) * ( sum_regular CE(z, onehot(y)) + lam * sum_numeric CE(z, q_SL(y)) ).

`CE(z, q) = logsumexp(z) - q . z`, with q non-zero on at most eleven columns, so the cost is that of
hard cross-entropy: see `sl_core._kernel`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sl_core import _validate as V
from sl_core._kernel import SparseTarget, compute_dtype, reduce_rows, sparse_cross_entropy
from sl_core.backend import check_backend, resolve_backend
from sl_core.psi import psi_matrix, validate_psi_rows

__all__ = ["soft_label_cross_entropy", "place_factors", "soft_target", "digit_columns"]


def soft_label_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    digit_ids: Sequence[int] | torch.Tensor,
    *,
    eta: float,
    lam: float = 1.0,
    psi: str | torch.Tensor = "triangular",
    psi_param: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | float | torch.Tensor | None = None,
    place_exponent: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Soft-label cross-entropy: one-hot CE on regular tokens, `q_SL` targets weighted by lam on digits.

    Args:
        logits: [..., V] float32/float64/bfloat16/float16 (half precision accumulates in float32).
        labels: [...] int, ALREADY SHIFTED: labels[..., i] is the target of logits[..., i, :].
            Values in [0, V) or ignore_index.
        digit_ids: the ten token ids of the digits "0".."9", in that order; or [G, 10] groups of
            them (`sl_core.digit_token_groups`: bare "0".."9", then marked sets such as "▁0".."▁9").
            A digit target spreads its soft mass over its own group only.
        eta: soft mass in [0, 1]; eta = 0 and lam = 1 is exactly `F.cross_entropy`.
        lam: weight (>= 0) of the numeric tokens' loss.
        psi: a registered shape name (`sl_core.psi.available_psi()`) or an explicit [10, 10]
            matrix whose row t is psi(. | t).
        psi_param: the shape's parameter (> 0); None uses the shape's default.
        ignore_index: label value that contributes neither loss nor gradient.
        reduction: "mean" (sum / (N_r + N_n)), "sum", or "none" (per-token losses, shape [...]).
        num_items_in_batch: with reduction="mean", divide the sum by this instead of N_r + N_n
            (Hugging Face gradient accumulation passes the count of the whole optimizer step).
        place_exponent: place-aware soft labels (off when None or 0). Inside a contiguous run of
            digit labels along the last dimension, the digit at position j (0 = most significant)
            of a run of length L gets eta * ((L - j) / L) ** place_exponent: the most significant
            digit keeps eta, less significant digits get less soft mass.
        backend: "auto" (Triton kernels for CUDA float32/bfloat16/float16 logits when triton imports,
            else the torch path), "torch" or "triton" (see `sl_core.backend`). Same values and gradients.

    Returns:
        A float32 scalar (float64 for float64 logits), or [...] per-token losses for "none".
        Zero with a zero gradient when every label is ignored.

    Raises:
        ValueError: naming the argument (eta, lam, psi, psi_param, digit_ids, labels, reduction,
            num_items_in_batch, place_exponent).

    Example:
        Tokens 2..11 of a 12-token vocabulary are the digits "0".."9" (in practice
        `sl_core.digit_token_groups(tokenizer)`); a causal LM's logits[:, :-1] and labels[:, 1:]:

        >>> import torch
        >>> import torch.nn.functional as F
        >>> from sl_core import soft_label_cross_entropy
        >>> digits = list(range(2, 12))
        >>> _ = torch.manual_seed(0)
        >>> logits = torch.randn(2, 6, 12, requires_grad=True)
        >>> labels = torch.tensor([[0, 1, 6, 8, -100, -100], [1, 0, 1, 11, 2, 3]])
        >>> z, y = logits[:, :-1], labels[:, 1:]  # shift: position i predicts token i + 1
        >>> loss = soft_label_cross_entropy(z, y, digits, eta=0.1, lam=2.0)
        >>> loss.backward()
        >>> loss.dtype, logits.grad.shape
        (torch.float32, torch.Size([2, 6, 12]))
        >>> soft_label_cross_entropy(z, y, digits, eta=0.1, reduction="none").shape  # per token
        torch.Size([2, 5])
        >>> plain = soft_label_cross_entropy(z, y, digits, eta=0.0)  # eta = 0, lam = 1: hard CE
        >>> torch.allclose(plain, F.cross_entropy(z.reshape(-1, 12), y.reshape(-1)))
        True
    """
    V.check_logits(logits)
    vocab = logits.shape[-1]
    groups = V.check_digit_groups(digit_ids, vocab)
    eta_f, lam_f, num_items, place_exponent = V.check_soft_label_args(eta, lam, reduction, num_items_in_batch,
                                                                      place_exponent)
    V.check_labels(labels, logits.shape[:-1], vocab, ignore_index)
    engine = resolve_backend(check_backend(backend), logits.device, logits.dtype)
    psi_m = _resolve_psi(psi, psi_param)

    cdt = compute_dtype(logits.dtype)
    cols, psi_k = digit_columns(groups, psi_m, device=logits.device, dtype=cdt)
    target, valid = soft_target(labels, cols, psi_k, eta=eta_f, lam=lam_f,
                                ignore_index=ignore_index, cdt=cdt, place_exponent=place_exponent)
    return sparse_soft_ce(engine, logits, target, valid, labels.shape, reduction, num_items)


def sparse_soft_ce(engine: str, logits: torch.Tensor, target: SparseTarget, valid: torch.Tensor,
                   shape: torch.Size, reduction: str, num_items: float | torch.Tensor | None) -> torch.Tensor:
    """The reduced loss of logits [..., V] for a sparse target on the resolved engine ("torch"/"triton")."""
    if engine == "triton":
        from sl_core._triton import triton_soft_ce

        return triton_soft_ce(logits, target, valid, shape, reduction, num_items)
    return reduce_rows(sparse_cross_entropy(logits, target), valid, shape, reduction, num_items)


def digit_columns(groups: list[list[int]], psi_m: torch.Tensor, *, device: torch.device | str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The soft columns [10 G] and the block-diagonal psi [10 G, 10 G] for G digit-token groups.

    Args:
        groups: G checked groups of ten ids (`_validate.check_digit_groups`).
        psi_m: [10, 10] row t = psi(. | t).
    """
    cols = torch.tensor([i for g in groups for i in g], dtype=torch.long, device=device)
    psi_k = psi_m.to(device=device, dtype=dtype)
    if len(groups) > 1:
        psi_k = torch.block_diag(*([psi_k] * len(groups)))
    return cols, psi_k


def _resolve_psi(psi: str | torch.Tensor, psi_param: float | None) -> torch.Tensor:
    if isinstance(psi, torch.Tensor):
        if psi_param is not None:
            raise ValueError("psi_param must be None when psi is an explicit matrix")
        m = validate_psi_rows(psi, what="psi")
        if m.shape != (10, 10):
            raise ValueError(f"psi must be a [10, 10] matrix, got {tuple(m.shape)}")
        return m
    return psi_matrix(psi, psi_param)


def label_columns(labels: torch.Tensor, cols: torch.Tensor, ignore_index: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which rows' labels are among the columns `cols`, and which column each is.

    Args:
        labels: [...] int64 token ids (shifted), `ignore_index` where nothing is supervised.
        cols: [K] int64 distinct token ids (any order).

    Returns:
        safe [N] (labels flattened, 0 where ignored: a valid index), valid [N] bool (not ignored),
        hit [N] bool (valid and the label is in `cols`), which [N] int64 (index into `cols` of the
        label; meaningful where `hit`).
        One sort of the K columns and a binary search per row: no [N, K] comparison.
    """
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    safe = torch.where(valid, flat, torch.zeros_like(flat))
    sorted_cols, order = torch.sort(cols)
    pos = torch.searchsorted(sorted_cols, safe).clamp_max(cols.numel() - 1)
    return safe, valid, valid & (sorted_cols[pos] == safe), order[pos]


def soft_target(labels: torch.Tensor, cols: torch.Tensor, psi_m: torch.Tensor, *, eta: float, lam: float,
                ignore_index: int, cdt: torch.dtype, place_exponent: float | None = None,
                ) -> tuple[SparseTarget, torch.Tensor]:
    """The sparse target of soft labelling for labels [...] and the non-ignored mask [N].

    Args:
        labels: [...] int, shifted, validated.
        cols: [K] the soft columns (ten digit ids, or numeric token ids in value-aware mode).
        psi_m: [K, K] row k is the soft distribution over `cols` for a label equal to cols[k].
        eta, lam: as in `soft_label_cross_entropy`; eta may be scaled per token by place_exponent.
    """
    safe, valid, is_soft, which = label_columns(labels, cols, ignore_index)

    if place_exponent and eta > 0:
        eta_rows = eta * place_factors(is_soft.view(labels.shape), place_exponent).reshape(-1).to(cdt)
    else:
        eta_rows = torch.full(safe.shape, eta, dtype=cdt, device=safe.device)
    one = torch.ones((), dtype=cdt, device=safe.device)
    zero = torch.zeros((), dtype=cdt, device=safe.device)
    onehot = torch.where(is_soft, 1.0 - eta_rows, torch.where(valid, one, zero))
    weight = torch.where(is_soft, torch.full_like(onehot, lam), torch.where(valid, one, zero))
    if eta > 0:
        soft_rows = is_soft.nonzero().squeeze(1)
        soft_vals = eta_rows[soft_rows].unsqueeze(1) * psi_m[which[soft_rows]]
    else:  # eta = 0: the digits' targets are one-hot, no soft columns at all
        soft_rows = torch.zeros(0, dtype=torch.long, device=safe.device)
        soft_vals = torch.zeros(0, cols.numel(), dtype=cdt, device=safe.device)
    return SparseTarget(safe, onehot, weight, soft_rows, cols, soft_vals), valid


def place_factors(is_digit: torch.Tensor, exponent: float) -> torch.Tensor:
    """Place-value factors ((L - j) / L) ** exponent for digits inside contiguous runs along the last dim.

    Args:
        is_digit: [..., T] bool, True where the (shifted) label is a digit token.
        exponent: >= 0; 0 gives 1 everywhere.

    Returns:
        [..., T] float64: for the digit at position j (0 = most significant) of a run of length L,
        ((L - j) / L) ** exponent, so the first digit of a number gets 1; 0 at non-digit positions.

    Example:
        "x = 375": a run of three digits gets 1, 2/3 and 1/3 with exponent 1:

        >>> import torch
        >>> from sl_core import place_factors
        >>> is_digit = torch.tensor([False, False, True, True, True])
        >>> [round(f, 3) for f in place_factors(is_digit, 1.0).tolist()]
        [0.0, 0.0, 1.0, 0.667, 0.333]
    """
    d = is_digit.to(torch.int64)
    if d.dim() == 0:
        d = d.view(1)
    c = d.cumsum(-1)
    # c at the last non-digit position before each position (0 if none): cummax of c * (1 - d)
    before = torch.cummax(c * (1 - d), dim=-1).values
    j = c - before - 1  # index inside the run, 0 = first (most significant) digit
    rc = d.flip(-1).cumsum(-1)
    after = torch.cummax(rc * (1 - d.flip(-1)), dim=-1).values
    j_rev = (rc - after - 1).flip(-1)  # index from the end of the run
    length = (j + j_rev + 1).clamp_min(1)
    f = ((length - j).to(torch.float64) / length.to(torch.float64)).pow(float(exponent))
    return torch.where(d.bool(), f, torch.zeros_like(f)).view(is_digit.shape)
