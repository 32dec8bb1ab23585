"""Load a sweep's trial runs from MLflow into a pandas DataFrame.

Follows the MLflow layout of docs/architecture.md: one parent run per sweep (tag
``slsweep.kind=sweep``) and one child run per trial (tags ``slsweep.kind=trial``,
``slsweep.sweep_id``, ``seed``, ``loss``, ...; dotted params such as ``loss.eta`` and
``space.<name>``; per-step metrics). The trial table has one row per run and the columns
``run_id, run_name, experiment_id, sweep_id, parent_run_id, status, start_time, end_time, seed``
plus ``params.<key>`` (numeric where every value parses), ``metrics.<key>`` (the last logged value)
and ``tags.<key>``, and the budget columns ``budget`` (``train.steps``), ``final_step`` (the last
reported ``step``), ``full_budget`` (FINISHED and, when both are known, ``final_step >= budget``)
and ``at_step`` (a label: the step reached, plus `` (stopped)``, `` (failed)`` or `` (running)`` for a
run that did not reach its budget).

Two trust rules apply when runs are loaded (docs/architecture.md "Trust rules"):
- **Replicates are not seeds.** Runs with the same resolved configuration, the same seed and the
  same budget (re-runs of a spec, two sweeps of one experiment) are one observation: `trials`
  holds one row per observation (metric values averaged over its replicates, ``replicates`` =
  how many runs it stands for) and `replicates` describes each replicated observation (whether
  the replicates agree, and by how much they differ).
- **One budget per comparison.** By default only full-budget runs are loaded; runs stopped early
  (ASHA, Ctrl-C, a lost driver) come in only when asked for and keep their own ``at_step``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from sweeps.errors import SlsweepError, did_you_mean
from sweeps.store import paths, schema
from sweeps.store.paths import default_runs_dir
from sweeps.store.schema import (  # noqa: F401 - ARM_COLUMN, FAMILY_COLUMN, sqlite_path: read from here by the reports
    ARM_COLUMN,
    FAMILY_COLUMN,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRIAL,
    PARENT_TAG,
    SPEC_NAME_TAG,
    STOP_REASON_COLUMN,
    SWEEP_ID_TAG,
    is_file_store,
    is_sqlite,
    run_filter,
    sqlite_path,
)

# Columns searched for a default --by: the loss knobs an ablation varies.
DEFAULT_BY_KEYS = ("loss.family", "loss.psi", "loss.eta", "loss.lam")
# Primary task metrics in the order they are preferred when the sweep names none.
LOWER_IS_BETTER = frozenset({"mse", "rmse", "train_loss", "eval_loss", "loss"})  # besides the tasks' own "min" metrics

Direction = Literal["max", "min"]


def own_objective(metric: str) -> bool:
    """Whether `metric` is each loss family's own training objective (`train_loss`, and its
    finer curve `train_loss_10`): hard CE's and soft_label's values are losses of different
    functions, so runs of different loss families are never tested or ranked on it."""
    return metric == "train_loss" or metric.startswith("train_loss_")


class ReportError(SlsweepError):
    """A report cannot be built from what the store holds or what was asked."""


class NoSweepError(ReportError):
    """No store, experiment, sweep or trial run matches."""


class UnknownMetricError(ReportError):
    """A requested metric is not logged on the selected trial runs."""


class UnknownColumnError(ReportError):
    """A --by / --baseline column does not resolve to exactly one param key."""


@dataclass(frozen=True)
class ParentRun:
    """The parent run of one sweep."""

    run_id: str
    sweep_id: str
    spec_name: str | None
    start_time: pd.Timestamp | None
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


def resolve_tracking_uri(tracking_uri: str | None = None, runs_dir: Path | str | None = None) -> str:
    """The store to read (`sweeps.store.paths.resolve_tracking_uri`): `tracking_uri`, else the
    run folder's SQLite store.

    Raises:
        NoSweepError: the SQLite file does not exist (opening it would silently create an
            empty store, hiding a wrong path).
    """
    try:
        return paths.resolve_tracking_uri(tracking_uri, runs_dir)
    except paths.NoStoreError as exc:
        raise NoSweepError(str(exc)) from None


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if is_file_store(uri):
        # MLflow 3 refuses a file store unless this is set; reading one is harmless.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=uri)


def _search_all(client: Any, experiment_ids: list[str], filter_string: str,
                order_by: list[str] | None = None, limit: int | None = None) -> list[Any]:
    """All runs matching the filter, following page tokens (1000 per page, the REST maximum)."""
    from mlflow.entities import ViewType

    out: list[Any] = []
    token = None
    while True:
        page = client.search_runs(experiment_ids=experiment_ids, filter_string=filter_string,
                                  run_view_type=ViewType.ACTIVE_ONLY, order_by=order_by,
                                  max_results=min(1000, limit) if limit else 1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token or (limit is not None and len(out) >= limit):
            return out[:limit] if limit is not None else out


def _all_experiment_ids(client: Any) -> list[str]:
    ids: list[str] = []
    token = None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def _timestamp(ms: int | None) -> pd.Timestamp | None:
    return pd.Timestamp(ms, unit="ms", tz="UTC") if ms else None


def _sweep_info(run: Any) -> ParentRun:
    tags = dict(run.data.tags)
    return ParentRun(run_id=run.info.run_id, sweep_id=tags.get(SWEEP_ID_TAG, run.info.run_id),
                     spec_name=tags.get(SPEC_NAME_TAG), start_time=_timestamp(run.info.start_time),
                     status=run.info.status, params=dict(run.data.params), tags=tags,
                     metrics=dict(run.data.metrics))


def _numeric_params(frame: pd.DataFrame) -> pd.DataFrame:
    """Turn each ``params.*`` column numeric when every present value parses as a number."""
    for col in [c for c in frame.columns if c.startswith("params.")]:
        present = frame[col].dropna()
        if present.empty:
            continue
        numbers = pd.to_numeric(present, errors="coerce")
        if not numbers.isna().any() and not present.isin(["True", "False"]).any():
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def _trial_frame(runs: Sequence[Any]) -> pd.DataFrame:
    rows = []
    for run in runs:
        tags = run.data.tags
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "experiment_id": run.info.experiment_id,
            "sweep_id": tags.get(SWEEP_ID_TAG),
            "parent_run_id": tags.get(PARENT_TAG),
            "status": run.info.status,
            "start_time": _timestamp(run.info.start_time),
            "end_time": _timestamp(run.info.end_time),
        }
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in tags.items()})
        rows.append(row)
    frame = _numeric_params(pd.DataFrame(rows))
    seed_param, seed_tag = f"params.{schema.SEED_PARAM}", f"tags.{schema.SEED_TAG}"
    seed = frame[seed_param] if seed_param in frame else frame.get(seed_tag)
    frame.insert(8, "seed", pd.to_numeric(seed, errors="coerce") if seed is not None else float("nan"))
    frame = _budget_columns(frame)
    return frame.sort_values(["start_time", "run_id"], kind="stable").reset_index(drop=True)


def _budget_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``budget``, ``final_step``, ``full_budget`` and ``at_step`` (see the module docstring);
    the step reached and the full-budget rule are `sweeps.store.schema`'s."""
    nan = pd.Series(float("nan"), index=frame.index)
    budget = pd.to_numeric(frame[schema.STEPS_COLUMN], errors="coerce") if schema.STEPS_COLUMN in frame else nan
    tag, metric = (frame[c] if c in frame else nan for c in (schema.LAST_STEP_COLUMN, schema.STEP_COLUMN))
    final = pd.Series([schema.step_reached(t, m) for t, m in zip(tag, metric)], index=frame.index, dtype=float)
    full = pd.Series([schema.full_budget(st, f, b) for st, f, b in zip(frame["status"], final, budget)],
                     index=frame.index, dtype=bool)
    label = []
    reasons = frame[STOP_REASON_COLUMN] if STOP_REASON_COLUMN in frame else nan
    for b, f, ok, status, reason in zip(budget, final, full, frame["status"], reasons):
        if ok:
            step = f if not math.isnan(f) else b
            label.append("final" if math.isnan(step) else f"{step:g}")
            continue
        state = stop_word(status, reason)
        label.append(state if math.isnan(f) else f"{f:g} ({state})")
    return frame.assign(budget=budget, final_step=final, full_budget=full.astype(bool), at_step=label)


