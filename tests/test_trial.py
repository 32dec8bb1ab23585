"""One trial end to end on the tiny model: every task, every loss family, checkpoints, seeding."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

import torch

from sweeps.trial import STATE_FILE
from sweeps.trial.batches import StepBatches
from sweeps.trial.run import (
    NonFiniteLossError, evaluation_metrics, report_evaluation, run_trial, setup_trial, train_step,
)
from tests.trial_helpers import tiny_trial_config

pytestmark = pytest.mark.slow

TASK_METRICS = {
    "counting": {"exact_match", "mae", "off_by_one", "unparseable"},
    "grounding": {"acc_iou50", "mean_iou", "unparseable"},
    "chart": {"relaxed_accuracy", "exact_match", "unparseable"},
    "numeric_vqa": {"exact_match", "relaxed_accuracy", "mae", "unparseable"},
}


@pytest.mark.parametrize("task", sorted(TASK_METRICS))
def test_short_trial_per_task(task: str) -> None:
    reports: list[dict] = []
    cfg = tiny_trial_config(task, steps=4, eval_every=2)
    result = run_trial(cfg, report=lambda m, ckpt: reports.append(m), checkpoint=False)
    assert [r["step"] for r in reports] == [2, 4]
    assert TASK_METRICS[task] <= set(result.metrics)
    for name in TASK_METRICS[task] - {"mae"}:
        assert 0.0 <= result.metrics[name] <= 1.0
    assert result.metrics["train_loss"] > 0
    assert len(result.predictions) == cfg.task.eval_size  # eval set smaller than the sample cap
    assert {"prompt", "answer", "prediction", "parsed"} <= set(result.predictions[0])


@pytest.mark.parametrize("family", ["hard", "label_smoothing", "gaussian", "ntl_was", "ntl_mse", "ntil", "dist2", "smmd",
                                    "del"])
def test_every_loss_family_trains(family: str) -> None:
    result = run_trial(tiny_trial_config(family=family, steps=2, eval_every=2, eval_size=8))
    assert result.steps == 2 and result.metrics["train_loss"] > 0


def test_same_seed_same_metrics_and_restore_continues(tmp_path: Path) -> None:
    cfg = tiny_trial_config(steps=6, eval_every=3)
    saved: dict[int, Path] = {}

    def keep(metrics: dict, ckpt: Path | None) -> None:
        assert ckpt is not None
        saved[int(metrics["step"])] = shutil.copytree(ckpt, tmp_path / f"step{int(metrics['step'])}")

    full = run_trial(cfg, report=keep)
    again = run_trial(cfg)
    assert again.metrics["exact_match"] == full.metrics["exact_match"]
    assert again.metrics["train_loss"] == pytest.approx(full.metrics["train_loss"], rel=1e-6)

    resumed = run_trial(cfg, resume_from=saved[3])
    assert resumed.steps == 6 and resumed.restarts == 1
    assert [h["step"] for h in resumed.history] == [3, 6]
    # The restart sees the same batches and optimizer state: same end point as no restart.
    assert resumed.metrics["train_loss"] == pytest.approx(full.metrics["train_loss"], rel=1e-5)
    assert resumed.metrics["exact_match"] == full.metrics["exact_match"]


def test_the_last_checkpoint_is_the_record_only_unless_asked(tmp_path: Path) -> None:
    """The last step's checkpoint holds step, history and restarts, not weights (a finished trial
    continues nothing); restoring it ends the trial with its record; continuing it to more steps is
    refused; train.keep_final_weights keeps the weights."""
    cfg = tiny_trial_config(steps=4, eval_every=2, eval_size=8)
    saved: dict[int, Path] = {}

    def keep(metrics: dict, ckpt: Path | None) -> None:
        saved[int(metrics["step"])] = shutil.copytree(ckpt, tmp_path / f"step{int(metrics['step'])}")

    full = run_trial(cfg, report=keep)
    middle, last = (torch.load(saved[k] / STATE_FILE, weights_only=True) for k in (2, 4))
    assert {"model", "optimizer", "scheduler", "torch_rng"} <= set(middle)
    assert set(last) == {"strategy", "step", "history", "restarts", "settings"} and last["step"] == 4
    assert json.loads(last["settings"]) == json.loads(json.dumps(cfg.training_settings()))
    assert last["history"] == full.history
    assert (saved[4] / STATE_FILE).stat().st_size < 0.01 * (saved[2] / STATE_FILE).stat().st_size

    reports: list[dict] = []
    ended = run_trial(cfg, report=lambda m, c: reports.append(m), resume_from=saved[4])
    assert reports == [] and ended.steps == 4 and ended.restarts == 1
    assert ended.metrics == {**full.metrics, "restarts": 1}  # the record, with this run's restart count
    with pytest.raises(ValueError, match=r"ended at step 4 holds no weights .* train.steps=6"):
        run_trial(tiny_trial_config(steps=6, eval_every=2, eval_size=8), resume_from=saved[4])

    kept = tiny_trial_config(steps=4, eval_every=2, eval_size=8, overrides={"train.keep_final_weights": True})
    run_trial(kept, report=lambda m, c: shutil.copytree(c, tmp_path / "kept", dirs_exist_ok=True))
    assert "model" in torch.load(tmp_path / "kept" / STATE_FILE, weights_only=True)


def test_divergence_is_reported_not_hidden() -> None:
    cfg = tiny_trial_config(steps=30, eval_every=30, overrides={
        "train.lr": 1e6, "train.max_grad_norm": 1e9, "train.warmup_steps": 0})
    with pytest.raises(NonFiniteLossError, match="diverged"):
        run_trial(cfg)


def test_cli_trial_runs_and_writes_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sweeps.cli import app

    config = tmp_path / "trial.yaml"
    config.write_text(tiny_trial_config(steps=2, eval_every=2, eval_size=8).to_yaml())
    out = tmp_path / "result.json"
    res = CliRunner().invoke(app, ["trial", str(config), "-o", str(out), "--checkpoint-dir", str(tmp_path / "ck")])
    assert res.exit_code == 0, res.output
    assert "step     2/2" in res.output
    assert json.loads(out.read_text())["metrics"]["step"] == 2
    assert (tmp_path / "ck" / "step_000002" / "trial_state.pt").exists()


def test_the_trial_pieces_each_alone(tmp_path: Path) -> None:
    """setup -> one optimizer step -> evaluation -> checkpointed report, as run_trial chains them."""
    cfg = tiny_trial_config(steps=4, eval_every=2, eval_size=8)
    s = setup_trial(cfg, device=torch.device("cpu"))
    assert s.state.step == 0 and s.coverage == 1.0
    before = [p.detach().clone() for p in s.params]
    batches = StepBatches(s.data, s.batcher, batch_size=cfg.train.batch_size, grad_accum=1, steps=cfg.train.steps)
    loss = train_step(s, batches[0])   # warm-up: the first step runs at lr 0
    assert loss > 0 and s.state.step == 1
    train_step(s, batches[1])
    assert any(not torch.equal(a, b) for a, b in zip(before, s.params))
    metrics, predictions = evaluation_metrics(s, [loss], 0.0)
    assert len(predictions) == 8 and metrics["step"] == 2 and metrics["soft_target_coverage"] == 1.0
    assert s.state.history == [metrics]
    seen: list = []

    def report(payload, folder):
        seen.append((payload, folder is not None and any(folder.iterdir())))
    report_evaluation(s, report, {"step": 2}, checkpoint=True)   # step 2 = eval_every: a checkpoint is due
    report_evaluation(s, report, {"step": 2}, checkpoint=False)
    assert seen == [({"step": 2}, True), ({"step": 2}, False)]


def test_staging_folders_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    """A worker killed while it reports leaves its checkpoint's staging folder: the next checkpoint
    removes it once it has not changed for STALE_AFTER_S, never one of a live process or a fresh one."""
    import os
    import subprocess
    import sys

    from sweeps.trial.checkpoint import STAGING_PREFIX, STALE_AFTER_S, _remove_stale

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    old = time.time() - STALE_AFTER_S - 60
    folders = {}
    for name, pid, when in (("dead_old", gone, old), ("dead_fresh", gone, time.time()),
                            ("live_old", str(os.getpid()), old)):
        folder = folders[name] = tmp_path / f"{STAGING_PREFIX}{pid}-{name}"
        folder.mkdir()
        (folder / "trial_state.pt").write_bytes(b"x" * 10)
        for path in (folder / "trial_state.pt", folder):
            os.utime(path, (when, when))
    other = tmp_path / "unrelated"
    other.mkdir()
    assert _remove_stale(tmp_path) == [folders["dead_old"]]
    assert not folders["dead_old"].exists()
    assert folders["dead_fresh"].exists() and folders["live_old"].exists() and other.exists()
