"""Counting: "How many shapes are there?" -> "7".

Synthetic: 0..`max_count` non-overlapping shapes (count uniform; sides 5..8 px at 48 px, scaled with
`image_size` unless `min_size`/`max_size` are given), drawn with numpy; with `query`
"kind"/"color"/"color_kind" the question names an attribute ("How many red circles are there?")
and up to `max_distractors` shapes that do not match are added.

Real format (CountBench / PixMo-Count / TallyQA style): a JSON list or JSON Lines file of records
with an image path (relative to the file's folder, or to `image_dir`, or absolute), a question and
an integer answer. Keys tried in order: image: image, image_path, file_name, filename, img_path;
question: question, query, prompt (else "How many {label} are there?" when the record has a
`label`, as PixMo-Count does, or the `question_template` option formatted with the record); answer:
answer, count, number. TallyQA's `train.json`/`test.json` load as-is with `image_dir` set to the
image root. A folder path loads `<folder>/<split>.json` (or `.jsonl`); a file with a `split` field
per record is filtered by `split` (unless the file is named after the split, as `test.json`).

Metrics: exact_match, mae, off_by_one (|pred - truth| <= 1), unparseable. An unparseable
prediction is wrong for exact_match and off_by_one and adds max(|truth|, 1) to the absolute error
(as bad as answering 0, never better than off by one). "2 4" parses as 24 (whitespace between
digits is a tokenizer artefact, see `sweeps.tasks.parsing`).
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
    Rand,
    Task,
    check_choices,
    check_fraction,
    check_int,
    check_load_args,
    check_template,
    scaled_size,
    field_item,
    int_value,
    nonempty,
    resolve_image,
    split_records,
    take_options,
    where,
)
from .parsing import parse_count
from .shapes import COLORS, KINDS, PLURALS, Shape, place, render

QUERIES = ("all", "kind", "color", "color_kind")
IMAGE_KEYS = ("image", "image_path", "file_name", "filename", "img_path")
QUESTION_KEYS = ("question", "query", "prompt")
ANSWER_KEYS = ("answer", "count", "number")
_SALT = 1


@dataclass(frozen=True)
class CountingParams:
    """Synthetic counting parameters (see the module docstring)."""

    max_count: int = 9
    min_count: int = 0
    image_size: int = 48
    kinds: tuple[str, ...] = ("circle", "square", "triangle")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "white")
    clutter: float = 0.0
    min_size: int | None = None  # pixels; None: 5 at 48 px, scaled with image_size
    max_size: int | None = None  # pixels; None: 8 at 48 px, scaled with image_size
    query: str = "all"
    max_distractors: int = 3

    def __post_init__(self) -> None:
        check_int(self.image_size, "image_size", lo=8)
        check_int(self.min_count, "min_count", lo=0)
        check_int(self.max_count, "max_count", lo=self.min_count)
        # Frozen dataclass: resolve the image-relative defaults in place.
        object.__setattr__(self, "min_size", scaled_size(self.min_size, 5, self.image_size))
        object.__setattr__(self, "max_size", scaled_size(self.max_size, 8, self.image_size))
        check_int(self.min_size, "min_size", lo=3)
        check_int(self.max_size, "max_size", lo=self.min_size, hi=self.image_size)
        check_int(self.max_distractors, "max_distractors", lo=0)
        check_choices(self.kinds, "kinds", KINDS)
        check_choices(self.colors, "colors", COLORS)
        if self.query not in QUERIES:
            raise ValueError(f"parameter 'query': unknown value {self.query!r} (known: {', '.join(QUERIES)})")
        check_fraction(self.clutter, "clutter")
        if self.query != "all" and self.max_distractors > 0:
            if self.query == "kind" and len(self.kinds) < 2:
                raise ValueError("parameter 'kinds' needs 2+ kinds for query='kind' with distractors")
            if self.query == "color" and len(self.colors) < 2:
                raise ValueError("parameter 'colors' needs 2+ colours for query='color' with distractors")
            if self.query == "color_kind" and len(self.kinds) * len(self.colors) < 2:
                raise ValueError("query='color_kind' with distractors needs 2+ kinds or colours")
        most = self.max_count + (self.max_distractors if self.query != "all" else 0)
        # Random sequential placement stalls near ~45% cover; fail early with a clear message.
        if most * (self.max_size + 1) ** 2 > 0.45 * self.image_size**2:
            raise ValueError(
                f"{most} shapes of up to {self.max_size} px do not fit in a {self.image_size}x"
                f"{self.image_size} image: lower max_count/max_distractors/max_size or raise image_size"
            )


class CountingTask(Task):
    """Count shapes (synthetic) or objects (CountBench / PixMo-Count / TallyQA)."""

    name = "counting"
    primary_metric = "exact_match"
    metric_modes = {"exact_match": "max", "mae": "min", "off_by_one": "max", "unparseable": "min"}
    _params_cls = CountingParams

    # ------------------------------------------------------------------ synthetic

    def example(self, p: CountingParams, seed: int, index: int, context: Any = None) -> Example:
        rand = Rand(_SALT, seed, index)
        count = rand.integer(p.min_count, p.max_count)
        kind, color = rand.choice(p.kinds), rand.choice(p.colors)
        n_distract = rand.integer(0, p.max_distractors) if p.query != "all" else 0
        attrs = [self._matching(p, rand, kind, color) for _ in range(count)]
        attrs += [self._distractor(p, rand, kind, color) for _ in range(n_distract)]
        for _ in range(50):  # a fresh layout when a shape finds no room
            sizes = [rand.integer(p.min_size, p.max_size) for _ in attrs]
            pos = place(rand, sizes, p.image_size)
            if pos is not None:
                break
        else:
            raise ValueError(
                f"could not place {len(attrs)} shapes in a {p.image_size}x{p.image_size} image "
                f"(seed {seed}, example {index}); lower max_count/max_size or raise image_size"
            )
        order = rand.shuffled(range(len(attrs)))  # distractors are not drawn last
        shapes = [Shape(attrs[i][0], attrs[i][1], pos[i][0], pos[i][1], sizes[i]) for i in order]
        image = Image.fromarray(render(p.image_size, shapes, rand, p.clutter))
        meta = {
            "source": "synthetic",
            "seed": seed,
            "index": index,
            "query": p.query,
            "shapes": [(s.kind, s.color, s.box) for s in shapes],
        }
        return Example(image, _question(p.query, kind, color), str(count), count, meta)

    @staticmethod
    def _matching(p: CountingParams, rand: Rand, kind: str, color: str) -> tuple[str, str]:
        k = kind if p.query in ("kind", "color_kind") else rand.choice(p.kinds)
        c = color if p.query in ("color", "color_kind") else rand.choice(p.colors)
        return k, c

    @staticmethod
    def _distractor(p: CountingParams, rand: Rand, kind: str, color: str) -> tuple[str, str]:
        other_kinds = [k for k in p.kinds if k != kind]
        other_colors = [c for c in p.colors if c != color]
        if p.query == "kind":
            return rand.choice(other_kinds), rand.choice(p.colors)
        if p.query == "color":
            return rand.choice(p.kinds), rand.choice(other_colors)
        while True:  # color_kind: anything but the (kind, colour) pair asked about
            k, c = rand.choice(p.kinds), rand.choice(p.colors)
            if (k, c) != (kind, color):
                return k, c

    # ------------------------------------------------------------------ real format

    def load(
        self,
        path: str | Path,
        *,
        split: str | None = None,
        limit: int | None = None,
        image_size: int | None = None,
        images: bool = True,
        **params: Any,
    ) -> list[Example]:
        """Counting examples from a CountBench / PixMo-Count / TallyQA style JSON(L) file.

        Options: image_dir (root for relative image paths; default the file's folder),
        question_template (e.g. "How many {label} are there?" formatted with each record).
        """
        check_load_args(limit, image_size)
        opts = take_options(params, {"image_dir": None, "question_template": None}, "counting loader")
        if opts["question_template"] is not None:
            check_template(opts["question_template"], "counting loader option question_template")
        file, records = split_records(Path(path), split)
        base = Path(opts["image_dir"]) if opts["image_dir"] is not None else file.parent
        cache = ImageCache(image_size, decode=images)
        out: list[Example] = []
        for i, rec in records:
            if limit is not None and len(out) >= limit:
                break
            rid = rec.get("question_id", rec.get("id"))
            loc = where(file, i, rid)
            img_key, img_value = field_item(rec, IMAGE_KEYS, loc, "image path")
            img_path = resolve_image(img_value, base, loc, img_key)
            question = self._record_question(rec, opts["question_template"], loc)
            ans_key, ans_value = field_item(rec, ANSWER_KEYS, loc, "integer answer")
            count = int_value(ans_value, loc, ans_key)
            image = cache.get(img_path, loc)
            meta = {"source": str(file), "index": i, "id": rid, "image_path": str(img_path)}
            meta.update({k: v for k, v in rec.items() if isinstance(v, (str, int, float, bool)) and k not in meta})
            out.append(Example(image, question, str(count), count, meta))
        return nonempty(out, file, split)

    @staticmethod
    def _record_question(rec: dict[str, Any], template: str | None, loc: str) -> str:
        for k in QUESTION_KEYS:
            if isinstance(rec.get(k), str) and rec[k].strip():
                return rec[k].strip()
        if template is None and isinstance(rec.get("label"), str):
            template = "How many {label} are there?"
        if template is None:
            names = ", ".join(QUESTION_KEYS)
            raise DataError(f"{loc}: missing field {names} (question); pass question_template=... to build one")
        try:
            return template.format(**rec)
        except (KeyError, IndexError) as e:
            raise DataError(f"{loc}: question_template {template!r} needs field {e}") from None

    # ------------------------------------------------------------------ scoring

    def parse(self, text: str) -> int | None:
        """The first number (or number word) in `text` as an int, or None."""
        return parse_count(text)

    def score(self, text: str, example: Example) -> dict[str, float]:
        """exact_match, mae (an unparseable answer costs max(|truth|, 1)), off_by_one, unparseable."""
        truth = int(example.target)
        pred = self.parse(text)
        if pred is None:
            return {"exact_match": 0.0, "mae": float(max(abs(truth), 1)), "off_by_one": 0.0, "unparseable": 1.0}
        err = abs(pred - truth)
        return {"exact_match": float(err == 0), "mae": float(err), "off_by_one": float(err <= 1), "unparseable": 0.0}

    def from_record(self, image: Image.Image, question: str, answer: Any, loc: str, **params: Any) -> Example:
        """A count (int, "3" or 3.0) as the answer."""
        count = int_value(answer, loc)  # "<dataset: split S: row R: column 'answer'> must be an integer, ..."
        return Example(image=image, prompt=question, answer=str(count), target=count, meta={"source": loc})


def _question(query: str, kind: str, color: str) -> str:
    if query == "kind":
        return f"How many {PLURALS[kind]} are there?"
    if query == "color":
        return f"How many {color} shapes are there?"
    if query == "color_kind":
        return f"How many {color} {PLURALS[kind]} are there?"
    return "How many shapes are there?"
