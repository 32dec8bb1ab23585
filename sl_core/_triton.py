"""Triton kernels for the sparse-target cross-entropy (the `backend="triton"` engine of sl_core).

One program per row i of logits z [N, V] with the sparse target of `sl_core._kernel.SparseTarget`
(label column, one-hot mass, optional soft mass on K shared columns: the ten digits, or the numeric
tokens in value-aware mode). In the style of Liger-Kernel's cross-entropy kernel:

1. stream the row once in BLOCK_V chunks with an online logsumexp (running max m, rescaled sum d),
   then gather the label logit and the K soft-column logits:
   ce_i = onehot_i (lse_i - z_iy) + sum_k q_ik (lse_i - z_ik),  mass_i = onehot_i + sum_k q_ik;
2. when a gradient is wanted, stream the row again and write
   g_i = s_i (mass_i softmax(z_i) - q_i)
   (s_i = the row's weight times the normalisation, or times the upstream gradient) into the
   gradient buffer, which may be the logits buffer itself (the fused path's chunk). The K soft
   columns are computed from the logits during step 1 into a small [M, K] scratch and written
   after a barrier, so no value is rounded twice.

Everything accumulates in float32 (float32 / bfloat16 / float16 logits). Rows with weight 0 (ignored
labels, lam = 0 on numeric rows) cost one store per chunk: ce 0, gradient 0.
Imported only when a Triton backend is used (see `sl_core.backend`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from sl_core._kernel import SparseTarget

BLOCK_V_MAX = 32768
"""Logits per program per loop iteration (Liger-Kernel's choice: 2**15; tests shrink it)."""
BLOCK_K_MAX = 1024


@triton.jit
def _soft_ce_kernel(
    X, x_stride_outer, x_stride_inner, rows_inner,
    G, g_stride,
    LABELS, ONEHOT, WEIGHT, GSCALE, SOFT_IDX, SOFT_COLS, SOFT_VALS, SOFT_GRAD, K,
    CE, LSE, V,
    HAS_SOFT: tl.constexpr, WANT_CE: tl.constexpr, WANT_GRAD: tl.constexpr, LSE_GIVEN: tl.constexpr,
    IN_PLACE: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """Row r lives at X + (r // rows_inner) * x_stride_outer + (r % rows_inner) * x_stride_inner
    (unit stride along V); its gradient at G + r * g_stride."""
    r = tl.program_id(0).to(tl.int64)
    x_row = X + (r // rows_inner) * x_stride_outer + (r % rows_inner) * x_stride_inner
    g_row = G + r * g_stride
    w = tl.load(WEIGHT + r)
    if w == 0:
        if WANT_CE:
            tl.store(CE + r, 0.0)
        if not LSE_GIVEN:
            tl.store(LSE + r, 0.0)
        if WANT_GRAD:
            for start in range(0, V, BLOCK_V):
                cols = start + tl.arange(0, BLOCK_V)
                tl.store(g_row + cols, tl.zeros([BLOCK_V], dtype=G.dtype.element_ty), mask=cols < V)
        return

    label = tl.load(LABELS + r)
    onehot = tl.load(ONEHOT + r).to(tl.float32)
    x_label = tl.load(x_row + label).to(tl.float32)

    if LSE_GIVEN:
        lse = tl.load(LSE + r).to(tl.float32)
    else:
        m = float("-inf")
        d = 0.0
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            x = tl.load(x_row + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, 0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
            m = m_new
        lse = m + tl.log(d)
        tl.store(LSE + r, lse)

    ce = onehot * (lse - x_label)
    mass = onehot
    if HAS_SOFT:
        sidx = tl.load(SOFT_IDX + r)
        k_row = tl.where(sidx >= 0, K, 0)  # soft columns of this row: K, or none
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            km = kk < k_row
            mass += tl.sum(tl.load(SOFT_VALS + sidx * K + kk, mask=km, other=0.0).to(tl.float32), 0)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            km = kk < k_row
            kcol = tl.load(SOFT_COLS + kk, mask=km, other=0)
            q = tl.load(SOFT_VALS + sidx * K + kk, mask=km, other=0.0).to(tl.float32)
            xk = tl.load(x_row + kcol, mask=km, other=0.0).to(tl.float32)
            ce += tl.sum(q * (lse - xk), 0)
            if WANT_GRAD:
                gs = tl.load(GSCALE + r).to(tl.float32)
                gk = gs * (mass * tl.exp(xk - lse) - q - tl.where(kcol == label, onehot, 0.0))
                tl.store(SOFT_GRAD + sidx * K + kk, gk, mask=km)
    if WANT_CE:
        tl.store(CE + r, ce)

    if WANT_GRAD:
        gs = tl.load(GSCALE + r).to(tl.float32)
        a = gs * mass
        b = gs * onehot
        if IN_PLACE:
            tl.debug_barrier()  # every gather of this row's logits happened before they are overwritten
        for start in range(0, V, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            x = tl.load(x_row + cols, mask=cols < V, other=0.0).to(tl.float32)
            g = a * tl.exp(x - lse)
            g = tl.where(cols == label, g - b, g)
            tl.store(g_row + cols, g.to(G.dtype.element_ty), mask=cols < V)
        if HAS_SOFT:
            tl.debug_barrier()  # the soft columns' final values overwrite what the loop above wrote
            for k0 in range(0, K, BLOCK_K):
                kk = k0 + tl.arange(0, BLOCK_K)
                km = kk < k_row
                kcol = tl.load(SOFT_COLS + kk, mask=km, other=0)
                gk = tl.load(SOFT_GRAD + sidx * K + kk, mask=km, other=0.0)
                tl.store(g_row + kcol, gk.to(G.dtype.element_ty), mask=km)


def _row_layout(z: torch.Tensor) -> tuple[torch.Tensor, int, int, int]:
    """(tensor, stride_outer, stride_inner, rows_inner) addressing the rows of z [..., V] in flat order.

    Flattenable logits are one run of rows; a 3D view such as `logits[:, :-1]` keeps its two strides;
    anything else (or a non-unit stride along V) is copied to contiguous memory first.
    """
    v = z.shape[-1]
    if z.stride(-1) != 1 and v > 1:
        z = z.contiguous()
    try:
        z2 = z.view(-1, v)
        return z, 0, (z2.stride(0) if z2.shape[0] > 1 else v), max(1, z2.shape[0])
    except RuntimeError:
        pass
    if z.dim() == 3:
        return z, z.stride(0), z.stride(1), z.shape[1]
    z = z.contiguous()
    return z, 0, v, max(1, z.numel() // max(1, v))


def _launch_cfg(v: int, k: int) -> tuple[int, int, int]:
    block_v = min(BLOCK_V_MAX, triton.next_power_of_2(max(v, 16)))
    block_k = min(BLOCK_K_MAX, triton.next_power_of_2(max(k, 16)))
    warps = 32 if block_v >= 32768 else 16 if block_v >= 8192 else 8 if block_v >= 2048 else 4
    return block_v, block_k, warps


class TritonRows:
    """The Triton engine over the rows of one sparse target (same interface as `_kernel.TorchRows`).

    Args:
        t: the target of all N flattened rows; float32 target values, int64 labels and columns.
    """

    def __init__(self, t: SparseTarget) -> None:
        if t.uniform is not None:
            raise ValueError("the Triton engine takes no vocabulary-wide (uniform) target mass")
        n = t.labels.numel()
        dev = t.labels.device
        self.t = t
        self.labels = t.labels.contiguous()
        self.onehot = t.onehot.to(torch.float32).contiguous()
        self.weight = t.weight.to(torch.float32).contiguous()
        self.has_soft = bool(t.soft_rows.numel())
        self.k = t.soft_cols.numel()
        self.soft_cols = t.soft_cols.to(torch.int64).contiguous()
        self.soft_vals = t.soft_vals.to(torch.float32).contiguous()
        self.soft_idx = torch.full((n,), -1, dtype=torch.int64, device=dev)
        if self.has_soft:
            self.soft_idx[t.soft_rows] = torch.arange(t.soft_rows.numel(), device=dev)
        self.soft_grad = torch.empty_like(self.soft_vals) if self.has_soft else self.soft_vals

    def _run(self, z: torch.Tensor, row0: int, *, grad_out: torch.Tensor | None, gscale: torch.Tensor | None,
             lse: torch.Tensor | None, want_ce: bool) -> tuple[torch.Tensor, torch.Tensor]:
        zt, s_outer, s_inner, rows_inner = _row_layout(z)
        n, v = zt.numel() // max(1, z.shape[-1]), z.shape[-1]
        dev = z.device
        ce = torch.empty(n if want_ce else 1, dtype=torch.float32, device=dev)
        lse_given = lse is not None
        lse_t = lse if lse_given else torch.empty(n, dtype=torch.float32, device=dev)
        want_grad = grad_out is not None
        g = grad_out if want_grad else zt
        if n == 0:
            return ce[:0], lse_t
        sl = slice(row0, row0 + n)
        block_v, block_k, warps = _launch_cfg(v, self.k)
        _soft_ce_kernel[(n,)](
            zt, s_outer, s_inner, rows_inner,
            g, v,
            self.labels[sl], self.onehot[sl], self.weight[sl],
            gscale if gscale is not None else self.weight[sl],
            self.soft_idx[sl], self.soft_cols, self.soft_vals, self.soft_grad, self.k,
            ce, lse_t, v,
            HAS_SOFT=self.has_soft, WANT_CE=want_ce, WANT_GRAD=want_grad, LSE_GIVEN=lse_given,
            IN_PLACE=want_grad and g.data_ptr() == zt.data_ptr(),
            BLOCK_V=block_v, BLOCK_K=block_k, num_warps=warps,
        )
        return ce, lse_t

    def ce(self, z: torch.Tensor, row0: int, mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ce [n], lse [n]) of the rows [row0, row0 + n) held in z [..., V] (unweighted; 0 where weight is 0)."""
        return self._run(z, row0, grad_out=None, gscale=None, lse=None, want_ce=True)

    def ce_grad_(self, z: torch.Tensor, row0: int, mass: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """ce [n] of a contiguous 2D block z [n, V], which is overwritten with scale_i (mass_i softmax - q_i)."""
        ce, _ = self._run(z, row0, grad_out=z, gscale=scale.to(torch.float32).contiguous(), lse=None,
                          want_ce=True)
        return ce

    def ce_grad(self, z: torch.Tensor, row0: int, out: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """ce [n] of z [..., V]; writes scale_i (mass_i softmax - q_i) into the contiguous out [n, V]."""
        ce, _ = self._run(z, row0, grad_out=out, gscale=scale.to(torch.float32).contiguous(), lse=None,
                          want_ce=True)
        return ce

    def grad(self, z: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor, row0: int,
             mass: torch.Tensor) -> None:
        """Write scale_i (mass_i softmax(z_i) - q_i) into the contiguous out [n, V] (may be z) from saved lse."""
        self._run(z, row0, grad_out=out, gscale=scale.to(torch.float32).contiguous(),
                  lse=lse.to(torch.float32).contiguous(), want_ce=False)


class TritonSoftCE(torch.autograd.Function):
    """Reduced soft-label CE of logits [..., V] with its gradient computed in the forward pass.

    reduction "mean"/"sum": forward writes ce and the gradient (scaled by weight / denom) in one
    kernel; backward only scales it by the incoming scalar gradient (Liger-Kernel's scheme, into a
    fresh buffer rather than the caller's logits). reduction "none": forward keeps logsumexp [N],
    backward runs the gradient pass with the per-row upstream gradients.
    """

    @staticmethod
    def forward(ctx, logits, denom, reduction, labels, onehot, weight, soft_rows, soft_cols, soft_vals):
        eng = TritonRows(SparseTarget(labels, onehot, weight, soft_rows, soft_cols, soft_vals))
        ctx.reduction = reduction
        if reduction == "none":
            ce, lse = eng.ce(logits, 0, onehot)
            ctx.eng = eng
            ctx.save_for_backward(logits, lse)
            return weight * ce
        scale = eng.weight / denom
        if ctx.needs_input_grad[0]:
            grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
            ce = eng.ce_grad(logits, 0, grad.view(-1, logits.shape[-1]), scale)
            ctx.grad = grad
        else:
            ce, _ = eng.ce(logits, 0, onehot)
            ctx.grad = None
        return (scale * ce).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        nones = (None,) * 8
        if ctx.reduction == "none":
            logits, lse = ctx.saved_tensors
            eng = ctx.eng
            grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
            eng.grad(logits, grad.view(-1, logits.shape[-1]), lse, eng.weight * grad_out.to(torch.float32), 0,
                     eng.onehot)
            return (grad,) + nones
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            raise RuntimeError("soft-label CE (triton): backward called twice on the same graph "
                               "(its gradient is computed in forward and consumed once)")
        if not bool(grad_out == 1):
            grad.mul_(grad_out.to(grad.dtype))
        return (grad,) + nones


def triton_soft_ce(logits: torch.Tensor, t: SparseTarget, valid: torch.Tensor, shape: torch.Size,
                   reduction: str, num_items: float | torch.Tensor | None) -> torch.Tensor:
    """The reduced loss (as `_kernel.reduce_rows` defines it) of logits [..., V] for target t, on Triton."""
    if reduction == "none":
        rows = TritonSoftCE.apply(logits, None, reduction, t.labels, t.onehot, t.weight, t.soft_rows,
                                  t.soft_cols, t.soft_vals)
        return rows.view(shape)
    if reduction == "sum":
        denom: float | torch.Tensor = 1.0
    elif num_items is not None:
        denom = num_items.to(device=logits.device, dtype=torch.float32).clamp_min(1e-12) \
            if isinstance(num_items, torch.Tensor) else float(num_items)
    else:
        denom = valid.sum().clamp_min(1).to(torch.float32)
    return TritonSoftCE.apply(logits, denom, reduction, t.labels, t.onehot, t.weight, t.soft_rows,
                              t.soft_cols, t.soft_vals)
