"""Grounding: "Where is the red triangle?" -> "[12,40,33,61]".

Coordinate convention. A box is (x0, y0, x1, y1): the left, top, right and bottom edges of the
object, x to the right and y down, as fractions of the image width/height scaled to 0..`coord_max`
and rounded to integers (0 = left/top edge of the image, `coord_max` = right/bottom edge; pixel
edges, so a box covering pixel columns 0..9 of a 48-pixel image has x0 = 0, x1 = round(10/48 *
coord_max)). A box is at least one unit wide and high. The answer text writes the four integers
zero-padded to the width of `coord_max` inside brackets without spaces: coord_max 99 (tiny models,
8 digit tokens) -> "[06,40,33,61]"; coord_max 999 (real models) -> "[060,400,330,610]". Fixed widths
keep single-digit tokenizations unambiguous ("12 5" vs "1 25"). IoU is computed in this space, so
the stretch of a non-square image to a square `image_size` leaves boxes valid.

Stored boxes (real data) are read in the convention the data declares, task params `box_format`
(xyxy, xywh, cxcywh) and `box_units` (pixels, normalized, per_mille), refused when they do not fit
it (`sweeps.tasks.boxes`); they refer to the image as displayed (after its EXIF orientation). The
defaults are those of each source: COCO / RefCOCO `bbox` xywh pixels, a Hugging Face row's answer
xyxy pixels. `coord_max` is a task param for real data too.

Synthetic: 2..3 non-overlapping shapes (sides 8..16 px at 48 px, scaled with `image_size` unless
`min_size`/`max_size` are given; numpy drawing, see `shapes`) and one referring expression
that picks out exactly one of them: "the triangle", "the red shape", "the red triangle", or a
relation to another uniquely described shape, "the blue circle left of the square". With
probability `twin_prob` the scene holds a copy (same kind and colour) of the target, so only a
relation can tell them apart. Relations compare centres with a margin; a scene where a candidate
expression would be ambiguous for any shape does not use that expression.

Real format: RefCOCO / RefCOCO+ / RefCOCOg as distributed by the `refer` toolkit: a refs file
(`refs(unc).p`, `refs(umd).p`, ... or the same list saved as JSON) and `instances.json` (COCO
`images`, `annotations` with `bbox` [x, y, w, h] in pixels, `categories`) plus a folder of COCO
images. Each sentence of each ref is one example. The pickle is read with an unpickler that refuses
every global (class or function reference), so a pickle can only build plain lists, dicts, strings
and numbers and cannot run code; the public refs files contain nothing else.

Metrics: acc_iou50 (IoU >= 0.5), mean_iou, unparseable (an unparseable prediction has IoU 0).
"""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Sequence
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
    build_params,
    check_choices,
    check_fraction,
    check_int,
    check_load_args,
    check_template,
    scaled_size,
    nonempty,
    take_options,
    where,
)
from .boxes import box_fractions, check_box_convention
from .parsing import parse_box
from .shapes import COLORS, KINDS, Shape, place, render

Box = tuple[int, int, int, int]
EXPRESSIONS = ("kind", "color", "color_kind", "relation")
RELATIONS = ("left of", "right of", "above", "below")
DEFAULT_PROMPT = "Where is {expr}?"
_SALT = 2


