"""A bad row after the first records the preflight previews (64) is refused before Ray starts:
every row a trial reads has its answer (and box) checked by the task's own loader and its image
file's existence checked, with no image decoded (`sweeps.driver.preflight.check_rows`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, Features, Image as HFImage, Sequence, Value
from PIL import Image

from sweeps.errors import SpecError
from sweeps.driver.preflight import plan_sweep
from sweeps.tasks import get_task
from sweeps.tasks.hf import load_hf
from sweeps.config.trial_config import HFDataConfig

SPEC = """
name: late
task: {{name: {task}, {data}, eval_size: 4, image_size: 32}}
model: {{path: tiny}}
train: {{steps: 2, batch_size: 2, eval_every: 2, max_new_tokens: 4}}
loss: {{family: soft_label, eta: 0.1, lam: 2.0}}
search_space: {{name: one, params: {{lr: {{type: fixed, value: 0.001, target: train.lr}}}}}}
search: {{algorithm: grid, num_samples: 1, seeds: 1, max_concurrent: 1}}
scheduler: {{type: fifo}}
resources: {{cpu: 1, gpu: 0}}
metric: {{name: {metric}, mode: max}}
"""


def _spec(folder: Path, task: str, data: str) -> Path:
    spec = folder / f"{task}.yaml"
    metric = get_task(task).primary_metric
    spec.write_text(SPEC.format(task=task, data=data, metric=metric))
    return spec


def _counting_rows(n: int) -> list[dict]:
    return [{"image": f"img{i % 4}.png", "question": "How many?", "answer": i % 10} for i in range(n)]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """late.json: 200 counting records, a NaN answer (as json.dumps writes it) at record 80 and a
    missing image at record 90; fixed.json: the NaN mended, the missing image kept."""
    for i in range(4):
        Image.new("RGB", (16, 16), (40 * i, 20, 30)).save(tmp_path / f"img{i}.png")
    rows = _counting_rows(200)
    rows[80]["answer"] = float("nan")
    rows[90]["image"] = "gone.png"
    (tmp_path / "late.json").write_text(json.dumps(rows))
    rows[80]["answer"] = 3
    (tmp_path / "fixed.json").write_text(json.dumps(rows))
    return tmp_path


def _refused(spec: Path, runs: Path, *overrides: str) -> str:
    import ray

    with pytest.raises(SpecError) as err:
        plan_sweep(spec, runs_dir=runs, overrides=list(overrides))
    assert not ray.is_initialized() and not runs.exists()  # nothing created, Ray not started
    text = str(err.value)
    assert "\n" not in text
    return text


def test_late_nan_and_missing_image_are_refused_by_plan_sweep(folder: Path) -> None:
    spec = _spec(folder, "counting", f"data_path: {folder / 'late.json'}")
    runs = folder / "runs"
    text = _refused(spec, runs, "task.train_size=100")
    assert "task.data_path" in text and "late.json: record 80: field 'answer' is NaN" in text
    text = _refused(spec, runs, f"task.data_path={folder / 'fixed.json'}", "task.train_size=100")
    assert "fixed.json: record 90: image file not found" in text and "gone.png" in text
    # a held-out file: the trial reads only task.train_size training records, and so does the check
    held = folder / "held.json"
    held.write_text(json.dumps(_counting_rows(4)))
    plan = plan_sweep(spec, runs_dir=runs, overrides=[f"task.eval_data_path={held}", "task.train_size=70"])
    assert plan.data_lines[0].startswith("train task.data_path: 64+ rows")
    assert not runs.exists()
    text = _refused(spec, runs, f"task.eval_data_path={held}", "task.train_size=81")
    assert "record 80" in text


def test_late_nan_through_the_real_cli_is_one_line_and_exit_2(folder: Path) -> None:
    spec = _spec(folder, "counting", f"data_path: {folder / 'fixed.json'}")
    runs = folder / "runs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", str(spec), f"task.data_path={folder / 'late.json'}",
                           "task.train_size=100", "--runs-dir", str(runs)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "late.json: record 80: field 'answer' is NaN" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr and "Ray" not in proc.stdout
    assert not runs.exists()


def _hf_rows(n: int) -> dict:
    images = [Image.new("RGB", (40, 20), (10 * (i % 20), 30, 30)) for i in range(n)]
    return {"image": images, "question": ["Where is it?"] * n, "answer": [[4.0, 2.0, 20.0, 10.0]] * n}


def test_late_bad_row_of_a_saved_hugging_face_dataset(tmp_path: Path) -> None:
    feats = Features({"image": HFImage(), "question": Value("string"), "answer": Value("float64")})
    rows = _hf_rows(150)
    rows["answer"] = [float(i % 10) for i in range(150)]
    rows["answer"][120] = float("nan")
    Dataset.from_dict(rows, features=feats).save_to_disk(tmp_path / "counts")
    spec = _spec(tmp_path, "counting", f"data: {{hf: {tmp_path / 'counts'}}}")
    text = _refused(spec, tmp_path / "runs")
    assert "task.data.split" in text and "split train: row 120: column 'answer' is NaN" in text
    # only what a trial reads: with a named eval split, task.train_size rows of the training split
    data = HFDataConfig(hf=str(tmp_path / "counts"))
    assert len(load_hf(data, get_task("counting"), split="train", limit=120, images=False)) == 120


def test_late_box_outside_its_image_in_a_hugging_face_dataset(tmp_path: Path) -> None:
    """The box is checked against the image's displayed size, read from its header (no decode)."""
    feats = Features({"image": HFImage(), "question": Value("string"), "answer": Sequence(Value("float64"))})
    rows = _hf_rows(100)
    rows["answer"][70] = [4.0, 2.0, 80.0, 10.0]  # x1 = 80 on a 40-pixel-wide image
    Dataset.from_dict(rows, features=feats).save_to_disk(tmp_path / "boxes")
    data = HFDataConfig(hf=str(tmp_path / "boxes"))
    quick = load_hf(data, get_task("grounding"), split="train", limit=70, images=False)
    assert [e.answer for e in quick] == [e.answer for e in load_hf(data, get_task("grounding"), split="train",
                                                                   limit=70)]
    spec = _spec(tmp_path, "grounding", f"data: {{hf: {tmp_path / 'boxes'}}}")
    text = _refused(spec, tmp_path / "runs")
    assert "split train: row 70: column 'answer'" in text


