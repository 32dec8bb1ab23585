"""Digit-token discovery: the ten single-digit token ids, or every numeric token for merged-digit tokenizers."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["digit_token_ids", "digit_token_groups", "numeric_token_values", "numeric_token_ids", "NumericTokens",
           "Coverage", "MarkedDigitsWarning", "soft_target_coverage", "SPACE_MARKERS"]

SPACE_MARKERS = ("Ġ", "▁", " ", "##")
"""Word-boundary markers: leading space of byte-level BPE (GPT-2/LLaMA-3), SentencePiece and plain
vocabularies, and WordPiece's continuation prefix ("2601" -> "2", "##6", "##0", "##1")."""

_PROBE = "0123456789 12 345 2024"


def _vocab_owner(tokenizer: Any) -> Any:
    """The object holding the vocabulary: a tokenizer, or the `.tokenizer` of a processor."""
    if hasattr(tokenizer, "get_vocab"):
        return tokenizer
    inner = getattr(tokenizer, "tokenizer", None)
    if inner is not None and hasattr(inner, "get_vocab"):
        return inner
    raise ValueError(f"tokenizer: expected a tokenizer or processor with get_vocab(), got {type(tokenizer).__name__}")


def _tokenize(tok: Any, text: str) -> list[str] | None:
    """Token strings of `text` without special tokens (HF tokenizers or `tokenizers.Tokenizer`)."""
    try:
        if hasattr(tok, "tokenize"):
            return [str(t) for t in tok.tokenize(text)]
        enc = tok.encode(text, add_special_tokens=False)
        return [str(t) for t in enc.tokens]
    except Exception:  # noqa: BLE001 (a tokenizer that cannot tokenize is judged on its vocabulary alone)
        return None


def _strip_marker(token: str, markers: Iterable[str] = SPACE_MARKERS) -> tuple[str, str]:
    for m in markers:
        if len(token) > len(m) and token.startswith(m):
            return m, token[len(m):]
    return "", token


def digit_token_ids(tokenizer: Any, *, allow_merged: bool = False) -> list[int]:
    """Ids of the single-digit tokens "0".."9", in that order.

    Args:
        tokenizer: a Hugging Face tokenizer, a processor with `.tokenizer`, or a `tokenizers.Tokenizer`.
        allow_merged: accept a tokenizer that also merges digits into multi-digit tokens ("42");
            soft labels then only reach the numbers it happens to split into single digits.

    Raises:
        ValueError: the vocabulary lacks one of "0".."9", or the tokenizer merges digits (LLaMA-3,
            tiktoken style) and allow_merged is False. The message says what to do instead.

    Warns:
        MarkedDigitsWarning: the vocabulary also holds a full word-start-marked digit set
            ("▁0".."▁9", "Ġ0".."Ġ9"): an answer's first digit is then often a marked token these
            ids miss, and a soft-label loss given them is silently hard CE there. Use
            `digit_token_groups(tokenizer)` (every soft-label loss takes the groups as `digit_ids`).

    Example:
        A tiny word-level tokenizer that splits numbers into digits, built offline (a hub tokenizer
        from `AutoTokenizer.from_pretrained` is used the same way):

        >>> from tokenizers import Tokenizer, models, pre_tokenizers as pre
        >>> from sl_core import digit_token_ids
        >>> vocab = {t: i for i, t in enumerate(["<unk>", "x", "=", *"0123456789"])}
        >>> tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        >>> tok.pre_tokenizer = pre.Sequence([pre.Whitespace(), pre.Digits(individual_digits=True)])
        >>> digit_token_ids(tok)
        [3, 4, 5, 6, 7, 8, 9, 10, 11, 12]

        A tokenizer that merges digits ("12" is one token) is refused:

        >>> merged = Tokenizer(models.WordLevel({**vocab, "12": 13}, unk_token="<unk>"))
        >>> merged.pre_tokenizer = pre.Whitespace()
        >>> digit_token_ids(merged)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: tokenizer (Tokenizer) merges digits into multi-digit tokens (['12'] from ...
    """
    tok = _vocab_owner(tokenizer)
    ids = _bare_digit_ids(tok, allow_merged)
    marked = [m for m in dict.fromkeys(SPACE_MARKERS) if all(f"{m}{d}" in tok.get_vocab() for d in range(10))]
    if marked:
        warnings.warn(
            f"tokenizer ({type(tok).__name__}) also has the marked digit tokens "
            f"{', '.join(repr(m + '7') for m in marked)}...: answers that start with them get no soft target "
            "from these ids (hard CE there). Use sl_core.digit_token_groups(tokenizer) as the losses' digit_ids",
            MarkedDigitsWarning, stacklevel=2)
    return ids