# How a run that did not reach its budget is labelled in a table's step column.
_STOP_WORDS = {"KILLED": "stopped", "FAILED": "failed", "RUNNING": "running", "SCHEDULED": "running",
               "FINISHED": "below budget"}
_REASON_WORDS = {schema.STOP_EARLY: "stopped early", schema.STOP_INTERRUPTED: "interrupted"}


def stop_word(status: str, reason: object = None) -> str:
    """Why a run is below its budget, in a word or two: the tracker's ``slsweep.stop_reason``
    (``early_stopping`` -> ``stopped early``: ASHA, FINISHED or KILLED by tracker version), else
    the status (KILLED -> ``stopped``, FAILED -> ``failed``, RUNNING -> ``running``)."""
    if isinstance(reason, str) and reason in _REASON_WORDS:
        return _REASON_WORDS[reason]
    return _STOP_WORDS.get(status, str(status).lower())


# Params that describe a run, not its configuration (never part of a replicate key).
_NOT_CONFIG = ("params.name",)


def config_key(row: pd.Series, *, with_seed: bool = True, ignore: Iterable[str] = ()) -> str:
    """A canonical text of a trial's resolved configuration (``params.*`` except the ``space.*``
    copies and the run name), optionally with its seed; equal keys = the same configuration.

    This is the one rule of what a configuration is: every report (tables, plots, the HTML page,
    `confirm`) compares keys made here. `ignore` drops further columns (full names such as
    ``params.loss.eta``): rows whose keys then match differ in those columns alone.
    """
    skip = set(ignore)
    items = []
    for col, value in row.items():
        if not isinstance(col, str) or not col.startswith("params.") or col.startswith("params.space."):
            continue
        if col in _NOT_CONFIG or col in skip or (not with_seed and col == "params.seed"):
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        items.append(f"{col[7:]}={value:.12g}" if isinstance(value, (float, np.floating)) else f"{col[7:]}={value}")
    return "|".join(sorted(items))


