"""One trial end to end on the tiny model: every task, every loss family, checkpoints, seeding."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sweeps.trial import NonFiniteLossError, run_trial
from tests.trial_helpers import tiny_trial_config

pytestmark = pytest.mark.slow

TASK_METRICS = {
    "counting": {"exact_match", "mae", "off_by_one", "unparseable"},
    "grounding": {"acc_iou50", "mean_iou", "unparseable"},
    "chart": {"relaxed_accuracy", "exact_match", "unparseable"},
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


@pytest.mark.parametrize("family", ["hard", "label_smoothing", "gaussian", "ntl_was", "ntl_mse", "ntil"])
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
