"""Chart QA: a bar or line chart and "What is the value of B?" -> "42.5".

Synthetic: matplotlib (Agg, no pyplot) bar or line charts of 3..6 categories labelled A, B, C, ...
on a fixed y axis 0..`value_max`, values uniform on a grid; a fraction `decimals_prob` of charts
has one-decimal values, the rest integers. Every numeric answer of a chart is written with that
chart's number of decimals ("42" or "42.5"; no thousands separators, no sign: differences are
absolute). Questions: value ("What is the value of B?"), max, min, diff ("What is the difference
between A and C?"), sum, argmax/argmin (answer: a category letter). Value labels on the bars are
drawn when `show_values` is set. One figure per thread and chart geometry is reused across calls
and its axes are drawn once per category count; each chart only redraws its data (~0.5-1 ms per
64x64 chart instead of ~40 ms for a full draw).

Real format: ChartQA (`<split>/<split>_human.json`, `<split>_augmented.json`: lists of
{"imgname", "query", "label"}, images in `<split>/png/`). A label that is a number ("17", "0.57",
"1,234", "45%") is a numeric target, any other label a text target.

Metrics: relaxed_accuracy (ChartQA: a number within 5% of a numeric truth, exactly 0 for a truth of
0; case-insensitive exact match for text), exact_match (the same number, or the same text),
unparseable (no number for a numeric truth, an empty answer for a text truth). A "%" is ignored on
both sides ("45%" equals 45), unlike the official script, which divides by 100 on one side only.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    nonempty,
    number_answer,
    read_records,
    take_options,
    where,
)
from .parsing import format_number, normalize_text, parse_number

CHART_KINDS = ("bar", "line")
QUESTIONS = ("value", "max", "min", "diff", "sum", "argmax", "argmin")
LABELS = "ABCDEFGHIJKL"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_PURE_NUMBER = re.compile(r"^[-+\u2212]?[$€£]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?%?$")
_SALT = 3
AXES_RECT = (0.24, 0.13, 0.72, 0.83)  # left, bottom, width, height as fractions of the image
Y_HEADROOM = 1.12  # the y axis spans 0..value_max * Y_HEADROOM (room for value labels)


@dataclass(frozen=True)
class ChartParams:
    """Synthetic chart parameters (see the module docstring)."""

    image_size: int = 64
    kinds: tuple[str, ...] = CHART_KINDS
    min_categories: int = 3
    max_categories: int = 6
    value_max: int = 100
    decimals_prob: float = 0.3
    show_values: bool = False
    questions: tuple[str, ...] = ("value", "max", "min", "diff")

    def __post_init__(self) -> None:
        check_int(self.image_size, "image_size", lo=16)
        check_int(self.min_categories, "min_categories", lo=2)
        check_int(self.max_categories, "max_categories", lo=self.min_categories, hi=len(LABELS))
        check_int(self.value_max, "value_max", lo=1)
        check_choices(self.kinds, "kinds", CHART_KINDS)
        check_choices(self.questions, "questions", QUESTIONS)
        check_fraction(self.decimals_prob, "decimals_prob")
        if not isinstance(self.show_values, bool):
            raise ValueError(f"parameter 'show_values' must be true or false, got {self.show_values!r}")


@dataclass(frozen=True)
class _Chart:
    kind: str
    units: tuple[int, ...]  # values in units of 10**-decimals
    decimals: int
    color: str


class _Renderer:
    """One reusable figure: axes per category count are drawn once, data artists per chart.

    The x axis is fixed at [0, 1] (changing limits per chart costs more than drawing it); the n
    categories sit at the centres of n equal slots.
    """

    def __init__(self, p: ChartParams) -> None:
        s = p.image_size
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib only where charts are drawn
        from matplotlib.figure import Figure
        from matplotlib.patches import PathPatch

        self.fig = Figure(figsize=(1, 1), dpi=s)  # 1 inch at dpi=s: exactly s x s pixels
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes(AXES_RECT)
        self.ax.set_xlim(0, 1)
        self.ax.set_ylim(0, p.value_max * Y_HEADROOM)
        self.ax.tick_params(labelsize=5, length=1.5, width=0.5, pad=1)
        for sp in self.ax.spines.values():
            sp.set_linewidth(0.5)
        self.ax.grid(axis="y", linewidth=0.3, color="#cccccc")
        self.ax.set_axisbelow(True)
        n = p.max_categories
        # All bars of a chart are one compound path: one draw call instead of one per bar.
        self.bars = self.ax.add_patch(PathPatch(_bars_path([0.5], [1.0], 0.1), linewidth=0))
        (self.line,) = self.ax.plot([], [], marker="o", markersize=2, linewidth=1)
        self.texts = [self.ax.text(0, 0, "", fontsize=4, ha="center", va="bottom") for _ in range(n)]
        for a in [self.bars, self.line, *self.texts]:
            a.set_visible(False)
            a.set_animated(True)  # never part of the cached backgrounds
        self.value_max = p.value_max
        self._backgrounds: dict[int, Any] = {}

    @staticmethod
    def _centres(n: int) -> list[float]:
        return [(k + 0.5) / n for k in range(n)]

    def _background(self, n: int) -> None:
        if n not in self._backgrounds:
            self.ax.set_xticks(self._centres(n), list(LABELS[:n]))
            self.canvas.draw()
            self._backgrounds[n] = self.canvas.copy_from_bbox(self.fig.bbox)
        self.canvas.restore_region(self._backgrounds[n])

    def render(self, chart: _Chart, show_values: bool) -> Image.Image:
        """The chart as an RGB image [s, s]."""
        n = len(chart.units)
        xs = self._centres(n)
        values = [u / 10**chart.decimals for u in chart.units]
        self._background(n)
        drawn = []
        if chart.kind == "bar":
            self.bars.set_path(_bars_path(xs, values, 0.7 / n))
            self.bars.set_facecolor(chart.color)
            drawn.append(self.bars)
        else:
            self.line.set_data(xs, values)
            self.line.set_color(chart.color)
            drawn.append(self.line)
        if show_values:
            for k in range(n):
                t = self.texts[k]
                t.set_position((xs[k], values[k] + self.value_max * 0.02))
                t.set_text(format_number(values[k], chart.decimals))
                drawn.append(t)
        for a in drawn:
            a.set_visible(True)
            self.ax.draw_artist(a)
            a.set_visible(False)
        rgba = np.asarray(self.canvas.buffer_rgba())
        return Image.fromarray(np.ascontiguousarray(rgba[..., :3]))


_local = threading.local()


def _renderer(p: ChartParams) -> _Renderer:
    """A renderer for `p`, reused across calls in this thread (trials generate a batch per step;
    a new figure and its axes backgrounds cost ~100 ms)."""
    cache: dict[tuple[int, int, int], _Renderer] = _local.__dict__.setdefault("renderers", {})
    key = (p.image_size, p.max_categories, p.value_max)
    if key not in cache:
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        cache[key] = _Renderer(p)
    return cache[key]


def _bars_path(xs: Sequence[float], heights: Sequence[float], width: float) -> Any:
    """One path of rectangles [x - width/2, x + width/2] x [0, height] (a matplotlib Path)."""
    from matplotlib.path import Path as MplPath

    verts, codes = [], []
    for x, h in zip(xs, heights):
        x0, x1 = x - width / 2, x + width / 2
        verts += [(x0, 0.0), (x1, 0.0), (x1, h), (x0, h), (x0, 0.0)]
        codes += [MplPath.MOVETO, MplPath.LINETO, MplPath.LINETO, MplPath.LINETO, MplPath.CLOSEPOLY]
    return MplPath(verts, codes)


class ChartTask(Task):
    """Numbers read off charts (synthetic matplotlib charts or ChartQA)."""

    name = "chart"
    primary_metric = "relaxed_accuracy"
    metric_modes = {"relaxed_accuracy": "max", "exact_match": "max", "unparseable": "min"}
    _params_cls = ChartParams

    def synthetic_context(self, params: ChartParams) -> _Renderer:
        """The renderer shared by all examples drawn with these params."""
        return _renderer(params)

    def example(self, p: ChartParams, seed: int, index: int, renderer: _Renderer | None = None) -> Example:
        renderer = renderer or _renderer(p)
        rand = Rand(_SALT, seed, index)
        kind = rand.choice(p.kinds)
        n = rand.integer(p.min_categories, p.max_categories)
        decimals = 1 if rand.random() < p.decimals_prob else 0
        question = rand.choice(p.questions)
        top = p.value_max * 10**decimals
        while True:  # argmax/argmin need a unique extreme
            units = tuple(rand.integer(0, top) for _ in range(n))
            extreme = max(units) if question == "argmax" else min(units)
            if question not in ("argmax", "argmin") or units.count(extreme) == 1:
                break
        chart = _Chart(kind, units, decimals, rand.choice(PALETTE))
        a, b = rand.shuffled(range(n))[:2]
        prompt, target_units, text_answer = _question(question, units, a, b)
        if text_answer is not None:
            answer, target = text_answer, text_answer
        else:
            answer = format_number(target_units / 10**decimals, decimals)
            target = float(answer)
        meta = {
            "source": "synthetic",
            "seed": seed,
            "index": index,
            "kind": kind,
            "question": question,
            "decimals": decimals,
            "values": [format_number(u / 10**decimals, decimals) for u in units],
        }
        return Example(renderer.render(chart, p.show_values), prompt, answer, target, meta)

    # ------------------------------------------------------------------ ChartQA

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
        """ChartQA examples from a json file, or from the dataset folder with `split`.

        Options: image_dir (default `png/` beside the json file), subset ("human", "augmented" or
        "all", for a folder; default "all").
        """
        check_load_args(limit, image_size)
        opts = take_options(params, {"image_dir": None, "subset": "all"}, "chart loader")
        if opts["subset"] not in ("human", "augmented", "all"):
            raise ValueError(f"option 'subset' must be human, augmented or all, got {opts['subset']!r}")
        files = _chartqa_files(Path(path), split, opts["subset"])
        cache = ImageCache(image_size, decode=images)
        out: list[Example] = []
        for file in files:
            img_dir = Path(opts["image_dir"]) if opts["image_dir"] is not None else _png_dir(file)
            for i, rec in enumerate(read_records(file)):
                if limit is not None and len(out) >= limit:
                    break
                loc = where(file, i, rec.get("imgname"))
                for key in ("imgname", "query", "label"):
                    if rec.get(key) is None:
                        raise DataError(f"{loc}: missing field {key!r}")
                name, query, label = rec["imgname"], rec["query"], rec["label"]
                if isinstance(label, list) and len(label) == 1:  # the HF export wraps labels in a list
                    label = label[0]
                if not isinstance(name, str) or not isinstance(query, str):
                    raise DataError(f"{loc}: fields 'imgname' and 'query' must be strings")
                answer = label_text(label, f"{loc}: field 'label'")
                image = cache.get(img_dir / name, loc)
                meta = {"source": str(file), "index": i, "imgname": name, "image_path": str(img_dir / name)}
                out.append(Example(image, query.strip(), answer, label_target(answer), meta))
        return nonempty(out, Path(path), split)

    # ------------------------------------------------------------------ scoring

    def parse(self, text: str) -> float | str | None:
        """The first number in `text`; else the normalised text; None for an empty text."""
        num = parse_number(text)
        if num is not None:
            return num
        t = normalize_text(text)
        return t or None

    def score(self, text: str, example: Example) -> dict[str, float]:
        """relaxed_accuracy (within 5% of a numeric truth; exact for text), exact_match, unparseable."""
        truth = example.target
        if isinstance(truth, str):
            pred_text = normalize_text(text)
            same = float(bool(pred_text) and pred_text == normalize_text(truth))
            return {"relaxed_accuracy": same, "exact_match": same, "unparseable": float(not pred_text)}
        pred = parse_number(text)
        if pred is None:
            return {"relaxed_accuracy": 0.0, "exact_match": 0.0, "unparseable": 1.0}
        t = float(truth)
        relaxed = abs(pred - t) <= 0.05 * abs(t) if t != 0 else pred == 0
        return {"relaxed_accuracy": float(relaxed), "exact_match": float(abs(pred - t) <= 1e-9 * max(1.0, abs(t))),
                "unparseable": 0.0}

    def from_record(self, image: Image.Image, question: str, answer: Any, loc: str, **params: Any) -> Example:
        """A number or a text label as the answer (written as ChartQA labels are)."""
        label = label_text(answer, loc)
        return Example(image=image, prompt=question, answer=label, target=label_target(label),
                       meta={"source": loc})


def label_text(label: Any, loc: str) -> str:
    """A stored label (number or text) as the answer text: a number with exactly the precision it
    carries (`base.number_answer`: 2601.0 -> "2601", never "0.10000000000000001"), a text stripped.

    Raises:
        DataError: naming `loc`: an empty label, NaN or inf (a number, or a text such as "nan"),
            anything that is neither a number nor a text.
    """
    if isinstance(label, str):
        text = label.strip()
        if not text:
            raise DataError(f"{loc} is empty (fill the value or drop the row)")
        if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            number_answer(text, loc)  # the one NaN / inf message
        return text
    if isinstance(label, bool) or not isinstance(label, (int, float, np.integer, np.floating)):
        raise DataError(f"{loc} must be a number or a text, got {label!r}")
    return number_answer(label, loc)[0]


def label_target(label: str) -> float | str:
    """A ChartQA label as a float when it is a plain number ("1,234", "45%", "-0.5"), else the text."""
    s = label.strip().replace(" ", "")
    if _PURE_NUMBER.match(s) and any(c.isdigit() for c in s):
        value = parse_number(s)
        if value is not None:
            return value
    return label.strip()


def _question(q: str, units: tuple[int, ...], a: int, b: int) -> tuple[str, int, str | None]:
    """(prompt, answer in value units, text answer or None) for question type `q`."""
    la, lb = LABELS[a], LABELS[b]
    if q == "value":
        return f"What is the value of {la}?", units[a], None
    if q == "max":
        return "What is the maximum value?", max(units), None
    if q == "min":
        return "What is the minimum value?", min(units), None
    if q == "diff":
        return f"What is the difference between {la} and {lb}?", abs(units[a] - units[b]), None
    if q == "sum":
        return f"What is the sum of {la} and {lb}?", units[a] + units[b], None
    pick = max if q == "argmax" else min
    best = LABELS[units.index(pick(units))]
    word = "highest" if q == "argmax" else "lowest"
    return f"Which category has the {word} value?", 0, best


def _png_dir(json_file: Path) -> Path:
    png = json_file.parent / "png"
    return png if png.is_dir() else json_file.parent


def _chartqa_files(path: Path, split: str | None, subset: str) -> list[Path]:
    if path.is_file():
        if split is not None and not path.name.startswith(f"{split}_"):
            raise DataError(f"{path}: split={split!r} given but the file is not a {split}_*.json file")
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: file or folder not found")
    if split is None:
        raise DataError(f"{path}: is a folder; pass split=... (train, val or test)")
    folder = path / split if (path / split).is_dir() else path
    kinds = ("human", "augmented") if subset == "all" else (subset,)
    files = [folder / f"{split}_{k}.json" for k in kinds if (folder / f"{split}_{k}.json").is_file()]
    if not files:
        tried = ", ".join(f"{split}_{k}.json" for k in kinds)
        raise DataError(f"{folder}: no ChartQA file for split {split!r} (looked for {tried})")
    return files
