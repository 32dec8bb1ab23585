"""Everyday use (issue 13): the CLI's help and overrides, built-in specs by name, light commands,
search seeds, trial progress and the loss curve, run names, the MLflow experiment kind.

The end-to-end checks (a real sweep through the CLI with -q, the MLflow UI in Chromium) are in
tests/test_everyday_sweep.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.errors import SpecError
from sweeps.config.spec import find_trial_config, load_spec, packaged_spec_dir
from helpers import imported_after
from trial_helpers import tiny_trial_config

SPEC = """
name: everyday
task: {name: counting, eval_size: 8, train_size: 64}
model: {path: tiny}
train: {steps: 20, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 10, max_new_tokens: 4}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
search_space: paper.yaml
search: {algorithm: tpe, num_samples: 2}
scheduler: {type: fifo}
"""
HEAVY = ("torch", "ray", "mlflow", "transformers", "optuna", "pandas", "scipy", "sl_core.loss")


def _commands() -> dict[str, click.Command]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


def test_every_command_has_short_help_flags_and_documented_options() -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["-h"])
    assert top.exit_code == 0 and "Usage: " in top.output and "Commands:" in top.output
    for name, command in _commands().items():
        res = runner.invoke(app, [name, "-h"])
        assert res.exit_code == 0, (name, res.output)
        assert "Usage:" in res.output and "<bool>" not in res.output, (name, res.output)
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"slsweep {name} {param.opts[0]}: no help text"


def test_resume_takes_tracking_uri_and_address_like_run() -> None:
    commands = _commands()
    for flag in ("--tracking-uri", "--address", "--runs-dir", "--quiet"):
        for name in ("run", "resume"):
            assert any(flag in p.opts for p in commands[name].params), (name, flag)


def _imported_after(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    _, heavy, out, _ = imported_after(args, HEAVY, cwd=cwd, env=env)
    return heavy, out


def test_list_and_help_import_no_heavy_library(tmp_path: Path) -> None:
    for args in (["list"], ["-h"], ["run", "-h"], ["table", "-h"]):
        heavy, out = _imported_after(args, tmp_path)
        assert heavy == [], (args, heavy)
    assert "counting.yaml" in out or "Usage" in out


def test_status_on_the_local_store_imports_no_heavy_library(tmp_path: Path) -> None:
    """The run folder's SQLite store is read without MLflow (1.6-1.8 s of imports and store set-up)."""
    from mlflow.tracking import MlflowClient

    from sweeps.store import paths

    runs = tmp_path / "runs"
    runs.mkdir()
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.create_experiment("e")
    run = client.create_run(exp, tags={"slsweep.kind": "sweep", "slsweep.sweep_id": "e-1"})
    client.set_terminated(run.info.run_id)
    heavy, out = _imported_after(["status", "--runs-dir", str(runs)], tmp_path)
    assert "e-1" in out and "FINISHED" in out
    assert not {"torch", "ray", "transformers", "optuna", "mlflow", "sl_core.loss"} & set(heavy), heavy


