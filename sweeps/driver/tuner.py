"""Run a sweep: Ray Tune Tuner + OptunaSearch (or a grid) + ASHA/FIFO + the MLflow tracker.

Planning and its checks live in `sweeps.driver.preflight` (`plan_sweep`: bad input leaves no experiment,
run or folder behind), the Ray environment in `sweeps.driver.ray_env`; this module assembles the Tuner
(trainable, search algorithm, scheduler, time limits, tracker), runs or resumes it (`execute`,
`resume`) and keeps the Optuna study truthful afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from ray import tune
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Repeater, SearchGenerator, Searcher
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.optuna import OptunaSearch

from sweeps.store import names
from sweeps.store import paths, schema
from sweeps.errors import SlsweepError, SweepFailed
from sweeps.driver import tune_internals as internals
from sweeps.driver.ordered_history import OrderedTPESampler, history_ready
from sweeps.driver.preflight import SweepPlan
from sweeps.errors import one_line
from sweeps.driver.ray_env import (check_cluster_resources, init_ray, placeable_trials, reuse_workers,
                                   warm_trial_workers)
from sweeps.driver.signals import StopSignals, SweepInterrupted, signals_held
from sweeps.driver.progress import SweepProgress, quiet_output
from sweeps.config.space import SearchSpace
from sweeps.driver.tracking import OPTUNA_TRIAL_KEY, SweepInfo, SweepTracker
from sweeps.trial.train_job import DRIVER_RESOURCES, WorkerPlan
from sweeps.trial.trainable import (BASELINE_ARM, GRID_POINT, TRIAL_INDEX, Resolver, baseline_arm, sampled_params,
                              tune_trainable)

log = logging.getLogger(__name__)
_Resolver = Resolver  # the name Tune states saved before sweeps.trial.trainable existed refer to
# -- running ---------------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    """What a finished sweep left behind."""

    plan: SweepPlan
    results: Any            # ray.tune.ResultGrid
    parent_run_id: str | None
    seconds: float
    ray_init_seconds: float
    logging_seconds: float = 0.0
    interrupted: int | None = None  # the signal that stopped the sweep (resumable), or None
    # Tune trial id -> why it ended below its budget (slsweep.stop_reason: early_stopping, ...)
    stop_reasons: dict[str, str] = field(default_factory=dict)
    # Tune trial id -> its MLflow run name (the name a trial goes by everywhere)
    run_names: dict[str, str] = field(default_factory=dict)


class _FollowRunFolder:
    """Mixin for a Tune search algorithm: trials it creates after a restore live in this run folder.

    Ray 2.60 re-roots the restored trials when an experiment was moved (`TuneController.
    _restore_trials` calls `trial.set_storage`), but a search algorithm restores the `Experiment`
    it was given, with the storage path the sweep started in: trials created after a resume in a
    moved or copied folder would write their checkpoints into the old one. `resume` sets
    `storage_fs_path` before Tune restores; each new trial is re-rooted the way Tune does it.
    """

    storage_fs_path: str | None = None

    def next_trial(self):  # noqa: ANN201 - Tune's signature
        trial = super().next_trial()  # type: ignore[misc]
        wanted = self.__dict__.get("storage_fs_path")
        if trial is not None and wanted and trial.storage.storage_fs_path != wanted:
            storage = copy.copy(trial.storage)
            storage.storage_fs_path = wanted
            trial.set_storage(storage)
        return trial


class _Grid(_FollowRunFolder, BasicVariantGenerator):
    pass


class _Search(_FollowRunFolder, SearchGenerator):
    pass


def _search_alg(plan: SweepPlan, space: SearchSpace):
    """The Tune search algorithm: Tune's own grid generator or a SearchGenerator around the
    Optuna searcher (the spec's baseline arms first, then Tune's ConcurrencyLimiter), both
    following a moved run folder."""
    limit = plan.spec.search.max_concurrent
    if plan.spec.resources.workers > 1:  # whole worker groups only: no trial waits half-placed
        placeable = placeable_trials(plan)
        if placeable < limit:
            res = plan.spec.resources
            print(f"note: search.max_concurrent {limit} -> {placeable}: the Ray cluster holds {placeable} "
                  f"trial{'s' if placeable > 1 else ''} of {res.workers} workers x {res.cpu:g} CPU"
                  f"{f' + {res.gpu:g} GPU' if res.gpu else ''} at once (no trial waits half-placed)",
                  file=sys.stderr)
        limit = min(limit, placeable)
    searcher = _searcher(plan, space)
    if searcher is None:
        return _Grid(max_concurrent=limit)
    arms = _BaselineArms(searcher, arms=len(plan.spec.baselines), seeds=plan.spec.search.seeds)
    return _Search(ConcurrencyLimiter(arms, max_concurrent=limit))


def _searcher(plan: SweepPlan, space: SearchSpace):
    spec = plan.spec
    if spec.search.strategy.is_grid:
        return None
    sampler = spec.search.strategy.build_sampler(spec.search.sampler_settings())  # sweeps.config.search
    # lazy: the pickled searcher holds the URL only, so restoring it in a moved folder opens nothing
    storage = internals.lazy_rdb_storage(paths.optuna_storage_uri(plan.runs_dir)) \
        if plan.local_store else None
    searcher = RunFolderOptunaSearch(space=space.define_by_run, metric=spec.metric.name, mode=spec.metric.mode,
                                     sampler=sampler, study_name=plan.sweep_id, storage=storage)
    searcher.max_steps = plan.resolved.base_trial_config().train.steps
    return _SeedRepeater(searcher, repeat=spec.search.seeds, set_index=True) if spec.search.seeds > 1 \
        else searcher


def is_baseline_arm(trial: Any) -> bool:
    """Whether a Tune trial is one of the spec's baseline arms (not a searched configuration)."""
    return baseline_arm(getattr(trial, "config", None)) is not None