def configuration_ids(frame: pd.DataFrame, *, ignore: Iterable[str] = ()) -> pd.Series:
    """The configuration of each row: `config_key` without the seed (and without `ignore`).

    Args:
        frame: [R, ...] trial table.
        ignore: columns left out of the key (a curve's x: rows that then match differ in x alone).

    Returns:
        [R] str Series on `frame`'s index; equal values = the same configuration.
    """
    ignore = tuple(ignore)
    return pd.Series([config_key(r, with_seed=False, ignore=ignore) for _, r in frame.iterrows()],
                     index=frame.index, dtype=object)


def collapse_replicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per observation: runs with the same configuration, seed and ``at_step`` are merged.

    Args:
        frame: [R, ...] trial table (one row per run, `_trial_frame` columns).

    Returns:
        ``(observations, replicates)``: observations [O, ...] with the earliest run's columns,
        ``metrics.*`` replaced by the mean over its replicates and columns ``replicates`` (runs
        merged) and ``replicate_runs`` (their run ids, comma-separated); replicates [G, ...] one row
        per observation with more than one run: ``run_ids``, ``seed``, ``runs``, ``config`` and
        ``<metric>.spread`` (max - min over the replicates) for every metric.
    """
    if frame.empty:
        empty = frame.assign(replicates=pd.Series(dtype=int), replicate_runs=pd.Series(dtype=object))
        return empty, pd.DataFrame(columns=["run_ids", "seed", "runs", "config"])
    keys = [config_key(r) + f"|@{r['at_step']}" for _, r in frame.iterrows()]
    metric_cols = [c for c in frame.columns if c.startswith("metrics.")]
    rows, reps = [], []
    for _, group in frame.groupby(pd.Series(keys, index=frame.index), sort=False):
        first = group.iloc[0].copy()
        first["replicates"] = len(group)
        first["replicate_runs"] = ",".join(group["run_id"])
        if len(group) > 1:
            values = group[metric_cols].apply(pd.to_numeric, errors="coerce")
            for c in metric_cols:
                first[c] = values[c].mean()
            rep = {"run_ids": ",".join(group["run_id"]), "seed": first["seed"], "runs": len(group),
                   "config": config_key(first, with_seed=False)}
            rep.update({f"{c[8:]}.spread": float(values[c].max() - values[c].min()) for c in metric_cols
                        if values[c].notna().any()})
            reps.append(rep)
        rows.append(first)
    observations = pd.DataFrame(rows).reset_index(drop=True)
    observations["replicates"] = observations["replicates"].astype(int)
    return observations, pd.DataFrame(reps, columns=None if reps else ["run_ids", "seed", "runs", "config"])


def _short_names(keys: Iterable[str]) -> dict[str, str]:
    """Display names: the last dotted segment when that is unique among `keys`, else the key."""
    keys = list(keys)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


@dataclass
class SweepRuns:
    """The trial runs of one sweep (or of all sweeps of an experiment) and their parent runs.

    Attributes:
        tracking_uri: the store they were read from.
        experiment_id / experiment_name: the MLflow experiment.
        sweeps: the parent runs, newest first.
        trials: one row per observation (columns in the module docstring; replicates merged).
        excluded: counts of trial runs left out for being below their budget, by `stop_word`
            (e.g. ``{"stopped early": 2, "failed": 1}``).
        replicates: one row per observation that several runs replicate (`collapse_replicates`).
        raw_trials: one row per selected run before replicates were merged (None: same as trials).
    """

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    sweeps: list[ParentRun]
    trials: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)
    replicates: pd.DataFrame = field(default_factory=pd.DataFrame)
    raw_trials: pd.DataFrame | None = None

    @property
    def partial(self) -> pd.DataFrame:
        """The observations of runs that stopped before their budget (only with --all-runs)."""
        if "full_budget" not in self.trials:
            return self.trials.iloc[:0]
        return self.trials[~self.trials["full_budget"].astype(bool)]

    @property
    def full(self) -> pd.DataFrame:
        """The observations at full budget (all of them unless --all-runs was given)."""
        if "full_budget" not in self.trials:
            return self.trials
        return self.trials[self.trials["full_budget"].astype(bool)]

    def replicate_note(self, metrics: Sequence[str] | None = None) -> str | None:
        """One sentence about replicated runs (None when every observation is one run).

        Says how many runs were merged into how many observations and whether the replicates agree
        on `metrics` (default: every metric), giving the largest spread when they do not.
        """
        reps = self.replicates
        if reps is None or reps.empty:
            return None
        runs = int(reps["runs"].sum())
        text = (f"{runs} runs repeat the same configuration and seed as another ({len(reps)} "
                "observation(s)): each counted once (replicates are not seeds), value = their mean")
        spreads = [c for c in reps.columns if c.endswith(".spread")
                   and (metrics is None or c.removesuffix(".spread") in metrics)]
        worst = {c.removesuffix(".spread"): float(reps[c].max()) for c in spreads if reps[c].notna().any()}
        if worst and all(v == 0 for v in worst.values()):
            return text + "; reproducibility check: replicates identical"
        differ = ", ".join(f"{m} by up to {v:.3g}" for m, v in worst.items() if v > 0)
        return text + (f"; reproducibility check: replicates differ ({differ})" if differ else "")

    @property
    def sweep(self) -> ParentRun:
        """The newest selected sweep (its parent run receives logged figures)."""
        return self.sweeps[0]

    @property
    def param_keys(self) -> list[str]:
        return [c.removeprefix("params.") for c in self.trials.columns if c.startswith("params.")]

    @property
    def metric_keys(self) -> list[str]:
        return sorted(c.removeprefix("metrics.") for c in self.trials.columns
                      if c.startswith("metrics.") and self.trials[c].notna().any())

    @cached_property
    def client(self) -> Any:
        """An `MlflowClient` on the store the runs came from."""
        return _client(self.tracking_uri)

    @property
    def label(self) -> str:
        """A short human label: experiment and sweep id(s)."""
        ids = ", ".join(s.sweep_id for s in self.sweeps)
        return f"{self.experiment_name} (sweep {ids})"

    # -- columns -------------------------------------------------------------------------------
    def resolve(self, name: str) -> str:
        """The trial-table column for a user-facing name (``eta`` -> ``params.loss.eta``).

        `name` resolves to the param key `name`, else the unique param key ending in ``.name``
        (``space.*`` keys only when nothing else matches: they repeat the resolved config), else
        the tag `name` (``loss`` is the family tag). A full column name is accepted as is.

        Raises:
            UnknownColumnError: no key or several keys match.
        """
        return resolve_column(name, self.param_keys, self.trials.columns)

    def resolve_metric(self, name: str) -> str:
        """The trial-table column of a metric, with the available metrics in the error."""
        name = name.strip().removeprefix("metrics.")
        col = f"metrics.{name}"
        if col not in self.trials.columns or self.trials[col].isna().all():
            raise unknown_metric(name, self.metric_keys)
        return col

    def varying(self, columns: Iterable[str]) -> list[str]:
        """The columns among `columns` that take more than one value where present.

        A param present on some trials only (``loss.lam`` on soft-label trials) varies only if it
        takes several values: its presence alone is explained by another column (the family).
        """
        return [c for c in columns if c in self.trials and self.trials[c].nunique(dropna=True) > 1]

    def config_columns(self) -> list[str]:
        """The ``params.*`` columns that vary and describe a configuration (not the ``space.*``
        copies, the seed or the run name)."""
        return self.varying(c for c in self.trials.columns if c.startswith("params.")
                            and not c.startswith("params.space.") and c not in ("params.seed", *_NOT_CONFIG))

    def pooled(self, keys: Sequence[str], frame: pd.DataFrame | None = None) -> list[str]:
        """Configuration columns (`config_columns`) not in `keys` that take several values inside
        one group of `keys`: the configurations a group of `keys` pools together."""
        frame = self.trials if frame is None else frame
        keys = [k for k in keys if k in frame]
        out = []
        for c in self.config_columns():
            if c in keys or c not in frame:
                continue
            counts = (frame.groupby(keys, dropna=False)[c].nunique() if keys
                      else pd.Series([frame[c].nunique()]))
            if (counts > 1).any():
                out.append(c)
        return out

    def default_by(self) -> list[str]:
        """Params among loss.family/psi/eta/lam that vary across the trials (full column names)."""
        return self.varying(f"params.{k}" for k in DEFAULT_BY_KEYS)

    def searched_params(self) -> list[str]:
        """The searched dimensions: varying ``space.*`` params, else the default --by columns."""
        space = self.varying(c for c in self.trials.columns if c.startswith("params.space."))
        return space or self.default_by()

    def display_names(self, columns: Sequence[str]) -> dict[str, str]:
        """Short names for full column names (``params.loss.eta`` -> ``eta``)."""
        bare = {c: c.split(".", 1)[1] if c.split(".", 1)[0] in {"params", "tags", "metrics"} else c
                for c in columns}
        short = _short_names(bare.values())
        return {c: short[bare[c]] for c in columns}

    # -- metrics -------------------------------------------------------------------------------
    @cached_property
    def sweep_metric(self) -> tuple[str | None, Direction | None]:
        """The metric name and mode the sweep optimised (parent ``metric.name``/``metric.mode``)."""
        info = self.sweep
        name_key, mode_key = schema.METRIC_NAME_KEY, schema.METRIC_MODE_KEY
        name = info.params.get(name_key) or info.tags.get(name_key) or info.params.get("metric")
        mode = info.params.get(mode_key) or info.tags.get(mode_key) or info.params.get("mode")
        return name, (mode if mode in ("max", "min") else None)

    def default_metric(self) -> str:
        """The sweep's metric when logged on the trials, else the first task metric present."""
        name, _ = self.sweep_metric
        available = self.metric_keys
        if name and name in available:
            return name
        from sweeps.tasks import all_metric_names  # the one task registry

        for candidate in (*all_metric_names(), *available):
            if candidate in available and candidate != "train_loss":
                return candidate
        if available:
            return available[0]
        raise UnknownMetricError(f"the trial runs of {self.label} have no metrics")

    def direction(self, metric: str) -> Direction:
        """Whether larger (`max`) or smaller (`min`) values of `metric` are better."""
        name, mode = self.sweep_metric
        if metric == name and mode:
            return mode
        from sweeps.tasks import TASKS

        for task in TASKS.values():  # a task metric's direction is the task's (the one registry)
            if metric in task.metric_modes:
                return task.metric_modes[metric]  # type: ignore[return-value]
        low = metric.lower()
        if low in LOWER_IS_BETTER or "loss" in low or "error" in low:
            return "min"
        return "max"

    def metric_range(self, metric: str) -> tuple[float, float] | None:
        """The range a metric cannot leave, when it is known: ``(0.0, 1.0)`` for a share.

        A metric is a share in [0, 1] when it is a task metric (the task registry) that is either
        ``unparseable`` (the base task's share of unparsed answers) or scored higher-is-better, and
        every value logged on the selected runs lies in [0, 1]: the built-in tasks' higher-is-better
        metrics are means of per-example scores in [0, 1] (exact match, off-by-one, relaxed
        accuracy, IoU). None for the rest (MAE, losses, a metric seen above 1).
        """
        from sweeps.tasks import TASKS

        modes = {m: mode for task in TASKS.values() for m, mode in task.metric_modes.items()}
        if metric not in modes or not (metric == "unparseable" or modes[metric] == "max"):
            return None
        col = f"metrics.{metric}"
        source = self.raw_trials if self.raw_trials is not None else self.trials
        values = pd.to_numeric(source[col], errors="coerce").dropna() if col in source else pd.Series(dtype=float)
        if values.empty or values.min() < 0 or values.max() > 1:
            return None
        return (0.0, 1.0)

    def eval_examples(self) -> int | None:
        """The evaluation set size the trials were scored on (``task.eval_size``, when one value)."""
        col = "params.task.eval_size"
        if col not in self.trials:
            return None
        sizes = pd.to_numeric(self.trials[col], errors="coerce").dropna().unique()
        return int(sizes[0]) if len(sizes) == 1 else None

    def histories(self, metrics: Sequence[str], max_workers: int = 8) -> pd.DataFrame:
        """Per-step values of `metrics` for every selected trial run.

        One ``MlflowClient.get_metric_history`` call per (run, metric): MLflow has no public bulk
        read, so against a remote server the calls run in a thread pool; a SQLite store is read
        sequentially (its single file gains nothing from threads).

        Returns:
            Long frame with columns ``run_id, metric, step, value, timestamp`` ([N_points, 5]).
        """
        client = self.client
        jobs = [(r, m) for r in self.trials["run_id"] for m in metrics]

        def fetch(job: tuple[str, str]) -> list[tuple[str, str, int, float, int]]:
            run_id, key = job
            points = client.get_metric_history(run_id, key)
            return [(run_id, key, p.step, p.value, p.timestamp) for p in points]

        if is_sqlite(self.tracking_uri) or len(jobs) < 2:
            chunks = [fetch(j) for j in jobs]
        else:
            with ThreadPoolExecutor(max_workers=max_workers) as pool:
                chunks = list(pool.map(fetch, jobs))
        rows = [row for chunk in chunks for row in chunk]
        return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value", "timestamp"])

    # -- artifacts -----------------------------------------------------------------------------
    def parent_artifact_text(self, path: str) -> str | None:
        """A text artifact of the newest parent run (``spec.yaml``), or None when absent."""
        import tempfile

        client = self.client
        quiet = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
        previous = os.environ.get(quiet)
        os.environ[quiet] = "false"  # no progress bar on stderr for a few bytes of YAML
        try:
            names = {a.path for a in client.list_artifacts(self.sweep.run_id)}
            if path not in names:
                return None
            with tempfile.TemporaryDirectory() as tmp:
                local = client.download_artifacts(self.sweep.run_id, path, tmp)
                return Path(local).read_text(encoding="utf-8")
        except OSError:
            return None
        finally:
            if previous is None:
                os.environ.pop(quiet, None)
            else:
                os.environ[quiet] = previous