@dataclass(frozen=True)
class GroundingParams:
    """Synthetic grounding parameters (see the module docstring)."""

    image_size: int = 48
    coord_max: int = 99
    min_objects: int = 2
    max_objects: int = 3
    kinds: tuple[str, ...] = ("circle", "square", "triangle")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow")
    min_size: int | None = None  # pixels; None: 8 at 48 px, scaled with image_size
    max_size: int | None = None  # pixels; None: 16 at 48 px, scaled with image_size
    expressions: tuple[str, ...] = EXPRESSIONS
    twin_prob: float = 0.3
    clutter: float = 0.0
    prompt_template: str = DEFAULT_PROMPT
    box_format: str | None = None  # real data only; None: the loader's default (COCO xywh, HF rows xyxy)
    box_units: str | None = None  # real data only; None: pixels

    def __post_init__(self) -> None:
        check_box_convention(self.box_format, self.box_units)
        check_int(self.image_size, "image_size", lo=8)
        check_int(self.coord_max, "coord_max", lo=1)
        check_int(self.min_objects, "min_objects", lo=1)
        check_int(self.max_objects, "max_objects", lo=self.min_objects)
        # Frozen dataclass: resolve the image-relative defaults in place.
        object.__setattr__(self, "min_size", scaled_size(self.min_size, 8, self.image_size))
        object.__setattr__(self, "max_size", scaled_size(self.max_size, 16, self.image_size))
        check_int(self.min_size, "min_size", lo=3)
        check_int(self.max_size, "max_size", lo=self.min_size, hi=self.image_size)
        check_choices(self.kinds, "kinds", KINDS)
        check_choices(self.colors, "colors", COLORS)
        check_choices(self.expressions, "expressions", EXPRESSIONS)
        check_fraction(self.twin_prob, "twin_prob")
        check_fraction(self.clutter, "clutter")
        _check_template(self.prompt_template)
        if self.max_objects * (self.max_size + 1) ** 2 > 0.45 * self.image_size**2:
            raise ValueError(
                f"{self.max_objects} shapes of up to {self.max_size} px do not fit in a "
                f"{self.image_size}x{self.image_size} image: lower max_objects/max_size or raise image_size"
            )


def _check_template(template: Any) -> None:
    if not isinstance(template, str) or "{expr}" not in template:
        raise ValueError(f"parameter 'prompt_template' must be a string containing '{{expr}}', got {template!r}")
    check_template(template, "parameter 'prompt_template'")


# --------------------------------------------------------------------------- boxes


def to_coords(box: tuple[float, float, float, float], width: float, height: float, coord_max: int) -> Box:
    """Pixel-edge box (x0, y0, x1, y1) -> integer box in 0..coord_max, at least 1 unit wide/high."""
    x0, y0, x1, y1 = box
    out = [
        min(max(round(v / size * coord_max), 0), coord_max)
        for v, size in ((x0, width), (y0, height), (x1, width), (y1, height))
    ]
    for lo, hi in ((0, 2), (1, 3)):  # keep the box non-degenerate after rounding
        if out[hi] <= out[lo]:
            if out[lo] < coord_max:
                out[hi] = out[lo] + 1
            else:
                out[lo] = coord_max - 1
    return (out[0], out[1], out[2], out[3])


