"""The task contract (`Example`, `Task`, `DataError`) and helpers shared by the loaders.

A task turns images + questions into `Example`s, parses what a model generated and scores it. Every
task has a deterministic synthetic generator (`Task.synthetic`) and a loader for one public data
format (`Task.load`). Bad data raises `DataError`, whose message names the file, the record and the
field, so a user can fix the file without reading a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from PIL import Image
from sweeps.errors import SlsweepError


@dataclass(frozen=True)
class Example:
    """One question about one image.

    Attributes:
        image: RGB image (None only from a loader called with `images=False`, see `Task.load`).
        prompt: question text shown to the model (the model layer adds any image placeholder).
        answer: the exact target text the model is trained to emit.
        target: structured truth (int count, box (x0, y0, x1, y1), float or str).
        meta: free-form provenance (source file, record index, scene description, ...).
    """

    image: Image.Image
    prompt: str
    answer: str
    target: Any
    meta: dict[str, Any] = field(default_factory=dict)


class DataError(SlsweepError, ValueError):
    """Bad input data; the message names the file, the record (index/id) and the field.

    A user error: the CLI prints it on one line and exits 2."""


def rgb_example(example: Example, loc: str) -> Example:
    """`example` with its image as the model gets it: a plain RGB picture
    (`sweeps.tasks.images.as_rgb`; a plug-in's grey, transparent or EXIF-rotated image is decoded
    by the same rules as a file). The same object when the image is RGB already."""
    from .images import as_rgb

    image = as_rgb(example.image, loc)
    return example if image is example.image else dataclasses.replace(example, image=image)


class Task(ABC):
    """A numerical task: synthetic data, a real-format loader, answer parsing and metrics.

    A task supplies its metadata (`name`, `primary_metric`, `metric_modes`: the one task registry
    `sweeps.tasks.TASKS` reads them, and config, spec and reports read the registry), one example
    generator (`example`), a per-example score (`score`), a parser (`parse`), a loader for its
    public format (`load`) and, for Hugging Face datasets, `from_record`. The base class owns
    `synthetic` and `metrics`.
    """

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    metric_modes: ClassVar[dict[str, str]]
    # Subclasses name their synthetic parameter dataclass here.
    _params_cls: ClassVar[Any]
    # Task params that describe real data too (a grounding box convention, the coordinate grid):
    # a trial passes them to `load` with the loader options (`sweeps.trial.data.loader_options`).
    data_params: ClassVar[tuple[str, ...]] = ()

    def synthetic(self, n: int, seed: int, **params: Any) -> list[Example]:
        """`n` generated examples, identical for the same (`n`, `seed`, params); example i does
        not depend on `n` (a longer set extends a shorter one). Unknown params raise ValueError."""
        check_synthetic_args(n, seed)
        p = build_params(self._params_cls, params, self.name)
        context = self.synthetic_context(p)
        return [rgb_example(self.example(p, seed, i, context), f"task {self.name}: synthetic example {i}")
                for i in range(n)]

    def synthetic_context(self, params: Any) -> Any:
        """Shared state for generating many examples with the same params (e.g. a renderer)."""
        return None

    @abstractmethod
    def example(self, params: Any, seed: int, index: int, context: Any) -> Example:
        """Synthetic example `index` for `seed` (a function of (params, seed, index) only)."""

    @abstractmethod
    def load(
        self,
        path: str | Path,
        *,
        split: str | None = None,
        limit: int | None = None,
        image_size: int | None = None,
        **params: Any,
    ) -> list[Example]:
        """Examples from a dataset in its public format; images resized to a square
        `image_size` when given; the first `limit` records when given.

        A loader may also take `images: bool = True` (the built-in ones do): with `images=False`
        it reads and checks every answer (and box) as usual, checks that each image file exists
        (`ImageCache(decode=False)`) but decodes none, and returns examples whose `image` is None.
        `slsweep run`'s preflight uses it to check every row a trial will read before Ray starts;
        a loader without it has only its first records checked there."""

    def from_record(self, image: Image.Image, question: str, answer: Any, loc: str,
                    **params: Any) -> Example:
        """An example from one Hugging Face dataset row (see `sweeps.tasks.hf`).

        Args:
            image: the row's image, decoded (`sweeps.tasks.images.decode_image`: RGB, EXIF
                orientation applied) at its displayed size; the loader resizes it afterwards.
            question: the row's question text.
            answer: the row's answer as stored (number, list of numbers or text).
            loc: "dataset: split S: row R" for DataError messages.
            **params: the task's params from the spec (e.g. coord_max).

        Raises:
            DataError: the answer does not fit the task (names `loc` and the answer column).
        """
        raise DataError(f"{loc}: task {self.name!r} does not read Hugging Face datasets")

    @abstractmethod
    def parse(self, text: str) -> Any | None:
        """The structured answer in generated `text`, or None when there is none."""

    @abstractmethod
    def score(self, text: str, example: Example) -> dict[str, float]:
        """Every metric of `metric_modes` for one generated `text`; `unparseable` is 1.0 when no
        answer could be parsed (which then scores as wrong)."""

    def metrics(self, predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        """The mean of each per-example score over the examples (`metric_modes` order; a task whose
        metrics are chosen per dataset, such as numeric_vqa, scores only those)."""
        check_lengths(predictions, examples)
        rows = [self.score(text, ex) for text, ex in zip(predictions, examples)]
        return {k: float(sum(r[k] for r in rows) / len(rows)) for k in self.metric_modes if k in rows[0]}

    def default_params(self) -> dict[str, Any]:
        """The synthetic generator's parameters with their defaults (for logging a resolved config)."""
        return dataclasses.asdict(self._params_cls())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# --------------------------------------------------------------------------- parameters