def _find_experiment(client: Any, experiment: str) -> Any:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(experiment)
    if exp is None and experiment.isdigit():
        try:
            exp = client.get_experiment(experiment)
        except MlflowException:
            exp = None
    return exp


def _latest_sweeps(client: Any, experiment_ids: list[str], limit: int | None) -> list[Any]:
    return _search_all(client, experiment_ids, run_filter(KIND_SWEEP),
                       order_by=["attributes.start_time DESC"], limit=limit)


def _sweeps_by_id(client: Any, experiment_ids: list[str], sweep_id: str) -> list[Any]:
    # Sweep ids are plain tokens; anything else cannot be one (and would break the filter syntax).
    if not re.fullmatch(r"[\w.:-]+", sweep_id):
        return []
    return _search_all(client, experiment_ids, run_filter(KIND_SWEEP, sweep_id))


def no_sweep_named(experiment: str, uri: str, experiments: Sequence[str]) -> NoSweepError:
    """The error for an `experiment` argument that names no experiment and no sweep id in `uri`."""
    return NoSweepError(f"no experiment or sweep named '{experiment}' in {uri} "
                        f"(experiments: {', '.join(experiments)})")


def _select_sweeps(client: Any, uri: str, all_ids: list[str], experiment: str | None,
                   sweep_id: str | None, all_sweeps: bool) -> tuple[Any, list[Any]]:
    """The experiment and the parent runs (newest first) that `load_sweep`'s arguments select."""
    if sweep_id is not None:
        exp = _find_experiment(client, experiment) if experiment else None
        if experiment and exp is None:
            raise NoSweepError(f"no experiment named '{experiment}' in {uri}")
        parents = _sweeps_by_id(client, [exp.experiment_id] if exp else all_ids, sweep_id)
        if not parents:
            raise NoSweepError(f"no sweep with id '{sweep_id}' in {uri}")
        return client.get_experiment(parents[0].info.experiment_id), parents[:1]
    if experiment is None:
        parents = _latest_sweeps(client, all_ids, limit=1)
        if not parents:
            raise NoSweepError(f"no sweep in {uri} (no run tagged {KIND_TAG}=sweep); "
                               "run `slsweep run` first or name an experiment")
        exp = client.get_experiment(parents[0].info.experiment_id)
        if all_sweeps:
            parents = _latest_sweeps(client, [exp.experiment_id], limit=None)
        return exp, parents
    exp = _find_experiment(client, experiment)
    if exp is None:  # a sweep id names one sweep across experiments
        parents = _sweeps_by_id(client, all_ids, experiment)
        if not parents:
            raise no_sweep_named(experiment, uri, sorted(client.get_experiment(i).name for i in all_ids))
        return client.get_experiment(parents[0].info.experiment_id), parents[:1]
    parents = _latest_sweeps(client, [exp.experiment_id], limit=None if all_sweeps else 1)
    if not parents:
        raise NoSweepError(f"experiment '{exp.name}' has no sweep (no run tagged {KIND_TAG}=sweep)")
    return exp, parents


