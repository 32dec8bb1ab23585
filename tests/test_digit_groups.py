"""Word-start-marked digits ("▁7", "Ġ7"): discovered as digit groups, covered by every digit loss.

A tokenizer that writes the answer "7" as "▁7" would otherwise give the soft-label loss no digit
target at all (it would equal hard CE). These tests build such tokenizers offline and check the
discovery, the coverage measure, and the losses against dense float64 references.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sl_core
from sl_core import build_loss, digit_token_groups, family_tokens, soft_target_coverage
from sl_core.families import soft_columns
from tests.marked_tokenizers import bytelevel_marked, sentencepiece_marked
from tests.reference import digit_emd_reference, grouped_psi_reference, soft_ce_reference

MARKED = {"sentencepiece": sentencepiece_marked, "bytelevel": bytelevel_marked}


@pytest.fixture(scope="module", params=sorted(MARKED))
def marked(request, tmp_path_factory):
    return request.param, MARKED[request.param](tmp_path_factory.mktemp(request.param))


def _answers(tok, texts):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_marked_digit_sets_are_found_as_groups(marked) -> None:
    name, tok = marked
    groups = digit_token_groups(tok)
    marker = "▁" if name == "sentencepiece" else "Ġ"
    assert groups[0] == sl_core.digit_token_ids(tok)
    assert len(groups) == 2
    assert tok.convert_ids_to_tokens(groups[1]) == [f"{marker}{d}" for d in range(10)]


def test_bare_digits_alone_miss_the_answer_groups_reach_it(marked) -> None:
    _, tok = marked
    seqs = _answers(tok, ["7", "12", "0 3 5 8", "2601"])
    bare = soft_target_coverage(seqs, sl_core.digit_token_ids(tok), tok)
    assert bare.numeric == 11 and bare.share < 1.0 and bare.uncovered
    assert soft_target_coverage(_answers(tok, ["7"]), sl_core.digit_token_ids(tok), tok).share == 0.0
    for family in ("soft_label", "gaussian", "ntl_was", "ntil", "value_aware", "dist2", "smmd", "del"):
        cov = soft_target_coverage(seqs, soft_columns(family_tokens(family, tok)), tok)
        assert (cov.numeric, cov.covered, cov.share) == (11, 11, 1.0), family


def test_soft_label_with_groups_matches_dense_reference() -> None:
    torch.manual_seed(0)
    vocab = 40
    groups = [list(range(10, 20)), [31, 33, 35, 37, 39, 30, 32, 34, 36, 38]]
    labels = torch.tensor([[10, 33, 5, 31, 14, -100, 39], [35, 36, 19, 2, -100, 30, 11]])
    logits = torch.randn(2, 7, vocab, dtype=torch.float64, requires_grad=True)
    psi = sl_core.psi_matrix("triangular", 2.5)
    cols, psi_k = grouped_psi_reference(psi, groups)
    for place in (None, 1.0):
        got = sl_core.soft_label_cross_entropy(logits, labels, groups, eta=0.3, lam=2.0, psi="triangular",
                                               psi_param=2.5, place_exponent=place)
        ref = soft_ce_reference(logits, labels, cols, psi_k, eta=0.3, lam=2.0, place_exponent=place)
        torch.testing.assert_close(got, ref)
        g1, = torch.autograd.grad(got, logits)
        g2, = torch.autograd.grad(ref, logits)
        torch.testing.assert_close(g1, g2)


def test_fused_and_gaussian_with_groups_match_reference() -> None:
    torch.manual_seed(1)
    vocab, hidden = 30, 8
    groups = [list(range(0, 10)), list(range(20, 30))]
    labels = torch.tensor([3, 22, 15, 29, -100, 0, 27])
    h = torch.randn(7, hidden, dtype=torch.float64)
    w = torch.randn(vocab, hidden, dtype=torch.float64)
    cols, psi_k = grouped_psi_reference(sl_core.psi_matrix("laplace"), groups)
    got = sl_core.fused_linear_soft_label_cross_entropy(h, w, labels, groups, eta=0.2, psi="laplace")
    torch.testing.assert_close(got, soft_ce_reference(h @ w.T, labels, cols, psi_k, eta=0.2))
    cols, psi_g = grouped_psi_reference(sl_core.psi_matrix("gaussian", 0.7), groups)
    got = sl_core.gaussian_soft_cross_entropy(h @ w.T, labels, groups, sigma=0.7)
    torch.testing.assert_close(got, soft_ce_reference(h @ w.T, labels, cols, psi_g, eta=1.0))


@pytest.mark.parametrize("kind, fn", [("was", sl_core.ntl_was), ("mse", sl_core.ntl_mse)])
def test_number_token_terms_compare_within_the_target_group(kind, fn) -> None:
    torch.manual_seed(2)
    groups = [list(range(0, 10)), list(range(20, 30))]
    logits = torch.randn(6, 30, dtype=torch.float64)
    marked_only = torch.tensor([22, 25, 29, 11, 20, -100])
    got = fn(logits, marked_only, groups, reweigh=False)
    torch.testing.assert_close(got, digit_emd_reference(logits, marked_only, groups[1], kind))
    mixed = torch.tensor([2, 25, 9, 11, 20, 0])
    per_group = [digit_emd_reference(logits[m], mixed[m], g, kind) * int(m.sum())
                 for g, m in zip(groups, (mixed < 10, mixed >= 20))]
    torch.testing.assert_close(fn(logits, mixed, groups, reweigh=False), sum(per_group) / 5)


def test_soft_label_on_a_marked_answer_differs_from_hard_ce(marked) -> None:
    _, tok = marked
    ids = torch.tensor(_answers(tok, ["7"])[0])
    logits = torch.randn(len(ids), len(tok), dtype=torch.float64)
    hard = build_loss("hard")(logits, ids)
    soft = build_loss("soft_label", family_tokens("soft_label", tok), eta=0.5)(logits, ids)
    bare = build_loss("soft_label", sl_core.digit_token_ids(tok), eta=0.5)(logits, ids)
    torch.testing.assert_close(bare, hard)  # what the bare ids did: silently hard CE
    assert not torch.allclose(soft, hard)


def test_wordpiece_continuation_digits_are_a_group(tmp_path) -> None:
    from tests.marked_tokenizers import wordpiece_digits

    tok = wordpiece_digits(tmp_path)
    seqs = _answers(tok, ["2601", "7", "12"])
    assert tok.convert_ids_to_tokens(seqs[0]) == ["2", "##6", "##0", "##1"]
    bare = soft_target_coverage(seqs, sl_core.digit_token_ids(tok), tok)
    assert bare.numeric == 7 and bare.covered == 3  # the "##d" digits count, and were missed
    cov = soft_target_coverage(seqs, soft_columns(family_tokens("soft_label", tok)), tok)
    assert (cov.numeric, cov.covered) == (7, 7)


def test_a_vocabulary_with_only_marked_digits(tmp_path) -> None:
    from tests.marked_tokenizers import marked_only

    tok = marked_only(tmp_path)
    groups = digit_token_groups(tok)
    assert [tok.convert_ids_to_tokens(g) for g in groups] == [[f"▁{d}" for d in range(10)]]
    seqs = _answers(tok, ["12", "7"])
    assert soft_target_coverage(seqs, soft_columns(family_tokens("soft_label", tok)), tok).share == 1.0
    with pytest.raises(ValueError, match="no single-digit token"):
        sl_core.digit_token_ids(tok)  # the bare ids alone still say what is missing


def test_no_numeric_tokens_at_all_names_no_impossible_family(tmp_path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>")
    with pytest.raises(ValueError) as info:
        family_tokens("soft_label", tok)
    assert "no numeric tokens at all" in str(info.value) and "'value_aware' works" not in str(info.value)


def test_a_psi_shape_that_raises_anything_is_one_value_error() -> None:
    def broken(t, param):
        return [1.0 / (t - t)] * 10  # ZeroDivisionError

    with pytest.raises(ValueError, match="psi shape 'zero_div_test' failed for target digit 0"):
        sl_core.register_psi("zero_div_test", broken, takes_param=False)
    assert "zero_div_test" not in sl_core.available_psi()