class MarkedDigitsWarning(UserWarning):
    """`digit_token_ids` on a vocabulary whose answers may use marked digits ("▁7", "Ġ7").

    Example:
        >>> import warnings
        >>> from tokenizers import Tokenizer, models
        >>> from sl_core import MarkedDigitsWarning, digit_token_groups, digit_token_ids
        >>> vocab = {t: i for i, t in enumerate(["<unk>", *"0123456789", *[f"▁{d}" for d in range(10)]])}
        >>> tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     ids = digit_token_ids(tok)
        >>> [w.category is MarkedDigitsWarning for w in caught]
        [True]
        >>> len(digit_token_groups(tok))  # what to pass instead: "0".."9" and "▁0".."▁9"
        2
    """


def _bare_digit_ids(tok: Any, allow_merged: bool) -> list[int]:
    """The ids of "0".."9" (see `digit_token_ids`, which adds the marked-digit warning)."""
    vocab = tok.get_vocab()
    missing = [str(d) for d in range(10) if str(d) not in vocab]
    if missing:
        raise ValueError(
            f"tokenizer ({type(tok).__name__}) has no single-digit token for {', '.join(repr(m) for m in missing)}; "
            "soft labels over digits need the ten tokens '0'..'9'. For a tokenizer that merges digits into "
            "number tokens ('42', 'Ġ123') use the value-aware mode (loss family value_aware: "
            "sl_core.numeric_token_values(tokenizer) with sl_core.value_aware_soft_label_cross_entropy); or add "
            "the digit tokens and split numbers into digits (e.g. tokenizers.pre_tokenizers.Digits(individual_digits=True))."
        )
    if not allow_merged:
        _refuse_merged(tok)
    return [int(vocab[str(d)]) for d in range(10)]


def _refuse_merged(tok: Any) -> None:
    pieces = _tokenize(tok, _PROBE) or []
    merged = [p for p in pieces if sum(ch.isdigit() for ch in _strip_marker(p)[1]) >= 2]
    if merged:
        raise ValueError(
            f"tokenizer ({type(tok).__name__}) merges digits into multi-digit tokens ({merged[:3]} from "
            f"{_PROBE!r}), so most digits never appear as the single-digit targets soft labels act on. "
            "Use the value-aware mode (loss family value_aware: sl_core.numeric_token_values + "
            "sl_core.value_aware_soft_label_cross_entropy; in sl_core, allow_merged=True accepts it)"
        )


def digit_token_groups(tokenizer: Any, *, allow_merged: bool = False,
                       markers: Iterable[str] = SPACE_MARKERS) -> list[list[int]]:
    """[G, 10] digit token ids: "0".."9" first, then every marked set ("▁0".."▁9", "Ġ0".."Ġ9") held in full.

    Word-start-marked digits are what a SentencePiece vocabulary with a prepended "▁" (T5,
    Pix2Struct) or a byte-level BPE with `add_prefix_space=True` produces for the first digit of an
    answer; with only the bare ids they would silently get one-hot targets. Every soft-label loss
    of sl_core takes these groups as its `digit_ids` and keeps a digit's soft mass inside its group.

    Args:
        tokenizer: as in `digit_token_ids`.
        allow_merged: as in `digit_token_ids`.
        markers: leading-space markers whose digit sets are looked up.

    Returns:
        G >= 1 lists of ten ids; the first is "0".."9" when the vocabulary has them (a vocabulary
        with only marked sets gets those alone).

    Raises:
        ValueError: as `digit_token_ids`.

    Example:
        A SentencePiece-style vocabulary with bare and "▁"-marked digits gives two groups:

        >>> from tokenizers import Tokenizer, models
        >>> from sl_core import digit_token_groups
        >>> vocab = {t: i for i, t in enumerate(["<unk>", *"0123456789", *[f"▁{d}" for d in range(10)]])}
        >>> groups = digit_token_groups(Tokenizer(models.WordLevel(vocab, unk_token="<unk>")))
        >>> groups[0], groups[1]
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20])
    """
    tok = _vocab_owner(tokenizer)
    vocab = tok.get_vocab()
    marked = []
    for m in dict.fromkeys(markers):
        texts = [f"{m}{d}" for d in range(10)]
        if all(t in vocab for t in texts):
            marked.append([int(vocab[t]) for t in texts])
    if marked and not all(str(d) in vocab for d in range(10)):
        groups = []  # only marked digit sets ("▁0".."▁9"): they are the digits this tokenizer writes
        if not allow_merged:
            _refuse_merged(tok)
    else:
        groups = [_bare_digit_ids(tok, allow_merged)]
    for ids in marked:
        if not set(ids) & {i for g in groups for i in g}:
            groups.append(ids)
    return groups