def load_sweep(experiment: str | None = None, *, sweep_id: str | None = None,
               tracking_uri: str | None = None, runs_dir: Path | str | None = None,
               all_sweeps: bool = False, include_unfinished: bool = False) -> SweepRuns:
    """Read a sweep's trial runs.

    Args:
        experiment: experiment name (or id, or a sweep id); None = the most recent sweep in the
            store (with `all_sweeps`: every sweep of that sweep's experiment).
        sweep_id: exactly this sweep (its parent run's ``slsweep.sweep_id`` tag).
        tracking_uri: MLflow tracking URI; default the run folder's SQLite store.
        runs_dir: run folder whose ``mlflow.db`` to read when `tracking_uri` is not given.
        all_sweeps: take every sweep of the experiment instead of its most recent one.
        include_unfinished: also keep runs that stopped before their budget (KILLED, FAILED,
            RUNNING); each keeps its own ``at_step`` (default: full-budget runs only).

    Raises:
        NoSweepError: the store, experiment or sweep does not exist, or holds no selected trials.
    """
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri, runs_dir)
    client = _client(uri)
    try:
        all_ids = _all_experiment_ids(client)
    except MlflowException as err:
        raise NoSweepError(f"cannot read the MLflow store {uri}: {err.message}") from None
    if not all_ids:
        raise NoSweepError(f"the MLflow store {uri} has no experiments")
    exp, parents = _select_sweeps(client, uri, all_ids, experiment, sweep_id, all_sweeps)
    sweeps = [_sweep_info(r) for r in parents]
    runs: list[Any] = []
    for info in sweeps:
        runs += _search_all(client, [exp.experiment_id], run_filter(KIND_TRIAL, info.sweep_id))
    label = f"{exp.name} (sweep {', '.join(s.sweep_id for s in sweeps)})"
    if not runs:
        raise NoSweepError(f"{label} has no trial runs")
    frame = _trial_frame(runs)
    excluded: dict[str, int] = {}
    if not include_unfinished:
        left = frame[~frame["full_budget"]]
        reasons = left[STOP_REASON_COLUMN] if STOP_REASON_COLUMN in left else [None] * len(left)
        words = pd.Series([stop_word(st, r) for st, r in zip(left["status"], reasons)], dtype=object)
        excluded = {str(k): int(v) for k, v in words.value_counts().sort_index().items()}
        frame = frame[frame["full_budget"]].reset_index(drop=True)
        if frame.empty:
            other = ", ".join(f"{n} {s}" for s, n in excluded.items())
            raise NoSweepError(f"{label} has no finished trial runs ({other}); "
                               "pass --all-runs to include them")
    observations, replicates = collapse_replicates(frame)
    return SweepRuns(tracking_uri=uri, experiment_id=exp.experiment_id, experiment_name=exp.name,
                     sweeps=sweeps, trials=observations, excluded=excluded, replicates=replicates,
                     raw_trials=frame)


