"""Grounding box conventions are declared (task params box_format / box_units), never guessed: every
convention of one box gives the same answer text through a saved Hugging Face dataset and the
RefCOCO/COCO loader; boxes that do not fit their convention are one DataError naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features, Image as HFImage, Sequence, Value
from PIL import Image

from sweeps.config.trial_config import HFDataConfig, TaskConfig
from sweeps.trial.data import TaskData, loader_options
from sweeps.tasks import DataError, get_task
from sweeps.tasks.boxes import BOX_FORMATS, BOX_UNITS
from sweeps.tasks.hf import load_hf

GROUNDING = get_task("grounding")
W, H = 200, 100
PIXEL_BOX = (20.0, 10.0, 120.0, 60.0)  # xyxy pixels of a 200x100 image
EXPECTED = "[10,10,59,59]"  # /200, /100 on the 0..99 grid: (0.1, 0.1, 0.6, 0.6)


def convention(box_format: str, box_units: str, box=PIXEL_BOX, width=W, height=H) -> list[float]:
    """`box` (xyxy pixels) written in another convention."""
    x0, y0, x1, y1 = box
    if box_format == "xywh":
        nums = [x0, y0, x1 - x0, y1 - y0]
    elif box_format == "cxcywh":
        nums = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
    else:
        nums = [x0, y0, x1, y1]
    scale = {"pixels": 1.0, "normalized": 1.0, "per_mille": 1000.0}[box_units]
    if box_units == "pixels":
        return nums
    return [v / (width if k % 2 == 0 else height) * scale for k, v in enumerate(nums)]


CONVENTIONS = [(f, u) for f in BOX_FORMATS for u in BOX_UNITS]


@pytest.fixture(scope="module")
def boxes_dataset(tmp_path_factory) -> Path:
    """One row per convention column (`<format>_<units>`), all the same box of a 200x100 image."""
    tmp = tmp_path_factory.mktemp("boxes")
    buf = tmp / "img.png"
    Image.new("RGB", (W, H), (30, 30, 30)).save(buf)
    cols = {f"{f}_{u}": [convention(f, u)] for f, u in CONVENTIONS}
    feats = Features({"image": HFImage(), "question": Value("string"),
                      **{c: Sequence(Value("float64")) for c in cols}})
    Dataset.from_dict({"image": [{"bytes": buf.read_bytes(), "path": None}], "question": ["Where is it?"], **cols},
                      features=feats).save_to_disk(tmp / "hf")
    return tmp / "hf"


@pytest.mark.parametrize("box_format, box_units", CONVENTIONS)
def test_each_convention_gives_the_same_answer_through_a_saved_dataset(boxes_dataset, box_format, box_units):
    data = HFDataConfig(hf=str(boxes_dataset), columns={"answer": f"{box_format}_{box_units}"})
    params = {"box_format": box_format, "box_units": box_units}
    ex = load_hf(data, GROUNDING, split="train", params=params)[0]
    assert ex.answer == EXPECTED and ex.target == (10, 10, 59, 59)
    resized = load_hf(data, GROUNDING, split="train", params=params, image_size=32)[0]
    assert resized.answer == EXPECTED and resized.image.size == (32, 32)  # boxes follow the resize


def test_hf_default_is_xyxy_pixels(boxes_dataset) -> None:
    ex = load_hf(HFDataConfig(hf=str(boxes_dataset), columns={"answer": "xyxy_pixels"}), GROUNDING, split="train")[0]
    assert ex.answer == EXPECTED


def _coco(folder: Path, bbox: list[float], size=(W, H), stored: Image.Image | None = None, sentences: int = 1) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    img = stored if stored is not None else Image.new("RGB", size, (30, 30, 30))
    exif = img.info.pop("exif_out", None)
    img.save(folder / "images" / "a.jpg", quality=95, **({"exif": exif} if exif is not None else {}))
    refs = [{"ref_id": 0, "ann_id": 1, "image_id": 5, "split": "train",
             "sentences": [{"sent": f"the box {k}", "sent_id": k} for k in range(sentences)]}]
    inst = {"images": [{"id": 5, "file_name": "a.jpg", "width": size[0], "height": size[1]}],
            "annotations": [{"id": 1, "image_id": 5, "bbox": bbox, "category_id": 1}],
            "categories": [{"id": 1, "name": "thing"}]}
    (folder / "refs(unc).json").write_text(json.dumps(refs))
    (folder / "instances.json").write_text(json.dumps(inst))
    return folder


@pytest.mark.parametrize("box_format, box_units", CONVENTIONS)
def test_each_convention_gives_the_same_answer_through_the_coco_loader(tmp_path, box_format, box_units):
    folder = _coco(tmp_path / "c", convention(box_format, box_units))
    ex = GROUNDING.load(folder, box_format=box_format, box_units=box_units)[0]
    assert ex.answer == EXPECTED


def test_coco_default_is_xywh_pixels_and_task_params_reach_the_loader(tmp_path) -> None:
    folder = _coco(tmp_path / "c", convention("xywh", "pixels"))
    assert GROUNDING.load(folder)[0].answer == EXPECTED
    normalized = _coco(tmp_path / "n", convention("cxcywh", "normalized"), sentences=2)
    cfg = TaskConfig(name="grounding", data_path=str(normalized), eval_size=1, train_size=1,
                     params={"box_format": "cxcywh", "box_units": "normalized", "coord_max": 999})
    assert loader_options(GROUNDING, cfg) == {"box_format": "cxcywh", "box_units": "normalized", "coord_max": 999}
    data = TaskData(GROUNDING, cfg, seed=0)  # what a trial reads
    assert [e.answer for e in data.held_out + data.batch(0, 0, 1)] == ["[100,100,599,599]"] * 2  # 0.1, 0.6 of 999
    clash = TaskConfig(name="grounding", data_path=str(normalized), params={"coord_max": 999},
                       loader={"coord_max": 99})
    with pytest.raises(ValueError, match=r"task.params.coord_max \(999\) and task.loader.coord_max \(99\) differ"):
        loader_options(GROUNDING, clash)


def test_unknown_convention_is_a_param_error() -> None:
    known = r"\(known: pixels, normalized, per_mille\)"
    with pytest.raises(ValueError, match=r"parameter 'box_units': unknown value 'percent' " + known):
        GROUNDING.synthetic(1, seed=0, box_units="percent")
    with pytest.raises(ValueError, match="parameter 'box_format': unknown value 'yxyx'"):
        GROUNDING.load("/nonexistent", box_format="yxyx")


def _row(answer, **params):
    return GROUNDING.from_record(Image.new("RGB", (W, H)), "Where?", answer, "ds: split train: row 7: column 'box'",
                                 **params)


@pytest.mark.parametrize("answer, params, message", [
    ([0.1, 0.1, 0.6, 0.6], {}, r"every coordinate is <= 1.*set task.params.box_units: normalized"),
    ([100, 100, 600, 600], {"box_units": "normalized"}, r"above 1 is not a fraction.*box_units: per_mille"),
    ([100, 100, 1600, 600], {"box_units": "per_mille"}, r"above 1000 is not on the 0-1000 grid.*box_units: pixels"),
    ([0.1, 0.1, 0.6, 0.6], {"box_units": "per_mille"}, r"every coordinate is <= 1.*box_units: normalized"),
    # Qwen2-VL's 0-1000 grid read as pixels of a small image: outside it, not clamped to [98,98,99,99]
    ([100, 100, 600, 600], {}, r"lies outside the 200x100 image; if it is on Qwen2-VL's 0-1000 grid.*per_mille"),
    ([120, 60, 20, 10], {}, r"zero or negative width or height"),
    ([120, 40, 30, 20], {}, r"zero or negative width.*if the numbers are \[x, y, width, height\].*box_format: xywh"),
    ([20, 10, 190, 60], {"box_format": "xywh"}, r"outside.*if the numbers are \[x0, y0, x1, y1\].*box_format: xyxy"),
    ([20, 10, float("nan"), 60], {}, r"holds NaN or inf"),
    ([20, 10, 60], {}, r"a box must be 4 numbers"),
    ("[20, 10, nan, 60]", {}, r"holds NaN or inf"),
    ("left", {}, r"a box must be 4 numbers"),
])
def test_boxes_that_do_not_fit_their_convention_are_refused(answer, params, message) -> None:
    with pytest.raises(DataError, match=r"^ds: split train: row 7: column 'box': .*" + message) as err:
        _row(answer, **params)
    assert "\n" not in str(err.value)


def test_a_box_within_the_tolerance_is_clipped() -> None:
    assert _row([-1.0, 0.0, 201.0, 100.5]).answer == "[00,00,99,99]"


def test_boxes_refer_to_the_displayed_exif_rotated_image(tmp_path) -> None:
    """Stored 40x20 with a red marker at stored (0..8, 0..8), EXIF orientation 6: displayed 20x40,
    the marker at displayed x 12..20, y 0..8. The box of the displayed marker is the answer; the
    stored-frame size in an annotation is refused with the hint."""
    a = np.full((20, 40, 3), 255, np.uint8)
    a[:8, :8] = (255, 0, 0)
    stored = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.info["exif_out"] = exif
    folder = _coco(tmp_path / "rot", [12, 0, 8, 8], size=(20, 40), stored=stored)
    ex = GROUNDING.load(folder)[0]
    assert ex.image.size == (20, 40) and ex.answer == "[59,00,99,20]"
    x0, y0, x1, y1 = (round(v / 99 * s) for v, s in zip(ex.target, (20, 40, 20, 40)))
    pixels = np.asarray(ex.image).astype(float)
    marker = pixels[y0:y1, x0:x1]
    assert marker[..., 0].mean() > 200 and marker[..., 1].mean() < 60  # the box is on the red marker
    assert pixels[10:, :, 1].mean() > 240  # and the rest is white
    stored.info["exif_out"] = exif
    raw = _coco(tmp_path / "raw", [0, 0, 8, 8], size=(40, 20), stored=stored)
    with pytest.raises(DataError, match=r"is 20x40 but the annotation says 40x20 \(the file's EXIF orientation"):
        GROUNDING.load(raw)
