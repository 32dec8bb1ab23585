"""Three 2026 number losses as peers: DIST2Loss, SMMD and DEL, with the calling convention of `sl_core.peers`.

Sources, and what was read of each (equation numbers are not cited: the papers' texts were not
available to us, only their abstracts; each definition below follows the authors' code where it is
public, and every choice it needed is stated):

- DIST2Loss: Chung et al., "Teaching Metric Distance to Discrete Autoregressive Language Models",
  ICLR 2026 (OpenReview s0zLtkY7iu, arXiv 2503.02379). No public code from the authors. The abstract:
  the one-hot target is replaced by a reward-weighted target p_d(v | t) proportional to
  exp(-d(v, t) / tau) over the metric tokens, fitted by KL divergence (the closed form of
  entropy-regularised policy optimisation). Defaults (squared distance, tau = 1) are those of the
  DIST2Loss baseline in the DEL authors' code (github.com/PolyU-VCLab/DEL @ 68c3d4d,
  train-qwen-deepseek.py `DIST2loss`: `softmax(-(y - k) ** 2)`).
- SMMD: "Enhancing Numerical Prediction in LLMs via Smooth MMD Alignment", ICML 2026 (arXiv
  2606.27731); code github.com/Zuozhuo/smmd-loss @ 581fde6 (smmd/loss.py, smmd/kernels.py), which
  this module matches (tests/test_numeric_peers.py records values computed with it).
- DEL: Zheng et al., "DEL: Digit Entropy Loss for Numerical Learning of Large Language Models",
  arXiv 2605.20369; code github.com/PolyU-VCLab/DEL @ 68c3d4d (train-qwen-deepseek.py `DEL`), which
  this module matches (values recorded in the tests likewise).

Tokens. `dist2` and `smmd` act on NumericTokens (`sl_core.numeric_token_values`; digit ids or [G, 10]
groups become one group per digit set through `NumericTokens.from_digit_ids`): a target token's
target or kernel lives on the tokens of its own (marker, width) group, as in `sl_core.value_aware`.
On a digit tokenizer that is the ten digits (and each marked set "▁0".."▁9" on its own), exactly the
authors' V_num = {0..9}. On a merged-digit tokenizer the SMMD authors use one kernel over all
standalone integer tokens 0..999 (every width, unmarked only); here widths and markers stay apart
(choice: the kernel never relates "7" to "07" or "Ġ7"). `del` is defined on digits (digit-conditional
probabilities) and takes digit ids / [G, 10] groups like `ntl_was`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from sl_core import _validate as V
from sl_core._kernel import compute_dtype
from sl_core.backend import check_backend, resolve_backend
from sl_core.digits import NumericTokens
from sl_core.loss import label_columns, soft_target, sparse_soft_ce
from sl_core.peers import Ids, _prepare, digit_row_term, reduce_term_rows
from sl_core.registry import DIST2_DISTANCES

__all__ = ["dist2_psi_matrix", "dist2_cross_entropy", "smmd_kernel", "smmd_term", "del_term",
           "SMMD_SQUASH_FACTOR"]

SMMD_SQUASH_FACTOR = 9.0
"""The SMMD authors' distance rescaling (smmd/kernels.py `squash_distances`, default 9): inside a group,
the smallest non-zero value distance maps to 1 and the largest to 9 (the identity on the digits 0..9)."""


def _check_numeric(digit_ids: Any, vocab: int | None = None) -> NumericTokens:
    return V.check_numeric_tokens(digit_ids, vocab)


def _group_index(numeric: NumericTokens) -> torch.Tensor:
    """[K] int64: the (marker, width) group number of each numeric token."""
    keys = {g: k for k, g in enumerate(dict.fromkeys(numeric.groups))}
    return torch.tensor([keys[g] for g in numeric.groups], dtype=torch.long)


def _distances(numeric: NumericTokens) -> torch.Tensor:
    values = torch.tensor(numeric.values, dtype=torch.float64)
    return (values.unsqueeze(0) - values.unsqueeze(1)).abs()


# ----------------------------------------------------------------------------------------------- DIST2Loss

@V.renamed_argument("numeric", "digit_ids")
def dist2_psi_matrix(digit_ids: NumericTokens | Ids, temperature: float = 1.0, distance: str = "squared") -> torch.Tensor:
    """[K, K] float64 DIST2Loss targets: row i is p_d(. | token i) proportional to exp(-d(v_j, v_i) / tau)
    over the tokens j of token i's (marker, width) group, 0 elsewhere.

    Args:
        digit_ids: the numeric tokens (K of them): a NumericTokens, or digit ids / [G, 10] groups
            (`NumericTokens.from_digit_ids`). `numeric=` is a deprecated alias.
        temperature: tau > 0.
        distance: "squared" d = (v_j - v_i)^2 or "absolute" d = |v_j - v_i| (value units).

    Raises:
        ValueError: tau <= 0, an unknown distance or malformed digit_ids.
    """
    return _cached_dist2_psi(_check_numeric(digit_ids), V.check_positive("temperature", temperature), _check_distance(distance)).clone()


def _check_distance(distance: str) -> str:
    if distance not in DIST2_DISTANCES:
        raise ValueError(f"distance: unknown {distance!r}; choose one of {', '.join(DIST2_DISTANCES)}")
    return distance


@functools.lru_cache(maxsize=32)
def _cached_dist2_psi(numeric: NumericTokens, temperature: float, distance: str) -> torch.Tensor:
    d = _distances(numeric)
    if distance == "squared":
        d = d * d
    group = _group_index(numeric)
    logw = (-d / temperature).masked_fill(group.unsqueeze(0) != group.unsqueeze(1), -torch.inf)
    return torch.softmax(logw, dim=1)


@V.renamed_argument("numeric", "digit_ids")
def dist2_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, digit_ids: NumericTokens | Ids, *,
                        temperature: float = 1.0, distance: str = "squared", ignore_index: int = -100,
                        reduction: str = "mean", num_items_in_batch: int | float | torch.Tensor | None = None,
                        backend: str = "auto") -> torch.Tensor:
    """DIST2Loss: cross-entropy over the full vocabulary with the one-hot target of a numeric token t
    replaced by p_d(. | t) (`dist2_psi_matrix`); other tokens keep one-hot CE.

    KL(p_d || p_theta) and CE(p_d, p_theta) differ by the target's entropy, a constant: the gradients
    are equal; this returns the CE form, like the other soft-label losses. Choices (the paper's text
    was not available): the model distribution is the full-vocabulary softmax (the DEL authors'
    re-implementation uses the softmax over the ten digit logits and adds the term to CE with place
    weights); the target has no one-hot part ("replaces the one-hot target"). With the squared
    distance this is `gaussian_soft_cross_entropy` with sigma = sqrt(tau / 2) on a digit tokenizer.

    Args:
        logits: [..., V]; labels: [...] already shifted (ignore_index skipped).
        digit_ids: the vocabulary's numeric tokens (`sl_core.numeric_token_values(tokenizer)`), or
            digit ids / [G, 10] groups (`NumericTokens.from_digit_ids`). `numeric=` is a deprecated alias.
        temperature, distance: see `dist2_psi_matrix`.
        reduction, num_items_in_batch: as in `soft_label_cross_entropy` (mean over non-ignored tokens).
        backend: "auto", "torch" or "triton" (`sl_core.backend`).

    Returns:
        Scalar (float32, float64 for float64 logits) or [...] for "none".

    Raises:
        ValueError: digit_ids neither NumericTokens nor digit ids, or with ids outside [0, V), tau <= 0,
            an unknown distance, or bad logits, labels, reduction, num_items_in_batch.

    Example:
        On digit tokens with the squared distance, DIST2Loss is Gaussian soft CE with sigma = sqrt(tau / 2):

        >>> import torch
        >>> from sl_core import NumericTokens, dist2_cross_entropy, gaussian_soft_cross_entropy
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> numeric = NumericTokens.from_digit_ids(digits)  # or sl_core.numeric_token_values(tokenizer)
        >>> _ = torch.manual_seed(0)
        >>> logits, labels = torch.randn(6, 12), torch.tensor([0, 2, 5, 11, -100, 7])
        >>> loss = dist2_cross_entropy(logits, labels, numeric, temperature=2.0)
        >>> torch.allclose(loss, gaussian_soft_cross_entropy(logits, labels, digits, sigma=1.0))
        True
    """
    vocab, num_items = _prepare(logits, labels, ignore_index, reduction, num_items_in_batch)
    numeric = _check_numeric(digit_ids, vocab)
    psi = dist2_psi_matrix(numeric, temperature, distance)
    engine = resolve_backend(check_backend(backend), logits.device, logits.dtype)
    cdt = compute_dtype(logits.dtype)
    cols = torch.tensor(numeric.ids, dtype=torch.long, device=logits.device)
    target, valid = soft_target(labels, cols, psi.to(device=logits.device, dtype=cdt), eta=1.0, lam=1.0,
                                ignore_index=ignore_index, cdt=cdt)
    return sparse_soft_ce(engine, logits, target, valid, labels.shape, reduction, num_items)


# ----------------------------------------------------------------------------------------------------- SMMD

@V.renamed_argument("numeric", "digit_ids")
def smmd_kernel(digit_ids: NumericTokens | Ids, sigma: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The SMMD kernel over the numeric tokens and each group's smoothness scale.

    Inside each (marker, width) group: d = |v_i - v_j| squashed to [1, SMMD_SQUASH_FACTOR] on its
    non-zero values (`squash_distances` of the authors' code), K_ij = exp(-d^2 / (2 sigma^2)) clamped
    to [0, 1]; K_ij = 0 across groups. alpha_g = 1 / (2 mean_i deg_i) over the group's tokens, with
    deg_i = sum_j K_ij (the authors' "auto" scale, computed per group since each group is its own V_num).

    Args:
        digit_ids: the numeric tokens: a NumericTokens, or digit ids / [G, 10] groups
            (`NumericTokens.from_digit_ids`). `numeric=` is a deprecated alias.
        sigma: kernel bandwidth (> 0).

    Returns:
        K [K, K] float64 and alpha [K] float64 (each token's group scale).
    """
    k, alpha = _cached_smmd_kernel(_check_numeric(digit_ids), V.check_positive("sigma", sigma))
    return k.clone(), alpha.clone()