P = TypeVar("P")


def build_params(cls: type[P], params: dict[str, Any], what: str) -> P:
    """Instantiate the parameter dataclass `cls` from `params`; unknown names raise ValueError.

    Lists (as YAML gives them) are turned into tuples for tuple-typed fields.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(
            f"unknown {what} parameter {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return cls(**fixed)


def check_template(template: Any, what: str) -> None:
    """ValueError unless `template` is a `str.format` template whose fields are plain names.

    `{label}` is fine; `{label.__class__}`, `{label[0]}`, `{0}` and `{}` are not: attribute and
    index lookups would reach into Python objects (and fail with a traceback on a typo).
    """
    import string

    if not isinstance(template, str):
        raise ValueError(f"{what} must be a string, got {template!r}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{what} {template!r}: {exc}") from None
    for f in fields:
        if not f.isidentifier():
            raise ValueError(f"{what} {template!r}: field {{{f}}} must be a plain record field name "
                             "(no attribute, index or positional lookups)")


def take_options(params: dict[str, Any], defaults: dict[str, Any], what: str) -> dict[str, Any]:
    """`defaults` updated with `params`; a name not in `defaults` raises ValueError."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown {what} option {unknown[0]!r} (known: {', '.join(sorted(defaults))})"
        )
    return {**defaults, **params}


def check_int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> None:
    """ValueError naming `name` unless `value` is an int in [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"parameter {name!r} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise ValueError(f"parameter {name!r} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"parameter {name!r} must be <= {hi}, got {value}")


def check_fraction(value: Any, name: str) -> None:
    """ValueError naming `name` unless `value` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"parameter {name!r} must be a number in [0, 1], got {value!r}")


def scaled_size(value: int | None, default_at_48: int, image_size: int) -> int:
    """A shape size in pixels: `value` when given, else `default_at_48` scaled to `image_size`
    (so a larger image shows the same scene at a higher resolution)."""
    return value if value is not None else max(3, round(default_at_48 * image_size / 48))


