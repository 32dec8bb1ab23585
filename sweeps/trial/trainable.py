"""The trial as Ray Tune runs it, in the trial worker: config resolution and the function trainable.

Kept apart from `sweeps.driver.tuner` (the driver side: Tuner, search, scheduler, MLflow tracker) so
that a trial worker imports only Tune's trainable API and the trial itself, not MLflow, Optuna or
the driver's planning code: a worker starts about a second sooner.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray
from ray import tune

from sweeps.config.trial_config import TrialConfig
from sweeps.config.space import SearchSpace
from sweeps.trial.run import TrialResult, run_trial
from sweeps.trial.train_job import WorkerPlan, run_train_job

IMPORTED_AT = time.time()  # when this worker had imported the trial code (epoch seconds)

TRIAL_INDEX = "__trial_index__"
BASELINE_ARM = "__baseline__"  # a Tune config's baseline arm (index into the spec's `baselines`)
# A JSON-lines file each trial worker appends its timings to (benchmarks/sweep_overhead.py).
TRIAL_TIMES_ENV = "SLSWEEP_TRIAL_TIMES"
GRID_POINT = "point"


# -- config resolution (shared by the trial worker and the driver-side tracker) ---------------------
def sampled_params(config: dict[str, Any]) -> dict[str, Any]:
    """The search-space values of one Tune trial config (grid points are nested under `point`);
    none for a baseline arm."""
    if isinstance(config.get(GRID_POINT), dict):
        return {k: v for k, v in config[GRID_POINT].items() if not k.startswith("__")}
    return {k: v for k, v in config.items() if not k.startswith("__") and k != "seed"}


def baseline_arm(config: dict[str, Any] | None) -> int | None:
    """The index of the spec's baseline arm a Tune trial config runs (`BASELINE_ARM`, at the top
    for tpe/random, inside the grid point for a grid), or None for a searched configuration."""
    config = config or {}
    arm = config.get(BASELINE_ARM)
    if arm is None and isinstance(config.get(GRID_POINT), dict):
        arm = config[GRID_POINT].get(BASELINE_ARM)
    return None if arm is None else int(arm)


def resolve_trial_config(base: TrialConfig, space: SearchSpace, config: dict[str, Any],
                         arms: Sequence[dict[str, Any]] = ()) -> TrialConfig:
    """The full trial config: the spec's base, the sampled values (or, for a baseline arm, the
    arm's overrides from `ResolvedSpec.arm_overrides`), and the seed (the base's seed,
    ``search.first_seed``, plus the seed index)."""
    arm = baseline_arm(config)
    if arm is not None:
        overrides = dict(arms[arm])
    else:
        overrides = space.to_overrides(sampled_params(config))
    overrides["seed"] = base.seed + int(config.get(TRIAL_INDEX, config.get("seed", 0)))
    return base.with_overrides(overrides)


class Resolver:
    """Picklable `config -> TrialConfig` (Tune ships the tracker and trainable around)."""

    def __init__(self, base: TrialConfig, space: SearchSpace, arms: Sequence[dict[str, Any]] = ()) -> None:
        self.base, self.space, self.arms = base, space, list(arms)

    def __call__(self, config: dict[str, Any]) -> TrialConfig:
        # (Resolvers pickled before baseline arms existed have no `arms`.)
        return resolve_trial_config(self.base, self.space, config, self.__dict__.get("arms", ()))

    def space_values(self, config: dict[str, Any]) -> dict[str, Any]:
        """The search-space values a trial ran with, by space parameter name: the sampled ones;
        for a baseline arm (nothing sampled), its resolved config's value at each parameter's
        target (`train.lr` of the spec's base, `loss.family: hard`; a parameter its loss family
        does not use is absent), so tables and plots show what it ran with, not a gap."""
        if baseline_arm(config) is None:
            return sampled_params(config)
        flat = self(config).flatten()
        return {name: flat[target] for name, target in self.space.targets.items() if target in flat}


# -- the trial as Tune runs it --------------------------------------------------------------------
def _limit_threads() -> None:
    """Use as many torch threads as CPUs Ray gave this trial, no more (trials share the host)."""
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))


def tune_trainable(config: dict[str, Any], *, resolver: Resolver, workers: WorkerPlan | None = None) -> None:
    """Ray Tune function trainable: resolve, restore if Tune hands a checkpoint, train, report.

    With `workers` (a sweep with `resources.workers > 1`) the trial is a Ray Train job of that many
    processes instead (`sweeps.trial.train_job`)."""
    if workers is not None:
        run_train_job(config, resolver, workers)
        return
    cfg = resolver(config)
    _limit_threads()
    # Tune logs "Checkpoint successfully created at: ..." (INFO) in the worker for every report
    # with a checkpoint; forwarded to the driver's console, that is one line per evaluation.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    # Where the trial runs: the Ray node (an MLflow tag) and the worker process (fault drills
    # and operators find the process to inspect or kill by it).
    node, pid = ray.get_runtime_context().get_node_id(), os.getpid()

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        payload = {**metrics, "node": node, "pid": pid}
        if checkpoint_dir is None:
            tune.report(payload)
        else:
            tune.report(payload, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))

    started = time.time()
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        result = run_trial(cfg, report=report)
    else:
        with checkpoint.as_directory() as folder:
            result = run_trial(cfg, report=report, resume_from=Path(folder))
    if os.environ.get(TRIAL_TIMES_ENV):
        _record_times(Path(os.environ[TRIAL_TIMES_ENV]), started, result)


def _record_times(path: Path, started: float, result: TrialResult) -> None:
    """Append this trial's timings (wall-clock start/end in epoch seconds, then the phases of
    `TrialResult` in seconds) to `path` as one JSON line."""
    row = {"trial_id": tune.get_context().get_trial_id(), "pid": os.getpid(), "imported": IMPORTED_AT,
           "start": started,
           "end": time.time(), **{k: getattr(result, k) for k in
                                  ("seconds", "setup_s", "train_s", "eval_s", "report_s", "steps")}}
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
