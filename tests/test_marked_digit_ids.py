"""`sl_core.digit_token_ids` on a vocabulary with marked digits ("▁7", "Ġ7") warns and points to
`digit_token_groups` (issue 24): with the bare ids alone a library user's soft-label loss is
silently hard CE on every answer that starts with a marked digit."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import sl_core
from tests.marked_tokenizers import bytelevel_marked, sentencepiece_marked


@pytest.mark.parametrize("build, marked", [(sentencepiece_marked, "▁7"), (bytelevel_marked, "Ġ7")])
def test_bare_digit_ids_warn_on_a_marked_vocabulary(tmp_path: Path, build, marked: str) -> None:  # noqa: ANN001
    tok = build(tmp_path)
    with pytest.warns(sl_core.MarkedDigitsWarning, match=rf"'{marked}'.*digit_token_groups"):
        ids = sl_core.digit_token_ids(tok)
    assert tok.convert_ids_to_tokens(ids) == [str(d) for d in range(10)]
    # what the warning points to covers both sets, and says nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = sl_core.digit_token_groups(tok)
    assert groups[0] == ids and len(groups) == 2
    # the answer's first digit is marked: the bare ids miss it, the groups reach it
    answer = tok("7", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(answer)[-1] == marked
    assert not set(answer) & set(ids) and set(answer) <= set(groups[1])
