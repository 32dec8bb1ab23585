"""Fused lm_head + soft-label cross-entropy, chunked over tokens so the [N, V] logits never exist whole.

For reduction "mean"/"sum" the gradients are computed chunk by chunk during forward (the approach
of Liger-Kernel's fused linear cross-entropy): per chunk of C tokens, logits = hidden_c @ W^T + b,
their softmax-minus-target gradient overwrites the chunk in place, and grad_hidden_c,
grad_W += g^T hidden_c and grad_b += sum(g) are accumulated. Backward then only scales the saved
gradients by the incoming scalar gradient. For reduction "none" (per-token losses, arbitrary
upstream gradients) forward keeps only logsumexp and backward recomputes each chunk's logits.
Peak extra memory: one [C, V] chunk plus the [V, H] weight gradient.

Per chunk, the loss and gradient of the logits come from a row engine (`sl_core.backend`): the torch
path of `sl_core._kernel`, or with backend="triton" one Triton kernel that streams each row once for
the loss and writes the gradient over the chunk's logits in the same launch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from sl_core import _validate as V
from sl_core._kernel import SparseTarget, compute_dtype, target_mass
from sl_core.backend import check_backend, resolve_backend, rows_engine
from sl_core.loss import _resolve_psi, digit_columns, soft_target

__all__ = ["fused_linear_soft_label_cross_entropy"]

CHUNK_ELEMS = 1 << 24
"""Default logits per token chunk on CPU (64 MiB of float32); chunks hold at least 16 tokens."""
CHUNK_ELEMS_ACCEL = 1 << 26
"""Default logits per token chunk on an accelerator: larger chunks keep the matrix products efficient."""


def default_chunk_size(num_tokens: int, vocab: int, device: torch.device | None = None) -> int:
    elems = CHUNK_ELEMS if device is None or device.type == "cpu" else CHUNK_ELEMS_ACCEL
    return max(1, min(num_tokens, max(16, elems // max(1, vocab))))


def triton_chunk_size(num_tokens: int, vocab: int, hidden: int) -> int:
    """Tokens per chunk on the Triton engine: a [C, V] chunk about the size of the [N, H] hidden states
    (Liger-Kernel's choice: C = next power of two of N / ceil(V / H)), at least 16."""
    c = -(-num_tokens // max(1, -(-vocab // max(1, hidden))))
    return max(1, min(num_tokens, max(16, 1 << max(0, (c - 1).bit_length()))))


def _add_weight_grad(gw: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> None:
    """gw [V, H] += g^T h for a chunk's logits gradient g [C, V] and hidden states h [C, H]."""
    if g.dtype == gw.dtype:
        gw.addmm_(g.t(), h)
    else:  # half-precision chunk, float32 accumulator
        gw.addmm_(g.t().to(gw.dtype), h.to(gw.dtype))


def fused_linear_soft_label_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    digit_ids: Sequence[int] | torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    eta: float,
    lam: float = 1.0,
    psi: str | torch.Tensor = "triangular",
    psi_param: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | float | torch.Tensor | None = None,
    place_exponent: float | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """`soft_label_cross_entropy(hidden @ weight.T + bias, labels, ...)` without materialising the logits.

    Args:
        hidden: [N, H] (or [..., H]) final hidden states, already aligned with the shifted labels.
        weight: [V, H] the lm_head weight (same dtype as hidden).
        labels: [N] (or [...]) int, already shifted; values in [0, V) or ignore_index.
        digit_ids: the ten token ids of "0".."9", in order, or [G, 10] groups (as in
            `soft_label_cross_entropy`).
        bias: optional [V] lm_head bias.
        eta, lam, psi, psi_param, ignore_index, reduction, num_items_in_batch, place_exponent:
            as in `sl_core.soft_label_cross_entropy` (place-aware runs follow the last dim of labels).
        chunk_size: tokens per chunk (default: about 2**24 / V on CPU, 2**26 / V on an accelerator,
            at least 16; on the Triton engine a chunk about the size of the hidden states,
            `triton_chunk_size`).
        backend: "auto" (Triton kernels on CUDA when triton imports, else torch), "torch" or "triton"
            (see `sl_core.backend`). The Triton engine accumulates the weight gradient in the weight's
            dtype (as Liger-Kernel does); the torch engine in float32.

    Returns:
        Scalar loss (float32, float64 for float64 inputs) or [...] per-token losses for "none".

    Raises:
        ValueError: naming the argument (hidden, weight, bias, labels, chunk_size, and those of
            `soft_label_cross_entropy`).

    Note: for "mean"/"sum" the gradients are precomputed in forward and backward consumes them, so
    calling backward twice through the same graph raises a RuntimeError.

    Example:
        Equal to the unfused loss on the materialised logits, with equal gradients:

        >>> import torch
        >>> from sl_core import fused_linear_soft_label_cross_entropy, soft_label_cross_entropy
        >>> digits = list(range(2, 12))
        >>> _ = torch.manual_seed(0)
        >>> hidden = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)  # [N, H]
        >>> weight = torch.randn(12, 8, dtype=torch.float64, requires_grad=True)  # lm_head [V, H]
        >>> labels = torch.tensor([0, 5, 6, 11, -100, 1])
        >>> fused = fused_linear_soft_label_cross_entropy(hidden, weight, labels, digits, eta=0.1, chunk_size=4)
        >>> fused.backward()
        >>> ref = soft_label_cross_entropy(hidden @ weight.T, labels, digits, eta=0.1)
        >>> g_hidden, g_weight = torch.autograd.grad(ref, (hidden, weight))
        >>> torch.allclose(fused, ref), torch.allclose(hidden.grad, g_hidden), torch.allclose(weight.grad, g_weight)
        (True, True, True)
    """
    V.check_logits(hidden, "hidden")
    V.check_logits(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, H], got shape {tuple(weight.shape)}")
    vocab, h = weight.shape
    if hidden.shape[-1] != h:
        raise ValueError(f"hidden's last dim ({hidden.shape[-1]}) must equal weight's H ({h})")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden dtype {hidden.dtype} must equal weight dtype {weight.dtype}")
    if bias is not None:
        V.check_logits(bias, "bias")
        if tuple(bias.shape) != (vocab,):
            raise ValueError(f"bias must be [V] = [{vocab}], got shape {tuple(bias.shape)}")
    groups = V.check_digit_groups(digit_ids, vocab)
    eta_f, lam_f, num_items, place_exponent = V.check_soft_label_args(eta, lam, reduction, num_items_in_batch,
                                                                      place_exponent)
    V.check_labels(labels, hidden.shape[:-1], vocab, ignore_index, logits_name="hidden @ weight.T")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    engine = resolve_backend(check_backend(backend), weight.device, weight.dtype)
    psi_m = _resolve_psi(psi, psi_param)

    cdt = compute_dtype(weight.dtype)
    cols, psi_k = digit_columns(groups, psi_m, device=weight.device, dtype=cdt)
    target, valid = soft_target(labels, cols, psi_k, eta=eta_f, lam=lam_f,
                                ignore_index=ignore_index, cdt=cdt, place_exponent=place_exponent)
    h2 = hidden.reshape(-1, h)
    chunk = chunk_size or (triton_chunk_size(h2.shape[0], vocab, h) if engine == "triton"
                           else default_chunk_size(h2.shape[0], vocab, weight.device))
    args = (target.labels, target.onehot, target.weight, target.soft_rows, target.soft_cols, target.soft_vals)
    if reduction == "none":
        rows = _FusedRecompute.apply(h2, weight, bias, chunk, engine, *args)
        return rows.view(labels.shape)
    if reduction == "sum":
        denom: float | torch.Tensor = 1.0
    elif num_items is not None:
        denom = num_items.to(device=weight.device, dtype=cdt).clamp_min(1e-12) \
            if isinstance(num_items, torch.Tensor) else float(num_items)
    else:
        denom = valid.sum().clamp_min(1).to(cdt)
    return _FusedEager.apply(h2, weight, bias, chunk, engine, target.weight / denom, *args)


def _chunk_logits(hc: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.addmm(bias, hc, weight.t()) if bias is not None else torch.mm(hc, weight.t())


def _active_chunks(active: torch.Tensor, n: int, chunk: int) -> list[tuple[int, int, bool]]:
    starts = list(range(0, n, chunk))
    cs = torch.nn.functional.pad(active.to(torch.int64).cumsum(0), (1, 0))
    ends = [min(s + chunk, n) for s in starts]
    flags = (cs[torch.tensor(ends)] - cs[torch.tensor(starts)] > 0).tolist() if starts else []
    return list(zip(starts, ends, flags))


def _weight_grad_dtype(engine: str, weight: torch.Tensor, cdt: torch.dtype) -> torch.dtype:
    """The weight gradient's accumulator: float32 on the torch engine; the weight's own dtype on the
    Triton engine (as Liger-Kernel: half the memory, bf16/fp16 tensor-core products, rounding per chunk)."""
    return weight.dtype if engine == "triton" else cdt


class _FusedEager(torch.autograd.Function):
    """Scalar loss; gradients computed in forward, scaled in backward."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, chunk, engine, scale, labels, onehot, row_w, soft_rows, soft_cols,
                soft_vals):
        t = SparseTarget(labels, onehot, row_w, soft_rows, soft_cols, soft_vals)
        eng = rows_engine(engine, t)
        cdt = onehot.dtype
        n, h = hidden.shape
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], \
            bias is not None and ctx.needs_input_grad[2]
        grads = need_h or need_w or need_b
        gh = torch.zeros_like(hidden) if need_h else None
        gw = torch.zeros(weight.shape, dtype=_weight_grad_dtype(engine, weight, cdt), device=weight.device) \
            if need_w else None
        gb = torch.zeros(weight.shape[0], dtype=cdt, device=weight.device) if need_b else None
        mass = target_mass(t)
        total = torch.zeros((), dtype=cdt, device=weight.device)
        for s, e, on in _active_chunks(row_w != 0, n, chunk):
            if not on:
                continue
            hc = hidden[s:e]
            zc = _chunk_logits(hc, weight, bias)
            sc = scale[s:e]
            if not grads:
                ce, _ = eng.ce(zc, s, mass[s:e])
                total += torch.where(sc != 0, sc * ce, torch.zeros_like(ce)).sum()
                continue
            ce = eng.ce_grad_(zc, s, mass[s:e], sc)  # zc now holds dLoss/dlogits of the chunk
            total += torch.where(sc != 0, sc * ce, torch.zeros_like(ce)).sum()
            if need_h:
                torch.mm(zc, weight, out=gh[s:e])
            if need_w:
                _add_weight_grad(gw, zc, hc)
            if need_b:
                gb += zc.sum(0, dtype=cdt)
            del zc
        ctx.grads = (gh, gw, gb)
        ctx.dtypes = (hidden.dtype, weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        if ctx.grads is None:
            raise RuntimeError("fused_linear_soft_label_cross_entropy: backward called twice on the same graph "
                               "(its gradients are precomputed in forward and consumed once)")
        gh, gw, gb = ctx.grads
        ctx.grads = None
        if not bool(grad_out == 1):
            go = grad_out.to(gw.dtype if gw is not None else (gb.dtype if gb is not None else gh.dtype))
            for g in (gh, gw, gb):
                if g is not None:
                    g.mul_(go.to(g.dtype))
        hd, wd, bd = ctx.dtypes
        gw = gw.to(wd) if gw is not None else None
        gb = gb.to(bd) if gb is not None else None
        return gh, gw, gb, None, None, None, None, None, None, None, None, None


class _FusedRecompute(torch.autograd.Function):
    """Per-token losses; backward recomputes each chunk's logits (any upstream gradient)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, chunk, engine, labels, onehot, row_w, soft_rows, soft_cols, soft_vals):
        t = SparseTarget(labels, onehot, row_w, soft_rows, soft_cols, soft_vals)
        eng = rows_engine(engine, t)
        cdt = onehot.dtype
        n = hidden.shape[0]
        mass = target_mass(t)
        rows = torch.zeros(n, dtype=cdt, device=hidden.device)
        lse = torch.zeros(n, dtype=cdt, device=hidden.device)
        with torch.no_grad():
            for s, e, on in _active_chunks(row_w != 0, n, chunk):
                if not on:
                    continue
                ce, lse[s:e] = eng.ce(_chunk_logits(hidden[s:e], weight, bias), s, mass[s:e])
                rows[s:e] = ce
        rows = torch.where(row_w != 0, row_w * rows, torch.zeros_like(rows))
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), lse, mass,
                              labels, onehot, row_w, soft_rows, soft_cols, soft_vals)
        ctx.has_bias = bias is not None
        ctx.chunk = chunk
        ctx.eng = eng
        ctx.engine = engine
        return rows

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows):
        hidden, weight, bias, lse, mass, labels, onehot, row_w, soft_rows, soft_cols, soft_vals = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        cdt = onehot.dtype
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        scale = row_w * grad_rows.to(cdt)
        gh = torch.zeros_like(hidden) if need_h else None
        gw = torch.zeros(weight.shape, dtype=_weight_grad_dtype(ctx.engine, weight, cdt), device=weight.device) \
            if need_w else None
        gb = torch.zeros(weight.shape[0], dtype=cdt, device=weight.device) if need_b else None
        for s, e, on in _active_chunks(scale != 0, hidden.shape[0], ctx.chunk):
            if not on:
                continue
            hc = hidden[s:e]
            zc = _chunk_logits(hc, weight, bias)
            ctx.eng.grad(zc, zc, lse[s:e], scale[s:e], s, mass[s:e])
            if need_h:
                torch.mm(zc, weight, out=gh[s:e])
            if need_w:
                _add_weight_grad(gw, zc, hc)
            if need_b:
                gb += zc.sum(0, dtype=cdt)
        gw = gw.to(weight.dtype) if gw is not None else None
        gb = gb.to(bias.dtype) if gb is not None else None
        return gh, gw, gb, None, None, None, None, None, None, None, None