class _BaselineArms(Searcher):
    """Searcher wrapper: the spec's baseline arms first, each on every seed, then the search.

    An arm's trial gets the config `{BASELINE_ARM: i, TRIAL_INDEX: seed index}` (the trainable
    resolves it with `ResolvedSpec.arm_overrides`); the wrapped searcher never sees it, so the
    arms are not in the Optuna study (TPE learns from the searched space only, and
    optuna-dashboard shows the search). Its state (arms still to start, arm trial ids) is saved
    with Tune's search state, so a resumed sweep does not start an arm twice.
    """

    def __init__(self, searcher: Searcher, arms: int, seeds: int) -> None:
        self.searcher = searcher
        self._pending = [(i, s) for i in range(arms) for s in range(seeds)]
        self._arm_trials: set[str] = set()
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | None:
        if self._pending:
            arm, index = self._pending.pop(0)
            self._arm_trials.add(trial_id)
            return {BASELINE_ARM: arm, TRIAL_INDEX: index}
        return self.searcher.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._arm_trials:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._arm_trials:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def get_state(self) -> dict:
        state = self.__dict__.copy()
        del state["searcher"]
        return copy.deepcopy(state)

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


class _SeedRepeater(Repeater):
    """Ray's `Repeater` (one configuration on `search.seeds` seeds; the searcher learns the mean)
    that also tells the searcher the lowest `step` its seeds reached: a configuration with a seed
    stopped early did not reach the full budget (PRUNED in Optuna, see `RunFolderOptunaSearch`),
    and passes on per-step results: at each training step every seed of a configuration reported,
    the searcher gets the mean over those seeds (Optuna's intermediate value at that step)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        group = internals.repeater_group(self, trial_id)
        metric = self.searcher.metric
        step, value = result.get("step"), result.get(metric)
        if group is None or not isinstance(step, (int, float)) or not isinstance(value, (int, float)):
            return
        per_step: dict[str, dict[int, dict[str, float]]] = self.__dict__.setdefault("_per_step", {})
        at = per_step.setdefault(group.primary_trial_id, {}).setdefault(int(step), {})
        at[trial_id] = float(value)
        if group.full() and len(at) == group.max_trials:  # every seed reached this step
            self.searcher.on_trial_result(group.primary_trial_id,
                                          {**result, metric: float(np.mean(list(at.values())))})
            del per_step[group.primary_trial_id][int(step)]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs: Any) -> None:
        group = internals.repeater_group(self, trial_id)
        if group is None:
            return super().on_trial_complete(trial_id, result, **kwargs)
        steps: dict[str, Any] = self.__dict__.setdefault("_steps", {})
        steps[trial_id] = (result or {}).get("step")
        metric = self.searcher.metric
        group.report(trial_id, (result or {}).get(metric, np.nan))
        if group.finished_reporting():
            reached = [steps.get(t) for t in internals.group_trial_ids(group)]
            step = min(reached) if all(isinstance(x, (int, float)) for x in reached) else None
            self.searcher.on_trial_complete(
                group.primary_trial_id, result={metric: np.nanmean(group.scores()), "step": step}, **kwargs)


def _param_space(plan: SweepPlan, space: SearchSpace) -> dict[str, Any]:
    spec = plan.spec
    if spec.search.strategy.is_grid:  # the baseline arms are more grid points
        arms = [{BASELINE_ARM: i} for i in range(len(spec.baselines))]
        return {GRID_POINT: tune.grid_search(space.grid() + arms),
                TRIAL_INDEX: tune.grid_search(list(range(spec.search.seeds)))}
    return {TRIAL_INDEX: 0} if spec.search.seeds == 1 else {}


def _scheduler(plan: SweepPlan):
    sched = plan.spec.scheduler
    if sched.type == "fifo":
        scheduler = _FIFO()
    else:
        train = plan.resolved.base_trial_config().train
        scheduler = _ASHA(time_attr="step", max_t=sched.max_t or train.steps,
                          grace_period=sched.grace_period or train.eval_every,
                          reduction_factor=sched.reduction_factor)
    scheduler.trial_seconds = plan.spec.limits.trial_seconds
    return scheduler


def git_commit() -> str:
    """The code version recorded on every sweep (git commit of the package checkout, if any)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def sweep_info(plan: SweepPlan) -> SweepInfo:
    spec, space = plan.spec, plan.resolved.space
    from sweeps import __version__

    # one safe folder per experiment: its name is data, never a path (sweeps.store.names)
    artifacts = names.artifacts_dir(plan.runs_dir, plan.experiment).as_uri() if plan.local_store else None
    return SweepInfo(
        sweep_id=plan.sweep_id, spec_name=spec.name, experiment=plan.experiment,
        metric=spec.metric.name, mode=spec.metric.mode,
        max_steps=plan.resolved.base_trial_config().train.steps,
        spec_yaml=plan.resolved.spec_yaml, space_yaml=space.to_yaml(),
        space_source=space.source, space_hash=space.hash,
        spec_params=plan.resolved.flat_params(),
        tags={schema.GIT_COMMIT_TAG: git_commit(), schema.VERSION_TAG: __version__,
              schema.RAY_ADDRESS_TAG: plan.address or "local"},
        artifact_location=artifacts,
        optuna_storage=paths.optuna_storage_uri(plan.runs_dir)
        if plan.local_store and not spec.search.strategy.is_grid else None)