def check_choices(values: Any, name: str, allowed: Iterable[str], min_len: int = 1) -> None:
    """ValueError naming `name` unless `values` is a tuple of allowed, distinct names."""
    allowed = tuple(allowed)
    if isinstance(values, str) or not isinstance(values, tuple):
        raise ValueError(f"parameter {name!r} must be a list of names, got {values!r}")
    if len(values) < min_len:
        raise ValueError(f"parameter {name!r} needs at least {min_len} entries, got {list(values)}")
    for v in values:
        if v not in allowed:
            raise ValueError(f"parameter {name!r}: unknown value {v!r} (known: {', '.join(allowed)})")
    if len(set(values)) != len(values):
        raise ValueError(f"parameter {name!r} has repeated entries: {list(values)}")


def check_synthetic_args(n: int, seed: int) -> None:
    """ValueError unless `n` >= 0 and `seed` >= 0 are integers."""
    check_int(n, "n", lo=0)
    check_int(seed, "seed", lo=0)


def check_load_args(limit: int | None, image_size: int | None) -> None:
    """ValueError unless `limit` and `image_size` are None or positive integers."""
    if limit is not None:
        check_int(limit, "limit", lo=1)
    if image_size is not None:
        check_int(image_size, "image_size", lo=1)


# --------------------------------------------------------------------------- randomness


