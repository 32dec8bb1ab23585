"""soft_label_cross_entropy (and the value-aware mode) against the dense float64 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sl_core import (
    NumericTokens, place_factors, psi_matrix, soft_label_cross_entropy, value_aware_soft_label_cross_entropy,
    value_psi_matrix,
)
from tests.reference import place_factor_loop, small_blocks, soft_ce_reference

SHAPES = ("triangular", "binomial", "poisson", "uniform", "gaussian", "laplace")


TOL = {torch.float64: dict(rtol=1e-9, atol=1e-11), torch.float32: dict(rtol=1e-5, atol=1e-6),
       torch.bfloat16: dict(rtol=2e-2, atol=2e-3), torch.float16: dict(rtol=5e-3, atol=1e-3)}


def make_case(seed: int, batch: int, seq: int, vocab: int, p_digit: float, p_ignore: float):
    """Random logits [batch, seq, vocab], labels with digit and ignored positions, and 10 digit ids."""
    g = torch.Generator().manual_seed(seed)
    digits = torch.randperm(vocab, generator=g)[:10].tolist()
    logits = torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    u = torch.rand(batch, seq, generator=g)
    digit_pick = torch.tensor(digits)[torch.randint(0, 10, (batch, seq), generator=g)]
    labels = torch.where(u < p_digit, digit_pick, labels)
    labels = torch.where(torch.rand(batch, seq, generator=g) < p_ignore, torch.full_like(labels, -100), labels)
    return logits, labels, digits


def _check(ours: torch.Tensor, ours_grad: torch.Tensor, ref: torch.Tensor, ref_grad: torch.Tensor,
           dtype: torch.dtype) -> None:
    tol = TOL[dtype]
    torch.testing.assert_close(ours.to(torch.float64), ref, **tol)
    scale = max(1.0, float(ref_grad.abs().max()))
    torch.testing.assert_close(ours_grad.to(torch.float64), ref_grad, rtol=tol["rtol"], atol=tol["atol"] * scale)


@settings(max_examples=70, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 3), seq=st.integers(1, 8), vocab=st.integers(12, 48),
    p_digit=st.floats(0.0, 1.0), p_ignore=st.sampled_from([0.0, 0.3, 1.0]),
    eta=st.floats(0.0, 1.0), lam=st.floats(0.0, 4.0),
    psi=st.sampled_from(SHAPES), log_param=st.none() | st.floats(-1.0, 1.0),
    reduction=st.sampled_from(["mean", "sum", "none"]), num_items=st.none() | st.integers(1, 30),
    place=st.none() | st.floats(0.0, 3.0),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16]),
    layout=st.sampled_from(["3d", "2d", "strided"]),
    block=st.sampled_from([None, 1, 60, 150]), live=st.booleans(),
    forward=st.sampled_from(["logsumexp", "log_softmax"]),
)
def test_matches_dense_reference(seed, batch, seq, vocab, p_digit, p_ignore, eta, lam, psi, log_param,
                                 reduction, num_items, place, dtype, layout, block, live, forward) -> None:
    logits64, labels, digits = make_case(seed, batch, seq + (layout == "strided"), vocab, p_digit, p_ignore)
    param = None if (log_param is None or psi == "uniform") else 10.0 ** log_param
    leaf = logits64.to(dtype).requires_grad_()
    if layout == "strided":  # logits[:, :-1] is not flattenable without a copy
        logits, labels = leaf[:, :-1], labels[:, :-1]
    elif layout == "2d":
        logits, labels = leaf.reshape(-1, vocab), labels.reshape(-1)
        place = None  # place-awareness follows the last dim; keep the 2D case comparable
    else:
        logits = leaf
    kw = dict(eta=eta, lam=lam, reduction=reduction)
    with small_blocks(block, live, forward):
        loss = soft_label_cross_entropy(logits, labels, digits, psi=psi, psi_param=param,
                                        num_items_in_batch=num_items, place_exponent=place, **kw)
        weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).view(loss.shape)
        (loss * weights).sum().backward()

    ref_leaf = leaf.detach().to(torch.float64).requires_grad_()
    ref_logits = ref_leaf[:, :-1] if layout == "strided" else ref_leaf.reshape(logits.shape)
    ref = soft_ce_reference(ref_logits, labels, digits, psi_matrix(psi, param), num_items=num_items,
                            place_exponent=place, **kw)
    (ref * weights.to(torch.float64)).sum().backward()
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert leaf.grad.dtype == dtype
    _check(loss.detach(), leaf.grad, ref.detach(), ref_leaf.grad, dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eta_zero_lam_one_is_cross_entropy(reduction: str, dtype: torch.dtype) -> None:
    logits64, labels, digits = make_case(3, 4, 9, 37, 0.5, 0.2)
    a = logits64.to(dtype).requires_grad_()
    b = logits64.to(dtype).requires_grad_()
    ours = soft_label_cross_entropy(a, labels, digits, eta=0.0, lam=1.0, reduction=reduction)
    ref = F.cross_entropy(b.transpose(1, 2), labels, reduction=reduction)
    torch.testing.assert_close(ours, ref)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_half_precision_matches_cross_entropy_in_float32() -> None:
    logits64, labels, digits = make_case(5, 2, 16, 64, 0.3, 0.1)
    for dtype in (torch.bfloat16, torch.float16):
        z = logits64.to(dtype).requires_grad_()
        ref_z = z.detach().float().requires_grad_()
        loss = soft_label_cross_entropy(z, labels, digits, eta=0.0)
        ref = F.cross_entropy(ref_z.transpose(1, 2), labels)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
        loss.backward()
        ref.backward()
        assert z.grad.dtype == dtype
        torch.testing.assert_close(z.grad.float(), ref_z.grad, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored_is_zero_with_zero_grad(reduction: str) -> None:
    z = torch.randn(2, 5, 20, requires_grad=True)
    labels = torch.full((2, 5), -100)
    loss = soft_label_cross_entropy(z, labels, list(range(10)), eta=0.3, lam=2.0, reduction=reduction)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_mean_divides_by_all_non_ignored_tokens_and_num_items_overrides() -> None:
    logits64, labels, digits = make_case(11, 2, 10, 30, 0.5, 0.3)
    total = soft_label_cross_entropy(logits64, labels, digits, eta=0.2, lam=3.0, reduction="sum")
    count = int((labels != -100).sum())
    mean = soft_label_cross_entropy(logits64, labels, digits, eta=0.2, lam=3.0)
    torch.testing.assert_close(mean, total / count)
    for n in (7, torch.tensor(7), torch.tensor([7.0])):
        torch.testing.assert_close(
            soft_label_cross_entropy(logits64, labels, digits, eta=0.2, lam=3.0, num_items_in_batch=n), total / 7)


def test_explicit_psi_matrix_equals_named_shape() -> None:
    logits64, labels, digits = make_case(2, 2, 6, 25, 0.7, 0.0)
    named = soft_label_cross_entropy(logits64, labels, digits, eta=0.4, psi="laplace", psi_param=2.0)
    explicit = soft_label_cross_entropy(logits64, labels, digits, eta=0.4, psi=psi_matrix("laplace", 2.0))
    torch.testing.assert_close(named, explicit)


def test_place_factors_match_loop_reference() -> None:
    g = torch.Generator().manual_seed(0)
    is_digit = torch.rand(5, 17, generator=g) < 0.6
    for exponent in (0.0, 0.5, 1.0, 2.5):
        got = place_factors(is_digit, exponent)
        for row, out in zip(is_digit.tolist(), got.tolist()):
            ref = place_factor_loop(row, exponent if exponent else None)
            expect = [f if d else 0.0 for f, d in zip(ref, row)]
            assert out == pytest.approx(expect)
    # a 3-digit number followed by a 1-digit one: 1, 2/3, 1/3 then 1 (exponent 1)
    got = place_factors(torch.tensor([True, True, True, False, True]), 1.0)
    assert got.tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 1.0])


def test_place_aware_off_by_default_and_reduces_soft_mass() -> None:
    logits64, labels, digits = make_case(4, 2, 12, 30, 0.9, 0.0)
    base = soft_label_cross_entropy(logits64, labels, digits, eta=0.3)
    assert torch.equal(base, soft_label_cross_entropy(logits64, labels, digits, eta=0.3, place_exponent=None))
    assert torch.equal(base, soft_label_cross_entropy(logits64, labels, digits, eta=0.3, place_exponent=0.0))
    placed = soft_label_cross_entropy(logits64, labels, digits, eta=0.3, place_exponent=2.0)
    assert not torch.equal(base, placed)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), eta=st.floats(0.0, 1.0), lam=st.floats(0.0, 3.0),
       kernel=st.sampled_from(["laplace", "gaussian", "triangular", "uniform"]), scale=st.floats(0.5, 30.0),
       place=st.none() | st.floats(0.0, 2.0), block=st.sampled_from([None, 1, 130]),
       forward=st.sampled_from(["logsumexp", "log_softmax"]))
def test_value_aware_matches_dense_reference(seed, eta, lam, kernel, scale, place, block, forward) -> None:
    g = torch.Generator().manual_seed(seed)
    vocab = 60
    ids = torch.randperm(vocab, generator=g)[:25].tolist()
    values = list(range(10)) + [10, 25, 42, 57, 99] + [7, 42, 43, 44] + [5, 50, 500, 999, 0, 1]
    groups = [("", 1)] * 10 + [("", 2)] * 5 + [("Ġ", 2)] * 4 + [("Ġ", 3)] * 6
    num = NumericTokens(tuple(ids), tuple(values), tuple(w for _, w in groups), tuple(m for m, _ in groups))
    scale_arg = None if kernel == "uniform" else scale
    logits = torch.randn(3, 9, vocab, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, vocab, (3, 9), generator=g)
    pick = torch.tensor(ids)[torch.randint(0, len(ids), (3, 9), generator=g)]
    labels = torch.where(torch.rand(3, 9, generator=g) < 0.6, pick, labels)
    labels[0, 0] = -100
    with small_blocks(block, forward=forward):
        loss = value_aware_soft_label_cross_entropy(logits, labels, num, eta=eta, lam=lam, psi=kernel,
                                                    scale=scale_arg, place_exponent=place)
        (grad,) = torch.autograd.grad(loss, logits)
    ref = soft_ce_reference(logits, labels, ids, value_psi_matrix(num, kernel, scale_arg), eta=eta, lam=lam,
                            place_exponent=place)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    _check(loss, grad, ref, ref_grad, torch.float64)


def test_value_aware_on_digits_equals_soft_labels() -> None:
    logits64, labels, digits = make_case(9, 2, 10, 40, 0.6, 0.1)
    num = NumericTokens.from_digit_ids(digits)
    for kernel, param in [("laplace", 1.3), ("gaussian", 0.8), ("triangular", 2.0)]:
        a = value_aware_soft_label_cross_entropy(logits64, labels, num, eta=0.3, lam=2.0, psi=kernel, scale=param)
        b = soft_label_cross_entropy(logits64, labels, digits, eta=0.3, lam=2.0, psi=kernel, psi_param=param)
        torch.testing.assert_close(a, b)


def _call(**overrides):
    z = torch.randn(2, 4, 20)
    labels = torch.randint(0, 20, (2, 4))
    kw = dict(logits=z, labels=labels, digit_ids=list(range(10)), eta=0.1)
    kw.update(overrides)
    return soft_label_cross_entropy(kw.pop("logits"), kw.pop("labels"), kw.pop("digit_ids"), **kw)


@pytest.mark.parametrize("overrides, match", [
    (dict(eta=-0.1), "eta must be in"),
    (dict(eta=1.5), "eta must be in"),
    (dict(eta=float("nan")), "eta must be finite"),
    (dict(lam=-1.0), "lam must be >= 0"),
    (dict(psi="zigzag"), "psi: unknown shape 'zigzag'"),
    (dict(psi="gaussian", psi_param=0.0), "psi_param"),
    (dict(psi="laplace", psi_param=-2.0), "psi_param"),
    (dict(psi=torch.ones(10, 10)), "psi row 0 sums to"),
    (dict(digit_ids=list(range(9))), "digit_ids must hold exactly 10"),
    (dict(digit_ids=[0, 1, 2, 3, 4, 5, 6, 7, 8, 8]), "digit_ids must hold 10 distinct"),
    (dict(digit_ids=list(range(15, 25))), r"digit_ids must lie in \[0, 20\)"),
    (dict(labels=torch.full((2, 4), 20)), r"labels must lie in \[0, 20\).*found 20"),
    (dict(labels=torch.full((2, 4), -1)), "labels must lie in.*found -1"),
    (dict(labels=torch.zeros(2, 5, dtype=torch.long)), r"labels shape \(2, 5\) does not match logits"),
    (dict(labels=torch.zeros(2, 4)), "labels must be an integer tensor"),
    (dict(logits=torch.zeros(2, 4, 20, dtype=torch.long)), "logits must be a floating-point tensor"),
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(num_items_in_batch=0), "num_items_in_batch must be > 0"),
    (dict(place_exponent=-1.0), "place_exponent must be >= 0"),
])
def test_bad_inputs_raise_value_error_naming_the_argument(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _call(**overrides)


def test_ignore_index_is_configurable() -> None:
    z = torch.randn(6, 20, dtype=torch.float64)
    labels = torch.tensor([1, 2, 3, 12, 13, 19])
    custom = labels.clone()
    custom[1] = 19
    a = soft_label_cross_entropy(z, torch.tensor([1, -100, 3, 12, 13, 19]), list(range(10)), eta=0.2)
    b = soft_label_cross_entropy(z[[0, 2, 3, 4, 5]], labels[[0, 2, 3, 4, 5]], list(range(10)), eta=0.2)
    torch.testing.assert_close(a, b)
    c = soft_label_cross_entropy(z[:5], torch.tensor([1, 19, 3, 12, 13]), list(range(10)), eta=0.2,
                                 ignore_index=19)
    torch.testing.assert_close(c, soft_label_cross_entropy(z[[0, 2, 3, 4]], labels[[0, 2, 3, 4]],
                                                           list(range(10)), eta=0.2))
