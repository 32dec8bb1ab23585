"""The seed promise under concurrency (issue 24): the same `search.seed` proposes the same
configurations whichever of two running trials finishes first.

The searcher is driven through Ray Tune's Searcher API (`suggest`, `on_trial_complete`) as Tune's
controller drives it, with real Optuna samplers and the default search space, under several
finishing orders of `max_concurrent: 2` slots; `test_seeded_tpe_sweep_twice_under_concurrency` runs
a real sweep twice through Ray Tune."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from sweeps.store import paths
from sweeps.driver.ordered_history import OrderedTPESampler
from sweeps.driver.preflight import plan_sweep
from sweeps.driver.tracking import OPTUNA_TRIAL_KEY
from sweeps.driver.tuner import RunFolderOptunaSearch

SLOTS, TRIALS = 2, 12


def _space():
    return plan_sweep("default", runs_dir=Path("unused"), check=False).resolved.space


def _score(config: dict) -> float:
    """A deterministic result of a configuration (what a deterministic trial would report)."""
    return float(sum(v for v in config.values() if isinstance(v, (int, float)) and not isinstance(v, bool)) % 7.0)


def _proposals(sampler: optuna.samplers.BaseSampler, finish_order_seed: int) -> list[dict]:
    """Run TRIALS trials SLOTS at a time; a trial's duration is drawn by `finish_order_seed`, so the
    order in which running trials finish differs from schedule to schedule."""
    space = _space()
    searcher = RunFolderOptunaSearch(space=space.define_by_run, metric="m", mode="max", sampler=sampler)
    durations = random.Random(finish_order_seed)
    running: dict[str, float] = {}  # trial id -> time it finishes
    proposals: list[dict] = []
    now, waited = 0.0, 0
    while len(proposals) < TRIALS or running:
        while len(running) < SLOTS and len(proposals) < TRIALS:
            trial_id = f"t{len(proposals) + waited}"
            config = searcher.suggest(trial_id)
            if config is None:  # not yet: Tune asks again at its next step
                waited += 1
                break
            config.pop(OPTUNA_TRIAL_KEY, None)
            proposals.append(config)
            running[trial_id] = now + durations.uniform(1.0, 10.0)
        trial_id = min(running, key=running.get)
        now = running.pop(trial_id)
        searcher.on_trial_complete(trial_id, result={"m": _score(proposals[searcher._ot_trials[trial_id].number])})
    return proposals


def _tpe(ordered: bool) -> optuna.samplers.BaseSampler:
    kwargs = dict(seed=11, n_startup_trials=2, multivariate=True, group=True)
    return OrderedTPESampler(lag=SLOTS, **kwargs) if ordered else optuna.samplers.TPESampler(**kwargs)


def test_tpe_with_a_seed_proposes_the_same_under_any_finishing_order() -> None:
    runs = [_proposals(_tpe(ordered=True), order) for order in range(4)]
    assert all(r == runs[0] for r in runs[1:])
    assert len({repr(sorted(c.items())) for c in runs[0]}) > 1  # it does search


def test_plain_tpe_would_not_keep_the_promise_under_these_orders() -> None:
    """The finishing orders above do change what plain TPE proposes (the test above can fail)."""
    runs = [_proposals(_tpe(ordered=False), order) for order in range(4)]
    assert any(r != runs[0] for r in runs[1:])


def test_random_sampler_with_a_seed_proposes_the_same_under_any_finishing_order() -> None:
    runs = [_proposals(optuna.samplers.RandomSampler(seed=5), order) for order in range(3)]
    assert all(r == runs[0] for r in runs[1:])


def test_seeds_of_a_configuration_give_optuna_the_mean_at_each_step() -> None:
    """`search.seeds: 2`: the Optuna trial of a configuration gets intermediate values at its
    training steps (the mean over its seeds at each step both reached), not at the last step
    only; the curve ends at the trial's value (the mean of the seeds' final values)."""
    from sweeps.driver.tuner import _SeedRepeater

    searcher = RunFolderOptunaSearch(space=_space().define_by_run, metric="m", mode="min",
                                     sampler=optuna.samplers.RandomSampler(seed=3))
    searcher.max_steps = 30
    repeater = _SeedRepeater(searcher, repeat=2, set_index=True)
    assert repeater.suggest("a") is not None and repeater.suggest("b") is not None  # seeds 0 and 1
    curves = {"a": {10: 3.0, 20: 2.0, 30: 1.0}, "b": {10: 5.0, 20: 4.0, 30: 2.0}}
    for step in (10, 20):  # the seeds interleave, as two running trials do
        for trial_id in ("a", "b"):
            repeater.on_trial_result(trial_id, {"m": curves[trial_id][step], "step": step})
    for trial_id in ("a", "b"):
        repeater.on_trial_complete(trial_id, result={"m": curves[trial_id][30], "step": 30})
    (trial,) = searcher._ot_study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == pytest.approx(1.5)
    assert trial.intermediate_values == {10: 4.0, 20: 3.0, 30: 1.5}


def test_one_slot_is_plain_tpe() -> None:
    """lag 1 (max_concurrent 1): trial k sees trials 0 .. k-1, as plain TPE run one at a time."""
    global SLOTS
    saved, SLOTS = SLOTS, 1
    try:
        ordered = _proposals(OrderedTPESampler(lag=1, seed=4, n_startup_trials=2, multivariate=True, group=True), 0)
        plain = _proposals(optuna.samplers.TPESampler(seed=4, n_startup_trials=2, multivariate=True, group=True), 0)
    finally:
        SLOTS = saved
    assert ordered == plain


SPEC = """
name: seed-order
task: {name: counting, eval_size: 4, train_size: 32}
model: {path: tiny}
train: {steps: 4, batch_size: 4, lr: 1.0e-3, warmup_steps: 0, eval_every: 4, max_new_tokens: 4}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
search_space:
  name: lr_eta
  params:
    lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true, target: train.lr}
    eta: {type: float, low: 0.0, high: 0.5, target: loss.eta}