def test_late_bad_box_in_a_refcoco_file(tmp_path: Path) -> None:
    """RefCOCO refs: the 90th ref's annotation has a degenerate box; its image file exists."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (200, 100), (30, 30, 30)).save(tmp_path / "images" / "a.jpg")
    n = 100
    refs = [{"ref_id": i, "ann_id": i, "image_id": 5, "split": "train",
             "sentences": [{"sent": f"the box {i}", "sent_id": i}]} for i in range(n)]
    anns = [{"id": i, "image_id": 5, "bbox": [20, 10, 100, 50], "category_id": 1} for i in range(n)]
    anns[90]["bbox"] = [20, 10, 0, 50]  # zero width
    inst = {"images": [{"id": 5, "file_name": "a.jpg", "width": 200, "height": 100}], "annotations": anns,
            "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "refs(unc).json").write_text(json.dumps(refs))
    (tmp_path / "instances.json").write_text(json.dumps(inst))
    quick = get_task("grounding").load(tmp_path, limit=90, images=False)
    assert all(e.image is None for e in quick) and quick[0].answer == "[10,10,59,59]"
    spec = _spec(tmp_path, "grounding", f"data_path: {tmp_path}")
    text = _refused(spec, tmp_path / "runs")
    assert "task.data_path" in text and "annotation 90: field 'bbox'" in text
