"""Numeric answers: NaN, inf, empty and non-numeric answers are one DataError naming the row and
column (never a training target); numbers keep the precision the dataset gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features, Image as HFImage, Sequence, Value
from PIL import Image

from sweeps.config.trial_config import HFDataConfig, TaskConfig
from sweeps.trial.data import TaskData
from sweeps.tasks import DataError, get_task
from sweeps.tasks.hf import load_hf
from sweeps.tasks.parsing import number_text


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    return tmp_path


def _json(folder: Path, answers: list, key: str = "answer", name: str = "d.json") -> Path:
    """A JSON file written as json.dumps writes it (NaN and Infinity included)."""
    recs = [{"image": "a.png", "question": "How many?", key: a} for a in answers]
    (folder / name).write_text(json.dumps(recs))
    return folder / name


@pytest.mark.parametrize("task", ["counting", "numeric_vqa"])
@pytest.mark.parametrize("bad, message", [
    (float("nan"), "is NaN"),
    (float("inf"), "is infinite"),
    ("", "is empty"),
    ("nan", "is NaN"),
    ("Infinity", "is infinite"),
    ("many", "must be"),
    (True, "must be"),
])
def test_bad_answers_in_json_are_refused(folder, task, bad, message) -> None:
    file = _json(folder, [3, bad])
    assert ("NaN" in file.read_text()) == (isinstance(bad, float) and bad != bad)  # json writes NaN
    with pytest.raises(DataError, match=rf"d\.json: record 1: field 'answer'.* {message}") as err:
        get_task(task).load(file)
    assert "\n" not in str(err.value)


def test_bad_chart_labels_are_refused(folder) -> None:
    (folder / "png").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "png" / "c.png")
    bad_labels = ((float("nan"), "is NaN"), ("NaN", "is NaN"), (float("-inf"), "is infinite"), (" ", "is empty"))
    for bad, message in bad_labels:
        (folder / "test_human.json").write_text(json.dumps([{"imgname": "c.png", "query": "q", "label": bad}]))
        with pytest.raises(DataError, match=rf"test_human\.json: record 0 \(id c\.png\): field 'label' {message}"):
            get_task("chart").load(folder / "test_human.json")


def test_csv_with_an_empty_cell_through_hf(folder) -> None:
    """pandas reads an empty cell of a number column as NaN: refused, naming the row and column."""
    (folder / "d.csv").write_text("image,question,answer\na.png,How many?,2601\na.png,How many?,\n")
    data = HFDataConfig(hf=str(folder / "d.csv"))
    for task in ("counting", "numeric_vqa", "chart"):
        with pytest.raises(DataError, match=r"d\.csv: split train: row 1: column 'answer'.* (is NaN|is empty)"):
            load_hf(data, get_task(task), split="train")
    ok = load_hf(data, get_task("numeric_vqa"), split="train", limit=1)[0]
    assert ok.answer == "2601"  # the float64 column holds 2601.0: written as the dataset gave it


def test_numbers_keep_their_precision(folder) -> None:
    nvqa = get_task("numeric_vqa")
    answers = [2601, 2601.0, 0.1, 1e-7, 12345678.9, "0.10", "1e3", -0.0]
    examples = nvqa.load(_json(folder, answers))
    assert [e.answer for e in examples] == ["2601", "2601", "0.1", "0.0000001", "12345678.9", "0.10", "1000", "0"]
    assert examples[2].target == (0.1,)
    chart = get_task("chart")
    image = Image.new("RGB", (8, 8))
    assert [chart.from_record(image, "q", a, "r").answer for a in (2601.0, 0.1, 1e-7, "Yes", " 45% ")] == \
        ["2601", "0.1", "0.0000001", "Yes", "45%"]
    assert get_task("counting").from_record(image, "q", 2601.0, "r").answer == "2601"
    assert number_text(np.float32(0.1)) == "0.1" and number_text(np.float16(0.3)) == "0.3"
    with pytest.raises(ValueError):
        number_text(float("nan"))


def test_float32_columns_keep_their_own_precision(folder) -> None:
    """A float32 value reaches Python as 0.10000000149011612; it is written as the column stores it."""
    feats = Features({"image": HFImage(), "question": Value("string"), "answer": Value("float32"),
                      "box": Sequence(Value("float32"))})
    rows = {"image": [{"bytes": (folder / "a.png").read_bytes(), "path": None}], "question": ["What?"],
            "answer": [0.1], "box": [[0.1, 0.2, 0.3, 0.7]]}
    Dataset.from_dict(rows, features=feats).save_to_disk(folder / "hf")
    one = load_hf(HFDataConfig(hf=str(folder / "hf")), get_task("numeric_vqa"), split="train")[0]
    assert one.answer == "0.1"
    box = load_hf(HFDataConfig(hf=str(folder / "hf"), columns={"answer": "box"}), get_task("numeric_vqa"),
                  split="train", params={"length": 4})[0]
    assert box.answer == "0.1, 0.2, 0.3, 0.7"


def test_nan_inside_a_list_answer_names_the_item(folder) -> None:
    nvqa = get_task("numeric_vqa")
    with pytest.raises(DataError, match=r"row 4: column 'box': item 2 is NaN"):
        nvqa.from_record(Image.new("RGB", (8, 8)), "q", [1.0, 2.0, float("nan"), 4.0], "row 4: column 'box'", length=4)


def test_empty_question_is_refused_not_trained_as_none(folder) -> None:
    feats = Features({"image": HFImage(), "question": Value("string"), "answer": Value("int64")})
    img = {"bytes": (folder / "a.png").read_bytes(), "path": None}
    Dataset.from_dict({"image": [img, img], "question": ["How many?", None], "answer": [1, 2]},
                      features=feats).save_to_disk(folder / "hf")
    with pytest.raises(DataError, match=r"split train: row 1: column 'question' must be a non-empty text, got None"):
        load_hf(HFDataConfig(hf=str(folder / "hf")), get_task("counting"), split="train")


def test_numeric_vqa_json_is_scored_by_the_task_params_and_split_by_its_records(folder) -> None:
    """task.params (metrics, length) reach the JSON loader as they reach Hugging Face rows; a named
    split of one file without 'split' fields is refused (it would read the training rows again)."""
    recs = [{"image": "a.png", "question": "Box?", "answer": [1, 2, 3, 4], "split": s}
            for s in ("train", "train", "test")]
    (folder / "boxes.json").write_text(json.dumps(recs))
    cfg = TaskConfig(name="numeric_vqa", data_path=str(folder / "boxes.json"), train_split="train",
                     eval_split="test", params={"length": 4, "metrics": ["iou", "exact_match"]})
    data = TaskData(get_task("numeric_vqa"), cfg, seed=0)
    assert len(data.held_out) == 1 and data.held_out[0].meta["metrics"] == ("iou", "exact_match")
    assert data.held_out[0].meta["source"].endswith("boxes.json: record 2: field 'answer'")
    _json(folder, [1, 2], name="plain.json")
    with pytest.raises(DataError, match="split='test' given but no record has a 'split' field"):
        get_task("numeric_vqa").load(folder / "plain.json", split="test")
