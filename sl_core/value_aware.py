"""Value-aware soft labels for merged-digit tokenizers (LLaMA-3, tiktoken: "7", "42", "123" are single tokens).

Definition. Numeric tokens (see `sl_core.numeric_token_values`) are grouped by (leading-space
marker, digit-string width). For a target numeric token i with value v_i, the soft distribution
spreads over the tokens j of the same group by distance in value d = |v_j - v_i|:

    psi_value(j | i) proportional to  k(d; scale)   for j in group(i), 0 elsewhere

with k the kernel of a distance shape of `sl_core.psi` (`sl_core.psi.value_kernels()`: `triangular`
k = max(0, scale - d), `gaussian` k = exp(-d^2 / (2 scale^2)), `laplace` k = exp(-d / scale),
`uniform` k = 1, and any shape registered with a kernel), i.e. the digit shapes with the distance
measured in value units; the kernel functions are the psi registry's own (`sl_core.psi.psi_kernel`). The target is then, as in the paper,
q = (1 - eta) * onehot(i) + eta * psi_value(. | i), and the token's loss is weighted by lam.

On a digit-splitting tokenizer (one group "0".."9") this is exactly `soft_label_cross_entropy`
with the same shape and parameter. Keeping groups apart means a soft label never rewards
"Ġ43" for "42" or "043" for "43", which would change the text rather than the value.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch

from sl_core import _validate as V
from sl_core._kernel import compute_dtype
from sl_core.backend import check_backend, resolve_backend
from sl_core.digits import NumericTokens
from sl_core.loss import soft_target, sparse_soft_ce
from sl_core.psi import psi_default_param, psi_kernel, psi_takes_param, validate_psi_rows, value_kernels

__all__ = ["value_psi_matrix", "value_aware_soft_label_cross_entropy"]



@V.renamed_argument("numeric", "digit_ids")
def value_psi_matrix(digit_ids: NumericTokens | Sequence[int] | Sequence[Sequence[int]], psi: str = "laplace", scale: float | None = None) -> torch.Tensor:
    """[K, K] float64, row i = psi_value(. | token i) over the K numeric tokens (same order as the tokens' ids).

    Args:
        digit_ids: the numeric tokens (`numeric_token_values`), or digit ids / [G, 10] groups
            (`NumericTokens.from_digit_ids`). `numeric=` is a deprecated alias.
        psi: a kernel shape of `sl_core.psi` (`value_kernels()`: laplace, gaussian, triangular, uniform).
        scale: the kernel's scale in value units (> 0); None uses the shape's default parameter
            (`sl_core.psi.psi_default_param`). `uniform` takes none.

    Example:
        Tokens "40", "41", "43" and "Ġ41": a target "41" spreads its soft mass over its own group
        (unmarked, two digits) by value distance, never onto "Ġ41":

        >>> from sl_core import NumericTokens, value_psi_matrix
        >>> nt = NumericTokens(ids=(7, 8, 9, 10), values=(40, 41, 43, 41), widths=(2, 2, 2, 2),
        ...                    markers=("", "", "", "Ġ"))
        >>> [round(p, 3) for p in value_psi_matrix(nt, "triangular", 3.0)[1].tolist()]
        [0.333, 0.5, 0.167, 0.0]
    """
    return _cached_value_psi(V.check_numeric_tokens(digit_ids), psi, scale).clone()


@functools.lru_cache(maxsize=32)
def _cached_value_psi(numeric: NumericTokens, psi: str, scale: float | None) -> torch.Tensor:
    if not isinstance(psi, str) or psi not in value_kernels():
        raise ValueError(f"psi: unknown value-aware kernel {psi!r}; choose one of {', '.join(value_kernels())}")
    if not psi_takes_param(psi):
        if scale is not None:
            raise ValueError(f"scale: kernel {psi!r} takes no scale, got {scale!r}")
        s = None
    else:
        s = V.check_positive("scale", psi_default_param(psi) if scale is None else scale)
    values = torch.tensor(numeric.values, dtype=torch.float64)
    group_keys = {g: k for k, g in enumerate(dict.fromkeys(numeric.groups))}
    group = torch.tensor([group_keys[g] for g in numeric.groups])
    d = (values.unsqueeze(0) - values.unsqueeze(1)).abs()
    logw = psi_kernel(psi)(d, s)
    logw = logw.masked_fill(group.unsqueeze(0) != group.unsqueeze(1), -torch.inf)
    # the diagonal is finite for a proper kernel, so rows are distributions; a user kernel's are checked
    return validate_psi_rows(torch.softmax(logw, dim=1), what=f"value-aware psi {psi!r} (scale={s!r})")


@V.renamed_argument("numeric", "digit_ids")
def value_aware_soft_label_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    digit_ids: NumericTokens | Sequence[int] | Sequence[Sequence[int]],
    *,
    eta: float,
    lam: float = 1.0,
    psi: str = "laplace",
    scale: float | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | float | torch.Tensor | None = None,
    place_exponent: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Soft-label CE where numeric targets get `(1 - eta) onehot + eta psi_value` (see the module docstring).

    Args:
        logits: [..., V]; labels: [...] int, already shifted, values in [0, V) or ignore_index.
        digit_ids: the vocabulary's numeric tokens (`sl_core.numeric_token_values(tokenizer)`), or digit
            ids / [G, 10] groups (`NumericTokens.from_digit_ids`). `numeric=` is a deprecated alias.
        eta, lam, ignore_index, reduction, num_items_in_batch, place_exponent: as in
            `soft_label_cross_entropy` (place-aware runs are runs of numeric tokens).
        psi, scale: the value kernel and its scale in value units (see `value_psi_matrix`).
        backend: "auto", "torch" or "triton", as in `soft_label_cross_entropy`.

    Returns:
        Scalar loss (float32, float64 for float64 logits) or [...] per-token losses for "none".

    Example:
        On digit tokens it is `soft_label_cross_entropy` with the same shape and parameter:

        >>> import torch
        >>> from sl_core import NumericTokens, soft_label_cross_entropy, value_aware_soft_label_cross_entropy
        >>> digits = list(range(2, 12))  # token ids of "0".."9" in a 12-token vocabulary
        >>> numeric = NumericTokens.from_digit_ids(digits)  # or sl_core.numeric_token_values(tokenizer)
        >>> _ = torch.manual_seed(0)
        >>> logits, labels = torch.randn(6, 12), torch.tensor([0, 2, 5, 11, -100, 7])
        >>> loss = value_aware_soft_label_cross_entropy(logits, labels, numeric, eta=0.2, psi="laplace")
        >>> torch.allclose(loss, soft_label_cross_entropy(logits, labels, digits, eta=0.2, psi="laplace"))
        True
    """
    V.check_logits(logits)
    vocab = logits.shape[-1]
    numeric = V.check_numeric_tokens(digit_ids, vocab)
    eta_f, lam_f, num_items, place_exponent = V.check_soft_label_args(eta, lam, reduction, num_items_in_batch,
                                                                      place_exponent)
    V.check_labels(labels, logits.shape[:-1], vocab, ignore_index)
    engine = resolve_backend(check_backend(backend), logits.device, logits.dtype)
    cdt = compute_dtype(logits.dtype)
    psi_m = _cached_value_psi(numeric, psi, scale).to(device=logits.device, dtype=cdt)
    cols = torch.tensor(numeric.ids, dtype=torch.long, device=logits.device)
    target, valid = soft_target(labels, cols, psi_m, eta=eta_f, lam=lam_f, ignore_index=ignore_index,
                                cdt=cdt, place_exponent=place_exponent)
    return sparse_soft_ce(engine, logits, target, valid, labels.shape, reduction, num_items)