def resolve_column(name: str, param_keys: Sequence[str], columns: Iterable[str]) -> str:
    """`SweepRuns.resolve` on given keys: `param_keys` (``loss.eta``) and the trial table's
    `columns` (``params.*``, ``tags.*``, ``metrics.*``).

    Raises:
        UnknownColumnError: no key or several keys match.
    """
    columns = set(columns)
    keys = list(param_keys)
    name = name.strip()
    if name in columns and name.split(".", 1)[0] in {"params", "metrics", "tags"}:
        return name
    if name in keys:
        return f"params.{name}"
    suffix = [k for k in keys if k.endswith(f".{name}")]
    for pool in ([k for k in suffix if not k.startswith("space.")], suffix):
        if len(pool) == 1:
            return f"params.{pool[0]}"
        if len(pool) > 1:
            raise UnknownColumnError(f"column '{name}' is ambiguous: it matches params "
                                     f"{', '.join(pool)}; use the full key")
    if f"tags.{name}" in columns:
        return f"tags.{name}"
    shown = [k for k in keys if not k.startswith("space.")] or keys
    raise UnknownColumnError(f"unknown column '{name}': no param key '{name}' or ending in "
                             f"'.{name}'{did_you_mean(name, [k.rsplit('.', 1)[-1] for k in shown] + shown)} "
                             f"(params: {', '.join(shown) or 'none'})")


