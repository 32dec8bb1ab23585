"""`slsweep data`: the spec's task data as a trial builds it, through the real CLI (real tiny
tokenizer, real task generators and loaders, real images), and the per-split line `slsweep run`
prints before Ray starts."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import one_error_line
from sweeps.cli import app
from sweeps.preview.sheet import BOX_RGB, SheetLayout

SMALL = ["model.path=tiny", "task.eval_size=6", "task.image_size=32"]
EXAMPLE_KEYS = {"split", "index", "image_size", "image_mode", "image_mean_rgb", "source_size", "prompt",
                "prompt_text", "answer", "answer_tokens", "answer_token_ids", "eos_token", "soft_target_tokens",
                "numeric_tokens_without_soft_target", "source"}
SPLIT_KEYS = {"split", "rows", "generated", "figures_over", "answers", "soft_target_coverage"}


def _data(*args: str) -> dict:
    res = CliRunner().invoke(app, ["data", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _one_error_line(*args: str) -> str:
    return one_error_line(CliRunner().invoke(app, ["data", *args]))


def _check_schema(out: dict, n: int) -> None:
    assert out["schema"] == 1 and out["model"] == "tiny"
    assert [s["split"] for s in out["splits"]] == ["train", "eval"]
    for split in out["splits"]:
        assert SPLIT_KEYS <= set(split)
    assert [(e["split"], e["index"]) for e in out["examples"]] == \
        [("train", i) for i in range(n)] + [("eval", i) for i in range(n)]
    for ex in out["examples"]:
        assert EXAMPLE_KEYS <= set(ex), set(ex) ^ EXAMPLE_KEYS
        assert "".join(ex["answer_tokens"]) == ex["answer"]  # the tokens are the whole answer
        assert len(ex["answer_tokens"]) == len(ex["answer_token_ids"])
        assert len(ex["image_size"]) == 2 and len(ex["image_mean_rgb"]) == 3
        assert all(0 <= v <= 255 for v in ex["image_mean_rgb"])
        assert ex["prompt"] in ex["prompt_text"]


def _digit_positions(ex: dict) -> list[int]:
    return [i for i, t in enumerate(ex["answer_tokens"]) if t.strip().isdigit()]


def test_counting_json_marks_every_digit_and_covers_the_answers() -> None:
    out = _data("counting", *SMALL, "-n", "3")
    _check_schema(out, 3)
    assert out["task"] == "counting" and out["data"] == "synthetic" and out["loss_family"] == "soft_label"
    train, held_out = out["splits"]
    assert train["rows"] is None and train["generated"] and train["figures_over"] == 256
    assert held_out["rows"] == 6 and held_out["figures_over"] == 6 and not held_out["generated"]
    for split in out["splits"]:
        answers = split["answers"]
        assert answers["numeric"] == split["figures_over"] and answers["text"] == 0
        assert 0 <= answers["min"] <= answers["max"] <= 99
        assert sum(answers["histogram"]["counts"]) == split["figures_over"]  # one number per count
        [cov] = split["soft_target_coverage"]
        assert cov["family"] == "soft_label" and cov["share"] == 1.0 and cov["numeric_tokens"] >= split["figures_over"]
    for ex in out["examples"]:
        assert ex["image_size"] == [32, 32] and ex["image_mode"] == "RGB"
        assert int(ex["answer"]) >= 0 and "box" not in ex
        soft = ex["soft_target_tokens"]
        assert [s["position"] for s in soft] == _digit_positions(ex) != []  # every digit, nothing else
        assert all(s["token"] == ex["answer_tokens"][s["position"]] for s in soft)
        assert ex["numeric_tokens_without_soft_target"] == []


def test_hard_family_gives_no_soft_target() -> None:
    out = _data("counting", *SMALL, "-n", "2", "--family", "hard")
    assert out["loss_family"] == "hard"
    for ex in out["examples"]:
        assert ex["soft_target_tokens"] == [] and ex["numeric_tokens_without_soft_target"] == []
    coverage = {c["family"]: c for c in out["splits"][1]["soft_target_coverage"]}
    assert coverage["hard"]["share"] is None and coverage["hard"]["covered"] is None
    assert coverage["soft_label"]["share"] == 1.0  # the family the sweep can choose is still measured


def test_text_output_marks_the_soft_tokens() -> None:
    res = CliRunner().invoke(app, ["data", "counting", *SMALL, "-n", "1"])
    assert res.exit_code == 0, res.output
    text = res.stdout
    assert "train: generated per step (figures over the first 256 generated); answers " in text
    assert "eval: 6 rows; answers " in text and "soft-target coverage 100% (soft_label)" in text
    assert "train #0  image 32x32 RGB" in text and "eval #0  image 32x32 RGB" in text
    answer = next(ln.split(": ", 1)[1] for ln in text.splitlines() if ln.strip().startswith("answer:"))
    assert f"tokens: {' '.join(repr(d) + '*' for d in answer)} " in text


def test_grounding_boxes_and_the_contact_sheet(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.png"
    out = _data("grounding", "model.path=tiny", "task.eval_size=4", "task.image_size=64", "-n", "2",
                "--sheet", str(sheet))
    _check_schema(out, 2)
    for split in out["splits"]:
        # four coordinates per box on the 0..99 grid
        assert sum(split["answers"]["histogram"]["counts"]) == 4 * split["figures_over"]
        assert 0 <= split["answers"]["min"] <= split["answers"]["max"] <= 99
    examples = out["examples"]
    for ex in examples:
        x0, y0, x1, y1 = ex["box"]
        assert ex["box_coord_max"] == 99 and 0 <= x0 < x1 <= 99 and 0 <= y0 < y1 <= 99
        assert ex["answer"] == "[" + ",".join(f"{v:02d}" for v in ex["box"]) + "]"
        assert [s["position"] for s in ex["soft_target_tokens"]] == _digit_positions(ex)
        assert len(ex["soft_target_tokens"]) == 8  # two digits per coordinate
    layout = SheetLayout(len(examples))
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.size == layout.size
        pixels = np.asarray(im.convert("RGB"))
    for k, ex in enumerate(examples):
        left, top, right, bottom = layout.box_rect(k, ex["box"], ex["box_coord_max"])
        for x, y in (((left + right) / 2, top), ((left + right) / 2, bottom), (left, (top + bottom) / 2)):
            x, y = round(x), round(y)
            patch = pixels[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3)
            assert (patch == BOX_RGB).all(axis=1).any(), (k, x, y, patch)  # the box is drawn where it is
        cx, cy = round((left + right) / 2), round((top + bottom) / 2)  # only the outline: the inside is the image
        assert not (pixels[cy, cx] == BOX_RGB).all()
    assert not (pixels[:5, :5] == BOX_RGB).all(axis=2).any()  # nowhere near the sheet's corner


# --------------------------------------------------------------------------- a folder of JSON + images

SPEC = """
name: folder
task: {{name: counting, data_path: {train}, eval_data_path: {eval}, eval_size: 1, image_size: 32}}
model: {{path: tiny}}
train: {{steps: 2, batch_size: 2, eval_every: 2, max_new_tokens: 4}}
loss: {{family: soft_label, eta: 0.1, lam: 2.0}}
search_space: {{name: one, params: {{lr: {{type: fixed, value: 0.001, target: train.lr}}}}}}
search: {{algorithm: grid, num_samples: 1, seeds: 1, max_concurrent: 1}}
scheduler: {{type: fifo}}
resources: {{cpu: 1, gpu: 0}}
metric: {{name: exact_match, mode: max}}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.jsonl: an RGBA chart on a transparent background, a phone-style JPEG stored 64x32
    (red left half, blue right half) with EXIF orientation 6 (displayed turned 90 degrees clockwise:
    32x64, red on top), a plain RGB image, a 16-bit greyscale PNG with two grey levels (1000 and
    3000 of 65535, half each), a palette image whose index 0 is transparent (all but a red 2x2
    patch), a CMYK TIFF of pure cyan; eval.jsonl: one more RGB image."""
    tmp = tmp_path_factory.mktemp("folder")
    chart = np.zeros((40, 40, 4), np.uint8)  # fully transparent ...
    chart[20, 5:35] = (0, 0, 0, 255)  # ... but for one black line
    Image.fromarray(chart, "RGBA").save(tmp / "chart.png")
    phone = np.zeros((32, 64, 3), np.uint8)
    phone[:, :32] = (255, 0, 0)
    phone[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    Image.fromarray(phone).save(tmp / "phone.jpg", exif=exif.tobytes(), quality=95)
    Image.new("RGB", (40, 30), (10, 200, 10)).save(tmp / "plain.png")
    Image.new("RGB", (30, 30), (200, 10, 10)).save(tmp / "held.png")
    grey = np.full((20, 20), 1000, np.uint16)
    grey[:, 10:] = 3000
    Image.fromarray(grey).save(tmp / "grey16.png")
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (0, 0, 2, 2))
    palette.save(tmp / "palette.png", transparency=0)
    Image.new("CMYK", (20, 20), (255, 0, 0, 0)).save(tmp / "cmyk.tiff")
    rows = [{"image": "chart.png", "question": "How many lines?", "answer": 1},
            {"image": "phone.jpg", "question": "How many halves?", "answer": 2},
            {"image": "plain.png", "question": "How many things?", "answer": 12},
            {"image": "grey16.png", "question": "How many cells?", "answer": 4},
            {"image": "palette.png", "question": "How many dots?", "answer": 5},
            {"image": "cmyk.tiff", "question": "How many inks?", "answer": 7}]
    (tmp / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp / "eval.jsonl").write_text(json.dumps({"image": "held.png", "question": "How many?", "answer": 0}))
    (tmp / "spec.yaml").write_text(SPEC.format(train=tmp / "train.jsonl", eval=tmp / "eval.jsonl"))
    return tmp


def test_folder_dataset_figures(folder: Path) -> None:
    out = _data(str(folder / "spec.yaml"), "-n", "8")
    assert out["data"] == "files"
    train, held_out = out["splits"]
    assert (train["rows"], held_out["rows"]) == (6, 1) and not train["generated"]
    assert train["answers"]["min"] == 1 and train["answers"]["max"] == 12
    # integer answers 1, 2, 12, 4, 5, 7: integer bins two wide, so at most ten bins span 1..12
    assert train["answers"]["histogram"] == {"edges": [1, 3, 5, 7, 9, 11, 13], "counts": [2, 1, 1, 1, 0, 1]}
    examples = out["examples"]
    assert [e["answer"] for e in examples] == ["1", "2", "12", "4", "5", "7", "0"]
    assert [len(e["soft_target_tokens"]) for e in examples] == [1, 1, 2, 1, 1, 1, 1]
    assert examples[2]["source_size"] == [40, 30] and examples[2]["image_size"] == [32, 32]
    assert examples[2]["image_mean_rgb"] == pytest.approx([10, 200, 10], abs=1)
    assert examples[0]["source"].endswith("chart.png")


def test_transparent_chart_is_on_white(folder: Path) -> None:
    """Needs the one image decoder (sweeps/tasks/images.py): alpha composited on white."""
    chart = _data(str(folder / "spec.yaml"))["examples"][0]
    assert chart["image_mode"] == "RGBA"
    assert min(chart["image_mean_rgb"]) > 230  # white with one black line, not a black image


def test_exif_rotated_photo_is_turned(folder: Path, tmp_path: Path) -> None:
    """Needs the one image decoder (sweeps/tasks/images.py): EXIF orientation applied."""
    sheet = tmp_path / "phone.png"
    out = _data(str(folder / "spec.yaml"), "--sheet", str(sheet))
    phone = out["examples"][1]
    assert phone["source_size"] == [32, 64]  # displayed size: turned
    layout = SheetLayout(len(out["examples"]))
    left, top, right, bottom = layout.image_rect(1)
    with Image.open(sheet) as im:
        pixels = np.asarray(im.convert("RGB")).astype(int)
    upper = pixels[top + 10, (left + right) // 2]
    lower = pixels[bottom - 10, (left + right) // 2]
    assert upper[0] > 200 and upper[2] < 60, upper  # red on top ...
    assert lower[2] > 200 and lower[0] < 60, lower  # ... blue below, as a viewer shows the photo


def test_sixteen_bit_palette_and_cmyk_images(folder: Path) -> None:
    """Through the one image decoder (sweeps/tasks/images.py): a 16-bit image scaled by its own
    range (not a white picture), palette transparency on white, CMYK converted."""
    grey, palette, cmyk = _data(str(folder / "spec.yaml"))["examples"][3:6]
    assert grey["image_mode"] == "I;16" and grey["source_size"] == [20, 20]
    assert grey["image_mean_rgb"] == pytest.approx([127.5, 127.5, 127.5], abs=3)  # two levels: 0 and 255
    assert palette["image_mode"] == "P" and min(palette["image_mean_rgb"]) > 240  # white, not black
    assert cmyk["image_mode"] == "CMYK" and cmyk["image_mean_rgb"] == pytest.approx([0, 255, 255], abs=2)


def test_figures_keep_the_answers_precision() -> None:
    """The range and integer bin labels are the numbers as the data writes them (no 6-digit '%g':
    2500000 was '2.5e+06', 0.123456789 was '0.123457', the bin ending at 1000002 read '1e+06');
    integer answers give integer JSON figures (2601, not 2601.0)."""
    from sweeps.trial.figures import SplitFigures, answer_figures, split_line

    big = answer_figures([3, 1234567, 2500000])
    line = split_line(SplitFigures("train", 3, 3, big))
    assert line.startswith("train: 3 rows; answers 3..2500000 [3-250002:1 ") and "e+" not in line
    assert "750003-1000002:0 1000003-1250002:1" in line
    assert big.as_json()["min"] == 3 and isinstance(big.as_json()["min"], int)
    assert all(isinstance(v, int) for v in [big.as_json()["max"], *big.as_json()["histogram"]["edges"]])
    fine = answer_figures([(0.123456789, 12.0625), 0.5])
    assert split_line(SplitFigures("eval", 2, 2, fine)).startswith("eval: 2 rows; answers 0.123456789..12.0625 [")
    assert fine.as_json()["min"] == 0.123456789 and fine.as_json()["max"] == 12.0625
    wide = split_line(SplitFigures("train", 4, 4, answer_figures([0.1, 2601.0, 45.0, 1234.0])))
    assert "[0.1,260):2 " in wide and "[780,1040):0" in wide and wide.endswith("[2340,2601]:1]")  # no '1.04e+03'
    one = answer_figures([0.1, 0.1, "Yes"])  # one value: one closed bin, not ten around it reaching -0.4
    assert split_line(SplitFigures("eval", 3, 3, one)) == "eval: 3 rows; answers 0.1..0.1 [[0.1,0.1]:2], 1 text answer"
    assert one.as_json()["histogram"] == {"edges": [0.1, 0.1], "counts": [2]}


def test_huggingface_dataset(tmp_path: Path) -> None:
    from tests.test_hf_data import COLUMNS, _dataset

    _dataset(12).to_parquet(tmp_path / "mine.parquet")
    data = {"hf": str(tmp_path / "mine.parquet"), "split": "train", "columns": COLUMNS}
    spec = tmp_path / "hf.yaml"
    spec.write_text(SPEC.format(train="x", eval="x").replace(
        "data_path: x, eval_data_path: x, eval_size: 1", f"data: {json.dumps(data)}, eval_size: 4"))
    out = _data(str(spec), "-n", "2")
    assert out["data"] == "huggingface"
    assert [(s["split"], s["rows"]) for s in out["splits"]] == [("train", 8), ("eval", 4)]
    _check_schema(out, 2)
    for ex in out["examples"]:
        assert ex["source_size"] is None and ex["image_size"] == [32, 32]  # bytes: no file
        assert [s["position"] for s in ex["soft_target_tokens"]] == _digit_positions(ex) != []


# --------------------------------------------------------------------------- bad input


def test_bad_spec_override_family_and_sheet_are_one_line(folder: Path, tmp_path: Path) -> None:
    assert "no such file, and no built-in spec" in _one_error_line("no_such_spec")
    assert "task.eval_size" in _one_error_line("counting", "model.path=tiny", "task.eval_size=-3")
    assert "train.nope" in _one_error_line("counting", "model.path=tiny", "train.nope=1")
    assert "--family: unknown 'nope'" in _one_error_line("counting", *SMALL, "--family", "nope")
    assert "--sheet" in _one_error_line("counting", *SMALL, "--sheet", str(tmp_path / "no" / "s.png"))
    assert "no examples to draw" in _one_error_line("counting", *SMALL, "-n", "0", "--sheet", str(tmp_path / "s.png"))
    if Path("/proc").is_dir():  # os.access says writable to root, yet no file can be made there
        res = CliRunner().invoke(app, ["data", "counting", *SMALL, "-n", "1", "--sheet", "/proc/s.png"])
        # (the tiny model may be built into a fresh model cache first, with its own progress bar)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert res.output.strip().splitlines()[-1].startswith("error: --sheet: /proc/s.png: ")
    missing = tmp_path / "missing.yaml"
    missing.write_text((folder / "spec.yaml").read_text().replace("train.jsonl", "gone.jsonl"))
    err = _one_error_line(str(missing))
    assert "task.data_path" in err and "gone.jsonl" in err
    bad_row = tmp_path / "bad"
    bad_row.mkdir()
    (bad_row / "train.jsonl").write_text(json.dumps({"image": "x.png", "question": "How many?", "answer": 1}))
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.format(train=bad_row / "train.jsonl", eval=folder / "eval.jsonl"))
    err = _one_error_line(str(spec))
    assert "record 0" in err and "x.png" in err
    assert not (tmp_path / "no").exists() and not list(tmp_path.glob("*.png"))  # nothing written


# --------------------------------------------------------------------------- slsweep run's line


def test_run_has_one_line_per_split_before_ray(tmp_path: Path, folder: Path) -> None:
    """The run's preflight (plan_sweep: every check, nothing created, Ray not started) makes the
    per-split lines `slsweep run` prints (service.run_sweep, to stderr), from the same figures as
    `slsweep data`."""
    import ray

    from sweeps.driver.preflight import plan_sweep

    lines = plan_sweep(folder / "spec.yaml", runs_dir=tmp_path / "runs").data_lines
    # One line per split, then the memory planner's line (sweeps.trial.memory).
    assert len(lines) == 3 and lines[2].startswith("memory: ")
    assert lines[0].startswith("train task.data_path: 6 rows; answers 1..12 [1-2:2 3-4:1 5-6:1 ")
    assert lines[0].endswith("; soft-target coverage 100% (soft_label)")
    assert lines[1] == "eval task.eval_data_path: 1 row; answers 0..0 [0:1]; soft-target coverage 100% (soft_label)"
    line, memory = plan_sweep("counting", runs_dir=tmp_path / "runs",
                              overrides=[*SMALL, "resources.cpu=1", "resources.gpu=0"]).data_lines
    assert memory.startswith("memory: ")
    assert line.startswith("train+eval synthetic counting: generated per step (figures over the first 64 "
                           "drawn); answers 0..")
    assert line.endswith("; soft-target coverage 100% (soft_label)")
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()
