"""numeric_vqa: any image + question + numeric answer, for a user's own dataset with no code.

The answer is one number or a fixed-length list of numbers (`length`, e.g. 4 for a box). It is
written as the numbers separated by ", " (a comma, since digits separated only by spaces are read
as one number, as single-digit tokenizers decode "2 4" for "24"), each with `decimals` fixed
decimals when given, else with exactly the precision the dataset gives: an integer as its digits,
a float as its shortest decimal (2601.0 -> "2601", 0.1 -> "0.1"), a number in a text as written
("0.10" stays "0.10"); `sweeps.tasks.base.number_answer`. NaN, inf and empty answers are refused
(one DataError naming the row and column). A generated text is parsed for its first `length`
numbers (`sweeps.tasks.parsing.find_numbers`).

Metrics (`metrics` param, any of; `unparseable` always):

| metric            | per example (all numbers of the answer must satisfy it)       |
|-------------------|---------------------------------------------------------------|
| exact_match       | pred == truth                                                 |
| relaxed_accuracy  | abs(pred - truth) <= tolerance * abs(truth) (pred == 0 when truth == 0), ChartQA's rule |
| mae               | mean abs(pred - truth) (an unparseable answer costs max(abs(truth), 1)) |
| within_k          | abs(pred - truth) <= k                                        |
| iou               | box IoU of [x0, y0, x1, y1] (length 4 only)                   |

Data: Hugging Face datasets (`task.data` in a spec, see `sweeps.tasks.hf`) or a JSON / JSON Lines
file of records {"image": path, "question": text, "answer": number or list} (`task.data_path`;
a file holding several splits has a `split` field per record, as for counting).
Synthetic data (for trying a spec without data): counting scenes for `length` 1, grounding
boxes for `length` 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .base import (
    DataError,
    Example,
    ImageCache,
    Task,
    build_params,
    check_choices,
    check_int,
    check_load_args,
    field_value,
    nonempty,
    number_answer,
    resolve_image,
    split_records,
    where,
)
from .grounding import iou
from .parsing import find_number_texts, find_numbers, format_number

METRICS = ("exact_match", "relaxed_accuracy", "mae", "within_k", "iou")


@dataclass(frozen=True)
class NumericVQAParams:
    """What counts as right, and how answers are written (see the module docstring)."""

    metrics: tuple[str, ...] = ("exact_match", "relaxed_accuracy", "mae")
    length: int = 1
    tolerance: float = 0.05
    k: float = 1.0
    decimals: int | None = None
    image_size: int = 48  # synthetic data only

    def __post_init__(self) -> None:
        check_choices(self.metrics, "metrics", METRICS)
        check_int(self.length, "length", lo=1, hi=64)
        if "iou" in self.metrics and self.length != 4:
            raise ValueError("parameter 'metrics': iou needs length 4 (a box x0 y0 x1 y1)")
        for name in ("tolerance", "k"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"parameter {name!r} must be a number >= 0, got {v!r}")
        if self.decimals is not None:
            check_int(self.decimals, "decimals", lo=0, hi=12)
        check_int(self.image_size, "image_size", lo=8)


def _text(texts: tuple[str, ...], values: tuple[float, ...], decimals: int | None) -> str:
    if decimals is not None:
        return ", ".join(format_number(v, decimals) for v in values)
    return ", ".join(texts)


class NumericVQATask(Task):
    """Numbers about images from a user's dataset, scored by the metrics the spec chooses."""

    name = "numeric_vqa"
    primary_metric = "exact_match"
    metric_modes = {"exact_match": "max", "relaxed_accuracy": "max", "mae": "min", "within_k": "max",
                    "iou": "max", "unparseable": "min"}
    _params_cls = NumericVQAParams
    data_params = ("metrics", "length", "tolerance", "k", "decimals")  # a JSON file is scored like a dataset

    def example(self, p: NumericVQAParams, seed: int, index: int, context: Any = None) -> Example:
        from . import get_task  # a counting or grounding scene, re-labelled

        base = get_task("counting" if p.length == 1 else "grounding")
        if p.length not in (1, 4):
            raise ValueError("parameter 'length': synthetic numeric_vqa data has length 1 or 4; give data")
        ex = base.example(build_params(base._params_cls, {"image_size": p.image_size}, base.name), seed, index, None)
        ints = (int(ex.target),) if p.length == 1 else tuple(int(v) for v in ex.target)
        return self._make(ex.image, ex.prompt, tuple(str(v) for v in ints), p, {"source": "synthetic", "index": index})

    def _make(self, image: Image.Image, question: str, texts: tuple[str, ...], p: NumericVQAParams,
              meta: dict[str, Any]) -> Example:
        values = tuple(float(t) for t in texts)
        meta = {**meta, "metrics": p.metrics, "tolerance": p.tolerance, "k": p.k, "length": p.length}
        return Example(image=image, prompt=question, answer=_text(texts, values, p.decimals), target=values,
                       meta=meta)

    def from_record(self, image: Image.Image, question: str, answer: Any, loc: str, **params: Any) -> Example:
        """One number, a list of `length` numbers, or a text holding them, as the answer (see the
        module docstring for how each is written and what is refused)."""
        p = build_params(NumericVQAParams, params, self.name)
        if isinstance(answer, str):
            try:  # one number as a whole ("1e3", "0.10"), else the numbers in the text ("12, 40, 33, 61")
                texts = (number_answer(answer, loc)[0],)
            except DataError:
                texts = tuple(find_number_texts(answer))
                if not texts:  # empty, "nan", "inf", words: number_answer's one message
                    raise
        else:
            values = list(answer) if isinstance(answer, (list, tuple)) else [answer]
            if len(values) != p.length:
                raise DataError(f"{loc}: the answer must hold {p.length} number(s) (task.params.length), "
                                f"got {answer!r}")
            texts = tuple(number_answer(v, f"{loc}: item {j}" if len(values) > 1 else loc)[0]
                          for j, v in enumerate(values))
        if len(texts) != p.length:
            raise DataError(f"{loc}: the answer must hold {p.length} number(s) (task.params.length), "
                            f"got {answer!r}")
        return self._make(image, question, texts, p, {"source": loc})

    def load(self, path: str | Path, *, split: str | None = None, limit: int | None = None,
             image_size: int | None = None, images: bool = True, **params: Any) -> list[Example]:
        """Records {"image", "question", "answer"} from a JSON / JSON Lines file (or
        <path>/<split>.json[l]; a file of several splits is filtered by each record's `split`)."""
        check_load_args(limit, image_size)
        file, records = split_records(Path(path), split)
        cache = ImageCache(image_size, decode=images)
        out = []
        for i, rec in records[:limit]:
            loc = where(file, i, rec.get("id"))
            image = cache.get(resolve_image(field_value(rec, ("image",), loc, "image path"), file.parent,
                                             loc, "image"), loc)
            question = field_value(rec, ("question",), loc, "question text")
            if not isinstance(question, str) or not question.strip():
                raise DataError(f"{loc}: field 'question' must be a non-empty text, got {question!r}")
            out.append(self.from_record(image, question, field_value(rec, ("answer",), loc, "numeric answer"),
                                        f"{loc}: field 'answer'", **params))
        return nonempty(out, file, split)

    def parse(self, text: str) -> tuple[float, ...] | None:
        """All numbers in `text` (the score takes the first `length`), or None when there are none."""
        nums = find_numbers(text)
        return tuple(nums) if nums else None

    def score(self, text: str, example: Example) -> dict[str, float]:
        """The example's chosen metrics (its meta) and unparseable."""
        meta, truth = example.meta, tuple(example.target)
        nums = self.parse(text)
        pred = nums[: len(truth)] if nums and len(nums) >= len(truth) else None
        out: dict[str, float] = {}
        for m in meta["metrics"]:
            if pred is None:
                out[m] = sum(max(abs(t), 1.0) for t in truth) / len(truth) if m == "mae" else 0.0
            elif m == "exact_match":
                out[m] = float(all(abs(a - t) <= 1e-9 * max(1.0, abs(t)) for a, t in zip(pred, truth)))
            elif m == "relaxed_accuracy":
                tol = meta["tolerance"]
                out[m] = float(all(abs(a - t) <= tol * abs(t) if t != 0 else a == 0 for a, t in zip(pred, truth)))
            elif m == "mae":
                out[m] = sum(abs(a - t) for a, t in zip(pred, truth)) / len(truth)
            elif m == "within_k":
                out[m] = float(all(abs(a - t) <= meta["k"] for a, t in zip(pred, truth)))
            else:  # iou
                out[m] = float(iou(pred, truth))
        out["unparseable"] = float(pred is None)
        return out
