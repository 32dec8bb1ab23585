"""Hugging Face `datasets` as the data of any task (`task.data` in a spec, `HFDataConfig`).

Rows become `Example`s through the task's `from_record(image, question, answer)`. Local data never
touches the network: a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` is
read with `load_from_disk`; a parquet / arrow / json / csv file with `load_dataset(<format>,
data_files=...)`; any other folder (parquet files, an `imagefolder`) or a hub id with
`load_dataset(path, config)` (hub ids need the machine online; `HF_HUB_OFFLINE=1` is honoured).
Images are decoded here, one row at a time, so an unreadable one is a DataError naming the dataset,
split, row and column; so are a missing column and an empty split.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

from PIL import Image

from .base import DataError, Example, Task

__all__ = ["load_hf"]

_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _open_split(data: Any, split: str) -> Any:
    import datasets

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


def _image(value: Any, base: Path | None, loc: str) -> Image.Image:
    """A PIL image from an undecoded `Image` feature ({"bytes", "path"}), a path or a PIL image."""
    try:
        if isinstance(value, Image.Image):
            return value.convert("RGB")
        if isinstance(value, dict) and value.get("bytes"):
            with Image.open(io.BytesIO(value["bytes"])) as im:
                return im.convert("RGB")
        path = value.get("path") if isinstance(value, dict) else value
        if isinstance(path, str) and path:
            p = Path(path).expanduser()
            if not p.is_absolute() and base is not None:
                p = base / p
            with Image.open(p) as im:
                return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for bad files
        raise DataError(f"{loc}: cannot read the image: {type(exc).__name__}: {exc}") from None
    raise DataError(f"{loc}: not an image (expected an Image feature, bytes or a path), got {type(value).__name__}")


def load_hf(data: Any, task: Task, *, split: str, limit: int | None = None, image_size: int | None = None,
            params: dict[str, Any] | None = None) -> list[Example]:
    """Examples of `task` from one split of the dataset `data` (an `HFDataConfig`).

    Args:
        data: where the dataset is and which columns hold image, question and answer.
        task: turns each row into an Example (`Task.from_record`).
        split: the split to read.
        limit: read at most this many rows (None: all).
        image_size: resize images to a square of this side.
        params: the task's params (`task.params` of the spec), passed to `from_record`.

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
    out: list[Example] = []
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        loc = f"{where}: row {i}"
        image = _image(row[cols.image], base, f"{loc}: column {cols.image!r}")
        answer = row[cols.answer]
        if answer is None:
            raise DataError(f"{loc}: column {cols.answer!r} is empty")
        ex = task.from_record(image, str(row[cols.question]), answer, f"{loc}: column {cols.answer!r}",
                              **(params or {}))
        if image_size is not None and ex.image.size != (image_size, image_size):
            ex = dataclasses.replace(ex, image=ex.image.resize((image_size, image_size), Image.Resampling.BICUBIC))
        out.append(ex)
    if not out:
        raise DataError(f"{where}: no rows")
    return out