@dataclass(frozen=True)
class NumericTokens:
    """Numeric tokens of a vocabulary: id, integer value, digit-string width and leading-space marker.

    Tokens are grouped by (marker, width): "7" and "Ġ7" and "07" are in different groups because
    trading one for another changes the text, not just the value.

    Raises:
        ValueError: the four tuples are empty or of different lengths, or ids repeat.

    Example:
        >>> from sl_core import NumericTokens
        >>> nt = NumericTokens(ids=(5, 9, 11), values=(7, 42, 7), widths=(1, 2, 1), markers=("", "", "Ġ"))
        >>> len(nt), nt.groups
        (3, (('', 1), ('', 2), ('Ġ', 1)))
        >>> digits = NumericTokens.from_digit_ids(range(20, 30))  # ten digit ids "0".."9"
        >>> digits.values[:4], set(digits.groups)
        ((0, 1, 2, 3), {('', 1)})
    """

    ids: tuple[int, ...]
    values: tuple[int, ...]
    widths: tuple[int, ...]
    markers: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not n or any(len(x) != n for x in (self.values, self.widths, self.markers)):
            raise ValueError("NumericTokens: ids, values, widths and markers must be non-empty and equally long")
        if len(set(self.ids)) != n:
            raise ValueError("NumericTokens: ids must be distinct")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def groups(self) -> tuple[tuple[str, int], ...]:
        """The (marker, width) group of each token."""
        return tuple(zip(self.markers, self.widths))

    @classmethod
    def from_digit_ids(cls, digit_ids: Iterable[int] | Iterable[Iterable[int]]) -> NumericTokens:
        """Digit tokens as value-aware groups: ten ids (one group), or [G, 10] digit groups
        (`digit_token_groups`; group g > 0 gets the marker f"#{g}", kept apart from the others)."""
        rows = [list(r) if isinstance(r, Iterable) else r for r in digit_ids]
        groups = rows if rows and all(isinstance(r, list) for r in rows) else [rows]
        if any(len(g) != 10 for g in groups):
            raise ValueError(f"digit_ids must hold exactly 10 token ids per group, got {[len(g) for g in groups]}")
        return cls(tuple(int(i) for g in groups for i in g), tuple(range(10)) * len(groups),
                   (1,) * (10 * len(groups)), tuple("" if g == 0 else f"#{g}" for g in range(len(groups))
                                                    for _ in range(10)))