class TrialTimeoutError(RuntimeError):
    """A trial ran longer than the spec's `limits.trial_seconds` (the driver ended it)."""

    def __str__(self) -> str:  # Tune's error file holds str(exc): keep the kind in it
        return f"{type(self).__name__}: {super().__str__()}"


class _TimeLimits:
    """Mixin for a Tune scheduler: the driver-side trial wall-clock limit.

    A result-based stop (`stop={"time_total_s": ...}`) never fires for a trial that stopped
    reporting (a hung worker), so the limit is checked on every controller step: Tune asks the
    scheduler `choose_trial_to_run` each step. A trial RUNNING for longer than `trial_seconds`
    (this attempt, in seconds) is failed with `TrialTimeoutError` through the controller's
    failure path: Tune writes the error, the searcher and the MLflow tracker see an errored trial
    (MLflow FAILED, `slsweep.stop_reason=timeout`), `failure.max_failures` may retry it, and its
    worker is stopped (`TUNE_FORCE_TRIAL_CLEANUP_S` bounds the wait for a hung one).
    """

    trial_seconds: float | None = None

    def choose_trial_to_run(self, tune_controller):  # noqa: ANN001, ANN201 - Tune's signature
        if self.trial_seconds:
            self._enforce_time_limit(tune_controller)
        return super().choose_trial_to_run(tune_controller)  # type: ignore[misc]

    def _enforce_time_limit(self, wrapped) -> None:  # noqa: ANN001
        from ray.tune.experiment import Trial

        started: dict[str, float] = self.__dict__.setdefault("_running_since", {})
        now = time.monotonic()
        controller = internals.scheduler_controller(wrapped)
        for trial in controller.get_live_trials():
            if trial.status != Trial.RUNNING:
                started.pop(trial.trial_id, None)
                continue
            since = started.setdefault(trial.trial_id, now)
            if now - since > self.trial_seconds:
                started.pop(trial.trial_id, None)
                log.warning("trial %s ran %.0f s, over limits.trial_seconds=%g: ending it",
                            trial, now - since, self.trial_seconds)
                internals.fail_trial(controller, trial, TrialTimeoutError(
                    f"trial ran {now - since:.0f} s, longer than limits.trial_seconds="
                    f"{self.trial_seconds:g}"))


