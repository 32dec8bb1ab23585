"""Tokenizers whose answers start with a word-start-marked digit ("▁7", "Ġ7"), built offline with `tokenizers`.

- `sentencepiece_marked`: a Unigram model with `Metaspace(prepend_scheme="always")`, as T5 and
  Pix2Struct: the vocabulary holds both "7" and "▁7", and the answer "7" becomes "▁7".
- `bytelevel_marked`: a byte-level BPE with `ByteLevel(add_prefix_space=True)` and merges "Ġ" + digit,
  as GPT-2-style tokenizers with a prefix space: the answer "7" becomes "Ġ7".

Both keep every other digit of a number single ("12" -> "▁1", "2"), so the bare digits matter too.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "</s>", "<unk>", "<image>"]


def _save(tok: Tokenizer, path: Path) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def sentencepiece_marked(path: Path) -> PreTrainedTokenizerFast:
    """Unigram + Metaspace(prepend "always"), both "d" and "▁d" in the vocabulary, no multi-digit piece."""
    pieces = [(s, 0.0) for s in SPECIALS]
    pieces += [(f"▁{d}", -2.0) for d in string.digits] + [(d, -2.5) for d in string.digits]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.punctuation] + [("▁", -4.0)]
    pieces += [(f"▁{w}", -1.0) for w in ("How", "many", "shapes", "are", "there", "Answer", "Question", "box")]
    tok = Tokenizer(models.Unigram(pieces, unk_id=SPECIALS.index("<unk>"), byte_fallback=False))
    # No digit pre-tokenizer: the Unigram model splits "▁12" into "▁1" + "2" (no merged digit piece).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(SPECIALS)
    return _save(tok, path)


def bytelevel_marked(path: Path) -> PreTrainedTokenizerFast:
    """Byte-level BPE with add_prefix_space=True and the merges "Ġ" + digit."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for ch in sorted(alphabet):
        vocab.setdefault(ch, len(vocab))
    merges = [("Ġ", d) for d in string.digits]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    # No digit-digit merges: " 12" becomes "Ġ1" + "2".
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return _save(tok, path)


def wordpiece_digits(path: Path) -> PreTrainedTokenizerFast:
    """WordPiece (BERT style): "2601" -> "2", "##6", "##0", "##1" (continuation-marked digits)."""
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for w in ("how", "many", "shapes", "are", "there", "?", ",", "[", "]", "."):
        vocab.setdefault(w, len(vocab))
    for d in string.digits:
        vocab[d] = len(vocab)
        vocab[f"##{d}"] = len(vocab)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(SPECIALS)
    return _save(tok, path)


def marked_only(path: Path) -> PreTrainedTokenizerFast:
    """Digits only as "▁0".."▁9" (digits split, each a word): no bare digit tokens at all."""
    pieces = [(s, 0.0) for s in SPECIALS] + [(f"▁{d}", -2.0) for d in string.digits]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.punctuation] + [("▁", -4.0)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=SPECIALS.index("<unk>"), byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(SPECIALS)
    return _save(tok, path)
