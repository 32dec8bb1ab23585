"""An answer's supervised tokens, and which of them get a soft target.

The ids are `Batcher.answer_ids` (the answer tokenized alone, then eos: exactly what training
supervises). A token gets a soft target when its id is one of the loss family's soft columns
(`sweeps.trial.coverage.LossTokens.soft_ids`, from `sl_core.family_tokens`); numeric tokens
(`sl_core.digits.numeric_token_ids`) outside them are listed too: those are the ones a family
would silently train with one-hot targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["AnswerTokens", "TokenMarker", "token_pieces"]


def token_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The text each id adds to the decoded string, so `"".join(pieces) == tokenizer.decode(ids)`.

    Decoding each id alone loses word-start markers ("▁7" -> "7") and splits multi-byte
    characters; piece k is the growth of the decoded prefix ids[:k+1] instead (streaming
    detokenization). A token whose prefix decoding rewrites earlier text (an incomplete UTF-8
    sequence) falls back to its own decoding.
    """
    pieces, prev = [], ""
    for k in range(len(ids)):
        text = tokenizer.decode(list(ids[:k + 1]), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if text.startswith(prev):
            pieces.append(text[len(prev):])
        else:
            pieces.append(tokenizer.decode([ids[k]], skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False))
        prev = text
    return pieces


@dataclass(frozen=True)
class AnswerTokens:
    """One answer as training supervises it (eos excluded from `ids`/`pieces`).

    Attributes:
        ids: the answer's token ids.
        pieces: the text of each token (joined: the answer).
        soft: positions (into `ids`) whose token gets a soft target.
        uncovered: positions of numeric tokens that get none (one-hot targets).
        eos: the eos token's text (supervised after the answer).
    """

    ids: tuple[int, ...]
    pieces: tuple[str, ...]
    soft: tuple[int, ...]
    uncovered: tuple[int, ...]
    eos: str

    def positions_json(self, positions: Sequence[int]) -> list[dict[str, Any]]:
        return [{"position": i, "token": self.pieces[i], "id": self.ids[i]} for i in positions]

    def marked(self) -> str:
        """`'1'* '2'* ',' </s>`: each token quoted, `*` after one with a soft target, `!` after a
        numeric token without one."""
        out = []
        for i, piece in enumerate(self.pieces):
            mark = "*" if i in self.soft else "!" if i in self.uncovered else ""
            out.append(f"{piece!r}{mark}")
        return " ".join([*out, self.eos])


class TokenMarker:
    """Tokenizes answers as training does and marks the soft-target tokens of one loss family.

    Args:
        batcher: the trial's `sweeps.models.Batcher` (its tokenizer and `answer_ids`).
        loss_tokens: the family's `sweeps.trial.coverage.LossTokens`.
    """

    def __init__(self, batcher: Any, loss_tokens: Any) -> None:
        from sl_core.digits import numeric_token_ids

        self.batcher, self.loss_tokens = batcher, loss_tokens
        self.tokenizer = batcher.tokenizer
        self._soft = frozenset(loss_tokens.soft_ids)
        # a family without soft targets (hard, label_smoothing) leaves no numeric token "uncovered"
        self._numeric = numeric_token_ids(self.tokenizer) if loss_tokens.distance_aware else frozenset()
        self._eos = self.tokenizer.convert_ids_to_tokens(batcher.eos_id)

    def __call__(self, answer: str) -> AnswerTokens:
        ids = self.batcher.answer_ids(answer)[:-1]  # the last id is eos
        pieces = token_pieces(self.tokenizer, ids)
        soft = tuple(i for i, t in enumerate(ids) if t in self._soft)
        uncovered = tuple(i for i, t in enumerate(ids) if t in self._numeric and t not in self._soft)
        return AnswerTokens(tuple(ids), tuple(pieces), soft, uncovered, str(self._eos))