class _FIFO(_TimeLimits, FIFOScheduler):
    pass


class _ASHA(_TimeLimits, ASHAScheduler):
    """ASHA over the searched trials; a baseline arm is never stopped early and never sets a
    rung's cutoff (it is the fixed comparison, run at full budget on every seed)."""

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:  # noqa: ANN001
        if is_baseline_arm(trial):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:  # noqa: ANN001
        if is_baseline_arm(trial):
            internals.asha_forget_trial(self, trial.trial_id)
            return
        super().on_trial_complete(tune_controller, trial, result)


def _create_stores(plan: SweepPlan) -> None:
    """Create the run folder's MLflow and Optuna SQLite stores and the experiment, once.

    Two drivers starting together on a fresh folder would both run the stores' schema creation;
    a file lock in the run folder makes the second wait for the first (filelock: fcntl on
    POSIX, released if the holder dies). A tracking server needs no lock (it creates its own
    store); creating the experiment there tolerates a concurrent creation.
    """
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    from sweeps.driver.tracking import prepare_experiment

    info = sweep_info(plan)
    if not plan.local_store:
        prepare_experiment(MlflowClient(plan.tracking_uri), info.experiment, info.artifact_location)
        return
    with FileLock(str(plan.runs_dir / paths.STORE_LOCK), timeout=120):
        paths.relocate_store(plan.runs_dir)  # a moved or copied folder writes only itself
        paths.keep_reserve(plan.runs_dir)
        prepare_experiment(MlflowClient(plan.tracking_uri), info.experiment, info.artifact_location)
        # MLflow creates its `Default` experiment with the store, at <current folder>/mlruns/0:
        # point it (and any other experiment outside) inside the run folder now.
        paths.relocate_store(plan.runs_dir)
        if not plan.spec.search.strategy.is_grid:
            optuna.storages.RDBStorage(paths.optuna_storage_uri(plan.runs_dir))


def _start_ray_and_stores(plan: SweepPlan, verbose: int) -> float:
    """Start or join Ray and create the run folder's stores; returns Ray's start-up seconds.

    On a local Ray (whose size the preflight has already checked) the two overlap: Ray's start-up
    mostly waits for its processes, while creating the stores is this process's CPU work (MLflow's
    schema on a fresh folder: about 1 s). Joining a cluster, the stores are created only once a
    node that can hold a trial exists: `check_cluster_resources` may refuse after its wait, and
    then nothing has been created.
    """
    if not plan.local_ray:
        ray_seconds = init_ray(plan, quiet=verbose == 0)
        check_cluster_resources(plan)
        _create_stores(plan)
        return ray_seconds
    with ThreadPoolExecutor(1, thread_name_prefix="slsweep-stores") as pool:
        stores = pool.submit(_create_stores, plan)
        ray_seconds = init_ray(plan, quiet=verbose == 0)
        stores.result()  # its error, if any, as if raised here
    check_cluster_resources(plan)
    return ray_seconds


