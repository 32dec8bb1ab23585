"""Hugging Face `datasets` as the data of any task (`task.data` in a spec, `HFDataConfig`).

Rows become `Example`s through the task's `from_record(image, question, answer)`. Local data never
touches the network: a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is
read with `load_from_disk`; a parquet / arrow / json / csv file with `load_dataset(<format>,
data_files=...)`; any other folder (parquet files, an `imagefolder`) or a hub id with
`load_dataset(path, config)` (hub ids need the machine online; `HF_HUB_OFFLINE=1` is honoured).
Images are decoded here, one row at a time, by the one decoder of every loader
(`sweeps.tasks.images.decode_image`: EXIF orientation applied, transparency on white, 16-bit
images scaled by their range, ...), so an unreadable one is a DataError naming the dataset, split,
row and column; so are a missing column, an empty split, an empty question and an empty answer. A
relative image path is relative to the dataset's folder (or its file's folder); a hub dataset's
relative paths are refused. Answers of float32 / float16 columns keep their own precision.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import DataError, Example, Task, resize_square, rgb_example
from .images import decode_image, displayed_size

__all__ = ["load_hf"]

_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _open_split(data: Any, split: str) -> Any:
    import datasets

    # No "Generating train split" bars on stderr: a load is reported by our own lines, and an error
    # stays one line (`slsweep data`, preflight).
    datasets.disable_progress_bars()
    src = Path(data.hf).expanduser()
    if src.is_dir() and ((src / "dataset_dict.json").is_file() or (src / "state.json").is_file()):
        ds = datasets.load_from_disk(str(src))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{data.hf}: no split {split!r} (splits: {', '.join(ds)})")
            ds = ds[split]
        return ds.to_iterable_dataset() if data.streaming else ds
    if src.is_file():
        if split != data.split:  # a file has no split names: any name would read the same rows again
            raise DataError(f"{data.hf}: a single file holds one split (task.data.split {data.split!r}), not "
                            f"{split!r}; drop task.data.eval_split to hold out the last task.eval_size rows, or "
                            "give a folder saved with save_to_disk / a dataset with named splits")
        builder = _FILE_BUILDERS.get(src.suffix.lower())
        if builder is None:
            raise DataError(f"{data.hf}: unknown file type {src.suffix!r} (parquet, arrow, json, jsonl, csv)")
        return datasets.load_dataset(builder, data_files={split: str(src)}, split=split, streaming=data.streaming)
    return datasets.load_dataset(str(src) if src.exists() else data.hf, data.config, split=split,
                                 streaming=data.streaming)


def _float_type(feature: Any) -> type | None:
    """np.float16 / np.float32 when the answer column (or its list items) holds such floats: their
    values reach Python as float64 (0.1 as 0.10000000149011612) and are written at their own
    precision (`sweeps.tasks.parsing.number_text`)."""
    dtype = getattr(feature, "dtype", None)
    if dtype in ("float16", "float32"):
        return {"float16": np.float16, "float32": np.float32}[dtype]
    inner = getattr(feature, "feature", None)
    return _float_type(inner) if inner is not None else None


def _typed(answer: Any, float_type: type | None) -> Any:
    if float_type is None:
        return answer
    if isinstance(answer, float):
        return float_type(answer)
    if isinstance(answer, list):
        return [float_type(v) if isinstance(v, float) else v for v in answer]
    return answer


def _stand_in(source: Any, loc: str, *, base: Path | None) -> Image.Image:
    """A blank image of the displayed size of the image in `source`, read from its header (one
    shared stand-in per size: making a fresh one per row would cost more than reading the header)."""
    return _blank(displayed_size(source, loc, base=base))


@functools.lru_cache(maxsize=256)
def _blank(size: tuple[int, int]) -> Image.Image:
    return Image.new("1", size)


def load_hf(data: Any, task: Task, *, split: str, limit: int | None = None, image_size: int | None = None,
            params: dict[str, Any] | None = None, images: bool = True) -> list[Example]:
    """Examples of `task` from one split of the dataset `data` (an `HFDataConfig`).

    Args:
        data: where the dataset is and which columns hold image, question and answer.
        task: turns each row into an Example (`Task.from_record`).
        split: the split to read.
        limit: read at most this many rows (None: all).
        image_size: resize images to a square of this side.
        params: the task's params (`task.params` of the spec), passed to `from_record`.
        images: False to check every row without decoding its image (the preflight of `slsweep
            run`): each image's header is read for its displayed size
            (`sweeps.tasks.images.displayed_size`), and `from_record` gets a blank stand-in of that
            size (a grounding box is checked against it); the examples hold that stand-in.

    Raises:
        DataError: the dataset cannot be opened, lacks a column, has no rows, or a row's image or
            answer is unusable; the message names the dataset, split, row and column.
    """
    import datasets

    where = f"{data.hf}: split {split}"
    try:
        ds = _open_split(data, split)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds for missing/bad data
        if "corresponds to no data" in str(exc):  # datasets' word for an empty split
            raise DataError(f"{where}: no rows") from None
        if isinstance(exc, IndexError) and Path(data.hf).expanduser().is_dir():  # load_from_disk on an empty split
            raise DataError(f"{data.hf}: a split of this saved dataset has no rows (datasets cannot read it back); "
                            "save it without empty splits") from None
        raise DataError(f"{where}: cannot load the dataset: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                        ) from None
    cols = data.columns
    names = list(ds.features) if ds.features is not None else list(ds.column_names or [])
    for role in ("image", "question", "answer"):
        name = getattr(cols, role)
        if names and name not in names:
            raise DataError(f"{where}: no column {name!r} (task.data.columns.{role}); columns: {', '.join(names)}")
    if isinstance(ds.features.get(cols.image) if ds.features else None, datasets.Image):
        ds = ds.cast_column(cols.image, datasets.Image(decode=False))  # decode per row: errors name the row
    base = Path(data.hf).expanduser()
    base = base if base.is_dir() else base.parent if base.exists() else None
    float_type = _float_type(ds.features.get(cols.answer)) if ds.features else None
    out: list[Example] = []
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        loc = f"{where}: row {i}"
        image = (decode_image if images else _stand_in)(row[cols.image], f"{loc}: column {cols.image!r}", base=base)
        question = row[cols.question]
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{loc}: column {cols.question!r} must be a non-empty text, got {question!r}")
        answer = row[cols.answer]
        if answer is None:
            raise DataError(f"{loc}: column {cols.answer!r} is empty")
        ex = task.from_record(image, question, _typed(answer, float_type), f"{loc}: column {cols.answer!r}",
                              **(params or {}))
        if not images:
            out.append(ex)
            continue
        ex = rgb_example(ex, loc)  # a plug-in's from_record may hand back another image
        if image_size is not None:
            ex = dataclasses.replace(ex, image=resize_square(ex.image, image_size))
        out.append(ex)
    if not out:
        raise DataError(f"{where}: no rows")
    return out