def format_box(box: Box, coord_max: int) -> str:
    """"[x0,y0,x1,y1]" with each integer zero-padded to the width of `coord_max`."""
    w = len(str(coord_max))
    return "[" + ",".join(f"{int(v):0{w}d}" for v in box) + "]"


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of boxes (x0, y0, x1, y1); 0 for degenerate or disjoint boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(iw, 0) * max(ih, 0)
    area_a = max(a[2] - a[0], 0) * max(a[3] - a[1], 0)
    area_b = max(b[2] - b[0], 0) * max(b[3] - b[1], 0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class _Desc:
    kind: str | None
    color: str | None

    def matches(self, s: Shape) -> bool:
        return (self.kind is None or s.kind == self.kind) and (self.color is None or s.color == self.color)

    @property
    def phrase(self) -> str:
        if self.kind is None:
            return f"{self.color} shape"
        return self.kind if self.color is None else f"{self.color} {self.kind}"


def _desc(s: Shape, typ: str) -> _Desc:
    return _Desc(s.kind if typ != "color" else None, s.color if typ != "kind" else None)


def _relations(a: Shape, b: Shape, margin: float) -> dict[str, bool | None]:
    """For each relation, whether `a` is in it to `b`: True/False, or None when too close to call."""
    (ax, ay), (bx, by) = a.center, b.center
    out: dict[str, bool | None] = {}
    for rel, d in (("left of", bx - ax), ("right of", ax - bx), ("above", by - ay), ("below", ay - by)):
        out[rel] = True if d > margin else (False if d <= 0 else None)
    return out


def expressions_for(
    shapes: Sequence[Shape], target: int, allowed: Sequence[str], margin: float
) -> dict[str, list[str]]:
    """Referring expressions (by type) that pick out exactly `shapes[target]`."""
    t = shapes[target]
    unique = lambda d: sum(d.matches(s) for s in shapes) == 1  # noqa: E731
    out: dict[str, list[str]] = {}
    for typ in ("kind", "color", "color_kind"):
        if typ in allowed and unique(_desc(t, typ)):
            out[typ] = [f"the {_desc(t, typ).phrase}"]
    if "relation" not in allowed:
        return out
    rel_exprs = []
    for ai, a in enumerate(shapes):
        if ai == target:
            continue
        named = {_desc(a, typ) for typ in ("kind", "color", "color_kind")}
        anchors = sorted(filter(unique, named), key=lambda d: d.phrase)
        if not anchors:
            continue
        t_rel = _relations(t, a, margin)
        for base in (_desc(t, "kind"), _desc(t, "color_kind")):
            other_rels = [
                _relations(o, a, margin)
                for si, o in enumerate(shapes)
                if si not in (ai, target) and base.matches(o)
            ]
            for rel in RELATIONS:
                if t_rel[rel] is True and all(r[rel] is False for r in other_rels):
                    rel_exprs += [f"the {base.phrase} {rel} the {adesc.phrase}" for adesc in anchors]
    if rel_exprs:
        out["relation"] = sorted(set(rel_exprs))
    return out


# --------------------------------------------------------------------------- task


class GroundingTask(Task):
    """Box the object a referring expression names (synthetic shapes or RefCOCO-family data)."""

    name = "grounding"
    primary_metric = "acc_iou50"
    metric_modes = {"acc_iou50": "max", "mean_iou": "max", "unparseable": "min"}
    _params_cls = GroundingParams
    data_params = ("coord_max", "box_format", "box_units")

    def example(self, p: GroundingParams, seed: int, index: int, context: Any = None) -> Example:
        rand = Rand(_SALT, seed, index)
        margin = max(1.0, p.image_size / 16)
        for _ in range(100):  # redraw scenes until one has an expression of an allowed type
            n_obj = rand.integer(p.min_objects, p.max_objects)
            attrs = [(rand.choice(p.kinds), rand.choice(p.colors)) for _ in range(n_obj)]
            if n_obj > 1 and rand.random() < p.twin_prob:
                attrs[1] = attrs[0]
            sizes = [rand.integer(p.min_size, p.max_size) for _ in attrs]
            pos = place(rand, sizes, p.image_size)
            if pos is None:
                continue
            shapes = [Shape(k, c, x, y, s) for (k, c), (x, y), s in zip(attrs, pos, sizes)]
            found = expressions_for(shapes, 0, p.expressions, margin)
            if found:
                break
        else:
            raise ValueError(
                f"no scene with a unique referring expression of types {list(p.expressions)} in 100 "
                f"draws (seed {seed}, example {index}): allow more expression types, kinds or colours"
            )
        typ = rand.choice(sorted(found))
        expr = rand.choice(found[typ])
        order = rand.shuffled(range(len(shapes)))  # the target is not always drawn first
        shapes = [shapes[i] for i in order]
        image = Image.fromarray(render(p.image_size, shapes, rand, p.clutter))
        pixel_box = shapes[order.index(0)].box
        box = to_coords(pixel_box, p.image_size, p.image_size, p.coord_max)
        meta = {
            "source": "synthetic",
            "seed": seed,
            "index": index,
            "coord_max": p.coord_max,
            "expression": expr,
            "expression_type": typ,
            "pixel_box": pixel_box,
            "shapes": [(s.kind, s.color, s.box) for s in shapes],
        }
        prompt = p.prompt_template.format(expr=expr)
        return Example(image, prompt, format_box(box, p.coord_max), box, meta)

    # ------------------------------------------------------------------ RefCOCO family

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
        """Examples (one per sentence) from a RefCOCO / RefCOCO+ / RefCOCOg folder or refs file.

        Options: coord_max (default 99), image_dir (COCO images; default `<folder>/images` when it
        exists, else the folder; `train2014/` below it is also searched), refs_file and
        instances_file (names inside the folder), prompt_template (default "Where is {expr}?"),
        box_format and box_units of the `bbox` fields (default xywh pixels, COCO's; see
        `sweeps.tasks.boxes`). A trial passes the task params coord_max, box_format and box_units
        here (`Task.data_params`).
        """
        check_load_args(limit, image_size)
        defaults = {
            "coord_max": 99,
            "image_dir": None,
            "refs_file": None,
            "instances_file": "instances.json",
            "prompt_template": DEFAULT_PROMPT,
            "box_format": None,
            "box_units": None,
        }
        opts = take_options(params, defaults, "grounding loader")
        check_int(opts["coord_max"], "coord_max", lo=1)
        check_box_convention(opts["box_format"], opts["box_units"])
        convention = {"box_format": opts["box_format"] or "xywh", "box_units": opts["box_units"] or "pixels"}
        _check_template(opts["prompt_template"])
        refs_path, inst_path = _find_files(Path(path), opts["refs_file"], opts["instances_file"])
        folder = refs_path.parent
        if opts["image_dir"] is not None:
            image_dir = Path(opts["image_dir"])
        else:
            image_dir = folder / "images" if (folder / "images").is_dir() else folder
        refs = _read_refs(refs_path)
        images_by_id, anns_by_id, cats = _read_instances(inst_path)
        if split is not None:
            present = sorted({str(r.get("split")) for r in refs})
            refs_idx = [(i, r) for i, r in enumerate(refs) if r.get("split") == split]
            if not refs_idx:
                raise DataError(f"{refs_path}: no refs for split {split!r} (splits present: {', '.join(present)})")
        else:
            refs_idx = list(enumerate(refs))
        cache = ImageCache(image_size, decode=images)
        out: list[Example] = []
        for i, ref in refs_idx:
            if limit is not None and len(out) >= limit:
                break
            loc = where(refs_path, i, ref.get("ref_id"))
            for key in ("ann_id", "image_id", "sentences"):
                if key not in ref:
                    raise DataError(f"{loc}: missing field {key!r}")
            ann = anns_by_id.get(ref["ann_id"])
            if ann is None:
                raise DataError(f"{loc}: field 'ann_id': annotation {ref['ann_id']!r} not in {inst_path}")
            img = images_by_id.get(ann.get("image_id", ref["image_id"]))
            if img is None:
                raise DataError(f"{loc}: field 'image_id': image {ref['image_id']!r} not in {inst_path}")
            width, height = _image_size(img, inst_path)
            frac = box_fractions(ann.get("bbox"), width=width, height=height,
                                 loc=f"{inst_path}: annotation {ann.get('id')!r}: field 'bbox'", **convention)
            box = to_coords(frac, 1.0, 1.0, opts["coord_max"])
            file = _image_file(image_dir, img["file_name"])
            image = cache.get(file, loc, expect_size=(width, height))
            sentences = ref["sentences"]
            if not isinstance(sentences, list) or not sentences:
                raise DataError(f"{loc}: field 'sentences' must be a non-empty list")
            for j, sent in enumerate(sentences):
                if limit is not None and len(out) >= limit:
                    break
                text = sent.get("sent", sent.get("raw")) if isinstance(sent, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{loc}: field 'sentences'[{j}]: missing 'sent'/'raw' text")
                text = text.strip()
                meta = {
                    "source": str(refs_path),
                    "index": i,
                    "ref_id": ref.get("ref_id"),
                    "ann_id": ref["ann_id"],
                    "image_id": img["id"],
                    "sent_id": sent.get("sent_id"),
                    "split": ref.get("split"),
                    "category": cats.get(ann.get("category_id")),
                    "expression": text,
                    "coord_max": opts["coord_max"],
                    "image_path": str(file),
                }
                prompt = opts["prompt_template"].format(expr=text)
                out.append(Example(image, prompt, format_box(box, opts["coord_max"]), box, meta))
        return nonempty(out, refs_path, split)

    # ------------------------------------------------------------------ scoring

    def parse(self, text: str, *, coord_max: int | None = None) -> tuple[float, float, float, float] | None:
        """The box in `text` (see `parsing.parse_box`); fractions are scaled when `coord_max` is given."""
        return parse_box(text, coord_max)

    def score(self, text: str, example: Example) -> dict[str, float]:
        """acc_iou50 (IoU >= 0.5), mean_iou, unparseable."""
        pred = self.parse(text, coord_max=example.meta.get("coord_max"))
        if pred is None:
            return {"acc_iou50": 0.0, "mean_iou": 0.0, "unparseable": 1.0}
        v = iou(pred, example.target)
        return {"acc_iou50": float(v >= 0.5), "mean_iou": float(v), "unparseable": 0.0}

    def from_record(self, image: Image.Image, question: str, answer: Any, loc: str, **params: Any) -> Example:
        """A box as the answer, in the convention of task params `box_format` / `box_units`
        (default xyxy pixels of the displayed image; `sweeps.tasks.boxes`), written on the
        `coord_max` grid (task param, default as for synthetic data) like the loaders do."""
        p = build_params(GroundingParams, params, "grounding")
        if isinstance(answer, str):
            parts = answer.replace(",", " ").strip("[]() ").split()
            try:
                answer = [float(v) for v in parts]
            except ValueError:
                raise DataError(f"{loc}: a box must be 4 numbers, got {answer!r}") from None
        width, height = image.size  # the displayed image: the box is in its frame
        frac = box_fractions(answer, box_format=p.box_format or "xyxy", box_units=p.box_units or "pixels",
                             width=width, height=height, loc=loc)
        coords = to_coords(frac, 1.0, 1.0, p.coord_max)
        return Example(image=image, prompt=question, answer=format_box(coords, p.coord_max), target=coords,
                       meta={"source": loc, "coord_max": p.coord_max})


# --------------------------------------------------------------------------- RefCOCO files


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Builds only plain containers and scalars: every class/function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _find_files(path: Path, refs_file: str | None, instances_file: str) -> tuple[Path, Path]:
    if path.is_file():
        return path, path.parent / instances_file
    if not path.is_dir():
        raise DataError(f"{path}: file or folder not found")
    if refs_file is not None:
        return path / refs_file, path / instances_file
    found = sorted(p for p in path.iterdir() if p.name.startswith("refs") and p.suffix in (".p", ".json"))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{path}: need exactly one refs*.p / refs*.json file (found: {names}); pass refs_file=...")
    return found[0], path / instances_file


def _read_refs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: refs file not found")
    try:
        if path.suffix == ".p":
            data = _NoGlobalsUnpickler(io.BytesIO(path.read_bytes()), encoding="utf-8", errors="replace").load()
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    except Exception as e:  # UnpicklingError, EOFError, ... from a bad or hostile pickle
        raise DataError(f"{path}: cannot read refs pickle: {e} (a refs file holds only lists and dicts)") from e
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of refs, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no refs")
    for i, r in enumerate(data):
        if not isinstance(r, dict):
            raise DataError(f"{where(path, i)}: expected a ref object, got {type(r).__name__}")
    return data


def _read_instances(path: Path) -> tuple[dict[Any, dict], dict[Any, dict], dict[Any, str]]:
    if not path.is_file():
        raise DataError(f"{path}: instances file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing field {key!r} (a list)")
    images: dict[Any, dict] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DataError(f"{path}: images[{i}]: needs 'id' and 'file_name'")
        images[im["id"]] = im
    anns: dict[Any, dict] = {}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "id" not in a:
            raise DataError(f"{path}: annotations[{i}]: missing field 'id'")
        anns[a["id"]] = a
    cats = {c.get("id"): c.get("name") for c in data.get("categories", []) if isinstance(c, dict)}
    return images, anns, cats


def _image_size(img: dict[str, Any], inst_path: Path) -> tuple[int, int]:
    w, h = img.get("width"), img.get("height")
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise DataError(f"{inst_path}: image {img.get('id')!r}: fields 'width'/'height' must be positive integers")
    return w, h


def _image_file(image_dir: Path, file_name: str) -> Path:
    direct = image_dir / file_name
    if direct.is_file():
        return direct
    nested = image_dir / "train2014" / file_name  # the refer toolkit's images/mscoco/images/train2014
    return nested if nested.is_file() else direct