def numeric_token_values(tokenizer: Any, *, max_width: int | None = None,
                         markers: Iterable[str] = SPACE_MARKERS) -> NumericTokens:
    """Every token whose text is an ASCII digit string, optionally after one leading-space marker.

    Args:
        tokenizer: a Hugging Face tokenizer, a processor with `.tokenizer`, or a `tokenizers.Tokenizer`.
        max_width: keep tokens with at most this many digits (None: all).
        markers: accepted leading-space markers (default: "Ġ", "▁", " ").

    Returns:
        NumericTokens sorted by (marker, width, value); value = int(digit string), so "042" has
        value 42 and width 3.

    Raises:
        ValueError: the vocabulary has no numeric tokens.

    Example:
        A merged-digit vocabulary (LLaMA-3 style: "42" and "Ġ7" are single tokens):

        >>> from tokenizers import Tokenizer, models
        >>> from sl_core import numeric_token_values
        >>> vocab = {t: i for i, t in enumerate(["<unk>", "7", "42", "Ġ7", "042", "x"])}
        >>> nt = numeric_token_values(Tokenizer(models.WordLevel(vocab, unk_token="<unk>")))
        >>> list(zip(nt.ids, nt.values, nt.widths, nt.markers))
        [(1, 7, 1, ''), (2, 42, 2, ''), (4, 42, 3, ''), (3, 7, 1, 'Ġ')]
    """
    tok = _vocab_owner(tokenizer)
    marks = tuple(markers)
    rows = []
    for text, idx in tok.get_vocab().items():
        marker, body = _strip_marker(text, marks)
        if body and body.isascii() and body.isdigit() and (max_width is None or len(body) <= max_width):
            rows.append((marker, len(body), int(body), int(idx)))
    if not rows:
        raise ValueError(f"tokenizer ({type(tok).__name__}) has no numeric tokens (digit strings) in its vocabulary")
    rows.sort()
    return NumericTokens(
        ids=tuple(r[3] for r in rows), values=tuple(r[2] for r in rows),
        widths=tuple(r[1] for r in rows), markers=tuple(r[0] for r in rows),
    )


def numeric_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of every token whose text is a digit string, after at most one leading-space marker.

    Returns:
        A frozenset of ids, empty when the vocabulary has no numeric token.

    Example:
        >>> from tokenizers import Tokenizer, models
        >>> from sl_core import numeric_token_ids
        >>> vocab = {t: i for i, t in enumerate(["<unk>", "7", "42", "Ġ7", "x"])}
        >>> sorted(numeric_token_ids(Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))))
        [1, 2, 3]
    """
    try:
        return frozenset(numeric_token_values(tokenizer).ids)
    except ValueError:  # no numeric tokens at all
        return frozenset()


@dataclass(frozen=True)
class Coverage:
    """How many numeric answer tokens a loss's soft targets reach.

    Attributes:
        numeric: numeric tokens (digit strings, optionally marked) among the answers' tokens.
        covered: those whose id is one of the loss's soft columns.
        uncovered: up to five distinct token strings that were not covered (for messages).
    """

    numeric: int
    covered: int
    uncovered: tuple[str, ...] = ()

    @property
    def share(self) -> float:
        """covered / numeric (1.0 when the answers hold no numeric token: nothing to miss)."""
        return self.covered / self.numeric if self.numeric else 1.0


def soft_target_coverage(token_ids: Iterable[Sequence[int]], soft_ids: Iterable[int], tokenizer: Any) -> Coverage:
    """Share of the numeric tokens in tokenized answers that receive a soft target.

    Args:
        token_ids: the answers' token ids exactly as training sees them (one sequence per answer).
        soft_ids: the loss's soft columns: the digit groups flattened, or `NumericTokens.ids`.
        tokenizer: the tokenizer that produced `token_ids` (to tell numeric tokens apart).

    Returns:
        A Coverage; `share` 0 means the soft-label loss equals hard CE on these answers.

    Example:
        Digit-only soft targets on a vocabulary that also has the merged token "42":

        >>> from tokenizers import Tokenizer, models
        >>> from sl_core import soft_target_coverage
        >>> vocab = {t: i for i, t in enumerate(["<unk>", "x", *"0123456789", "42"])}
        >>> tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        >>> answers = [[vocab["x"], vocab["42"]], [vocab["7"]]]  # "x 42" merged, "7" a digit
        >>> cov = soft_target_coverage(answers, [vocab[str(d)] for d in range(10)], tok)
        >>> cov.numeric, cov.covered, cov.share
        (2, 1, 0.5)
    """
    tok = _vocab_owner(tokenizer)
    numeric = numeric_token_ids(tok)
    soft = set(int(i) for i in soft_ids)
    n = hit = 0
    missed: dict[int, None] = {}
    for seq in token_ids:
        for i in seq:
            i = int(i)
            if i in numeric:
                n += 1
                if i in soft:
                    hit += 1
                elif len(missed) < 5:
                    missed[i] = None
    names = tok.convert_ids_to_tokens(list(missed)) if missed and hasattr(tok, "convert_ids_to_tokens") \
        else [str(i) for i in missed]
    return Coverage(n, hit, tuple(str(x) for x in names))