def _store_with_sweeps(runs: Path) -> str:
    """A store MLflow wrote: two sweeps in two experiments, trials finished at full budget, stopped
    early, failed, with a NaN metric, a deleted trial, a deleted experiment's sweep."""
    import math

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from sweeps.store import paths

    uri = paths.default_tracking_uri(runs)
    client = MlflowClient(uri)

    def run(exp: str, tags: dict, params: dict, metrics: dict, status: str = "FINISHED") -> str:
        r = client.create_run(exp, tags=tags)
        client.log_batch(r.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()], tags=[])
        client.set_terminated(r.info.run_id, status=status)
        return r.info.run_id

    for name, mode in (("a", "max"), ("b", "min")):
        exp = client.create_experiment(name)
        sweep = f"{name}-1"
        run(exp, {"slsweep.kind": "sweep", "slsweep.sweep_id": sweep, "metric.name": "mae", "metric.mode": mode},
            {}, {"trials_total": 5, "trials_finished": 3, "trials_stopped": 1, "trials_failed": 1},
            status="FINISHED" if name == "a" else "KILLED")
        trial = {"slsweep.kind": "trial", "slsweep.sweep_id": sweep}
        run(exp, trial, {"train.steps": 10}, {"mae": 0.5, "step": 10})
        run(exp, trial, {"train.steps": 10}, {"mae": 0.2, "step": 10})
        run(exp, trial, {"train.steps": 10}, {"mae": 0.1, "step": 4})  # stopped early: never counts
        run(exp, trial, {"train.steps": 10}, {"mae": math.nan, "step": 10})
        run(exp, trial, {"train.steps": 10}, {"mae": 0.05, "step": 10}, status="FAILED")
        client.delete_run(run(exp, trial, {"train.steps": 10}, {"mae": 0.01, "step": 10}))
    gone = client.create_experiment("gone")
    run(gone, {"slsweep.kind": "sweep", "slsweep.sweep_id": "gone-1"}, {}, {"trials_total": 1})
    client.delete_experiment(gone)
    client.log_batch(client.search_runs([client.get_experiment_by_name("a").experiment_id])[0].info.run_id,
                     tags=[RunTag("note", "x")])
    return uri


def test_status_readers_agree_on_a_store_mlflow_wrote(tmp_path: Path) -> None:
    from sweeps.report.status import read_local_store, read_mlflow, status_table
    from sweeps.driver.service import sweep_status

    runs = tmp_path / "runs"
    runs.mkdir()
    uri = _store_with_sweeps(runs)
    local, remote = read_local_store(runs / "mlflow.db"), read_mlflow(uri)
    assert local is not None
    by_id = lambda view: sorted(view.parents + view.trials, key=lambda r: r.run_id)  # noqa: E731
    assert [(r.run_id, r.status, r.tags, r.params) for r in by_id(local)] == \
        [(r.run_id, r.status, r.tags, r.params) for r in by_id(remote)]
    assert [p.run_id for p in local.parents] == [p.run_id for p in remote.parents]  # newest first
    text = status_table(local)
    assert text == status_table(remote)
    assert "gone-1" not in text  # deleted experiment
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    # a (max) and b (min) over the FINISHED full-budget trials with a finite value: 0.5 and 0.2;
    # 0.1 stopped early, NaN, 0.05 failed and 0.01 deleted never count
    assert rows["a-1"].endswith("mae=0.5 (best of 2 full-budget trials)") and "FINISHED" in rows["a-1"]
    assert rows["b-1"].endswith("mae=0.2 (best of 2 full-budget trials)") and "KILLED" in rows["b-1"]
    assert sweep_status(runs_dir=runs) == text == sweep_status(runs_dir=runs, tracking_uri=uri)


def test_status_falls_back_to_mlflow_for_a_store_it_does_not_know(tmp_path: Path) -> None:
    import sqlite3

    from sweeps.report.status import read_local_store

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (id INTEGER)")
    assert read_local_store(db) is None
    assert read_local_store(tmp_path / "missing.db") is None


