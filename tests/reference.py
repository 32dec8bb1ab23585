"""Dense, obviously-correct reference losses for the tests: vocabulary-sized float64 targets, plain
autograd, Python loops over tokens. Slow on purpose; the fast paths in sl_core are checked against them."""

from __future__ import annotations

import contextlib
import math

import torch

import sl_core._kernel as kernel

IGNORE = -100


def place_factor_loop(is_digit_row: list[bool], exponent: float | None) -> list[float]:
    """((L - j) / L) ** exponent for the j-th digit (0 = first) of each run of length L; 1 when off."""
    out = [1.0] * len(is_digit_row)
    if not exponent:
        return out
    i = 0
    while i < len(is_digit_row):
        if not is_digit_row[i]:
            i += 1
            continue
        start = i
        while i < len(is_digit_row) and is_digit_row[i]:
            i += 1
        length = i - start
        for j in range(length):
            out[start + j] = ((length - j) / length) ** exponent
    return out


def digits_after_loop(is_digit_row: list[bool]) -> list[int]:
    """How many digits follow each position inside its run of digits (NTIL's place index)."""
    out = [0] * len(is_digit_row)
    count = 0
    for i in reversed(range(len(is_digit_row))):
        if is_digit_row[i]:
            out[i] = count
            count += 1
        else:
            count = 0
    return out


def _rows(labels: torch.Tensor) -> list[list[int]]:
    """labels [...] as a list of rows along the last dim (a 0-d or 1-d tensor is one row)."""
    lab = labels.reshape(1, -1) if labels.dim() <= 1 else labels.reshape(-1, labels.shape[-1])
    return lab.tolist()


