"""The one MLflow writer of a sweep: a Ray Tune callback on the driver.

Trials only report to Tune; this callback turns Tune's events into one parent run per sweep and one
child run per trial (layout: docs/architecture.md). Workers never touch the tracking store, so a
SQLite file needs no cross-process locking and a remote server sees batched calls only.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from sweeps.config.trial_config import TrialConfig
from sweeps.store import schema
from sweeps.trial import REPLAYED
from sweeps.store.schema import (  # noqa: F401 - EXPERIMENT_KIND*, ARM_TAG, STOP_REASON_TAG: names readers import from here
    ARM_TAG,
    ERROR_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    LAST_STEP_TAG,
    MODEL_KINDS,
    STATUS_TAG,
    STOP_REASON_TAG,
    SWEEP_ID_TAG,
    run_filter,
)

log = logging.getLogger(__name__)

# Keys a trial reports that are bookkeeping, not metrics. `step` is every metric's x axis (and
# the tag `last_step`), not a curve of its own.
_NON_METRIC = {"predictions", "node", "hostname", "pid", "done", "trial_id", "date", "timestamp",
               "time_this_iter_s", "time_total_s", "time_since_restore", "iterations_since_restore",
               "training_iteration", "checkpoint_dir_name", "should_checkpoint", "experiment_tag",
               "config", "step", "train_loss_curve", "worker_pids", "worker_nodes", REPLAYED,
               "checkpoint_path"}
OPTUNA_TRIAL_KEY = "__optuna_trial__"  # a Tune config's Optuna trial number (set by the searcher)
LOSS_CURVE = "train_loss_curve"  # a result's [[step, mean train loss], ...] since the last result
# The MLflow metric of those points: the mean loss of every `sweeps.trial.run.LOSS_LOG_EVERY` (10) steps.
# `train_loss` itself is one value per evaluation, the very number Tune, Optuna, ASHA and the
# summary read (the mean since the previous evaluation): one name, one number.
LOSS_CURVE_METRIC = "train_loss_10"


def stopped_name(run_name: str, step: int) -> str:
    """The MLflow run name of a trial ASHA stopped early: `t03 ... s0 (stopped @100)`."""
    return f"{run_name} (stopped @{step})"


@dataclass
class SweepInfo:
    """What the parent run records about the sweep."""

    sweep_id: str
    spec_name: str
    experiment: str
    metric: str
    mode: str
    max_steps: int
    spec_yaml: str
    space_yaml: str
    space_source: str
    space_hash: str
    spec_params: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    artifact_location: str | None = None
    optuna_storage: str | None = None  # the study (named sweep_id) the trials link to, if persisted


def trial_scale_tags(spec_params: dict[str, Any]) -> dict[str, str]:
    """A trial run's `workers` and `strategy` tags from the sweep's flattened spec (`single` for
    one process per trial)."""
    workers = int(spec_params.get("resources.workers", 1))
    return {schema.WORKERS_TAG: str(workers),
            schema.STRATEGY_TAG: str(spec_params.get("resources.strategy", "ddp")) if workers > 1 else "single"}


def prepare_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment id for `name`, created when missing, marked as a model-training experiment
    (`mlflow.experimentKind`) unless it already carries a model-training kind."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException as exc:  # another driver created it since (a shared tracking server)
            if exc.error_code != "RESOURCE_ALREADY_EXISTS" or client.get_experiment_by_name(name) is None:
                raise
            exp = client.get_experiment_by_name(name)
    if exp.tags.get(EXPERIMENT_KIND_TAG) not in MODEL_KINDS:  # a store from before, or GenAI
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def trial_run_name(trial_number: int | None, cfg: TrialConfig, sampled: dict[str, Any]) -> str:
    """A run name a person can scan: trial number, loss family, the sampled values, seed.

    `t03 soft_label psi=gaussian eta=0.12 lam=2.6 lr=0.0011 s0` (floats to 2 significant digits;
    the loss family and a fixed value once, not per sampled name).
    """
    parts = [f"t{trial_number:02d}" if trial_number is not None else "t?", cfg.loss.family]
    for key, value in sampled.items():
        if key == "loss.family" or key.endswith(".family"):
            continue
        shown = f"{value:.2g}" if isinstance(value, float) else str(value)
        parts.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    parts.append(f"s{cfg.seed}")
    return " ".join(parts)


def tune_trial_number(trial: Any) -> int | None:
    """The trial's 1-based number in its sweep (Tune's `experiment_tag` starts `3_...` for the
    3rd trial its search created), or None."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) if head.isdigit() else None