class Rand:
    """Fast scalar random draws for one example, from a numpy PCG64 stream.

    Seeded by (task salt, seed, example index) so that example i is the same whatever `n` is, and
    buffered because per-scalar numpy calls cost microseconds each.
    """

    __slots__ = ("gen", "_buf", "_pos")

    def __init__(self, salt: int, seed: int, index: int, buffer: int = 128) -> None:
        self.gen = np.random.default_rng([salt, seed, index])
        self._buf: list[float] = self.gen.random(buffer).tolist()
        self._pos = 0

    def random(self) -> float:
        """Uniform float in [0, 1)."""
        if self._pos == len(self._buf):
            self._buf = self.gen.random(len(self._buf)).tolist()
            self._pos = 0
        u = self._buf[self._pos]
        self._pos += 1
        return u

    def integer(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi] (both inclusive)."""
        return lo + min(int(self.random() * (hi - lo + 1)), hi - lo)

    def choice(self, seq: Sequence[Any]) -> Any:
        """A uniformly chosen element of non-empty `seq`."""
        return seq[self.integer(0, len(seq) - 1)]

    def shuffled(self, seq: Sequence[Any]) -> list[Any]:
        """A shuffled copy of `seq` (Fisher-Yates)."""
        out = list(seq)
        for i in range(len(out) - 1, 0, -1):
            j = self.integer(0, i)
            out[i], out[j] = out[j], out[i]
        return out


# --------------------------------------------------------------------------- data files


def where(path: Path | str, index: int | None = None, rid: Any = None) -> str:
    """Location prefix for DataError messages: `file: record 3 (id 17)`."""
    s = str(path)
    if index is not None:
        s += f": record {index}"
        if rid is not None:
            s += f" (id {rid})"
    return s


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records (JSON objects) of a JSON list file or a JSON Lines file.

    A JSON object whose only list-valued entry holds the records (e.g. {"data": [...]}) is accepted.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read file: {e}") from e
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    data: Any
    if path.suffix in (".jsonl", ".ndjson"):
        data = _json_lines(path, text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # "Extra data" = several JSON values: JSON Lines
                raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
            data = _json_lines(path, text)
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: expected a JSON list of records (or an object holding one list)")
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise DataError(f"{where(path, i)}: expected a JSON object, got {type(rec).__name__}")
    return data


def _json_lines(path: Path, text: str) -> list[Any]:
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {lineno}: invalid JSON: {e.msg}") from e
    return out


def field_item(rec: dict[str, Any], keys: Sequence[str], loc: str, what: str) -> tuple[str, Any]:
    """(key, value) of the first of `keys` present in `rec` with a value; DataError naming them otherwise."""
    for k in keys:
        if k in rec and rec[k] is not None:
            return k, rec[k]
    names = " or ".join(repr(k) for k in keys)
    raise DataError(f"{loc}: missing field {names} ({what})")


def field_value(rec: dict[str, Any], keys: Sequence[str], loc: str, what: str) -> Any:
    """The value of the first of `keys` present in `rec`; DataError naming them otherwise."""
    return field_item(rec, keys, loc, what)[1]


def number_answer(value: Any, loc: str, key: str | None = None, kind: str = "a number") -> tuple[str, float]:
    """(answer text, value) of one numeric answer as a dataset stores it.

    An int keeps its digits; a float (NumPy's too) is written by `parsing.number_text` (2601.0 ->
    "2601", 0.1 -> "0.1"); a text holding one number keeps its digits ("0.10" stays "0.10", "1e3"
    becomes "1000"; no float round trip). Never a training target: None, NaN (what `json.dumps`
    writes for a missing float and pandas gives for an empty cell), inf, an empty text, a bool or
    anything else that is not a number.

    Args:
        value: the stored answer.
        loc: the row ("file: record 3", or "dataset: split S: row R: column 'answer'").
        key: the field name, when `loc` does not name it already.
        kind: what the answer must be, for the message ("a number", "an integer").

    Raises:
        DataError: naming `loc` (and `key`) and what is wrong.
    """
    from decimal import Decimal, InvalidOperation

    from .parsing import number_text

    what = f"{loc}: field {key!r}" if key is not None else loc
    missing = "fill the value or drop the row"
    if value is None:
        raise DataError(f"{what} is empty ({missing})")
    if isinstance(value, bool):
        raise DataError(f"{what} must be {kind}, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return str(int(value)), float(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            raise DataError(f"{what} is NaN (a missing number: json writes NaN for a missing float, "
                            f"pandas for an empty cell; {missing})")
        if not math.isfinite(value):
            raise DataError(f"{what} is infinite ({value!r})")
        return number_text(value), float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise DataError(f"{what} is empty ({missing})")
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise DataError(f"{what} must be {kind}, got {value!r}") from None
        if d.is_nan():
            raise DataError(f"{what} is NaN ({value!r}; {missing})")
        if d.is_infinite():
            raise DataError(f"{what} is infinite ({value!r})")
        d = d.copy_abs() if d.is_zero() else d
        return format(d, "f"), float(d)
    raise DataError(f"{what} must be {kind}, got {type(value).__name__} {value!r}")


def int_value(value: Any, loc: str, key: str | None = None) -> int:
    """`value` as a non-negative int (accepts 3, "3", 3.0 and "3.0"; see `number_answer` for what
    is refused); DataError naming `loc` and `key` otherwise."""
    text, _ = number_answer(value, loc, key, "an integer")
    whole, _, frac = text.partition(".")
    what = f"{loc}: field {key!r}" if key is not None else loc
    if frac.strip("0") or not whole.lstrip("-").isdigit():
        raise DataError(f"{what} must be an integer, got {value!r}")
    out = int(whole)
    if out < 0:
        raise DataError(f"{what} must be >= 0, got {out}")
    return out


def resolve_image(value: Any, base: Path, loc: str, key: str) -> Path:
    """An image path from a record field (a path string, or {"path": ...}), relative to `base`."""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        value = value["path"]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{loc}: field {key!r} must be an image path, got {value!r}")
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else base / p


def open_image(
    path: Path, loc: str, image_size: int | None = None, expect_size: tuple[int, int] | None = None
) -> Image.Image:
    """The image at `path` decoded by `sweeps.tasks.images.decode_image` (RGB, EXIF orientation
    applied, transparency on white, ...), resized to a square `image_size` when given.

    Raises DataError naming `loc` and the path when the file is missing or cannot be decoded, or
    when `expect_size` (width, height of the displayed image) is given and the image's differs.
    """
    from .images import EXIF_TRANSPOSED, decode_image

    rgb = decode_image(path, loc)
    if expect_size is not None and rgb.size != tuple(expect_size):
        hint = "wrong image folder?"
        if rgb.info.get(EXIF_TRANSPOSED) and rgb.size == tuple(expect_size)[::-1]:
            hint = ("the file's EXIF orientation turns it; sizes and boxes must refer to the displayed "
                    "image, see docs/data.md")
        raise DataError(
            f"{loc}: image {path} is {rgb.size[0]}x{rgb.size[1]} but the annotation says "
            f"{expect_size[0]}x{expect_size[1]} ({hint})"
        )
    return resize_square(rgb, image_size)


def resize_square(image: Image.Image, image_size: int | None) -> Image.Image:
    """`image` stretched to `image_size` x `image_size` (bicubic) when given and not that size already.

    Boxes follow: they are fractions of the width and height (`sweeps.tasks.grounding.to_coords`)."""
    if image_size is None or image.size == (image_size, image_size):
        return image
    out = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    out.info = dict(image.info)
    return out


class ImageCache:
    """Loads each image file once per loader call (many questions share one image).

    Args:
        image_size: the square side images are resized to (None: as decoded).
        decode: False for a loader called with `images=False`: `get` only checks that the file is
            there (`sweeps.tasks.images.check_image_file`, a stat) and returns None, so every
            row's answer of a large dataset can be checked in a second (the preflight of
            `slsweep run`).
    """

    def __init__(self, image_size: int | None, decode: bool = True) -> None:
        self.image_size = image_size
        self.decode = decode
        self._cache: dict[Path, Image.Image | None] = {}
        self._keys: dict[Path, Path] = {}

    def get(self, path: Path, loc: str, expect_size: tuple[int, int] | None = None) -> Image.Image | None:
        """The image at `path` (see `open_image`); None after a successful check when not decoding
        (the size against `expect_size` is then not checked)."""
        if not self.decode:  # a stat per path written in the data; resolving would cost more than it saves
            if path not in self._cache:
                from .images import check_image_file

                check_image_file(path, loc)
                self._cache[path] = None
            return None
        key = self._keys.get(path)
        if key is None:  # each path written in the data is resolved once
            try:
                key = path.resolve()
            except (OSError, RuntimeError):  # a symlink loop: open_image says so in one line
                key = path
            self._keys[path] = key
        if key not in self._cache:
            self._cache[key] = open_image(path, loc, self.image_size, expect_size)
        return self._cache[key]


def split_file(path: Path, split: str | None, suffixes: Sequence[str] = (".json", ".jsonl")) -> Path:
    """`path` itself when it is a file, else `<path>/<split><suffix>`; DataError when absent."""
    if path.is_file():
        return path
    if not path.exists():
        raise DataError(f"{path}: file or folder not found")
    if split is None:
        raise DataError(f"{path}: is a folder; pass split=... to pick <split>.json or <split>.jsonl in it")
    for suf in suffixes:
        cand = path / f"{split}{suf}"
        if cand.is_file():
            return cand
    tried = ", ".join(f"{split}{s}" for s in suffixes)
    raise DataError(f"{path}: no file for split {split!r} (looked for {tried})")


def split_records(path: Path, split: str | None) -> tuple[Path, list[tuple[int, dict[str, Any]]]]:
    """(file, [(record index in the file, record)]) of the records of `split`.

    `path` is a file or a folder holding `<split>.json[l]` (`split_file`). One file holding several
    splits (a `split` field per record, the file not named after the split) is filtered by that
    field; `split` given for a file without such fields is a DataError (reading the same rows for
    two splits would evaluate on training data). Indices stay those of the file, so messages name
    the right record.
    """
    file = split_file(path, split)
    records = list(enumerate(read_records(file)))
    if split is not None and file == path and file.stem != split:
        if not any("split" in r for _, r in records):
            raise DataError(f"{file}: split={split!r} given but no record has a 'split' field")
        records = [(i, r) for i, r in records if r.get("split") == split]
    return file, records


def nonempty(examples: list[Example], source: Path | str, split: str | None) -> list[Example]:
    """`examples`, or DataError when there are none."""
    if not examples:
        part = f" for split {split!r}" if split is not None else ""
        raise DataError(f"{source}: no records{part}")
    return examples


def check_lengths(predictions: Sequence[str], examples: Sequence[Example]) -> None:
    """ValueError unless there is one prediction per example and at least one example."""
    if len(predictions) != len(examples):
        raise ValueError(f"got {len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise ValueError("cannot compute metrics on zero examples")