# `--baseline` keys beyond the names `--by` accepts: `loss` is the loss family (the word the run
# names and the tag `loss` show), so `--baseline loss=hard` and `family=hard` select the same param.
SELECTOR_ALIASES = {schema.LOSS_TAG: schema.FAMILY_PARAM}


def selector_items(selector: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of a baseline selector ``KEY=VALUE[,KEY=VALUE...]`` (the one
    syntax of `--baseline` in `table`, `plot`, `report`, `confirm` and the automatic baseline),
    stripped, in order.

    Raises:
        UnknownColumnError: a part without ``=`` or with an empty key.
    """
    items = []
    for part in [p.strip() for p in selector.split(",") if p.strip()]:
        name, eq, value = (x.strip() for x in part.partition("="))
        if not eq or not name:
            raise UnknownColumnError(f"--baseline '{selector}': expected column=value, e.g. loss=hard")
        items.append((name, value))
    if not items:
        raise UnknownColumnError(f"--baseline '{selector}': expected column=value, e.g. loss=hard")
    return items


def selector_column(name: str, param_keys: Sequence[str], columns: Iterable[str]) -> str:
    """The trial-table column a selector key names: `resolve_column` of the key, the same names
    `--by` accepts (``loss.family``, ``family``, ``eta``), after `SELECTOR_ALIASES` (``loss`` ->
    ``loss.family``; the tag `loss` only on a store whose trials lack that param).

    Raises:
        UnknownColumnError: no key or several keys match.
    """
    keys = list(param_keys)
    alias = SELECTOR_ALIASES.get(name.strip())
    return resolve_column(alias if alias in keys else name, keys, columns)


def selector_text(items: Iterable[tuple[str, object]]) -> str:
    """A selector from ``(key, value)`` pairs, the alias spelled short: ``loss=hard,lam=1``."""
    short = {v: k for k, v in SELECTOR_ALIASES.items()}
    return ",".join(f"{short.get(k, k)}={v}" for k, v in items)


def unknown_metric(name: str, metric_keys: Sequence[str]) -> UnknownMetricError:
    """The one message for a metric the selected trials do not log."""
    return UnknownMetricError(f"metric '{name}' is not logged on the selected trial runs"
                              f"{did_you_mean(name, metric_keys)} (available: {', '.join(metric_keys) or 'none'})")


def precheck_columns(names: Sequence[str], runs_dir: Path | str | None, metrics: Sequence[str] = ()) -> None:
    """Refuse a --by name or --metric no finished trial of the run folder's own store has, read with sqlite3
    before MLflow, pandas' readers and scipy are imported (an input error answers in well under 2 s).

    Every finished trial's keys are a superset of the selected sweep's full-budget trials' keys, so
    a name unknown here is unknown there; an ambiguity is left to `SweepRuns.resolve`, which sees
    the selected trials only. No store, or no finished trial: nothing is checked here.

    Raises:
        UnknownColumnError: as `resolve_column`, for an unknown name.
    """
    from sweeps.report.status import read_local_store

    db = Path(runs_dir or default_runs_dir()).expanduser() / paths.MLFLOW_DB
    view = read_local_store(db) if (names or metrics) and db.is_file() else None
    if view is None or not view.trials:
        return
    logged = sorted({k for t in view.trials for k, v in t.metrics.items() if v == v})  # v == v: not NaN
    for metric in metrics:
        if metric.strip().removeprefix("metrics.") not in logged:
            raise unknown_metric(metric.strip().removeprefix("metrics."), logged)
    params = sorted({k for t in view.trials for k in t.params})
    columns = {f"params.{k}" for k in params} | {f"tags.{k}" for t in view.trials for k in t.tags} | {
        f"metrics.{k}" for t in view.trials for k in t.metrics}
    for name in names:
        try:
            resolve_column(name, params, columns)
        except UnknownColumnError as exc:
            if str(exc).startswith("unknown column"):
                raise


def param_columns(runs: SweepRuns, names: Sequence[str] | None) -> list[str]:
    """Resolve user-given column names; None/empty -> the default --by columns."""
    if not names:
        return runs.default_by()
    cols = [runs.resolve(n) for n in names]
    return list(dict.fromkeys(cols))


def split_names(values: Sequence[str] | None) -> list[str]:
    """Flatten repeated and comma-separated CLI values: ``["psi,eta", "lam"]`` -> 3 names."""
    return [p.strip() for v in values or [] for p in v.split(",") if p.strip()]


def load_trials(tracking_uri: str, *, sweep_id: str | None = None, experiment: str | None = None,
                include_unfinished: bool = False) -> SweepRuns:
    """`load_sweep` for callers that hold a tracking URI and a sweep id (the sweep summary)."""
    return load_sweep(experiment, sweep_id=sweep_id, tracking_uri=tracking_uri,
                      include_unfinished=include_unfinished)