def predictions_csv(rows: list[dict[str, Any]]) -> str:
    """Sample predictions as CSV text (header from the first row)."""
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a Tune result that are worth logging."""
    out = {}
    for key, value in result.items():
        if key in _NON_METRIC or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


def _timed(method):
    """Count the wall time of a tracker callback in `self.logging_seconds`."""

    def wrapper(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.logging_seconds += time.perf_counter() - t0

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class SweepTracker(Callback):
    """Ray Tune callback writing the sweep's MLflow runs from the driver.

    Args:
        tracking_uri: any MLflow tracking URI (SQLite file, http server).
        info: the sweep's description for the parent run.
        resolve: maps a Tune trial config to the resolved `TrialConfig` (same code the trial uses).
        sampled: maps a Tune trial config to the search-space values it was given (the run name).
        ran: maps a Tune trial config to the search-space values it ran with, logged as the
            `space.*` params (`Resolver.space_values`: a baseline arm's resolved values too);
            default `sampled`.
    """

    def __init__(self, tracking_uri: str, info: SweepInfo,
                 resolve: Callable[[dict[str, Any]], TrialConfig],
                 sampled: Callable[[dict[str, Any]], dict[str, Any]],
                 ran: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.info = info
        self.resolve = resolve
        self.sampled = sampled
        self.ran = ran
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.runs: dict[str, str] = {}          # Tune trial id -> MLflow run id
        self.ended: dict[str, str] = {}         # Tune trial id -> final MLflow status
        self.reasons: dict[str, str] = {}       # Tune trial id -> slsweep.stop_reason it ended with
        self._predictions: dict[str, list[dict[str, Any]]] = {}
        self._client: MlflowClient | None = None
        self._study_storage: Any = None  # optuna RDBStorage of info.optuna_storage, opened on use
        # setup() created this sweep's parent run, in this process: no trial run of the sweep exists
        # but those in `runs` (a restored or re-created tracker looks runs up in the store)
        self._new_sweep = False
        self._created: str | None = None  # the run _child_run has just created (on_trial_start)
        self.logging_seconds = 0.0  # time spent writing to MLflow (the overhead benchmark reads it)
        # Why the sweep is ending early (`interrupted`, `sweep_time_limit`), set by the driver
        # before Tune calls on_experiment_end; None = a normal end.
        self.stop_reason: str | None = None

    # -- pickling: Tune checkpoints callbacks with the experiment state ---------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        state["_study_storage"] = None
        state["_predictions"] = {}
        state["_new_sweep"] = False  # whoever unpickles this continues a sweep begun before
        state["_created"] = None
        return state

    def get_state(self) -> dict[str, Any]:
        return {"parent_run_id": self.parent_run_id, "runs": dict(self.runs), "ended": dict(self.ended),
                "reasons": dict(self.stop_reasons), "names": dict(self.run_names)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.parent_run_id = state.get("parent_run_id") or self.parent_run_id
        self.runs.update(state.get("runs", {}))
        self.ended.update(state.get("ended", {}))
        self.stop_reasons.update(state.get("reasons", {}))
        self.run_names.update(state.get("names", {}))

    @property
    def stop_reasons(self) -> dict[str, str]:
        """Tune trial id -> the `slsweep.stop_reason` its run ended with (`early_stopping`,
        `interrupted`, `timeout`, ...); trials that ended at full budget are absent."""
        return self.__dict__.setdefault("reasons", {})  # (absent on trackers pickled before)

    @property
    def run_names(self) -> dict[str, str]:
        """Tune trial id -> its MLflow run name: the one name a trial goes by in the progress lines,
        the summary and errors (Ray's id is the run's tag `trial_id`, Optuna's number its tag
        `optuna.trial_number`)."""
        return self.__dict__.setdefault("names", {})  # (absent on trackers pickled before)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # -- parent run ---------------------------------------------------------------------------
    @_timed
    def setup(self, **_: Any) -> None:
        self.experiment_id = prepare_experiment(self.client, self.info.experiment,
                                                self.info.artifact_location)
        first_start = self.parent_run_id is None
        if self.parent_run_id is not None and not self._run_exists(self.parent_run_id):
            # The store lost the sweep (a tracking server restarted on an empty database, a
            # deleted mlflow.db): start its record again rather than fail on the missing run.
            print(f"{self.tracking_uri}: the MLflow store has lost run {self.parent_run_id} of sweep "
                  f"{self.info.sweep_id}: re-creating it; the runs of trials that ended before are "
                  "not in it (their results are in Ray's folder)", file=sys.stderr)
            self.parent_run_id = None
            self.runs.clear()
            self.ended.clear()
        if self.parent_run_id is None:  # a resumed driver may have lost the id, not the run
            found = self.client.search_runs(
                [self.experiment_id], filter_string=run_filter(KIND_SWEEP, self.info.sweep_id), max_results=1)
            self.parent_run_id = found[0].info.run_id if found else None
        if self.parent_run_id is not None:  # resumed sweep: keep writing into the same parent
            self._reopen(self.parent_run_id)
            return
        tags = {KIND_TAG: KIND_SWEEP, SWEEP_ID_TAG: self.info.sweep_id,
                schema.SPEC_NAME_TAG: self.info.spec_name, schema.METRIC_NAME_KEY: self.info.metric,
                schema.METRIC_MODE_KEY: self.info.mode, schema.SEARCH_SPACE_TAG: self.info.space_source,
                schema.SPACE_HASH_TAG: self.info.space_hash, **self.info.tags}
        run = self.client.create_run(self.experiment_id, run_name=self.info.sweep_id, tags=tags)
        self.parent_run_id = run.info.run_id
        self._new_sweep = first_start
        params = [Param(k, _param_value(v)) for k, v in self.info.spec_params.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.parent_run_id, params=params[i:i + 100])
        self.client.log_text(self.parent_run_id, self.info.spec_yaml, "spec.yaml")
        self.client.log_text(self.parent_run_id, self.info.space_yaml, "search_space.yaml")

    def _run_exists(self, run_id: str) -> bool:
        """Whether `run_id` is a live run of this sweep's experiment in the store."""
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return False
        return run.info.lifecycle_stage == "active" and run.info.experiment_id == self.experiment_id

    # -- child runs -----------------------------------------------------------------------------
    def _child_run(self, trial: Any) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        existing = [] if self.__dict__.get("_new_sweep") else [
            run for run in self.client.search_runs(
                [self.experiment_id], filter_string=run_filter(KIND_TRIAL, self.info.sweep_id, trial_id=trial.trial_id))
            if self._same_trial(run, trial)]
        if existing:  # a restored driver finds the run it created before it died
            self.runs[trial.trial_id] = existing[0].info.run_id
            self.run_names.setdefault(trial.trial_id, existing[0].info.run_name)
            return existing[0].info.run_id
        from sweeps.trial.trainable import baseline_arm

        cfg = self.resolve(trial.config)
        tags = {schema.PARENT_TAG: self.parent_run_id, KIND_TAG: KIND_TRIAL,
                SWEEP_ID_TAG: self.info.sweep_id, schema.TRIAL_ID_TAG: trial.trial_id,
                schema.SEED_TAG: str(cfg.seed), schema.LOSS_TAG: cfg.loss.family,
                schema.PSI_TAG: cfg.loss.psi if cfg.loss.family == "soft_label" else "none",
                schema.SEARCH_SPACE_TAG: self.info.space_source, schema.SPACE_HASH_TAG: self.info.space_hash,
                STATUS_TAG: "running", **trial_scale_tags(self.info.spec_params),
                ARM_TAG: schema.ARM_BASELINE if baseline_arm(trial.config) is not None else schema.ARM_SEARCH}
        number = self.trial_number(trial)
        if number is not None:
            tags[schema.TRIAL_NUMBER_TAG] = str(number)
        study_trial = trial.config.get(OPTUNA_TRIAL_KEY)
        if study_trial is not None:
            tags[schema.OPTUNA_TRIAL_TAG] = str(study_trial)
        name = self.run_names[trial.trial_id] = self.run_name(trial)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        self._link_study_trial(trial, run_id, name)
        params = [Param(k, _param_value(v)) for k, v in cfg.flatten().items()]
        ran = (self.__dict__.get("ran") or self.sampled)(trial.config)  # (absent on trackers pickled before)
        params += [Param(f"space.{k}", _param_value(v)) for k, v in ran.items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i:i + 100])
        self.client.log_text(run_id, cfg.to_yaml(), "config.yaml")
        self.runs[trial.trial_id] = run_id
        self._created = run_id
        return run_id

    def _same_trial(self, run: Any, trial: Any) -> bool:
        """Whether the stored `run` (found by `trial`'s Tune trial id) was created for this trial.

        Tune numbers trials by a counter saved with its experiment state: a driver killed after it
        created a trial (and its run) but before it saved that state hands the same id to a different
        trial of the resumed sweep. That run is another configuration's (the resumed sweep closes it as
        lost): same Optuna trial, or else the same searched values (`space.*` params), or it is not this
        trial's. A run created without its params (the driver died in between) is not reused either.
        """
        number, tag = trial.config.get(OPTUNA_TRIAL_KEY), run.data.tags.get(schema.OPTUNA_TRIAL_TAG)
        if number is not None or tag is not None:
            return str(number) == tag
        ran = (self.__dict__.get("ran") or self.sampled)(trial.config)  # (absent on trackers pickled before)
        return all(run.data.params.get(f"space.{k}") == _param_value(v) for k, v in ran.items())

    def trial_number(self, trial: Any) -> int | None:
        """The trial's 1-based number in the sweep (tag `trial_number`, the run name's `tNN`)."""
        number = tune_trial_number(trial)
        from sweeps.config.search import STRATEGIES

        algorithm = STRATEGIES.get(self.info.spec_params.get("search.algorithm"))
        if number is not None and algorithm is not None and algorithm.is_grid:
            number += 1  # Tune numbers grid trials from 0, searcher-made ones from 1
        return number

    def run_name(self, trial: Any) -> str:
        """The trial's MLflow run name (`trial_run_name`)."""
        return trial_run_name(self.trial_number(trial), self.resolve(trial.config), self.sampled(trial.config))

    def _link_study_trial(self, trial: Any, run_id: str, run_name: str) -> None:
        """Cross-reference the Optuna trial that proposed `trial` and its MLflow run.

        The Optuna trial gets the user attributes `mlflow_run_id`, `mlflow_run_name` and
        `tune_trial_id` (suffixed
        `.seed<i>` for the i-th repeat of a configuration, i > 0), the study `mlflow_experiment_id`
        and `mlflow_parent_run_id`; the run has the tag `optuna.trial_number`. optuna-dashboard
        and the MLflow UI then point at each other. Linking is best effort: a missing study (a
        store other than the run folder's) is skipped.
        """
        number = trial.config.get(OPTUNA_TRIAL_KEY)
        if number is None or not self.info.optuna_storage:
            return
        import optuna
        from ray.tune.search.repeater import TRIAL_INDEX

        try:
            if getattr(self, "_study_storage", None) is None:  # (absent on trackers pickled before)
                self._study_storage = optuna.storages.RDBStorage(self.info.optuna_storage)
            storage = self._study_storage
            study_id = storage.get_study_id_from_name(self.info.sweep_id)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
            index = int(trial.config.get(TRIAL_INDEX, 0) or 0)
            suffix = f".seed{index}" if index else ""
            storage.set_trial_user_attr(trial_id, f"mlflow_run_id{suffix}", run_id)
            storage.set_trial_user_attr(trial_id, f"mlflow_run_name{suffix}", run_name)
            storage.set_trial_user_attr(trial_id, f"tune_trial_id{suffix}", trial.trial_id)
            if "mlflow_parent_run_id" not in storage.get_study_user_attrs(study_id):
                storage.set_study_user_attr(study_id, "mlflow_experiment_id", self.experiment_id)
                storage.set_study_user_attr(study_id, "mlflow_parent_run_id", self.parent_run_id)
        except (KeyError, RuntimeError, ValueError) as exc:  # includes UpdateFinishedTrialError
            log.info("could not link Optuna trial %s to MLflow run %s: %s", number, run_id, exc)

    def _reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed sweep or trial), dropping its earlier stop reason
        and error: whatever it ends with next is its record, not the failure it recovered from."""
        run = self.client.get_run(run_id)
        for stale in (STOP_REASON_TAG, ERROR_TAG):
            if run.data.tags.get(stale):
                self.client.delete_tag(run_id, stale)
        if run.data.tags.get(STATUS_TAG) not in (None, "running") and run_id != self.parent_run_id:
            self.client.set_tag(run_id, STATUS_TAG, "running")
        self.client.update_run(run_id, status="RUNNING")

    @_timed
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._created = None
        run_id = self._child_run(trial)
        if run_id != self.__dict__.get("_created"):  # a run created just now is RUNNING with nothing stale
            self._reopen(run_id)

    @_timed
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self._child_run(trial)
        if "predictions" in result:
            self._predictions[trial.trial_id] = result["predictions"]
        step = int(result.get("step") or result.get("training_iteration") or 0)
        if result.get(REPLAYED) and self._has_step(run_id, step):
            # a restarted multi-worker trial's checkpoint evaluation, recorded before: only its restart
            self.client.log_batch(run_id, metrics=[Metric(schema.RESTARTS_TAG, float(result.get("restarts") or 0),
                                                          int(time.time() * 1000), step)])
            return
        now = int(time.time() * 1000)
        values = numeric_metrics(result)
        curve = result.get(LOSS_CURVE) or []  # the loss every few steps, batched into this one call
        metrics = [Metric(LOSS_CURVE_METRIC, float(v), now, int(s)) for s, v in curve if math.isfinite(v)]
        metrics += [Metric(k, v, now, step) for k, v in values.items()]
        tags = [RunTag(LAST_STEP_TAG, str(step))]
        if "node" in result:
            tags.append(RunTag(schema.NODE_TAG, str(result["node"])))
        if "worker_nodes" in result:
            tags.append(RunTag(schema.WORKER_NODES_TAG, ",".join(map(str, result["worker_nodes"]))))
        for i in range(0, len(metrics), 1000):  # MLflow's log_batch takes at most 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000], tags=tags if i == 0 else [])

    def _has_step(self, run_id: str, step: int) -> bool:
        """Whether the run's record holds an evaluation at `step` (the sweep's metric at that step)."""
        return any(m.step == step for m in self.client.get_metric_history(run_id, self.info.metric))

    @_timed
    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        run_id = self._child_run(trial)
        restarts = int(self.client.get_run(run_id).data.tags.get(schema.RESTARTS_TAG, "0")) + 1
        self.client.set_tag(run_id, schema.RESTARTS_TAG, str(restarts))

    @_timed
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last_step = int((trial.last_result or {}).get("step") or 0)
        if schema.reached_budget(last_step, self.info.max_steps):
            self._end(trial, "FINISHED", {STATUS_TAG: "finished"})
        else:
            # Stopped by the scheduler: KILLED (MLflow has no "pruned"; never the green FINISHED of
            # a full-budget run), the name says where (`... s0 (stopped @100)`), the tags and the
            # description why; PRUNED in the Optuna study; `full_budget` in reports: no.
            value = (trial.last_result or {}).get(self.info.metric)
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else "n/a"
            self._end(trial, "KILLED", {
                STATUS_TAG: "stopped_early", STOP_REASON_TAG: schema.STOP_EARLY,
                schema.NOTE_TAG: f"Stopped early by the scheduler at step {last_step} of "
                f"{self.info.max_steps} ({self.info.metric} {shown} there did not make the cut); "
                "its values are from that step, not the full budget."},
                name=stopped_name(self.run_name(trial), last_step))

    @_timed
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = _error_text(trial)
        tags = {STATUS_TAG: "failed", ERROR_TAG: error}
        if error.split(":", 1)[0].endswith("TrialTimeoutError"):
            tags[STOP_REASON_TAG] = schema.STOP_TIMEOUT
        self._end(trial, "FAILED", tags)

    def _end(self, trial: Any, status: str, tags: dict[str, str], name: str | None = None) -> None:
        run_id = self._child_run(trial)
        rows = self._predictions.pop(trial.trial_id, None)
        if rows:
            self.client.log_text(run_id, predictions_csv(rows), "predictions.csv")
        self.client.log_batch(run_id, tags=[RunTag(k, v[:5000]) for k, v in tags.items()])
        if name is not None:
            self.client.update_run(run_id, name=name)
        self.client.set_terminated(run_id, status=status)
        self.ended[trial.trial_id] = status
        if tags.get(STOP_REASON_TAG):
            self.stop_reasons[trial.trial_id] = tags[STOP_REASON_TAG]
        else:
            self.stop_reasons.pop(trial.trial_id, None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.finish(trials)

    @_timed
    def finish(self, trials: list, status: str = "FINISHED") -> None:
        """Close the parent run with the sweep's totals (also closes any child left open)."""
        if self.parent_run_id is None:
            return
        reason = self.stop_reason or schema.STOP_SWEEP_ENDED
        for trial in trials:
            if trial.trial_id in self.runs and trial.trial_id not in self.ended:
                self._end(trial, "KILLED", {STATUS_TAG: "stopped", STOP_REASON_TAG: reason})
        # The store, not this object, is the record: a driver killed mid-sweep may have created runs
        # after its last saved state, which no Tune trial of the resumed sweep owns. They can no
        # longer finish, so they are closed rather than left RUNNING forever.
        children = self._sweep_children()
        counts = {"FINISHED": 0, "FAILED": 0, "KILLED": 0}
        for run in children:
            child_status = run.info.status
            if child_status in ("RUNNING", "SCHEDULED"):
                self.client.log_batch(run.info.run_id, tags=[
                    RunTag(STATUS_TAG, "stopped"), RunTag(STOP_REASON_TAG, schema.STOP_DRIVER_LOST)])
                self.client.set_terminated(run.info.run_id, status="KILLED")
                child_status = "KILLED"
            elif run.data.tags.get(STOP_REASON_TAG) == schema.STOP_EARLY:
                child_status = "KILLED"  # (FINISHED in stores written before ASHA stops were KILLED)
            counts[child_status] = counts.get(child_status, 0) + 1
        now = int(time.time() * 1000)
        metrics = [Metric("trials_total", float(len(children)), now, 0),
                   Metric("trials_finished", float(counts["FINISHED"]), now, 0),
                   Metric("trials_failed", float(counts["FAILED"]), now, 0),
                   Metric("trials_stopped", float(counts["KILLED"]), now, 0)]
        best = _best_value(trials, self.info.metric, self.info.mode, self.info.max_steps)
        if best is not None:
            metrics.append(Metric(f"best_{self.info.metric}", best, now, 0))
        tags = [RunTag(STOP_REASON_TAG, self.stop_reason)] if self.stop_reason else []
        self.client.log_batch(self.parent_run_id, metrics=metrics, tags=tags)
        # An interrupted sweep never reports success: KILLED until `slsweep resume` finishes it.
        self.client.set_terminated(self.parent_run_id,
                                   status="KILLED" if self.stop_reason == schema.STOP_INTERRUPTED else status)

    def abort(self, reason: str, error: str | None = None) -> list[str]:
        """Close what a driver that stops abnormally leaves open (a forced stop, a crash).

        The parent run and every trial run this driver opened and did not end become KILLED with
        tag `slsweep.stop_reason=reason` (and `slsweep.error`, one line, when given); `resume`
        reopens them. Best effort: the store itself may be what failed (a full disk). Returns
        the problems met while closing, one line each.
        """
        problems: list[str] = []
        tags = {STATUS_TAG: "stopped", STOP_REASON_TAG: reason}
        if error:
            tags[ERROR_TAG] = error[:5000]
        run_ids = [r for t, r in self.runs.items() if t not in self.ended]
        if self.parent_run_id is not None:
            run_ids.append(self.parent_run_id)
        for run_id in run_ids:
            try:
                own = {k: v for k, v in tags.items() if k != STATUS_TAG or run_id != self.parent_run_id}
                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in own.items()])
                self.client.set_terminated(run_id, status="KILLED")
            except Exception as exc:  # noqa: BLE001 - keep closing the others
                problems.append(f"{run_id}: {' '.join(str(exc).split())[:200]}")
        return problems

    def _sweep_children(self) -> list[Any]:
        """Every trial run of this sweep in the tracking store (all result pages)."""
        query = run_filter(KIND_TRIAL, self.info.sweep_id)
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=query,
                                           max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def _error_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).exists():
        lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        # The last line of a traceback is the exception and its message.
        return lines[-1] if lines else "unknown error"
    return "unknown error"


def _best_value(trials: list, metric: str, mode: str, max_steps: int) -> float | None:
    """The best final `metric` among trials that reached `max_steps` (one budget: a value from a
    trial stopped early by ASHA or an interrupt is never the sweep's best)."""
    values = [t.last_result.get(metric) for t in trials
              if t.last_result and schema.reached_budget(int(t.last_result.get("step") or 0), max_steps)]
    values = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not values:
        return None
    return float(max(values) if mode == "max" else min(values))