search: {algorithm: tpe, num_samples: 5, max_concurrent: 2, seed: 21}
scheduler: {type: fifo}
metric: {name: train_loss, mode: min}
resources: {cpu: 1, gpu: 0}
"""


@pytest.mark.slow
def test_seeded_tpe_sweep_twice_under_concurrency(tmp_path: Path) -> None:
    """A real sweep (Ray Tune, 2 trials at a time, FIFO) run twice with the same seed proposes the
    same configurations, in the same Optuna trial numbers; the 'not yet' answers do not stall it.

    Also what it prints: by default (the first run) the progress lines and the summary only, each
    trial under its MLflow run name (the summary's `tNN`), which the Optuna trial holds as
    `mlflow_run_name`; `-v` (the second) brings Ray Tune's status tables back."""
    (tmp_path / "spec.yaml").write_text(SPEC)
    proposed, printed = [], []
    for i, flags in enumerate(([], ["-v"])):
        runs = tmp_path / f"runs{i}"
        proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "run", "spec.yaml", "--runs-dir", str(runs), *flags],
                              cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        printed.append(proc.stdout + proc.stderr)
        storage = optuna.storages.RDBStorage(paths.optuna_storage_uri(runs))
        (study,) = optuna.study.get_all_study_summaries(storage)
        trials = optuna.load_study(study_name=study.study_name, storage=storage).trials
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5
        proposed.append([t.params for t in trials])
        client = MlflowClient(paths.default_tracking_uri(runs))
        (exp,) = [e for e in client.search_experiments() if e.name == "seed-order"]
        children = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'")
        names = {r.info.run_name for r in children}
        assert {t.user_attrs["mlflow_run_name"] for t in trials} == names
        for run in children:  # Ray's and Optuna's names are tags of the run
            number = int(run.data.tags["optuna.trial_number"])
            assert trials[number].user_attrs["mlflow_run_id"] == run.info.run_id and run.data.tags["trial_id"]
            if i == 0:
                assert f"{run.info.run_name}: finished" in proc.stderr
                short = run.info.run_name.split()[0]  # the summary's trial column
                assert re.search(rf"^\s*{short}\s+ok\s", proc.stdout, re.M), proc.stdout
    assert proposed[0] == proposed[1]
    for noise in ("Trial status", "Configuration for experiment", "Current time", " INFO "):
        assert noise not in printed[0], noise
    assert "Trial status" in printed[1]