def test_overrides_are_validated_like_the_file_and_recorded(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    resolved = load_spec(spec, ["train.steps=40", "search.num_samples=3", "loss.psi=gaussian",
                                "train.lr=3e-4"])
    s = resolved.spec
    assert (s.train.steps, s.search.num_samples, s.loss.psi, s.train.lr) == (40, 3, "gaussian", 3e-4)
    assert resolved.overrides == ("train.steps=40", "search.num_samples=3", "loss.psi=gaussian",
                                  "train.lr=3e-4")
    # The spec artifact MLflow gets is the spec that ran, and the parent run's params follow it.
    assert resolved.spec_yaml.startswith(f"# {spec} with command-line overrides: train.steps=40")
    assert "steps: 40" in resolved.spec_yaml and resolved.flat_params()["train.steps"] == 40
    cases = {
        "train.steps=abc": ("train.steps", "valid integer"),
        "trian.steps=5": ("trian", "did you mean 'train'"),
        "train.eval_every=99": ("train.eval_every", "must be <= train.steps"),
        "search.algorithm=bayes": ("search.algorithm", "tpe"),
        "search_space.x=1": ("search_space.x", "not a section"),
    }
    for override, (field, message) in cases.items():
        with pytest.raises(SpecError) as err:
            load_spec(spec, [override])
        assert err.value.file == f"{spec} (override {override})" and err.value.field == field
        assert message in err.value.message and "(line" not in err.value.message
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        load_spec(spec, ["train.steps"])


def test_cli_override_error_is_one_line_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", str(spec), "train.steps=-3", "--runs-dir", str(runs)])
    assert res.exit_code == 2, res.output
    assert res.output.strip().count("\n") == 0
    assert res.output.startswith(f"error: {spec} (override train.steps=-3): train.steps:")
    assert not runs.exists()


def test_builtin_specs_and_trials_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("counting", "counting.yaml"):
        assert load_spec(name).path == packaged_spec_dir() / "counting.yaml"
    assert find_trial_config("counting") == packaged_spec_dir() / "trials" / "counting.yaml"
    with pytest.raises(SpecError, match=r"no built-in spec of that name; did you mean 'counting'\? \(built-in: "):
        load_spec("countin")
    (tmp_path / "counting.yaml").write_text(SPEC)  # a file of that name wins over the built-in
    assert load_spec("counting.yaml").spec.name == "everyday"
    listing = CliRunner().invoke(app, ["list"])
    assert listing.exit_code == 0
    assert "counting.yaml" in listing.output and "trials:" in listing.output
    from sl_core.registry import LOSS_FAMILY_SPECS

    assert all(f"\n  {name} " in listing.output for name in LOSS_FAMILY_SPECS)  # every built-in loss family


def test_sampler_seed_is_fresh_per_sweep_unless_given(tmp_path: Path) -> None:
    from sweeps.driver.preflight import plan_sweep

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    plans = [plan_sweep(spec, runs_dir=tmp_path / "r", check=False) for _ in range(3)]
    seeds = [p.spec.search.seed for p in plans]
    assert len(set(seeds)) == 3 and all(p.fresh_search_seed for p in plans)
    for plan in plans:  # recorded with the sweep: spec artifact, params, resume record
        assert plan.resolved.overrides[-1] == f"search.seed={plan.spec.search.seed}"
        assert plan.resolved.flat_params()["search.seed"] == plan.spec.search.seed
    given = plan_sweep(spec, runs_dir=tmp_path / "r", check=False, search_seed=7)
    assert given.spec.search.seed == 7 and not given.fresh_search_seed
    pinned = plan_sweep(spec, runs_dir=tmp_path / "r", check=False, overrides=["search.seed=3"])
    assert pinned.spec.search.seed == 3 and not pinned.fresh_search_seed


def test_run_names_a_person_can_scan() -> None:
    from sweeps.driver.tracking import trial_run_name

    cfg = tiny_trial_config(overrides={"seed": 2})
    name = trial_run_name(3, cfg, {"loss.family": "soft_label", "eta": 0.123456, "lam": 2.5,
                                   "psi": "gaussian", "lr": 0.00112})
    assert name == "t03 soft_label eta=0.12 lam=2.5 psi=gaussian lr=0.0011 s2"


def test_prepare_experiment_marks_new_and_existing_experiments_as_model_training(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from sweeps.driver.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, prepare_experiment

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    new = prepare_experiment(client, "fresh", None)
    old = client.create_experiment("old")  # a store from before: no kind
    genai = client.create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    tuned = client.create_experiment("tuned", tags={EXPERIMENT_KIND_TAG: "finetuning"})
    for name, exp_id in (("old", old), ("genai", genai), ("tuned", tuned)):
        assert prepare_experiment(client, name, None) == exp_id
    kinds = {e.name: e.tags.get(EXPERIMENT_KIND_TAG) for e in client.search_experiments()}
    assert kinds["fresh"] == kinds["old"] == kinds["genai"] == EXPERIMENT_KIND == "custom_model_development"
    assert kinds["tuned"] == "finetuning"  # a model-training kind a user chose stays
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


@pytest.mark.slow
def test_trial_progress_from_step_one_and_loss_curve_between_evaluations() -> None:
    from sweeps.trial.run import LOSS_LOG_EVERY, run_trial

    assert LOSS_LOG_EVERY == 10
    steps, reports, lines = [], [], []
    cfg = tiny_trial_config(steps=12, eval_every=6, eval_size=8)
    result = run_trial(cfg, report=lambda m, _c: reports.append(m), checkpoint=False,
                       log=lines.append, on_step=lambda s, loss: steps.append((s, loss)))
    assert [s for s, _ in steps] == list(range(1, 13))
    assert lines[0].startswith("loading model tiny") and "parameters" in lines[1]
    curves = [[p[0] for p in r["train_loss_curve"]] for r in reports]
    assert curves == [[6], [10, 12]]  # every 10 steps and at each evaluation
    # each point is the mean of the steps since the previous point
    losses = dict(steps)
    last = reports[1]["train_loss_curve"]
    assert last[0][1] == pytest.approx(sum(losses[s] for s in range(7, 11)) / 4)
    assert last[1][1] == pytest.approx((losses[11] + losses[12]) / 2)
    assert result.metrics["step"] == 12


@pytest.mark.slow
def test_cli_trial_by_name_with_overrides_shows_loading_and_a_progress_bar(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "trial", "counting", "train.steps=4",
                           "train.eval_every=4", "train.warmup_steps=1", "train.batch_size=8",
                           "task.eval_size=8", "-o", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("loading model tiny") and "step     4/4" in proc.stdout
    bar = proc.stderr.replace("\r", "\n")
    assert "train: 100%" in bar and "4/4" in bar and "loss=" in bar
    assert json.loads(out.read_text())["metrics"]["step"] == 4


def test_status_survives_odd_values_and_refuses_what_is_not_a_store(tmp_path: Path) -> None:
    """Values MLflow accepts but that are no numbers count as missing; a run folder whose
    mlflow.db is no database, or a folder, is one line and exit 2; an empty file stays empty."""
    from mlflow.tracking import MlflowClient

    from sweeps.store import paths
    from sweeps.cli import app

    runs = tmp_path / "runs"
    runs.mkdir()
    client = MlflowClient(paths.default_tracking_uri(runs))
    exp = client.create_experiment("odd")
    parent = client.create_run(exp, tags={"slsweep.kind": "sweep", "slsweep.sweep_id": "odd-1",
                                          "metric.name": "acc"}).info.run_id
    client.log_metric(parent, "trials_total", float("nan"))
    for steps, last in (("ten", "10"), ("10", "")):
        trial = client.create_run(exp, tags={"slsweep.kind": "trial", "slsweep.sweep_id": "odd-1",
                                             "last_step": last}).info.run_id
        client.log_param(trial, "train.steps", steps)
        client.log_metric(trial, "acc", 0.5)
        client.set_terminated(trial)
    res = CliRunner().invoke(app, ["status", "--runs-dir", str(runs)])
    assert res.exit_code == 0 and "odd-1" in res.output, res.output

    runner = CliRunner()
    for name, make in (("junk", lambda db: db.write_text("not a database")), ("dir", lambda db: db.mkdir())):
        folder = tmp_path / name
        folder.mkdir()
        make(folder / "mlflow.db")
        res = runner.invoke(app, ["status", "--runs-dir", str(folder)])
        assert res.exit_code == 2 and "mlflow.db: --runs-dir:" in res.output, (name, res.output)
        assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1, res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "mlflow.db").touch()
    res = runner.invoke(app, ["status", "--runs-dir", str(empty)])
    assert res.exit_code == 0 and "no sweeps recorded" in res.output
    assert (empty / "mlflow.db").stat().st_size == 0  # status never writes into a store
