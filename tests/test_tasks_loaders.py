"""Real-format loaders on tiny fixtures in the public formats (TallyQA, PixMo-Count, CountBench,
RefCOCO refs + instances, ChartQA), and the DataError messages for bad data."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from PIL import Image

from sweeps.tasks import DataError, get_task
from sweeps.tasks.grounding import format_box

COUNTING, GROUNDING, CHART = get_task("counting"), get_task("grounding"), get_task("chart")


def make_image(path: Path, size=(40, 30), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- counting


@pytest.fixture
def tallyqa(tmp_path: Path) -> Path:
    """TallyQA layout: tallyqa/{train,test}.json, image paths relative to a separate image root."""
    make_image(tmp_path / "images" / "VG_100K_2" / "2410408.jpg")
    make_image(tmp_path / "images" / "val2014" / "COCO_val2014_000000000042.jpg", (32, 48))
    write_json(
        tmp_path / "tallyqa" / "test.json",
        [
            {"image": "VG_100K_2/2410408.jpg", "answer": 3, "data_source": "imported_genome",
             "question": "How many people are in the photo?", "image_id": 2410408,
             "question_id": 30000044, "issimple": True},
            {"image": "val2014/COCO_val2014_000000000042.jpg", "answer": 0, "data_source": "amt",
             "question": "How many dogs are there?", "image_id": 42, "question_id": 30000045,
             "issimple": False},
        ],
    )
    return tmp_path


def test_counting_tallyqa_folder_and_split(tallyqa: Path):
    ex = COUNTING.load(tallyqa / "tallyqa", split="test", image_dir=tallyqa / "images")
    assert [e.target for e in ex] == [3, 0] and [e.answer for e in ex] == ["3", "0"]
    assert ex[0].prompt == "How many people are in the photo?"
    assert ex[0].image.mode == "RGB" and ex[0].image.size == (40, 30)
    assert ex[1].meta["question_id"] == 30000045 and ex[1].meta["issimple"] is False
    small = COUNTING.load(tallyqa / "tallyqa" / "test.json", image_dir=tallyqa / "images", image_size=24, limit=1)
    assert len(small) == 1 and small[0].image.size == (24, 24)
    named = COUNTING.load(tallyqa / "tallyqa" / "test.json", split="test", image_dir=tallyqa / "images")
    assert len(named) == 2  # the file is the split: no split field needed
    with pytest.raises(DataError, match="split='train' given but no record has a 'split' field"):
        COUNTING.load(tallyqa / "tallyqa" / "test.json", split="train", image_dir=tallyqa / "images")


def test_counting_pixmo_jsonl_with_label_and_split_field(tmp_path: Path):
    img = make_image(tmp_path / "data" / "images" / "ab12.jpg")
    lines = [
        {"image": "images/ab12.jpg", "image_url": "https://example.com/a.jpg", "image_sha256": "ab12",
         "count": 4, "label": "boats", "points": [{"x": 1.0, "y": 2.0}] * 4, "split": "validation"},
        {"image": str(img), "image_url": "https://example.com/b.jpg", "image_sha256": "cd34",
         "count": "2", "label": "cars", "points": [], "split": "train"},
    ]
    file = tmp_path / "data" / "pixmo_count.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    ex = COUNTING.load(file)
    assert [(e.prompt, e.target) for e in ex] == [("How many boats are there?", 4), ("How many cars are there?", 2)]
    val = COUNTING.load(file, split="validation")
    assert [e.target for e in val] == [4]
    with pytest.raises(DataError, match="no records for split 'test'"):
        COUNTING.load(file, split="test")


def test_counting_countbench_needs_a_question_template(tmp_path: Path):
    make_image(tmp_path / "countbench" / "0001.jpg")
    file = write_json(
        tmp_path / "countbench" / "countbench.json",
        [{"image_url": "https://example.com/x.jpg", "text": "three dogs on a sofa", "number": 3, "image": "0001.jpg"}],
    )
    with pytest.raises(DataError, match=r"countbench\.json: record 0: missing field .*question_template"):
        COUNTING.load(file)
    ex = COUNTING.load(file, question_template="How many objects are there?")
    assert ex[0].prompt == "How many objects are there?" and ex[0].target == 3


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"image": "missing.jpg", "question": "How many?", "answer": 2}, r"record 0 \(id 7\): image file not found: .*missing\.jpg"),
        ({"image": "corrupt.jpg", "question": "How many?", "answer": 2}, r"record 0 \(id 7\): cannot read image .*corrupt\.jpg"),
        ({"image": "ok.png", "question": "How many?"}, r"record 0 \(id 7\): missing field 'answer' or 'count' or 'number'"),
        ({"image": "ok.png", "question": "How many?", "answer": "three"}, r"record 0 \(id 7\): field 'answer' must be an integer"),
        ({"image": "ok.png", "question": "How many?", "answer": 2.5}, r"field 'answer' must be an integer"),
        ({"image": "ok.png", "question": "How many?", "answer": -1}, r"field 'answer' must be >= 0"),
        ({"image": 5, "question": "How many?", "answer": 1}, r"field 'image' must be an image path"),
        ({"question": "How many?", "answer": 1}, r"missing field 'image' or 'image_path'"),
    ],
)
def test_counting_bad_records(tmp_path: Path, record, message):
    make_image(tmp_path / "ok.png")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    file = write_json(tmp_path / "data.json", [{**record, "question_id": 7}])
    with pytest.raises(DataError, match=message) as err:
        COUNTING.load(file)
    assert str(file) in str(err.value)


def test_counting_bad_files(tmp_path: Path):
    with pytest.raises(DataError, match="file or folder not found"):
        COUNTING.load(tmp_path / "nope.json")
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.json: file is empty"):
        COUNTING.load(empty)
    none = write_json(tmp_path / "none.json", [])
    with pytest.raises(DataError, match="none.json: no records"):
        COUNTING.load(none)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"image": "a.png",')
    with pytest.raises(DataError, match="broken.json: invalid JSON at line 1"):
        COUNTING.load(broken)
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"image": "a.png", "answer": 1}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl: line 2: invalid JSON"):
        COUNTING.load(lines)
    with pytest.raises(DataError, match="is a folder; pass split"):
        COUNTING.load(tmp_path)
    with pytest.raises(DataError, match="no file for split 'val'"):
        COUNTING.load(tmp_path, split="val")
    with pytest.raises(ValueError, match="unknown counting loader option 'img_dir'"):
        COUNTING.load(none, img_dir=tmp_path)


def test_truncated_image_is_a_data_error(tmp_path: Path):
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)  # incompressible enough
    noise.save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    file = write_json(tmp_path / "d.json", [{"image": "full.png", "question": "q", "answer": 1},
                                            {"image": "cut.png", "question": "q", "answer": 1}])
    with pytest.raises(DataError, match=r"d\.json: record 1: cannot read image .*cut\.png"):
        COUNTING.load(file)


# --------------------------------------------------------------------------- RefCOCO


def refcoco_fixture(root: Path, refs_format: str = "p") -> Path:
    """A refer-toolkit RefCOCO folder: refs(unc).p (or .json), instances.json, images/."""
    folder = root / "refcoco"
    make_image(folder / "images" / "COCO_train2014_000000581857.jpg", (80, 40))
    make_image(folder / "images" / "train2014" / "COCO_train2014_000000000009.jpg", (50, 100))
    refs = [
        {"sent_ids": [0, 1], "file_name": "COCO_train2014_000000581857_1719310.jpg", "ann_id": 1719310,
         "ref_id": 0, "image_id": 581857, "split": "train", "category_id": 1,
         "sentences": [
             {"tokens": ["the", "lady", "on", "the", "left"], "raw": "THE LADY on the left",
              "sent_id": 0, "sent": "the lady on the left"},
             {"tokens": ["woman", "left"], "raw": "woman left", "sent_id": 1, "sent": "woman left"}]},
        {"sent_ids": [2], "file_name": "COCO_train2014_000000000009_42.jpg", "ann_id": 42, "ref_id": 1,
         "image_id": 9, "split": "val", "category_id": 18,
         "sentences": [{"tokens": ["dog"], "raw": "dog", "sent_id": 2, "sent": "dog"}]},
    ]
    instances = {
        "info": {}, "licenses": [],
        "images": [
            {"license": 1, "file_name": "COCO_train2014_000000581857.jpg", "coco_url": "", "height": 40,
             "width": 80, "date_captured": "", "flickr_url": "", "id": 581857},
            {"license": 1, "file_name": "COCO_train2014_000000000009.jpg", "coco_url": "", "height": 100,
             "width": 50, "date_captured": "", "flickr_url": "", "id": 9},
        ],
        "annotations": [
            {"segmentation": [[0, 0, 1, 1, 2, 2]], "area": 400.0, "iscrowd": 0, "image_id": 581857,
             "bbox": [8.0, 4.0, 32.0, 20.0], "category_id": 1, "id": 1719310},
            {"segmentation": [[0, 0, 1, 1, 2, 2]], "area": 100.0, "iscrowd": 0, "image_id": 9,
             "bbox": [25, 50, 25, 50], "category_id": 18, "id": 42},
        ],
        "categories": [{"supercategory": "person", "id": 1, "name": "person"},
                       {"supercategory": "animal", "id": 18, "name": "dog"}],
    }
    write_json(folder / "instances.json", instances)
    if refs_format == "p":
        (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    else:
        write_json(folder / "refs(unc).json", refs)
    return folder


@pytest.mark.parametrize("refs_format", ["p", "json"])
def test_refcoco_folder(tmp_path: Path, refs_format: str):
    folder = refcoco_fixture(tmp_path, refs_format)
    ex = GROUNDING.load(folder)
    assert [e.prompt for e in ex] == ["Where is the lady on the left?", "Where is woman left?", "Where is dog?"]
    # bbox [8, 4, 32, 20] in an 80x40 image -> edges (8, 4, 40, 24) -> /80, /40 * 99
    assert ex[0].target == (10, 10, 50, 59) and ex[0].answer == "[10,10,50,59]"
    assert ex[0].image is ex[1].image  # one image per file
    assert ex[2].target == (50, 50, 99, 99) and ex[2].meta["category"] == "dog"
    val = GROUNDING.load(folder, split="val", coord_max=999, image_size=32)
    assert len(val) == 1 and val[0].answer == format_box((500, 500, 999, 999), 999)
    assert val[0].image.size == (32, 32)
    assert GROUNDING.load(folder / f"refs(unc).{refs_format}", split="train", limit=1)[0].meta["sent_id"] == 0


def test_refcoco_errors(tmp_path: Path):
    folder = refcoco_fixture(tmp_path)
    with pytest.raises(DataError, match=r"no refs for split 'testA' \(splits present: train, val\)"):
        GROUNDING.load(folder, split="testA")
    (folder / "refs(umd).p").write_bytes((folder / "refs(unc).p").read_bytes())
    with pytest.raises(DataError, match=r"found: refs\(umd\)\.p, refs\(unc\)\.p\); pass refs_file"):
        GROUNDING.load(folder)
    assert len(GROUNDING.load(folder, refs_file="refs(umd).p")) == 3
    # The image on disk does not match instances.json: wrong folder.
    make_image(folder / "images" / "COCO_train2014_000000581857.jpg", (81, 40))
    with pytest.raises(DataError, match=r"refs\(unc\)\.p: record 0 \(id 0\): image .* is 81x40 but the annotation says 80x40"):
        GROUNDING.load(folder, refs_file="refs(unc).p")
    (folder / "images" / "COCO_train2014_000000581857.jpg").unlink()
    with pytest.raises(DataError, match=r"record 0 \(id 0\): image file not found"):
        GROUNDING.load(folder, refs_file="refs(unc).p")


def test_refcoco_bad_annotations(tmp_path: Path):
    folder = refcoco_fixture(tmp_path, "json")
    refs = json.loads((folder / "refs(unc).json").read_text())
    refs[1]["ann_id"] = 999
    write_json(folder / "refs(unc).json", refs)
    with pytest.raises(DataError, match=r"record 1 \(id 1\): field 'ann_id': annotation 999 not in .*instances\.json"):
        GROUNDING.load(folder)
    del refs[1]["ann_id"]
    write_json(folder / "refs(unc).json", refs)
    with pytest.raises(DataError, match=r"record 1 \(id 1\): missing field 'ann_id'"):
        GROUNDING.load(folder)
    inst = json.loads((folder / "instances.json").read_text())
    inst["annotations"][0]["bbox"] = [1, 2, 0, 5]
    write_json(folder / "instances.json", inst)
    with pytest.raises(DataError, match=r"instances\.json: annotation 1719310: field 'bbox': box \[1, 2, 0, 5\] \(box_format xywh, box_units pixels\) has zero or negative width"):
        GROUNDING.load(folder, limit=1)
    (folder / "instances.json").unlink()
    with pytest.raises(DataError, match="instances file not found"):
        GROUNDING.load(folder)


class _Hostile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_refcoco_pickle_cannot_run_code(tmp_path: Path):
    folder = refcoco_fixture(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "refs(unc).p").write_bytes(pickle.dumps([_Hostile(str(marker))], protocol=2))
    with pytest.raises(DataError, match=r"cannot read refs pickle: refusing to load global (posix|nt)\.mkdir"):
        GROUNDING.load(folder)
    assert not marker.exists()


# --------------------------------------------------------------------------- ChartQA


def chartqa_fixture(root: Path) -> Path:
    """ChartQA layout: <root>/test/test_human.json, test_augmented.json, png/."""
    split = root / "ChartQA Dataset" / "test"
    make_image(split / "png" / "41699051005347.png", (120, 80), (255, 255, 255))
    make_image(split / "png" / "multi_col_20396.png", (100, 100), (250, 250, 250))
    write_json(split / "test_human.json", [
        {"imgname": "41699051005347.png", "query": "How many food item is shown in the bar graph?", "label": "14"},
        {"imgname": "41699051005347.png", "query": "Is the value of Favorable 38 in 2015?", "label": "Yes"},
    ])
    write_json(split / "test_augmented.json", [
        {"imgname": "multi_col_20396.png", "query": "What was the share of imports in 2019?", "label": "0.57"},
    ])
    return root / "ChartQA Dataset"


def test_chartqa_folder_subsets_and_targets(tmp_path: Path):
    root = chartqa_fixture(tmp_path)
    ex = CHART.load(root, split="test")
    assert [e.target for e in ex] == [14.0, "Yes", 0.57]
    assert [e.answer for e in ex] == ["14", "Yes", "0.57"]
    assert ex[0].prompt == "How many food item is shown in the bar graph?"
    assert ex[0].image.size == (120, 80)
    human = CHART.load(root, split="test", subset="human", image_size=64)
    assert len(human) == 2 and human[0].image.size == (64, 64)
    one = CHART.load(root / "test" / "test_augmented.json")
    assert one[0].meta["imgname"] == "multi_col_20396.png"
    assert CHART.metrics(["0.56", "yes"], [one[0], ex[1]])["relaxed_accuracy"] == 1.0


def test_chartqa_errors(tmp_path: Path):
    root = chartqa_fixture(tmp_path)
    with pytest.raises(DataError, match="no ChartQA file for split 'val'"):
        CHART.load(root, split="val")
    file = root / "test" / "test_human.json"
    write_json(file, [{"imgname": "41699051005347.png", "query": "q"}])
    with pytest.raises(DataError, match=r"test_human\.json: record 0 \(id 41699051005347\.png\): missing field 'label'"):
        CHART.load(file)
    write_json(file, [{"imgname": "gone.png", "query": "q", "label": "3"}])
    with pytest.raises(DataError, match=r"record 0 \(id gone\.png\): image file not found: .*png/gone\.png"):
        CHART.load(file)
    with pytest.raises(DataError, match="split='val' given but the file is not a val_"):
        CHART.load(root / "test" / "test_augmented.json", split="val")
    with pytest.raises(ValueError, match="option 'subset'"):
        CHART.load(root, split="test", subset="machine")


# --------------------------------------------------------------------------- held-out rows


def test_held_out_set_is_never_read_from_the_training_records(tmp_path: Path):
    """The same split twice, or an eval split of a file whose training pool reads every split, would
    score trials on their training rows: refused before any trial (preflight) and in TaskData."""
    from sweeps.config.trial_config import HFDataConfig, TaskConfig
    from sweeps.trial.data import TaskData, check_held_out_apart

    make_image(tmp_path / "a.png")
    file = write_json(tmp_path / "all.json", [{"image": "a.png", "question": "How many?", "answer": k, "split": s}
                                              for k, s in enumerate(["train"] * 3 + ["test"] * 2)])
    good = TaskConfig(name="counting", data_path=str(file), train_split="train", eval_split="test", eval_size=2)
    data = TaskData(COUNTING, good, seed=0)
    assert sorted(e.target for e in data.held_out) == [3, 4]
    for bad, message in [
        ({"eval_split": "test"}, "without task.train_split: the training pool would read every split"),
        ({"train_split": "train", "eval_split": "train"}, "the held-out records are the training records"),
        ({"eval_data_path": str(file)}, "the held-out records are the training records"),
    ]:
        cfg = TaskConfig(name="counting", data_path=str(file), **bad)
        with pytest.raises(DataError, match=message):
            check_held_out_apart(cfg)
        with pytest.raises(DataError, match=message):
            TaskData(COUNTING, cfg, seed=0)
    hf = TaskConfig(name="counting", data=HFDataConfig(hf=str(tmp_path), split="train", eval_split="train"))
    with pytest.raises(DataError, match=r"task.data.eval_split 'train' is the training split"):
        check_held_out_apart(hf)
