"""The MLflow store's schema: the one copy of what the writer and every reader agree on.

The driver's tracker (`sweeps.driver.tracking`, `sweeps.driver.tuner`) writes a sweep's runs; the
reports (`sweeps.report.runs`, `.status`, `.plots`, `.html`), `confirm`, `preflight`, `service`
and `slsweep ui` read them. They share, from here only:

- the tag and param names (layout: docs/architecture.md "MLflow layout") and the run filters made
  from them (`run_filter`);
- the full-budget rule (`step_reached`, `reached_budget`, `full_budget`): which trial counts as
  finished at the whole budget (only those are compared, tested or marked best);
- what a tracking URI is (`is_sqlite`, `is_file_store`, `is_local_store`, `sqlite_path`,
  `file_store_path`, `own_store`) and the flags a later command needs to find a sweep's store
  (`store_flags`).

Where the files live (the run folder, the default URI, relocation) is `sweeps.store.paths`.
Imports only the standard library and `sweeps.store.paths`; tests/test_architecture.py checks that
no other module of `sweeps` spells a tag name of this module itself.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from urllib.parse import urlparse

from sweeps.store import paths

# -- experiments -------------------------------------------------------------------------------
# MLflow 3's UI opens an experiment without this tag on its GenAI (traces) page; this kind opens
# it as a model-training ("Machine learning") experiment, on the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MODEL_KINDS = frozenset({EXPERIMENT_KIND, "finetuning", "forecasting", "classification", "regression", "automl"})

# -- tags of every slsweep run (parent and trial) -----------------------------------------------
KIND_TAG = "slsweep.kind"            # `sweep` (the parent run) or `trial` (a child run)
KIND_SWEEP = "sweep"
KIND_TRIAL = "trial"
SWEEP_ID_TAG = "slsweep.sweep_id"
STOP_REASON_TAG = "slsweep.stop_reason"  # why a run ended before its end (STOP_* values)
ERROR_TAG = "slsweep.error"          # the exception line of a failed run
STATUS_TAG = "status"                # running / finished / stopped_early / stopped / failed
SEARCH_SPACE_TAG = "search_space"
SPACE_HASH_TAG = "search_space_hash"

# -- tags of the parent run ----------------------------------------------------------------------
SPEC_NAME_TAG = "slsweep.spec_name"
METRIC_NAME_KEY = "metric.name"      # a tag and a param (the flattened spec) of the parent run
METRIC_MODE_KEY = "metric.mode"
VERSION_TAG = "slsweep.version"
GIT_COMMIT_TAG = "git_commit"
RAY_ADDRESS_TAG = "ray.address"
CONFIRMS_TAG = "slsweep.confirms"          # on a confirm sweep: the id of the sweep it confirms
CONFIRMED_BY_TAG = "slsweep.confirmed_by"  # on the searched sweep: the id(s) of its confirm sweeps

# -- tags of a trial run -------------------------------------------------------------------------
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"     # the run's description in the MLflow UI
TRIAL_ID_TAG = "trial_id"            # Ray Tune's trial id
TRIAL_NUMBER_TAG = "trial_number"    # the trial's 1-based number in its sweep (run name `tNN`)
OPTUNA_TRIAL_TAG = "optuna.trial_number"
SEED_TAG = "seed"
LOSS_TAG = "loss"                    # the loss family (also the param `loss.family`)
PSI_TAG = "psi"
ARM_TAG = "slsweep.arm"              # `search` (a configuration the search chose) or `baseline`
ARM_SEARCH = "search"
ARM_BASELINE = "baseline"
LAST_STEP_TAG = "last_step"          # the last optimizer step a trial reported
NODE_TAG = "node"                    # the Ray node id the trial ran on
RESTARTS_TAG = "restarts"            # a tag and a metric: restarts by Tune's FailureConfig
WORKERS_TAG = "slsweep.workers"      # processes per trial (resources.workers; > 1: a Ray Train job)
STRATEGY_TAG = "slsweep.strategy"    # single, ddp or fsdp (resources.strategy of a multi-worker trial)
WORKER_NODES_TAG = "slsweep.worker_nodes"  # the Ray node ids of a multi-worker trial's workers, by rank

# Values of STOP_REASON_TAG.
STOP_EARLY = "early_stopping"        # ASHA stopped the trial
STOP_INTERRUPTED = "interrupted"     # Ctrl-C / SIGTERM: resumable
STOP_TIMEOUT = "timeout"             # over limits.trial_seconds
STOP_SWEEP_ENDED = "sweep_ended"
STOP_DRIVER_LOST = "driver_lost"

# -- params (the flattened resolved TrialConfig, plus the searched values) ------------------------
STEPS_PARAM = "train.steps"          # a trial's budget
SEED_PARAM = "seed"
FAMILY_PARAM = "loss.family"
SPACE_PREFIX = "space."              # `space.<name>`: the search-space values a trial ran with
ALGORITHM_PARAM = "search.algorithm"  # of the parent run (the flattened spec)
SEEDS_PARAM = "search.seeds"
FIRST_SEED_PARAM = "search.first_seed"
STUDY_NAME_KEY = "optuna.study_name"  # a param or tag of the parent run; default: the sweep id
STEP_METRIC = "step"                 # stores written before LAST_STEP_TAG logged the step as a metric

# Columns of a trial table (`sweeps.report.runs`: `params.<key>`, `tags.<key>`, `metrics.<key>`).
FAMILY_COLUMN = f"params.{FAMILY_PARAM}"
STEPS_COLUMN = f"params.{STEPS_PARAM}"
ARM_COLUMN = f"tags.{ARM_TAG}"
STOP_REASON_COLUMN = f"tags.{STOP_REASON_TAG}"
LAST_STEP_COLUMN = f"tags.{LAST_STEP_TAG}"
STEP_COLUMN = f"metrics.{STEP_METRIC}"

FINISHED = "FINISHED"  # MLflow's run status of a run that ended normally


def run_filter(kind: str, sweep_id: str | None = None, *, finished: bool = False, trial_id: str | None = None) -> str:
    """An MLflow `search_runs` filter for slsweep runs of `kind` (`KIND_SWEEP` / `KIND_TRIAL`),
    of sweep `sweep_id` when given, FINISHED only when `finished`, of Tune trial `trial_id` when
    given. Ids are put in quotes as they are: pass plain tokens (sweep and trial ids are)."""
    parts = [f"tags.`{KIND_TAG}` = '{kind}'"]
    if sweep_id is not None:
        parts.append(f"tags.`{SWEEP_ID_TAG}` = '{sweep_id}'")
    if trial_id is not None:
        parts.append(f"tags.`{TRIAL_ID_TAG}` = '{trial_id}'")
    if finished:
        parts.append(f"attributes.status = '{FINISHED}'")
    return " and ".join(parts)


# -- the full-budget rule ------------------------------------------------------------------------
def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def step_reached(last_step_tag: object, step_metric: object = None) -> float:
    """The optimizer step a trial run reached: its `LAST_STEP_TAG`, else (stores written before
    that tag) its `STEP_METRIC`; NaN when neither is a number."""
    step = _number(last_step_tag)
    return _number(step_metric) if math.isnan(step) else step


def reached_budget(step: object, budget: object) -> bool:
    """Whether a trial that reached optimizer step `step` ran its whole budget of `budget`
    (`train.steps`) steps. An unknown value (None, NaN, not a number) does not count against it:
    a run with no recorded step or budget is judged by its status alone."""
    return not (_number(step) < _number(budget))


def full_budget(status: str, step: object, budget: object) -> bool:
    """The one rule of which trial counts as finished at full budget: MLflow status FINISHED and
    `reached_budget(step, budget)`. Runs stopped by ASHA, an interrupt, a lost driver or an error
    hold values from another budget: they are never compared with full-budget runs, tested, or
    the sweep's best."""
    return status == FINISHED and reached_budget(step, budget)