def failure_line(exc: BaseException) -> str:
    """What went wrong, in one line, with what to do about it."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:  # the root cause is often a few causes down
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for err in chain:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" ({err.filename})" if getattr(err, "filename", None) else ""
            return (f"disk full{where}: free space, then `slsweep resume` continues the sweep "
                    "from its last saved state")
    text = "database or disk is full"
    for err in chain:
        if text in str(err):
            return (f"{text} (the MLflow/Optuna store): free space, then `slsweep resume` continues "
                    "the sweep from its last saved state")
    for err in chain:
        said = one_line(str(err))
        if isinstance(err, ConnectionError) or "Max retries exceeded" in said or "Connection refused" in said:
            return (f"the tracking store stopped answering ({type(err).__name__}: {said[:200]}); bring it "
                    "back, then `slsweep resume` continues the sweep from its last saved state")
    root = chain[-1]
    return (f"the sweep's driver failed: {type(root).__name__}: {one_line(root)[:300]}; "
            "fix the cause, then `slsweep resume` continues the sweep from its last saved state")


def _fit(tuner: Any, tracker: SweepTracker, runs_dir: Path, warm: bool = False) -> tuple[Any, int | None]:
    """`tuner.fit()` with the sweep's signal handling; returns (results, signal or None). `warm`:
    the trial actors take the local Ray's warm workers (`sweeps.driver.ray_env.warm_trial_workers`).

    First SIGINT/SIGTERM: Tune stops gracefully (state saved, trials stopped, resumable) and the
    tracker closes the sweep as interrupted. Second one (or one before Tune started): the runs
    this driver opened are closed as interrupted and `SweepInterrupted` is raised. Any other
    error: the runs are closed as `driver_error` and `SweepFailed` (one line) is raised.
    """
    with StopSignals() as stop:
        try:
            with stop.tuning():
                tracker.stop_reason = None
                with internals.trainables_in_job_env() if warm else contextlib.nullcontext():
                    results = _fit_marking(tuner, tracker, stop)
        except KeyboardInterrupt:
            with signals_held():  # a further signal must not leave runs RUNNING
                tracker.abort("interrupted")
            raise SweepInterrupted(stop.signum or signal.SIGINT, forced=True) from None
        except Exception as exc:  # noqa: BLE001 - every crash ends as one line and a true record
            line = failure_line(exc)
            log.debug("sweep failed", exc_info=True)
            if line.startswith(("disk full", "database or disk is full")):
                paths.free_reserve(runs_dir)  # room to close the runs
            with signals_held():
                problems = tracker.abort("driver_error", line)
            if problems:
                line += f" (could not close {len(problems)} MLflow run(s): {problems[0]})"
            raise SweepFailed(line) from exc
    return results, stop.signum


def _fit_marking(tuner: Any, tracker: SweepTracker, stop: StopSignals) -> Any:
    # The tracker must know the sweep was interrupted before Tune calls its on_experiment_end:
    # a Tune callback sees every controller step, so it copies the signal across.
    marker = _StopReason(stop, tracker, internals.tuner_time_budget_s(tuner))
    callbacks = internals.tuner_run_config(tuner).callbacks  # same list Tune will use
    callbacks.insert(0, marker)  # before the tracker: its on_experiment_end closes the sweep
    try:
        with warnings.catch_warnings():
            # A restarted multi-worker trial reports its checkpoint's evaluation again
            # (`sweeps.trial.REPLAYED`); Optuna keeps the first report of a step, and says so.
            warnings.filterwarnings("ignore", message="The reported value is ignored because this step")
            return tuner.fit()
    finally:
        callbacks.remove(marker)


class _StopReason(tune.Callback):
    """Tells the tracker why the sweep ends early, before Tune calls its on_experiment_end:
    `interrupted` (a stop signal) or `sweep_time_limit` (Tune's `time_budget_s` ran out)."""

    def __init__(self, stop: StopSignals, tracker: SweepTracker, budget_s: float | None) -> None:
        self.stop, self.tracker, self.budget_s = stop, tracker, budget_s
        self.t0 = time.monotonic()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.stop.signum is not None:
            self.tracker.stop_reason = "interrupted"
        elif self.budget_s and time.monotonic() - self.t0 >= self.budget_s - 1.0:
            self.tracker.stop_reason = "sweep_time_limit"

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.on_step_end(0, trials)

    def __reduce__(self):  # noqa: ANN204 - saved with the Tuner as a no-op callback
        return (tune.Callback, ())


def _tuner_tracker(tuner: Any) -> SweepTracker:
    return next(c for c in internals.tuner_run_config(tuner).callbacks if isinstance(c, SweepTracker))


def execute(plan: SweepPlan, *, verbose: int = 1, callbacks: list | None = None) -> SweepOutcome:
    """Run the planned sweep to the end (Ray, Tuner, MLflow).

    Raises:
        SweepInterrupted: a second stop signal forced the stop (the sweep stays resumable).
        SweepFailed: the driver failed (disk full, store unreachable, ...); one line.
    """
    t0 = time.perf_counter()
    spec, space = plan.spec, plan.resolved.space
    plan.runs_dir.mkdir(parents=True, exist_ok=True)
    ray_seconds = _start_ray_and_stores(plan, verbose)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    _limit_cleanup_wait(plan)
    resolver = Resolver(plan.resolved.base_trial_config(), space, plan.resolved.arm_overrides())
    tracker = SweepTracker(plan.tracking_uri, sweep_info(plan), resolver, sampled_params, resolver.space_values)
    trainable = _trainable_for(plan, resolver)
    num = 1 if spec.search.strategy.is_grid else plan.resolved.trial_count  # baseline arms included
    tuner = tune.Tuner(
        trainable,
        param_space=_param_space(plan, space),
        tune_config=tune.TuneConfig(search_alg=_search_alg(plan, space), scheduler=_scheduler(plan),
                                    num_samples=num, metric=spec.metric.name, mode=spec.metric.mode,
                                    # the limit is inside the search algorithm (_search_alg)
                                    reuse_actors=reuse_workers(plan),
                                    time_budget_s=spec.limits.sweep_seconds),
        run_config=tune.RunConfig(
            name=plan.sweep_id, storage_path=str(plan.storage_dir),
            # MLflow is the record; Tune's own CSV/JSON results stay, its TensorBoard logger (which
            # warns on every non-numeric result such as the sample predictions) does not.
            callbacks=[tracker, CSVLoggerCallback(), JsonLoggerCallback(), *(callbacks or [])],
            failure_config=tune.FailureConfig(max_failures=spec.failure.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=verbose),
    )
    return _run_tuner(plan, tuner, tracker, t0, ray_seconds, verbose)


def _run_tuner(plan: SweepPlan, tuner: Any, tracker: SweepTracker, t0: float,
               ray_seconds: float, verbose: int = 1) -> SweepOutcome:
    run_config = internals.tuner_run_config(tuner)
    run_config.verbose = verbose  # a restored Tuner would keep the verbosity it started with
    # CheckpointConfig(num_to_keep=1) bounds the disk a sweep uses, and makes Tune snapshot its
    # experiment state after each trial checkpoint so the deleted checkpoint is never referenced.
    # Tune then warns, at every evaluation of short trials, that snapshots are frequent: they are
    # meant to be, and the warning has its own Tune setting.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Progress (overall bar, a line per trial event) is a display: added for this fit only.
    progress = SweepProgress(plan.resolved.trial_count, plan.resolved.base_trial_config().train.steps,
                             plan.spec.metric.name, name=tracker.run_name)
    run_config.callbacks.append(progress)
    try:
        with quiet_output(verbose == 0):
            results, signum = _fit(tuner, tracker, plan.runs_dir, warm=warm_trial_workers(plan) > 0)
    finally:
        run_config.callbacks.remove(progress)
        progress.on_experiment_end([])
    if signum is not None and plan.local_ray:
        # Stop this driver's local Ray now: a trial worker still finishing a step must not write
        # into the run folder after the driver has said the sweep stopped. With the processes its
        # raylet started (Ray's own shutdown leaves the dashboard and runtime-env agents running).
        internals.stop_local_ray()
        _end_trial_workers(results)
    # Optuna trials of an interrupted sweep stay open: `slsweep resume` finishes them.
    close_orphan_study_trials(plan, all_trials_ended=signum is None and _all_ended(results))
    return SweepOutcome(plan=plan, results=results, parent_run_id=tracker.parent_run_id,
                        seconds=time.perf_counter() - t0, ray_init_seconds=ray_seconds,
                        logging_seconds=tracker.logging_seconds, interrupted=signum,
                        stop_reasons=dict(tracker.stop_reasons), run_names=dict(tracker.run_names))


def _end_trial_workers(results: Any, wait_s: float = 3.0) -> list[int]:
    """After a local Ray was shut down: wait for the trial worker processes (their pids are in
    every result) to exit, SIGKILL those still alive after `wait_s`; returns the pids killed.

    A worker busy in a training step notices its raylet is gone only after that step, and could
    still write a checkpoint into the run folder after the driver reported the sweep stopped.
    """
    pids = {int(p) for r in results for p in [(r.metrics or {}).get("pid"), *(r.metrics or {}).get("worker_pids", ())]
            if isinstance(p, int)}  # a multi-worker trial's workers too
    pids.discard(os.getpid())

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        try:  # a zombie is gone for our purpose
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return True

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    killed = []
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
    return killed


def _limit_cleanup_wait(plan: SweepPlan) -> None:
    """A trial ended for its time limit may be hung: bound Tune's wait for its worker to stop."""
    if plan.spec.limits.trial_seconds:
        os.environ.setdefault("TUNE_FORCE_TRIAL_CLEANUP_S", "10")


def _trainable_for(plan: SweepPlan, resolver: Resolver):
    """The Tune trainable with its resources: one process of `resources.cpu`/`gpu`, or, with
    `resources.workers > 1`, a trial that reserves nothing itself and runs a Ray Train job of that
    many workers (`sweeps.trial.train_job`)."""
    res = plan.spec.resources
    if res.workers == 1:
        return tune.with_resources(tune.with_parameters(tune_trainable, resolver=resolver),
                                   {"cpu": res.cpu, "gpu": res.gpu})
    workers = WorkerPlan(workers=res.workers, cpu=res.cpu, gpu=res.gpu, strategy=res.strategy,
                         storage=str(plan.storage_dir / plan.sweep_id), max_failures=plan.spec.failure.max_failures)
    return tune.with_resources(tune.with_parameters(tune_trainable, resolver=resolver, workers=workers),
                               DRIVER_RESOURCES)


def resume(plan: SweepPlan, *, verbose: int = 1) -> SweepOutcome:
    """Continue `plan.sweep_id` from Tune's experiment state: finished trials stay finished,
    unfinished ones continue from their last checkpoint, the tracker reuses their MLflow runs.

    The run folder may have been moved or copied since: the restored tracker and Optuna searcher
    are pointed at this folder's stores, never the ones the sweep started with.
    """
    t0 = time.perf_counter()
    path = plan.storage_dir / plan.sweep_id
    if not tune.Tuner.can_restore(str(path)):
        raise SlsweepError(f"{path}: sweep_id: no Ray Tune experiment state to resume")
    ray_seconds = _start_ray_and_stores(plan, verbose)
    _limit_cleanup_wait(plan)
    resolver = Resolver(plan.resolved.base_trial_config(), plan.resolved.space, plan.resolved.arm_overrides())
    tuner = tune.Tuner.restore(str(path), trainable=_trainable_for(plan, resolver),
                               resume_unfinished=True, resume_errored=True)
    tracker = _tuner_tracker(tuner)
    tracker.tracking_uri, tracker._client = plan.tracking_uri, None
    if tracker.info.optuna_storage and plan.local_store:  # the study of this (maybe moved) folder
        tracker.info.optuna_storage, tracker._study_storage = paths.optuna_storage_uri(plan.runs_dir), None
    searcher = internals.tuner_search_alg(tuner)
    if isinstance(searcher, _FollowRunFolder):
        searcher.storage_fs_path = str(plan.storage_dir)
    while searcher is not None and not isinstance(searcher, RunFolderOptunaSearch):
        searcher = getattr(searcher, "searcher", None)
    if searcher is not None and plan.local_store:
        searcher.storage_uri = paths.optuna_storage_uri(plan.runs_dir)
    return _run_tuner(plan, tuner, tracker, t0, ray_seconds, verbose)


class RunFolderOptunaSearch(OptunaSearch):
    """OptunaSearch whose SQLite study follows its run folder.

    Tune pickles the searcher with the experiment state, storage URL included; a sweep resumed
    from a moved or copied run folder would write the study of the original folder. `resume`
    sets `storage_uri` to this folder's `optuna.db` before Tune restores the searcher; `restore`
    then re-points the unpickled storage at it. The storage is `internals.lazy_rdb_storage`:
    unpickling it opens no database, so the old folder's file is never opened (it may be gone).
    """

    storage_uri: str | None = None
    max_steps: int | None = None  # the spec's train.steps: a trial that ended below it is PRUNED

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Report the metric as an Optuna intermediate value at the trial's training step
        (`step`), not at Tune's result count (Ray reports `training_iteration`: 1, 2, ...)."""
        if isinstance(result.get("step"), (int, float)):
            result = {**result, TRAINING_ITERATION: int(result["step"])}
        super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """A trial that ended below the full budget without an error (stopped by ASHA) is PRUNED,
        as Optuna's own pruners leave such a trial; COMPLETE only at `max_steps`. Optuna's samplers
        then treat it as stopped, and importances (ours, optuna-dashboard's) use COMPLETE trials
        only, i.e. full-budget values."""
        step = (result or {}).get("step")
        self._report_last(trial_id, result)
        budget = self.__dict__.get("max_steps")  # (absent on searchers pickled before)
        completed, asked = internals.optuna_search_completed(self), internals.optuna_search_trials(self)
        if (error or not budget or not isinstance(step, (int, float)) or step >= budget
                or trial_id in completed or trial_id not in asked):
            return super().on_trial_complete(trial_id, result, error)
        try:
            internals.optuna_search_study(self).tell(asked[trial_id], state=optuna.trial.TrialState.PRUNED)
        except Exception as exc:  # noqa: BLE001 - as Ray's own tell: a study problem is a warning
            log.warning("could not mark Optuna trial of %s PRUNED: %s", trial_id, exc)
        completed.add(trial_id)

    def _report_last(self, trial_id: str, result: dict | None) -> None:
        """The result a trial ends with goes to `on_trial_complete` only (Tune never passes it to
        `on_trial_result`): record it as an intermediate value too, so the curve reaches the
        step the trial ended at (a step already reported is left as it is)."""
        step, value = (result or {}).get("step"), (result or {}).get(self.metric)
        ot_trial = internals.optuna_search_trials(self).get(trial_id)
        if (ot_trial is None or trial_id in internals.optuna_search_completed(self)
                or isinstance(self.metric, list)
                or not isinstance(step, (int, float)) or not isinstance(value, (int, float))):
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "step already reported"
            try:
                ot_trial.report(float(value), int(step))
            except Exception as exc:  # noqa: BLE001 - a NaN, a finished trial: the record stays as it is
                log.debug("could not report the last value of %s: %s", trial_id, exc)

    def suggest(self, trial_id: str) -> dict | None:
        """Optuna's suggestion, plus the Optuna trial's number under `OPTUNA_TRIAL_KEY` (the
        tracker links the MLflow run and the Optuna trial with it; not a search-space value).

        With an `OrderedTPESampler`, None ("not yet": Tune asks again at its next step) until the
        trials that proposal is made from have finished (sweeps.driver.ordered_history)."""
        study = internals.optuna_search_study(self)
        sampler = getattr(study, "sampler", None)
        asked, completed = internals.optuna_search_trials(self), internals.optuna_search_completed(self)
        if (isinstance(sampler, OrderedTPESampler) and trial_id not in asked
                and not history_ready(study, sampler.lag,
                                      ((t.number, tid in completed) for tid, t in asked.items()))):
            return None
        config = super().suggest(trial_id)
        ot_trial = internals.optuna_search_trials(self).get(trial_id)
        if isinstance(config, dict) and ot_trial is not None:
            config[OPTUNA_TRIAL_KEY] = ot_trial.number
        return config

    def restore(self, checkpoint_path: str) -> None:
        wanted = self.__dict__.get("storage_uri")
        super().restore(checkpoint_path)
        if not wanted:
            return
        self.storage_uri = wanted
        rdb = internals.rdb_storage_of(internals.optuna_search_study(self))
        if rdb is not None and rdb.url != wanted:
            internals.repoint_rdb_storage(rdb, wanted)  # a new engine on this folder's file


def _all_ended(results: Any) -> bool:
    """Whether every trial of a ResultGrid ended (finished or errored), i.e. none is resumable."""
    return results.num_terminated + results.num_errors >= len(results)


def close_orphan_study_trials(plan: SweepPlan, *, all_trials_ended: bool) -> int:
    """Mark the Optuna trials still RUNNING after every Tune trial ended as FAIL; returns how many.

    A driver killed between asking Optuna for a trial and saving Tune's experiment state leaves
    that Optuna trial RUNNING with no Tune trial behind it: the resumed sweep never finishes it.
    Once every Tune trial of the sweep has ended nothing can, so it is closed (Optuna has no
    "killed" state; FAIL keeps it out of the sampler's completed history). A sweep stopped with
    unfinished trials (Ctrl-C) is left alone: `slsweep resume` will finish their Optuna trials.
    """
    if plan.spec.search.strategy.is_grid or not plan.local_store:
        return 0
    if not all_trials_ended:
        return 0
    storage = optuna.storages.RDBStorage(paths.optuna_storage_uri(plan.runs_dir))
    try:
        study_id = storage.get_study_id_from_name(plan.sweep_id)
    except KeyError:
        return 0
    running = storage.get_all_trials(study_id, deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    if running:
        log.warning("closed %d orphan Optuna trial(s) of %s as FAIL", len(running), plan.sweep_id)
    return len(running)
