"""Row-blocked cross-entropy against a sparse target: the engine under every loss in sl_core.

A target distribution q_i over the vocabulary (V columns) is stored sparsely:

    q_i = onehot_i * e[labels_i] + sum_k soft_vals[m, k] * e[soft_cols[k]] (only if i = soft_rows[m])
          + uniform_i / V * (1, ..., 1)

and `CE(z_i, q_i) = logsumexp(z_i) * sum(q_i) - q_i . z_i` needs only logsumexp, one gathered label
column, K gathered soft columns and (for vocabulary-wide smoothing) the row sum: never a
vocabulary-sized target. Rows are processed in blocks (`block_rows`) so that the passes over a
block (forward: logsumexp, or one fused log_softmax into a reused buffer, then gathers; backward:
sub, exp, scatter) hit the CPU cache: the memory traffic is one read of the logits in forward and
one read plus one write (the gradient) in backward. Accumulation is in float32 for half-precision
logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

BLOCK_ELEMS = 1 << 18
"""Logits per row block on a single-threaded CPU (1 MiB of float32): stays in L2 across the passes."""
BLOCK_ELEMS_THREADED = 1 << 24
"""Logits per row block on a multi-threaded CPU: each torch op is one OpenMP parallel region whose
barrier stalls when the cores are shared, so fewer, larger blocks are faster there."""
BLOCK_ELEMS_ACCEL = 1 << 25
"""Logits per row block on an accelerator: few kernel launches, bounded temporary memory."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (reference checks); everything else accumulates in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def block_rows(vocab: int, device: torch.device) -> int:
    """Rows per block for logits with `vocab` columns on `device`."""
    if device.type != "cpu":
        elems = BLOCK_ELEMS_ACCEL
    else:
        elems = BLOCK_ELEMS if torch.get_num_threads() == 1 else BLOCK_ELEMS_THREADED
    return max(1, elems // max(1, vocab))


@dataclass
class SparseTarget:
    """Per-row target and loss weight for N flattened rows (see the module docstring).

    Attributes:
        labels: [N] int64; rows with weight 0 may hold any valid column (0 for ignored rows).
        onehot: [N] mass on the label column.
        weight: [N] loss weight per row (lam for numeric rows, 1 for regular rows, 0 for ignored rows).
        soft_rows: [M] int64, sorted, rows with soft mass.
        soft_cols: [K] int64, the columns the soft mass lives on (e.g. the ten digit ids).
        soft_vals: [M, K] soft mass of those rows on those columns.
        uniform: [N] mass spread uniformly over all V columns, or None.
    """

    labels: torch.Tensor
    onehot: torch.Tensor
    weight: torch.Tensor
    soft_rows: torch.Tensor
    soft_cols: torch.Tensor
    soft_vals: torch.Tensor
    uniform: torch.Tensor | None = None


def _block_flags(mask: torch.Tensor, starts: list[int], ends: list[int]) -> list[bool]:
    """For each block [start, end): does `mask` have a True inside? (one sync for all blocks on CPU;
    on an accelerator every block counts as active: computing a dead block is cheaper than a sync)"""
    if not starts:
        return []
    if mask.device.type != "cpu":
        return [True] * len(starts)
    cs = torch.nn.functional.pad(mask.to(torch.int64).cumsum(0), (1, 0))
    s = torch.tensor(starts, device=mask.device)
    e = torch.tensor(ends, device=mask.device)
    return (cs[e] - cs[s] > 0).tolist()


def _blocks(n: int, rows: int) -> tuple[list[int], list[int]]:
    starts = list(range(0, n, rows))
    return starts, [min(s + rows, n) for s in starts]


def target_mass(t: SparseTarget) -> torch.Tensor:
    """sum_v q_iv per row (1 for every row of a proper target)."""
    mass = t.onehot.clone()
    if t.soft_rows.numel():
        mass = mass.index_add(0, t.soft_rows, t.soft_vals.sum(-1))
    if t.uniform is not None:
        mass = mass + t.uniform
    return mass


def rows_grad(z: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
              t: SparseTarget, row0: int, mass: torch.Tensor) -> None:
    """Write scale_i * (mass_i * softmax(z_i) - q_i) into out [n, V] for the rows [row0, row0 + n).

    z [n, V] is a 2D block of logits; out may alias z (the fused path overwrites its logits chunk).
    lse, scale, mass are [n] (already sliced to this block); the target `t` is indexed by flat row.
    """
    n, v = z.shape
    cdt = lse.dtype
    if n == 0:
        return
    labels = t.labels[row0:row0 + n]
    sa = (scale * t.onehot[row0:row0 + n]).neg_().unsqueeze(1)
    su = (scale * t.uniform[row0:row0 + n] / v).unsqueeze(1) if t.uniform is not None else None
    sm = scale * mass
    # exp(z - (lse - log(s))) = s * softmax(z): folds the row scale into the exp (one pass less)
    nonneg = bool((sm >= 0).all())
    if nonneg:
        shift = torch.where(sm > 0, lse - torch.log(sm), torch.full_like(lse, math.inf)).unsqueeze(1)
    else:
        shift = lse.unsqueeze(1)
    rows = block_rows(v, z.device)
    starts, ends = _blocks(n, rows)
    soft = _soft_bounds(t, row0, starts, n)
    soft_neg = None
    if soft is not None:
        local, lo, bounds = soft
        soft_neg = (scale[local].unsqueeze(1) * t.soft_vals[lo:lo + local.numel()]).neg_()
    same = z.dtype == cdt and out.dtype == cdt
    work = None if same else torch.empty(min(rows, n), v, dtype=cdt, device=z.device)
    for b, (s, e, on) in enumerate(zip(starts, ends, _block_flags(sm != 0, starts, ends))):
        oc = out[s:e]
        if not on:
            oc.zero_()
            continue
        buf = oc if work is None else work[: e - s]
        torch.sub(z[s:e], shift[s:e], out=buf)
        buf.exp_()
        if not nonneg:
            buf.mul_(sm[s:e].unsqueeze(1))
        if su is not None:
            buf.sub_(su[s:e])
        buf.scatter_add_(1, labels[s:e].unsqueeze(1), sa[s:e])
        if soft is not None:
            ms, me = bounds[b], bounds[b + 1]
            if me > ms:
                r = (local[ms:me] - s).unsqueeze(1).expand(-1, t.soft_cols.numel())
                buf.index_put_((r, t.soft_cols.expand(me - ms, -1)), soft_neg[ms:me], accumulate=True)
        if buf is not oc:
            oc.copy_(buf)


def row_segments(z: torch.Tensor) -> list[torch.Tensor]:
    """2D views [n_i, V] of z [..., V] covering its rows in flattened order, without copying.

    One view when the leading dims flatten (contiguous logits); otherwise one per leading index
    (e.g. `logits[:, :-1]`, whose rows are strided by the full sequence length).
    """
    v = z.shape[-1]
    if z.dim() == 1:
        return [z.view(1, v)]
    if z.dim() == 2:
        return [z]
    try:
        return [z.view(-1, v)]
    except RuntimeError:
        pass
    segs: list[torch.Tensor] = []
    for i in range(z.shape[0]):
        segs.extend(row_segments(z[i]))
    return segs


def _soft_bounds(t: SparseTarget, row0: int, starts: list[int],
                 n: int) -> tuple[torch.Tensor, int, list[int]] | None:
    """Soft rows of the rows [row0, row0 + n), as local indices, and their split over the blocks.

    Returns (local soft rows, offset of the first into t.soft_rows, per-block start offsets + end),
    or None when there is none. One device sync for all blocks (soft_rows is sorted).
    """
    if not t.soft_rows.numel():
        return None
    dev = t.soft_rows.device
    lo, hi = torch.searchsorted(t.soft_rows, torch.tensor([row0, row0 + n], device=dev)).tolist()
    if hi == lo:
        return None
    local = t.soft_rows[lo:hi] - row0
    bounds = torch.searchsorted(local, torch.tensor(starts + [n], device=dev)).tolist()
    return local, lo, bounds


FORWARD_STRATEGY: str | None = None
"""None (automatic), "logsumexp" or "log_softmax": how `rows_ce` computes a block (tests force each)."""


def _use_log_softmax(device: torch.device) -> bool:
    """One fused log_softmax per block wins where each torch op is costly (a parallel region on a
    multi-threaded CPU, a kernel launch on an accelerator); with one thread, tiny row blocks and
    torch.logsumexp plus gathers on the logits are faster."""
    if FORWARD_STRATEGY is not None:
        return FORWARD_STRATEGY == "log_softmax"
    return device.type != "cpu" or torch.get_num_threads() > 1


def rows_ce(z: torch.Tensor, t: SparseTarget, row0: int, mass: torch.Tensor,
            cdt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(z_i, q_i) (unweighted) and logsumexp for the rows [row0, row0 + n) of a 2D block of logits
    z [n, V]; mass [n] = sum_v q_iv. Returns (ce [n], lse [n]) in cdt.

    Blocks whose rows all have weight 0 are skipped on CPU (their ce and lse stay 0; callers mask them).
    """
    if z.shape[0] == 0:
        return torch.zeros(0, dtype=cdt, device=z.device), torch.zeros(0, dtype=cdt, device=z.device)
    if _use_log_softmax(z.device):
        return _rows_ce_log_softmax(z, t, row0, cdt)
    return _rows_ce_logsumexp(z, t, row0, mass, cdt)


def _rows_ce_logsumexp(z: torch.Tensor, t: SparseTarget, row0: int, mass: torch.Tensor,
                       cdt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ce = mass * logsumexp(z) - q . z, the dot product from gathered columns of z."""
    n, v = z.shape
    sl = slice(row0, row0 + n)
    lse = torch.zeros(n, dtype=cdt, device=z.device)
    rowsum = torch.zeros(n, dtype=cdt, device=z.device) if t.uniform is not None else None
    starts, ends = _blocks(n, block_rows(v, z.device))
    for s, e, on in zip(starts, ends, _block_flags(t.weight[sl] != 0, starts, ends)):
        if not on:
            continue
        zc = z[s:e] if z.dtype == cdt else z[s:e].to(cdt)
        torch.logsumexp(zc, -1, out=lse[s:e])
        if rowsum is not None:
            torch.sum(zc, -1, out=rowsum[s:e])
    dot = t.onehot[sl] * z.gather(1, t.labels[sl].unsqueeze(1)).squeeze(1).to(cdt)
    soft = _soft_bounds(t, row0, [0], n)
    if soft is not None:
        local, lo, _ = soft
        z_soft = z[local.unsqueeze(1), t.soft_cols.unsqueeze(0)].to(cdt)
        dot = dot.index_add(0, local, (t.soft_vals[lo:lo + local.numel()] * z_soft).sum(-1))
    if rowsum is not None:
        dot = dot + t.uniform[sl] * rowsum / v
    return mass * lse - dot, lse


def _rows_ce_log_softmax(z: torch.Tensor, t: SparseTarget, row0: int,
                         cdt: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """ce = -q . log_softmax(z): one fused log_softmax per block into a reused cdt buffer (half
    precision is read directly), then gathers from the cache-resident block; lse = max(z) - max(logp)."""
    n, v = z.shape
    sl = slice(row0, row0 + n)
    ce = torch.zeros(n, dtype=cdt, device=z.device)
    lse = torch.zeros(n, dtype=cdt, device=z.device)
    rows = block_rows(v, z.device)
    starts, ends = _blocks(n, rows)
    soft = _soft_bounds(t, row0, starts, n)
    labels, onehot = t.labels[sl], t.onehot[sl]
    work = torch.empty(min(rows, n), v, dtype=cdt, device=z.device)
    for b, (s, e, on) in enumerate(zip(starts, ends, _block_flags(t.weight[sl] != 0, starts, ends))):
        if not on:
            continue
        buf = work[: e - s]
        torch.log_softmax(z[s:e], -1, dtype=cdt, out=buf)
        # max_j logp_j = -log sum_j exp(z_j - max z), so lse = max z - max logp (no cancellation)
        torch.sub(z[s:e].amax(-1).to(cdt), buf.amax(-1), out=lse[s:e])
        dot = onehot[s:e] * buf.gather(1, labels[s:e].unsqueeze(1)).squeeze(1)
        if soft is not None:
            local, lo, bounds = soft
            ms, me = bounds[b], bounds[b + 1]
            if me > ms:
                r = local[ms:me] - s
                vals = t.soft_vals[lo + ms:lo + me]
                dot.index_add_(0, r, (vals * buf[r.unsqueeze(1), t.soft_cols.unsqueeze(0)]).sum(-1))
        if t.uniform is not None:
            dot += t.uniform[row0 + s:row0 + e] * buf.sum(-1) / v
        ce[s:e] = -dot
    return ce, lse


class SparseTargetCE(torch.autograd.Function):
    """Row losses weight_i * CE(z_i, q_i) for logits [..., V]; returns [N] (flattened rows).

    Forward saves only logsumexp [N]; backward recomputes softmax block by block straight into
    the gradient buffer, so the extra memory is the gradient itself.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor,
                soft_rows: torch.Tensor, soft_cols: torch.Tensor, soft_vals: torch.Tensor,
                uniform: torch.Tensor | None) -> torch.Tensor:
        t = SparseTarget(labels, onehot, weight, soft_rows, soft_cols, soft_vals, uniform)
        cdt = onehot.dtype
        mass = target_mass(t)
        ce_parts, lse_parts, row0 = [], [], 0
        for seg in row_segments(logits):
            ce, lse = rows_ce(seg, t, row0, mass[row0:row0 + seg.shape[0]], cdt)
            ce_parts.append(ce)
            lse_parts.append(lse)
            row0 += seg.shape[0]
        ce = torch.cat(ce_parts) if len(ce_parts) > 1 else ce_parts[0]
        lse = torch.cat(lse_parts) if len(lse_parts) > 1 else lse_parts[0]
        rows = torch.where(weight != 0, weight * ce, torch.zeros_like(ce))
        ctx.save_for_backward(logits, lse, mass, labels, onehot, weight, soft_rows, soft_cols, soft_vals,
                              uniform if uniform is not None else torch.empty(0))
        ctx.has_uniform = uniform is not None
        return rows

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_rows: torch.Tensor):
        logits, lse, mass, labels, onehot, weight, soft_rows, soft_cols, soft_vals, uniform = ctx.saved_tensors
        t = SparseTarget(labels, onehot, weight, soft_rows, soft_cols, soft_vals,
                         uniform if ctx.has_uniform else None)
        scale = weight * grad_rows.to(weight.dtype)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        grad2 = grad.view(-1, logits.shape[-1])
        row0 = 0
        for seg in row_segments(logits):
            n = seg.shape[0]
            sl = slice(row0, row0 + n)
            rows_grad(seg, grad2[sl], lse[sl], scale[sl], t, row0, mass[sl])
            row0 += n
        return grad, None, None, None, None, None, None, None


def sparse_cross_entropy(logits: torch.Tensor, t: SparseTarget) -> torch.Tensor:
    """Row losses [N] (weight_i * CE_i, 0 for ignored rows) through the custom autograd function."""
    return SparseTargetCE.apply(logits, t.labels, t.onehot, t.weight, t.soft_rows, t.soft_cols,
                                t.soft_vals, t.uniform)


class TorchRows:
    """The torch engine over the rows of one sparse target: what the fused path calls per chunk.

    `sl_core._triton.TritonRows` has the same methods (the `backend="triton"` engine).
    """

    def __init__(self, t: SparseTarget) -> None:
        self.t = t

    def ce(self, z: torch.Tensor, row0: int, mass: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ce [n], lse [n]) of the rows [row0, row0 + n) held in the 2D block z [n, V] (unweighted)."""
        return rows_ce(z, self.t, row0, mass, self.t.onehot.dtype)

    def ce_grad_(self, z: torch.Tensor, row0: int, mass: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """ce [n] of the 2D block z [n, V], which is overwritten with scale_i (mass_i softmax(z_i) - q_i)."""
        ce, lse = self.ce(z, row0, mass)
        rows_grad(z, z, lse, scale, self.t, row0, mass)
        return ce

    def grad(self, z: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor, row0: int,
             mass: torch.Tensor) -> None:
        """Write scale_i (mass_i softmax(z_i) - q_i) into out [n, V] (may be z) from the saved lse."""
        rows_grad(z, out, lse, scale, self.t, row0, mass)


def reduce_rows(rows: torch.Tensor, valid: torch.Tensor, shape: torch.Size | tuple[int, ...], reduction: str,
                num_items_in_batch: float | torch.Tensor | None) -> torch.Tensor:
    """Apply the reduction to row losses [N].

    mean: sum / (number of non-ignored rows, N_r + N_n), or sum / num_items_in_batch when given
    (Hugging Face gradient accumulation); 0 (not NaN) when every row is ignored.
    """
    if reduction == "none":
        return rows.view(shape)
    total = rows.sum()
    if reduction == "sum":
        return total
    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            return total / num_items_in_batch.to(device=total.device, dtype=total.dtype).clamp_min(1e-12)
        return total / num_items_in_batch
    return total / valid.sum().clamp_min(1).to(total.dtype)