# -- tracking URIs -------------------------------------------------------------------------------
def is_sqlite(uri: str) -> bool:
    """Whether `uri` is an SQLite store (`sqlite:///path`, `sqlite://` in memory)."""
    return uri.startswith("sqlite:")


def is_file_store(uri: str) -> bool:
    """Whether `uri` is MLflow's (retired) file store: `file:` or a plain path (not `databricks`)."""
    return uri.startswith("file:") or (urlparse(uri).scheme == "" and uri != "databricks")


def is_local_store(uri: str) -> bool:
    """Whether `uri` is a store on this machine's disk (SQLite or a file store), not a server:
    its artifacts and Optuna study go into the run folder."""
    return is_sqlite(uri) or is_file_store(uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URI (relative to the current folder; four
    slashes: absolute; a `?query` is not part of it); None for any other URI or an in-memory
    database."""
    path = uri.split("sqlite:///", 1)[1].split("?", 1)[0] if uri.startswith("sqlite:///") else ""
    return Path(path) if path and path != ":memory:" else None


def file_store_path(uri: str) -> Path | None:
    """The folder of a file store URI (`file:///path`, `file:path`, a plain path); None otherwise."""
    if not is_file_store(uri):
        return None
    return Path(uri.removeprefix("file://").removeprefix("file:")).expanduser()


def own_store(uri: str, runs_dir: Path) -> bool:
    """Whether `uri` is the run folder `runs_dir`'s own SQLite store (`<runs_dir>/mlflow.db`):
    the store every command opens when given `--runs-dir` alone."""
    return uri == paths.default_tracking_uri(runs_dir)


def store_flags(tracking_uri: str, runs_dir: Path | None = None, *, default_folder: Path | None = None) -> str:
    """The command-line flags with which a later command (`slsweep table`, `resume`, `confirm`)
    finds the sweep whose store is `tracking_uri`, with a leading space ("" when none is needed).

    Args:
        tracking_uri: the sweep's MLflow store.
        runs_dir: the sweep's run folder (its plan records); None: the folder whose own
            `mlflow.db` the URI names, if it names one.
        default_folder: the folder a command finds by itself (`paths.default_runs_dir()` when the
            command runs where this one did): no `--runs-dir` for it. None: always named (a
            report is read anywhere).

    Returns:
        `--runs-dir FOLDER` unless FOLDER is `default_folder`, and `--tracking-uri URI` unless the
        URI is that folder's own store (a server, another database), each quoted for a shell.
    """
    folder = runs_dir
    db = sqlite_path(tracking_uri)
    if folder is None and db is not None and db.name == paths.MLFLOW_DB:
        folder = db.parent
    flags = ""
    if folder is not None and folder != default_folder:
        flags += f" --runs-dir {shlex.quote(str(folder))}"
    if folder is None or not own_store(tracking_uri, folder):
        flags += f" --tracking-uri {shlex.quote(tracking_uri)}"
    return flags