def dense_targets(labels: torch.Tensor, vocab: int, soft_cols: list[int], psi: torch.Tensor, eta: float,
                  lam: float, place_exponent: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary-sized targets q [N, V] and weights w [N] (float64) for soft labels over soft_cols.

    A label equal to soft_cols[k] gets (1 - eta_i) onehot + eta_i * psi[k] over soft_cols and weight lam;
    other labels one-hot with weight 1; ignored labels zero target and weight 0.
    """
    rows = _rows(labels)
    q = torch.zeros(sum(len(r) for r in rows), vocab, dtype=torch.float64)
    w = torch.zeros(q.shape[0], dtype=torch.float64)
    i = 0
    for row in rows:
        factors = place_factor_loop([y in soft_cols for y in row], place_exponent)
        for y, f in zip(row, factors):
            if y != IGNORE:
                if y in soft_cols:
                    e = eta * f
                    q[i, y] += 1.0 - e
                    for k, col in enumerate(soft_cols):
                        q[i, col] += e * float(psi[soft_cols.index(y), k])
                    w[i] = lam
                else:
                    q[i, y] = 1.0
                    w[i] = 1.0
            i += 1
    return q, w


def reduce(per_token: torch.Tensor, labels: torch.Tensor, reduction: str, num_items=None) -> torch.Tensor:
    if reduction == "none":
        return per_token.view(labels.shape)
    total = per_token.sum()
    if reduction == "sum":
        return total
    if num_items is not None:
        return total / float(num_items)
    count = int((labels != IGNORE).sum())
    return total / max(count, 1)


def soft_ce_reference(logits: torch.Tensor, labels: torch.Tensor, soft_cols: list[int], psi: torch.Tensor, *,
                      eta: float, lam: float = 1.0, reduction: str = "mean", num_items=None,
                      place_exponent: float | None = None, uniform: float = 0.0) -> torch.Tensor:
    """sum_i w_i * (-sum_v q_iv log_softmax(z_i)_v) with dense q, reduced as in the paper.

    `uniform` adds vocabulary-wide label smoothing: q <- (1 - uniform) q + uniform / V for non-ignored rows.
    """
    vocab = logits.shape[-1]
    z = logits.reshape(-1, vocab).to(torch.float64)
    q, w = dense_targets(labels, vocab, soft_cols, psi, eta, lam, place_exponent)
    if uniform:
        live = (w > 0).to(torch.float64).unsqueeze(1)
        q = q * (1.0 - uniform) + live * uniform / vocab
    per_token = w * -(q * torch.log_softmax(z, dim=-1)).sum(-1)
    return reduce(per_token, labels, reduction, num_items)


def digit_emd_reference(logits: torch.Tensor, labels: torch.Tensor, digit_ids: list[int], kind: str, *,
                        reweigh: bool = False, digit_exp: float = 1.0) -> torch.Tensor:
    """Mean over digit targets of the number-token term (loops over tokens, float64).

    kind: "was" sum_k |k - t| p_k; "mse" (sum_k k p_k - t)^2; "emd" was * digit_exp ** (digits after).
    """
    vocab = logits.shape[-1]
    z = logits.reshape(-1, vocab).to(torch.float64)
    terms = []
    i = 0
    for row in _rows(labels):
        after = digits_after_loop([y in digit_ids for y in row])
        for y, a in zip(row, after):
            if y != IGNORE and y in digit_ids:
                t = digit_ids.index(y)
                p = torch.softmax(z[i, digit_ids], dim=0)
                if kind == "mse":
                    term = (sum(k * p[k] for k in range(10)) - t) ** 2
                    max_dist = 81.0
                else:
                    term = sum(abs(k - t) * p[k] for k in range(10))
                    max_dist = 9.0
                if reweigh:
                    mass = torch.softmax(z[i], dim=0)[digit_ids].sum()
                    term = term * mass + 1.01 * max_dist * (1 - mass)
                if kind == "emd":
                    term = term * digit_exp ** a
                terms.append(term)
            i += 1
    if not terms:
        return z.sum() * 0.0
    return torch.stack(terms).sum() / len(terms)


def value_psi_reference(values: list[int], groups: list[tuple[str, int]], kernel: str, scale: float) -> torch.Tensor:
    """[K, K] value-aware psi by explicit loops: same-group tokens weighted by kernel(|v_j - v_i|)."""
    k = len(values)
    m = torch.zeros(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(k):
            if groups[i] != groups[j]:
                continue
            d = abs(values[i] - values[j])
            m[i, j] = {"laplace": math.exp(-d / scale), "gaussian": math.exp(-d * d / (2 * scale * scale)),
                       "triangular": max(0.0, scale - d), "uniform": 1.0}[kernel]
        m[i] /= m[i].sum()
    return m


# Not a reference, a switch for the fast path: with the tests' small vocabularies every call would fit
# in one row block, so the tests shrink the blocks to run the multi-block code.
@contextlib.contextmanager
def small_blocks(elems: int | None, every_block_live: bool = False, forward: str | None = None):
    """Force row blocks of `elems` logits (None: the defaults) so the multi-block paths run at small V;
    every_block_live mimics the accelerator path, which never skips a block; forward forces the
    forward strategy ("logsumexp" or "log_softmax", None: automatic)."""
    saved = kernel.BLOCK_ELEMS, kernel.BLOCK_ELEMS_THREADED, kernel._block_flags, kernel.FORWARD_STRATEGY
    if elems is not None:
        kernel.BLOCK_ELEMS = kernel.BLOCK_ELEMS_THREADED = elems
    if every_block_live:
        kernel._block_flags = lambda mask, starts, ends: [True] * len(starts)
    kernel.FORWARD_STRATEGY = forward
    try:
        yield
    finally:
        kernel.BLOCK_ELEMS, kernel.BLOCK_ELEMS_THREADED, kernel._block_flags, kernel.FORWARD_STRATEGY = saved


def grouped_psi_reference(psi: torch.Tensor, groups: list[list[int]]) -> tuple[list[int], torch.Tensor]:
    """Soft columns and [10 G, 10 G] psi for digit groups, by loops: mass stays inside a target's group."""
    cols = [c for g in groups for c in g]
    m = torch.zeros(len(cols), len(cols), dtype=torch.float64)
    for i, ci in enumerate(cols):
        for j, cj in enumerate(cols):
            gi = next(n for n, g in enumerate(groups) if ci in g)
            gj = next(n for n, g in enumerate(groups) if cj in g)
            if gi == gj:
                m[i, j] = float(psi[groups[gi].index(ci), groups[gj].index(cj)])
    return cols, m


def dist2_psi_reference(values: list[int], groups: list, distance: str, temperature: float) -> torch.Tensor:
    """[K, K] DIST2Loss targets by loops: same-group tokens weighted by exp(-d / tau), d squared or absolute."""
    k = len(values)
    m = torch.zeros(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(k):
            if groups[i] == groups[j]:
                d = abs(values[i] - values[j])
                m[i, j] = math.exp(-(d * d if distance == "squared" else d) / temperature)
        m[i] /= m[i].sum()
    return m


def smmd_kernel_reference(values: list[int], groups: list, sigma: float, squash: float = 9.0):
    """SMMD kernel [K, K] and per-token alpha [K] by loops: per group, distances squashed so the
    smallest non-zero one is 1 and the largest `squash`, K = exp(-d^2 / (2 sigma^2)), alpha = 1 / (2 mean deg)."""
    k = len(values)
    kern = torch.zeros(k, k, dtype=torch.float64)
    alpha = torch.zeros(k, dtype=torch.float64)
    for g in dict.fromkeys(groups):
        idx = [i for i in range(k) if groups[i] == g]
        nz = [abs(values[i] - values[j]) for i in idx for j in idx if values[i] != values[j]]
        lo, hi = (min(nz), max(nz)) if nz else (0.0, 0.0)
        for i in idx:
            for j in idx:
                d = float(abs(values[i] - values[j]))
                if d > 0 and hi > lo:
                    d = 1.0 + (d - lo) * (squash - 1.0) / (hi - lo)
                kern[i, j] = min(1.0, math.exp(-d * d / (2 * sigma * sigma)))
        mean_deg = sum(float(kern[i, j]) for i in idx for j in idx) / len(idx)
        for i in idx:
            alpha[i] = 0.5 / mean_deg
    return kern, alpha


def smmd_reference(logits: torch.Tensor, labels: torch.Tensor, ids: list[int], values: list[int], groups: list, *,
                   sigma: float = 2.0, alpha: float | None = None) -> torch.Tensor:
    """Mean over numeric-target rows of relu(r^T K r + alpha * 1/2 sum_ij K_ij (r_i - r_j)^2), r = p - onehot,
    p the softmax over the target's group only (loops, float64)."""
    vocab = logits.shape[-1]
    z = logits.reshape(-1, vocab).to(torch.float64)
    kern, alphas = smmd_kernel_reference(values, groups, sigma)
    terms = []
    for i, y in enumerate(labels.reshape(-1).tolist()):
        if y == IGNORE or y not in ids:
            continue
        t = ids.index(y)
        idx = [j for j in range(len(ids)) if groups[j] == groups[t]]
        p = torch.softmax(z[i, [ids[j] for j in idx]], dim=0)
        r = [p[a] - (1.0 if idx[a] == t else 0.0) for a in range(len(idx))]
        mmd = sum(kern[idx[a], idx[b]] * r[a] * r[b] for a in range(len(idx)) for b in range(len(idx)))
        smooth = 0.5 * sum(kern[idx[a], idx[b]] * (r[a] - r[b]) ** 2 for a in range(len(idx)) for b in range(len(idx)))
        a_t = float(alphas[t]) if alpha is None else alpha
        terms.append(torch.relu(mmd + a_t * smooth))
    if not terms:
        return z.sum() * 0.0
    return torch.stack(terms).sum() / len(terms)


def del_reference(logits: torch.Tensor, labels: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """Mean over digit-target rows of 2 (a + 1) / 10 * sum_k p_k BCE(sigmoid(z_k), [k = t]), p the softmax over
    the target's digit group, a the digits after it in its run (loops, float64)."""
    vocab = logits.shape[-1]
    z = logits.reshape(-1, vocab).to(torch.float64)
    digits = [c for g in groups for c in g]
    terms = []
    i = 0
    for row in _rows(labels):
        after = digits_after_loop([y in digits for y in row])
        for y, a in zip(row, after):
            if y != IGNORE and y in digits:
                g = next(g for g in groups if y in g)
                t = g.index(y)
                zd = z[i, g]
                p = torch.softmax(zd, dim=0)
                s = torch.sigmoid(zd)
                bce = [-torch.log(s[k]) if k == t else -torch.log(1 - s[k]) for k in range(10)]
                terms.append(2.0 * (a + 1) / 10.0 * sum(p[k] * bce[k] for k in range(10)))
            i += 1
    if not terms:
        return z.sum() * 0.0
    return torch.stack(terms).sum() / len(terms)
