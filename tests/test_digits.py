"""Digit-token discovery on locally built tokenizers (saved and reloaded through from_pretrained)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from sl_core import NumericTokens, digit_token_ids, numeric_token_values, psi_matrix, value_psi_matrix
from tests.reference import value_psi_reference

# digits deliberately not in id order, so "in order 0..9" is actually checked
DIGIT_VOCAB = {"[UNK]": 0, "[PAD]": 1, "count": 2, "box": 3, "7": 4, "3": 5, "0": 6, "9": 7, "1": 8, "5": 9,
               "2": 10, "8": 11, "4": 12, "6": 13, ",": 14}


def _save_and_load(tok: Tokenizer, path: Path) -> PreTrainedTokenizerFast:
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def _digit_splitting(path: Path) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(DIGIT_VOCAB, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    return _save_and_load(tok, path)


def _merged(path: Path, with_all_digits: bool) -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "[PAD]": 1, "12": 2, "345": 3, "2024": 4, "Ġ42": 5, "▁7": 6, "042": 7, "Ġ7": 8,
             "²": 9, "٣": 10, "x1": 11, "7": 12, "42": 13, "99": 14, "Ġ": 15}
    if with_all_digits:
        for d in "012345689":
            vocab[d] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return _save_and_load(tok, path)


def test_digit_ids_in_digit_order(tmp_path: Path) -> None:
    tok = _digit_splitting(tmp_path)
    ids = digit_token_ids(tok)
    assert ids == [DIGIT_VOCAB[str(d)] for d in range(10)]
    assert tok.convert_ids_to_tokens(ids) == [str(d) for d in range(10)]
    # a processor (anything with .tokenizer) and a raw tokenizers.Tokenizer work too
    assert digit_token_ids(types.SimpleNamespace(tokenizer=tok)) == ids
    assert digit_token_ids(tok.backend_tokenizer) == ids


def test_missing_digits_error_says_what_to_do(tmp_path: Path) -> None:
    tok = _merged(tmp_path, with_all_digits=False)
    with pytest.raises(ValueError, match=r"no single-digit token for '0'.*value-aware"):
        digit_token_ids(tok)


def test_merged_digit_tokenizer_is_refused_unless_allowed(tmp_path: Path) -> None:
    tok = _merged(tmp_path, with_all_digits=True)
    with pytest.raises(ValueError, match="merges digits.*value-aware"):
        digit_token_ids(tok)
    ids = digit_token_ids(tok, allow_merged=True)
    assert tok.convert_ids_to_tokens(ids) == [str(d) for d in range(10)]


def test_not_a_tokenizer() -> None:
    with pytest.raises(ValueError, match="tokenizer: expected a tokenizer"):
        digit_token_ids(object())


def test_numeric_token_discovery(tmp_path: Path) -> None:
    tok = _merged(tmp_path, with_all_digits=False)
    num = numeric_token_values(tok)
    found = {tok.convert_ids_to_tokens(i): (v, w, m) for i, v, w, m in
             zip(num.ids, num.values, num.widths, num.markers)}
    assert found == {"7": (7, 1, ""), "12": (12, 2, ""), "42": (42, 2, ""), "99": (99, 2, ""),
                     "042": (42, 3, ""), "345": (345, 3, ""), "2024": (2024, 4, ""),
                     "Ġ42": (42, 2, "Ġ"), "Ġ7": (7, 1, "Ġ"), "▁7": (7, 1, "▁")}
    # sorted by (marker, width, value); non-ASCII digits, bare markers and mixed tokens excluded
    keys = list(zip(num.markers, num.widths, num.values))
    assert keys == sorted(keys)
    assert numeric_token_values(tok, max_width=2).widths == tuple(w for w in num.widths if w <= 2)
    with pytest.raises(ValueError, match="no numeric tokens"):
        numeric_token_values(Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))


def test_value_psi_matches_loop_reference(tmp_path: Path) -> None:
    num = numeric_token_values(_merged(tmp_path, with_all_digits=True))
    for kernel, scale in [("laplace", 3.0), ("gaussian", 20.0), ("triangular", 40.0), ("uniform", None)]:
        m = value_psi_matrix(num, kernel, scale)
        ref = value_psi_reference(list(num.values), list(num.groups), kernel, scale or 1.0)
        torch.testing.assert_close(m, ref)
        torch.testing.assert_close(m.sum(1), torch.ones(len(num), dtype=torch.float64))
    # different groups never exchange mass: "42" and "Ġ42" and "042" are separate
    groups = num.groups
    m = value_psi_matrix(num, "uniform")
    for i in range(len(num)):
        for j in range(len(num)):
            assert (m[i, j] > 0) == (groups[i] == groups[j])


@pytest.mark.parametrize("kernel, param", [("laplace", 0.7), ("gaussian", 1.5), ("triangular", 3.0),
                                           ("uniform", None)])
def test_value_psi_on_single_digits_equals_digit_psi(kernel: str, param: float | None) -> None:
    num = NumericTokens.from_digit_ids(range(100, 110))
    torch.testing.assert_close(value_psi_matrix(num, kernel, param), psi_matrix(kernel, param))


def test_value_psi_bad_arguments() -> None:
    num = NumericTokens.from_digit_ids(range(10))
    with pytest.raises(ValueError, match="psi: unknown value-aware kernel 'binomial'"):
        value_psi_matrix(num, "binomial")
    with pytest.raises(ValueError, match="scale must be > 0"):
        value_psi_matrix(num, "laplace", 0.0)
    with pytest.raises(ValueError, match="scale: kernel 'uniform' takes no scale"):
        value_psi_matrix(num, "uniform", 2.0)
    with pytest.raises(ValueError, match="exactly 10"):
        NumericTokens.from_digit_ids(range(9))