@functools.lru_cache(maxsize=32)
def _cached_smmd_kernel(numeric: NumericTokens, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    dist = _distances(numeric)
    group = _group_index(numeric)
    kern = torch.zeros_like(dist)
    alpha = torch.zeros(len(numeric), dtype=torch.float64)
    for g in range(int(group.max()) + 1):
        idx = (group == g).nonzero().squeeze(1)
        d = dist[idx][:, idx]
        nz = d > 0
        if nz.any() and d.max() > d[nz].min():
            lo, hi = d[nz].min(), d.max()
            d = torch.where(nz, 1.0 + (d - lo) * (SMMD_SQUASH_FACTOR - 1.0) / (hi - lo), d)
        kg = torch.exp(-(d * d) / (2.0 * sigma * sigma)).clamp(0.0, 1.0)
        kern[idx.unsqueeze(1), idx.unsqueeze(0)] = kg
        alpha[idx] = 0.5 / kg.sum(1).mean().clamp_min(1e-12)
    return kern, alpha


@V.renamed_argument("numeric", "digit_ids")
def smmd_term(logits: torch.Tensor, labels: torch.Tensor, digit_ids: NumericTokens | Ids, *, sigma: float = 2.0,
              alpha: float | None = None, ignore_index: int = -100, reduction: str = "mean",
              num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Smooth MMD on the rows whose label is a numeric token (the authors' `SMMDLoss`, mode "smmd").

    For such a row with target token t: p = softmax of the logits of t's group (zero elsewhere),
    r = p - onehot(t), and the row's value is relu(r^T K r + alpha r^T (D - K) r), D = diag(deg):
    MMD alignment plus the graph (Dirichlet) smoothness of the residual, K from `smmd_kernel`.
    Use as CE + weight * smmd_term.

    Args:
        logits: [..., V]; labels: [...] already shifted.
        digit_ids: the vocabulary's numeric tokens (`sl_core.numeric_token_values(tokenizer)`), or digit
            ids / [G, 10] groups (`NumericTokens.from_digit_ids`). `numeric=` is a deprecated alias.
        sigma: kernel bandwidth (> 0, value units after squashing; the authors' default 2).
        alpha: smoothness weight (>= 0); None: each group's 1 / (2 mean degree).
        reduction, num_items_in_batch: "mean" averages over numeric rows (as `sl_core.peers`).

    Returns:
        Scalar, or [...] per position (0 off numeric rows) for "none".

    Raises:
        ValueError: digit_ids neither NumericTokens nor digit ids, or with ids outside [0, V), sigma <= 0,
            alpha < 0,
            or bad logits, labels, reduction, num_items_in_batch.

    Example:
        A model sure of the digit 4: the row whose target is 4 costs nothing, the one whose target is
        2 does:

        >>> import torch
        >>> from sl_core import NumericTokens, smmd_term
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> logits = torch.zeros(3, 12)
        >>> _ = logits[:, digits[4]].fill_(20.0)
        >>> labels = torch.tensor([digits[2], digits[4], 0])
        >>> per_row = smmd_term(logits, labels, NumericTokens.from_digit_ids(digits), reduction="none")
        >>> [round(v, 3) for v in per_row.tolist()]
        [1.809, 0.0, 0.0]
    """
    vocab, num_items = _prepare(logits, labels, ignore_index, reduction, num_items_in_batch)
    numeric = _check_numeric(digit_ids, vocab)
    kern, alpha_k = smmd_kernel(numeric, sigma)
    fixed_alpha = None if alpha is None else V.check_nonneg("alpha", alpha)
    cdt = compute_dtype(logits.dtype)
    dev = logits.device
    cols = torch.tensor(numeric.ids, dtype=torch.long, device=dev)
    group = _group_index(numeric).to(dev)
    flat, valid, is_num, which_all = label_columns(labels, cols, ignore_index)
    rows = is_num.nonzero().squeeze(1)
    per_row = torch.zeros(flat.shape, dtype=cdt, device=dev)
    if rows.numel():
        lead = logits.shape[:-1]
        index = torch.unravel_index(rows, lead) if len(lead) != 1 else (rows,)
        which = which_all[rows]  # [M] index of each row's target among the numeric tokens
        z = logits[tuple(i.unsqueeze(1) for i in index) + (cols.unsqueeze(0),)].to(cdt)  # [M, K]
        z = z.masked_fill(group.unsqueeze(0) != group[which].unsqueeze(1), -torch.inf)
        p = torch.softmax(z, dim=-1)
        k = kern.to(device=dev, dtype=cdt)
        r = p - torch.nn.functional.one_hot(which, len(numeric)).to(cdt)
        mmd = ((r @ k) * r).sum(-1)
        smooth = (k.sum(1) * r * r).sum(-1) - mmd  # r^T (D - K) r
        a = alpha_k.to(device=dev, dtype=cdt)[which] if fixed_alpha is None else fixed_alpha
        per_row = per_row.index_put((rows,), torch.relu(mmd + a * smooth))
    return reduce_term_rows(per_row, is_num, valid, labels.shape, reduction, num_items)


# ------------------------------------------------------------------------------------------------------ DEL

def del_term(logits: torch.Tensor, labels: torch.Tensor, digit_ids: Ids, *, ignore_index: int = -100,
             reduction: str = "mean", num_items_in_batch: int | float | torch.Tensor | None = None) -> torch.Tensor:
    """Digit Entropy Loss on the rows whose label is a digit (the authors' `DEL`, without its 0.01 weight).

    For a digit row with target digit t, the ten digit logits z of its group, p = softmax(z) (the
    digit-conditional probabilities) and b_k = BCE-with-logits(z_k, [k = t]) = softplus(z_k) - [k = t] z_k:

        del_row = w * (1 / 10) * sum_k p_k b_k,    w = 2 * (digits after it in its run + 1)

    (w: 2 on the units digit, 4 on the tens, ...: the authors' integer place weight), and "mean"
    averages over digit rows: the authors' `.mean()` over the [digit rows, 10] matrix. Use as
    CE + weight * del_term (the authors: weight 0.01).

    Choices: a run is a contiguous stretch of digit labels along the last dimension (the authors join
    runs over the flattened non-ignored tokens of the whole batch, so a number can continue into the
    next sequence); decimal points are not recognised (the authors weight decimal digits by
    1.02 ** -(position after the point) and give the point itself 0): here the digits after a "."
    form an integer run of their own. For integer answers the two agree.

    Args:
        logits: [..., V]; labels: [...] already shifted; digit_ids: ten ids or [G, 10] groups.

    Returns:
        Scalar, or [...] per position (0 off digit rows) for "none".

    Raises:
        ValueError: bad logits, labels, digit_ids, reduction or num_items_in_batch (named).

    Example:
        The number "24" against a model sure of the digit 4: the tens digit (place weight 4) is
        wrong with softplus(20) = 20 per wrong logit, the units digit (weight 2) is right:

        >>> import torch
        >>> from sl_core import del_term
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> logits = torch.zeros(1, 3, 12)
        >>> _ = logits[..., digits[4]].fill_(20.0)
        >>> labels = torch.tensor([[digits[2], digits[4], 0]])
        >>> [round(v, 3) for v in del_term(logits, labels, digits, reduction="none")[0].tolist()]
        [8.0, 0.0, 0.0]
    """
    def term(z_d, td, after, full_rows):
        p = torch.softmax(z_d, dim=-1)
        y = torch.nn.functional.one_hot(td, 10).to(z_d.dtype)
        bce = torch.nn.functional.softplus(z_d) - y * z_d
        return 2.0 * (after + 1).to(z_d.dtype) * (p * bce).sum(-1) / 10.0
    return digit_row_term(logits, labels, digit_ids, term, ignore_index=ignore_index, reduction=reduction,
                          num_items_in_batch=num_items_in_batch)

