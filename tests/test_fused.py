"""fused_linear_soft_label_cross_entropy: same values and gradients (hidden, weight, bias) as the reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sl_core import fused_linear_soft_label_cross_entropy, psi_matrix, soft_label_cross_entropy
from tests.reference import small_blocks, soft_ce_reference

TOL = {torch.float64: dict(rtol=1e-9, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def make_case(seed: int, n: int, h: int, vocab: int, p_digit: float, p_ignore: float, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    digits = torch.randperm(vocab, generator=g)[:10].tolist()
    hidden = torch.randn(n, h, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(vocab, h, generator=g, dtype=torch.float64) / h ** 0.5).to(dtype)
    bias = torch.randn(vocab, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, vocab, (n,), generator=g)
    pick = torch.tensor(digits)[torch.randint(0, 10, (n,), generator=g)]
    labels = torch.where(torch.rand(n, generator=g) < p_digit, pick, labels)
    labels = torch.where(torch.rand(n, generator=g) < p_ignore, torch.full_like(labels, -100), labels)
    return hidden, weight, bias, labels, digits


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40), h=st.integers(1, 12), vocab=st.integers(12, 40),
    p_digit=st.floats(0.0, 1.0), p_ignore=st.sampled_from([0.0, 0.4, 1.0]),
    eta=st.floats(0.0, 1.0), lam=st.floats(0.0, 3.0), psi=st.sampled_from(["triangular", "binomial", "gaussian"]),
    reduction=st.sampled_from(["mean", "sum", "none"]), num_items=st.none() | st.integers(1, 50),
    place=st.none() | st.floats(0.0, 2.0), with_bias=st.booleans(), chunk=st.none() | st.integers(1, 17),
    dtype=st.sampled_from([torch.float64, torch.float32]), upstream=st.floats(-2.0, 2.0),
    block=st.sampled_from([None, 1, 70]), forward=st.sampled_from(["logsumexp", "log_softmax"]),
)
def test_matches_dense_reference(seed, n, h, vocab, p_digit, p_ignore, eta, lam, psi, reduction, num_items,
                                 place, with_bias, chunk, dtype, upstream, block, forward) -> None:
    hidden, weight, bias, labels, digits = make_case(seed, n, h, vocab, p_digit, p_ignore, dtype)
    inputs = [hidden.requires_grad_(), weight.requires_grad_()] + ([bias.requires_grad_()] if with_bias else [])
    kw = dict(eta=eta, lam=lam, reduction=reduction, num_items=num_items, place_exponent=place)
    with small_blocks(block, forward=forward):
        loss = fused_linear_soft_label_cross_entropy(
            hidden, weight, labels, digits, bias=bias if with_bias else None, psi=psi, chunk_size=chunk,
            **{k if k != "num_items" else "num_items_in_batch": v for k, v in kw.items()})
        coef = torch.linspace(-1.0, 1.0, loss.numel(), dtype=loss.dtype).view(loss.shape) * upstream
        grads = torch.autograd.grad((loss * coef).sum(), inputs)

    ref_inputs = [x.detach().to(torch.float64).requires_grad_() for x in inputs]
    logits = ref_inputs[0] @ ref_inputs[1].T + (ref_inputs[2] if with_bias else 0.0)
    ref = soft_ce_reference(logits, labels, digits, psi_matrix(psi), **kw)
    ref_grads = torch.autograd.grad((ref * coef.to(torch.float64)).sum(), ref_inputs, allow_unused=True)

    tol = TOL[dtype]
    torch.testing.assert_close(loss.detach().to(torch.float64), ref.detach(), **tol)
    for g, r, x in zip(grads, ref_grads, inputs):
        assert g.dtype == x.dtype and g.shape == x.shape
        r = torch.zeros_like(g, dtype=torch.float64) if r is None else r
        scale = max(1.0, float(r.abs().max()))
        torch.testing.assert_close(g.to(torch.float64), r, rtol=tol["rtol"], atol=tol["atol"] * scale)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bfloat16_close_to_unfused(reduction: str) -> None:
    hidden, weight, bias, labels, digits = make_case(1, 64, 16, 300, 0.4, 0.1, torch.bfloat16)
    leaves = [x.requires_grad_() for x in (hidden, weight, bias)]
    loss = fused_linear_soft_label_cross_entropy(hidden, weight, labels, digits, bias=bias, eta=0.2, lam=2.0,
                                                 reduction=reduction, chunk_size=24)
    grads = torch.autograd.grad(loss.sum(), leaves)
    f32 = [x.detach().float().requires_grad_() for x in leaves]
    ref = soft_label_cross_entropy(f32[0] @ f32[1].T + f32[2], labels, digits, eta=0.2, lam=2.0, reduction=reduction)
    ref_grads = torch.autograd.grad(ref.sum(), f32)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
    for g, r, x in zip(grads, ref_grads, leaves):
        assert g.dtype == torch.bfloat16
        torch.testing.assert_close(g.float(), r, rtol=5e-2, atol=5e-2 * float(r.abs().max()))


def test_no_grad_eval_and_partial_requires_grad() -> None:
    hidden, weight, bias, labels, digits = make_case(2, 30, 8, 50, 0.5, 0.2, torch.float64)
    with torch.no_grad():
        value = fused_linear_soft_label_cross_entropy(hidden, weight, labels, digits, bias=bias, eta=0.3)
    ref = soft_label_cross_entropy(hidden @ weight.T + bias, labels, digits, eta=0.3)
    torch.testing.assert_close(value, ref)
    # only the hidden states need a gradient (a frozen lm_head)
    h = hidden.clone().requires_grad_()
    loss = fused_linear_soft_label_cross_entropy(h, weight, labels, digits, bias=bias, eta=0.3)
    (g,) = torch.autograd.grad(loss, h)
    h2 = hidden.clone().requires_grad_()
    (g2,) = torch.autograd.grad(soft_label_cross_entropy(h2 @ weight.T + bias, labels, digits, eta=0.3), h2)
    torch.testing.assert_close(g, g2)


def test_backward_twice_is_refused() -> None:
    hidden, weight, _, labels, digits = make_case(3, 10, 4, 20, 0.5, 0.0, torch.float32)
    weight.requires_grad_()
    loss = fused_linear_soft_label_cross_entropy(hidden, weight, labels, digits, eta=0.1)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward called twice"):
        loss.backward()


def test_all_ignored_is_zero_with_zero_grads() -> None:
    hidden, weight, bias, _, digits = make_case(4, 9, 4, 20, 0.0, 0.0, torch.float32)
    leaves = [x.requires_grad_() for x in (hidden, weight, bias)]
    loss = fused_linear_soft_label_cross_entropy(hidden, weight, torch.full((9,), -100), digits, bias=bias, eta=0.5)
    assert loss.item() == 0.0
    for g in torch.autograd.grad(loss, leaves):
        assert torch.count_nonzero(g) == 0


@pytest.mark.parametrize("overrides, match", [
    (dict(weight=torch.randn(20, 5)), "hidden's last dim"),
    (dict(weight=torch.randn(20, 4, dtype=torch.float64)), "hidden dtype"),
    (dict(bias=torch.randn(19)), "bias must be"),
    (dict(labels=torch.full((6,), 25)), r"labels must lie in \[0, 20\)"),
    (dict(labels=torch.zeros(5, dtype=torch.long)), "labels shape"),
    (dict(eta=2.0), "eta must be in"),
    (dict(lam=-0.5), "lam must be >= 0"),
    (dict(digit_ids=list(range(11))), "digit_ids must hold exactly 10"),
    (dict(chunk_size=0), "chunk_size must be a positive int"),
    (dict(psi="nope"), "psi: unknown shape"),
])
def test_bad_inputs(overrides: dict, match: str) -> None:
    kw = dict(hidden=torch.randn(6, 4), weight=torch.randn(20, 4), labels=torch.randint(0, 20, (6,)),
              digit_ids=list(range(10)), eta=0.1)
    kw.update(overrides)
    with pytest.raises(ValueError, match=match):
        fused_linear_soft_label_cross_entropy(kw.pop("hidden"), kw.pop("weight"), kw.pop("labels"),
                                              kw.pop("digit_ids"), **kw)
