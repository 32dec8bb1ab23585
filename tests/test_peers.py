"""Peer losses: torch's own CE / label smoothing, the `ntloss` package, and the dense reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sl_core import (
    gaussian_soft_cross_entropy, hard_cross_entropy, label_smoothing_cross_entropy, ntil_emd, ntl_mse, ntl_was,
    psi_matrix,
)
from tests.reference import digit_emd_reference, small_blocks, soft_ce_reference


def make_case(seed: int, batch: int, seq: int, vocab: int, digits: list[int], p_digit: float = 0.5,
              p_ignore: float = 0.2, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * 2).to(dtype)
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    pick = torch.tensor(digits)[torch.randint(0, 10, (batch, seq), generator=g)]
    labels = torch.where(torch.rand(batch, seq, generator=g) < p_digit, pick, labels)
    labels = torch.where(torch.rand(batch, seq, generator=g) < p_ignore, torch.full_like(labels, -100), labels)
    return logits, labels


DIGITS = [3, 17, 5, 22, 9, 11, 28, 14, 1, 25]


def _value_and_grad(fn, logits, *args, **kw):
    z = logits.detach().clone().requires_grad_()
    out = fn(z, *args, **kw)
    (g,) = torch.autograd.grad(out.sum(), z)
    return out.detach(), g


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_hard_equals_torch_cross_entropy(reduction: str) -> None:
    logits, labels = make_case(0, 3, 7, 30, DIGITS)
    ours = _value_and_grad(hard_cross_entropy, logits, labels, DIGITS, reduction=reduction)
    ref = _value_and_grad(lambda z, y: F.cross_entropy(z.transpose(1, 2), y, reduction=reduction), logits, labels)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.7, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("forward", ["logsumexp", "log_softmax"])
def test_label_smoothing_equals_torch(smoothing: float, reduction: str, forward: str) -> None:
    logits, labels = make_case(1, 2, 9, 30, DIGITS)
    with small_blocks(40, forward=forward):
        ours = _value_and_grad(label_smoothing_cross_entropy, logits, labels, smoothing=smoothing,
                               reduction=reduction)
    ref = _value_and_grad(lambda z, y: F.cross_entropy(z.transpose(1, 2), y, reduction=reduction,
                                                       label_smoothing=smoothing), logits, labels)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), sigma=st.floats(0.05, 5.0), reduction=st.sampled_from(["mean", "sum"]))
def test_gaussian_matches_dense_reference(seed: int, sigma: float, reduction: str) -> None:
    logits, labels = make_case(seed, 2, 8, 30, DIGITS)
    ours = _value_and_grad(gaussian_soft_cross_entropy, logits, labels, DIGITS, sigma=sigma, reduction=reduction)
    ref = _value_and_grad(lambda z, y: soft_ce_reference(z, y, DIGITS, psi_matrix("gaussian", sigma), eta=1.0,
                                                         reduction=reduction), logits, labels)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_gaussian_sigma_zero_is_hard() -> None:
    logits, labels = make_case(2, 2, 8, 30, DIGITS)
    torch.testing.assert_close(gaussian_soft_cross_entropy(logits, labels, DIGITS, sigma=0.0),
                               hard_cross_entropy(logits, labels))


@pytest.fixture(scope="module")
def ntl_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """A local 30-token tokenizer whose digits sit at DIGITS, reloaded through from_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(30)]
    for d, idx in enumerate(DIGITS):
        words[idx] = str(d)
    words[0], words[2] = "[UNK]", "."
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    path: Path = tmp_path_factory.mktemp("ntl_tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("reweigh", [True, False])
@pytest.mark.parametrize("kind", ["was", "mse"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ntl_matches_ntloss_package(ntl_tokenizer, kind: str, reweigh: bool, reduction: str) -> None:
    ntloss = pytest.importorskip("ntloss")
    pkg = (ntloss.NTLoss if kind == "was" else ntloss.NTLossDotProduct)(tokenizer=ntl_tokenizer, reweigh=reweigh)
    ours_fn = ntl_was if kind == "was" else ntl_mse
    for seed in range(3):
        logits, labels = make_case(seed, 3, 10, 30, DIGITS, dtype=torch.float32)
        ours = _value_and_grad(ours_fn, logits, labels, DIGITS, reweigh=reweigh, reduction=reduction)
        ref = _value_and_grad(lambda z, y: pkg(z, y, reduction=reduction), logits, labels)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["was", "mse"])
@pytest.mark.parametrize("reweigh", [True, False])
def test_ntl_matches_dense_reference(kind: str, reweigh: bool) -> None:
    logits, labels = make_case(7, 2, 12, 30, DIGITS)
    fn = ntl_was if kind == "was" else ntl_mse
    ours = _value_and_grad(fn, logits, labels, DIGITS, reweigh=reweigh)
    ref = _value_and_grad(lambda z, y: digit_emd_reference(z, y, DIGITS, kind, reweigh=reweigh), logits, labels)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("digit_exp", [1.0, 1.2, 2.0])
def test_ntil_emd_matches_reference_with_place_weights(digit_exp: float) -> None:
    logits, labels = make_case(8, 3, 14, 30, DIGITS, p_digit=0.8, p_ignore=0.1)
    ours = _value_and_grad(ntil_emd, logits, labels, DIGITS, digit_exp=digit_exp)
    ref = _value_and_grad(lambda z, y: digit_emd_reference(z, y, DIGITS, "emd", digit_exp=digit_exp),
                          logits, labels)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    # without place weights NTIL's EMD is NTL-WAS without reweighing
    if digit_exp == 1.0:
        torch.testing.assert_close(ours[0], ntl_was(logits, labels, DIGITS, reweigh=False))


def test_auxiliary_terms_without_digits_are_zero() -> None:
    logits, labels = make_case(9, 2, 6, 30, DIGITS, p_digit=0.0, p_ignore=0.0)
    labels = torch.where(torch.isin(labels, torch.tensor(DIGITS)), 0, labels)
    z = logits.clone().requires_grad_()
    for fn in (ntl_was, ntl_mse, ntil_emd):
        value = fn(z, labels, DIGITS)
        assert value.item() == 0.0
        # added to CE (how the families use it) the gradient is CE's alone
        (g,) = torch.autograd.grad(hard_cross_entropy(z, labels) + 0.3 * value, z)
        torch.testing.assert_close(g, torch.autograd.grad(hard_cross_entropy(z, labels), z)[0])


def test_auxiliary_mean_with_num_items_is_token_weighted() -> None:
    logits, labels = make_case(10, 2, 10, 30, DIGITS)
    local = int((labels != -100).sum())
    for fn in (ntl_was, ntl_mse, ntil_emd):
        mean = fn(logits, labels, DIGITS)
        torch.testing.assert_close(fn(logits, labels, DIGITS, num_items_in_batch=3 * local), mean / 3)


@pytest.mark.parametrize("call, match", [
    (lambda z, y: label_smoothing_cross_entropy(z, y, smoothing=1.5), "smoothing must be in"),
    (lambda z, y: gaussian_soft_cross_entropy(z, y, DIGITS, sigma=-1.0), "sigma must be >= 0"),
    (lambda z, y: ntil_emd(z, y, DIGITS, digit_exp=0.0), "digit_exp must be > 0"),
    (lambda z, y: ntl_was(z, y, DIGITS[:9]), "digit_ids must hold exactly 10"),
    (lambda z, y: ntl_mse(z, y, DIGITS, reduction="max"), "reduction must be one of"),
    (lambda z, y: hard_cross_entropy(z, y[:, :-1]), "labels shape"),
])
def test_bad_inputs(call, match: str) -> None:
    logits, labels = make_case(11, 2, 5, 30, DIGITS)
    with pytest.raises(ValueError, match=match):
        call(logits, labels)
