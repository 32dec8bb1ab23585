"""Hugging Face datasets as task data: built locally (`Dataset.from_dict` with an `Image` feature,
`save_to_disk`, `to_parquet`), read through `sweeps.tasks.hf.load_hf` and through a whole sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value

from sweeps.config.trial_config import HFDataConfig
from sweeps.tasks import DataError, get_task
from sweeps.tasks.hf import load_hf


def _rows(n: int, seed: int = 0, *, box: bool = False) -> dict:
    src = get_task("grounding" if box else "counting").synthetic(n, seed=seed, image_size=32)
    answers = [[float(v) for v in e.target] for e in src] if box else [int(e.target) for e in src]
    return {"picture": [e.image for e in src], "q": [e.prompt for e in src], "truth": answers}


def _dataset(n: int, seed: int = 0, *, box: bool = False) -> Dataset:
    answer = Sequence(Value("float32")) if box else Value("int64")
    feats = Features({"picture": Image(), "q": Value("string"), "truth": answer})
    return Dataset.from_dict(_rows(n, seed, box=box), features=feats)


COLUMNS = {"image": "picture", "question": "q", "answer": "truth"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("hf")
    DatasetDict({"train": _dataset(40), "test": _dataset(12, seed=1)}).save_to_disk(tmp / "disk")
    _dataset(40).to_parquet(tmp / "counts.parquet")
    _dataset(30, box=True).to_parquet(tmp / "boxes.parquet")
    return {"disk": tmp / "disk", "parquet": tmp / "counts.parquet", "boxes": tmp / "boxes.parquet", "tmp": tmp}


def _cfg(hf: Path, **kw) -> HFDataConfig:
    return HFDataConfig(hf=str(hf), columns=COLUMNS, **kw)


def test_counting_from_save_to_disk_and_parquet(saved) -> None:
    task = get_task("counting")
    a = load_hf(_cfg(saved["disk"]), task, split="test", image_size=24)
    b = load_hf(_cfg(saved["parquet"]), task, split="train", limit=12, image_size=24)
    assert len(a) == 12 and len(b) == 12
    expected = _rows(12, seed=1)["truth"]
    assert [e.target for e in a] == expected and [e.answer for e in a] == [str(t) for t in expected]
    assert a[0].image.size == (24, 24) and a[0].image.mode == "RGB"
    streamed = load_hf(_cfg(saved["parquet"], streaming=True), task, split="train", limit=5)
    assert [e.target for e in streamed] == [e.target for e in b[:5]]


def test_numeric_vqa_boxes_with_iou(saved) -> None:
    task = get_task("numeric_vqa")
    params = {"length": 4, "metrics": ["exact_match", "iou", "within_k"], "k": 1}
    rows = load_hf(_cfg(saved["boxes"]), task, split="train", limit=6, params=params)
    assert all(len(e.target) == 4 for e in rows)
    m = task.metrics([e.answer for e in rows], rows)
    assert m == {"exact_match": 1.0, "within_k": 1.0, "iou": 1.0, "unparseable": 0.0}
    off = task.metrics(["nothing"] + [e.answer for e in rows[1:]], rows)
    assert off["unparseable"] == pytest.approx(1 / 6) and off["iou"] == pytest.approx(5 / 6)


def test_missing_column_empty_split_bad_image_bad_answer(saved) -> None:
    task = get_task("counting")
    with pytest.raises(DataError, match=r"counts.parquet: split train: no column 'answer' \(task.data.columns.answer\)"):
        load_hf(HFDataConfig(hf=str(saved["parquet"]), columns={"image": "picture", "question": "q"}), task,
                split="train")
    with pytest.raises(DataError, match="no split 'validation'"):
        load_hf(_cfg(saved["disk"]), task, split="validation")
    empty = saved["tmp"] / "empty.parquet"
    _dataset(0).to_parquet(empty)
    with pytest.raises(DataError, match="empty.parquet: split train: no rows"):
        load_hf(_cfg(empty), task, split="train")
    broken = Dataset.from_dict({"picture": [{"bytes": b"not a png", "path": None}], "q": ["How many?"], "truth": [3]},
                               features=Features({"picture": Image(), "q": Value("string"), "truth": Value("int64")}))
    broken.to_parquet(saved["tmp"] / "broken.parquet")
    with pytest.raises(DataError, match=r"broken.parquet: split train: row 0: column 'picture': cannot read the image"):
        load_hf(_cfg(saved["tmp"] / "broken.parquet"), task, split="train")
    with pytest.raises(DataError, match=r"row 0: column 'truth': the answer must hold 4 number"):
        load_hf(_cfg(saved["parquet"]), get_task("numeric_vqa"), split="train", params={"length": 4})


def test_a_single_file_has_one_split(saved) -> None:
    """eval_split on one parquet file would re-read the training rows: refused, naming the fix."""
    with pytest.raises(DataError, match="a single file holds one split.*drop task.data.eval_split"):
        load_hf(_cfg(saved["parquet"], eval_split="test"), get_task("counting"), split="test")
