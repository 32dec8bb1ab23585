"""The sweeps table `slsweep status` prints: each sweep's status, trial counts and full-budget best.

The records come from one of two readers that return the same thing:

- `read_local_store`: the run folder's own SQLite store (the embedded default), read-only with the
  standard library's `sqlite3` over MLflow's tables (`experiments`, `runs`, `tags`, `params`,
  `latest_metrics`). Importing MLflow and opening its store costs 1.6-1.8 s on a 2-core machine,
  most of `status`'s time; this reader answers in milliseconds. It returns None (and the MLflow
  reader is used) when the file does not have those tables and columns, so a store from another
  MLflow version never gives a wrong table; `tests/test_everyday.py` checks that both readers
  agree on a store MLflow wrote.
- `read_mlflow`: any tracking URI through `MlflowClient` (a tracking server, another database).

Which runs count follows MlflowClient's defaults: active experiments and runs only (deleted ones
are left out), parents tagged ``slsweep.kind=sweep`` newest first (at most 200), trials tagged
``slsweep.kind=trial`` and FINISHED.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeps.store import schema
from sweeps.store.schema import KIND_SWEEP, KIND_TAG, KIND_TRIAL, SWEEP_ID_TAG, run_filter

MAX_SWEEPS = 200


@dataclass(frozen=True)
class RunRecord:
    """What `status` needs of one MLflow run: ids, status, start time (ms since the epoch) and
    its tags, params and latest metric values."""

    run_id: str
    experiment_id: str
    status: str
    start_time: int
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_mlflow(cls, run: Any) -> RunRecord:
        """From an `mlflow.entities.Run`."""
        return cls(run.info.run_id, str(run.info.experiment_id), run.info.status, int(run.info.start_time or 0),
                   dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))


@dataclass(frozen=True)
class StoreView:
    """The sweeps of a store: experiment names by id, the parent runs (newest first) and the
    FINISHED trial runs of their experiments."""

    experiments: dict[str, str]
    parents: list[RunRecord]
    trials: list[RunRecord]


def _number(value: object) -> float:
    """A param, tag or metric value as a float; NaN when it is missing or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _count(value: object) -> int:
    number = _number(value)
    return int(number) if math.isfinite(number) else 0


def best_full_budget(parents: Sequence[RunRecord], trials: Iterable[RunRecord]) -> dict[str, str]:
    """Each sweep's best metric value over its trial runs that finished at full budget.

    The sweep's metric and mode come from the parent run's ``metric.name``/``metric.mode`` tags
    (or params); a trial counts when it finished at full budget (`sweeps.store.schema.full_budget`:
    FINISHED and its last step, tag ``last_step`` else the metric ``step``, reached its
    ``train.steps``): runs stopped by ASHA or an interrupt hold values from another budget and
    never count.

    Returns:
        sweep id -> text such as ``exact_match=0.462 (best of 8 full-budget trials)``; "—" when none.
    """
    by_sweep: dict[str, list[RunRecord]] = {}
    for run in trials:
        if run.status == schema.FINISHED:
            by_sweep.setdefault(run.tags.get(SWEEP_ID_TAG, ""), []).append(run)
    out: dict[str, str] = {}
    for parent in parents:
        sweep_id = parent.tags.get(SWEEP_ID_TAG, parent.run_id)
        name_key, mode_key = schema.METRIC_NAME_KEY, schema.METRIC_MODE_KEY
        metric = parent.tags.get(name_key) or parent.params.get(name_key)
        mode = parent.tags.get(mode_key) or parent.params.get(mode_key) or "max"
        values = []
        for run in by_sweep.get(sweep_id, []):
            step = schema.step_reached(run.tags.get(schema.LAST_STEP_TAG), run.metrics.get(schema.STEP_METRIC))
            value = run.metrics.get(metric) if metric else None
            if (value is not None and math.isfinite(value)
                    and schema.full_budget(run.status, step, run.params.get(schema.STEPS_PARAM))):
                values.append(value)
        if not values:
            out[sweep_id] = "—"
            continue
        best = max(values) if mode == "max" else min(values)
        of = f"best of {len(values)} full-budget trials" if len(values) > 1 else "1 full-budget trial"
        out[sweep_id] = f"{metric}={best:.4g} ({of})"
    return out


# The tables and columns read_local_store uses; a store without all of them is not read here.
_LAYOUT = {
    "experiments": {"experiment_id", "name", "lifecycle_stage"},
    "runs": {"run_uuid", "experiment_id", "status", "start_time", "lifecycle_stage"},
    "tags": {"run_uuid", "key", "value"},
    "params": {"run_uuid", "key", "value"},
    "latest_metrics": {"run_uuid", "key", "value", "is_nan"},
}


def _open_read_only(db: Path) -> sqlite3.Connection | None:
    try:
        return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None


def read_local_store(db: Path) -> StoreView | None:
    """The sweeps of the SQLite MLflow store `db`, read-only; None when it lacks MLflow's layout."""
    con = _open_read_only(db)
    if con is None:
        return None
    try:
        for table, columns in _LAYOUT.items():
            have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
            if not columns <= have:
                return None
        experiments = {str(i): n for i, n in con.execute(
            "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'")}
        kind = ("SELECT r.run_uuid, r.experiment_id, r.status, r.start_time FROM runs r "
                "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? AND t.value = ? "
                "JOIN experiments e ON e.experiment_id = r.experiment_id AND e.lifecycle_stage = 'active' "
                "WHERE r.lifecycle_stage = 'active'")
        parents = con.execute(kind + " ORDER BY r.start_time DESC, r.run_uuid LIMIT ?",
                              (KIND_TAG, KIND_SWEEP, MAX_SWEEPS)).fetchall()
        exp_ids = sorted({row[1] for row in parents})
        marks = ",".join("?" * len(exp_ids))
        trials = con.execute(kind + f" AND r.status = ? AND r.experiment_id IN ({marks})",
                             (KIND_TAG, KIND_TRIAL, schema.FINISHED, *exp_ids)).fetchall() if exp_ids else []
        records = _with_data(con, parents + trials)
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return StoreView(experiments, records[:len(parents)], records[len(parents):])


def _with_data(con: sqlite3.Connection, rows: list[tuple]) -> list[RunRecord]:
    ids = [row[0] for row in rows]
    data: dict[str, tuple[dict, dict, dict]] = {i: ({}, {}, {}) for i in ids}
    for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        for run, key, value in con.execute(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", chunk):
            data[run][0][key] = value
        for run, key, value in con.execute(f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", chunk):
            data[run][1][key] = value
        for run, key, value, is_nan in con.execute(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", chunk):
            data[run][2][key] = math.nan if is_nan else float(value)
    return [RunRecord(run, str(exp), status, int(start or 0), *data[run]) for run, exp, status, start in rows]


def read_mlflow(tracking_uri: str) -> StoreView:
    """The sweeps of any MLflow tracking store, through `MlflowClient`."""
    from mlflow.tracking import MlflowClient

    from sweeps.report.runs import _search_all

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments: dict[str, str] = {}
    token = None
    while True:  # every page: a store may hold more experiments than one page
        page = client.search_experiments(max_results=1000, page_token=token)
        experiments.update((e.experiment_id, e.name) for e in page)
        token = page.token
        if not token:
            break
    if not experiments:
        return StoreView({}, [], [])
    parents = client.search_runs(list(experiments), filter_string=run_filter(KIND_SWEEP),
                                 order_by=["attributes.start_time DESC"], max_results=MAX_SWEEPS)
    exp_ids = sorted({p.info.experiment_id for p in parents})
    trials = _search_all(client, exp_ids, run_filter(KIND_TRIAL, finished=True)) if exp_ids else []
    return StoreView(experiments, [RunRecord.from_mlflow(p) for p in parents],
                     [RunRecord.from_mlflow(t) for t in trials])


def status_table(view: StoreView) -> str | None:
    """The text table of `view`'s sweeps (None when there are none)."""
    import pandas as pd

    if not view.parents:
        return None
    bests = best_full_budget(view.parents, view.trials)  # one budget: never a value from a stopped trial
    rows = []
    for run in view.parents:
        m = run.metrics
        sweep_id = run.tags.get(SWEEP_ID_TAG)
        rows.append({"sweep": sweep_id, "experiment": view.experiments.get(run.experiment_id),
                     "status": run.status, "trials": _count(m.get("trials_total", 0)),
                     "finished": _count(m.get("trials_finished", 0)), "stopped": _count(m.get("trials_stopped", 0)),
                     "failed": _count(m.get("trials_failed", 0)),
                     "best (full budget)": bests.get(sweep_id or run.run_id, "—")})
    return pd.DataFrame(rows).to_string(index=False)


def unknown_experiment(db: Path, experiment: str) -> list[str] | None:
    """The active experiment names of the SQLite MLflow store `db` when `experiment` names none of
    them (by name or id) and no sweep's ``slsweep.sweep_id``; None when it does, or when `db` cannot
    be read as an MLflow store (the full reader then decides). Read with sqlite3, so a misspelt
    sweep is refused before MLflow is imported."""
    con = _open_read_only(db) if db.is_file() else None
    if con is None:
        return None
    try:
        names = dict(con.execute("SELECT name, experiment_id FROM experiments WHERE lifecycle_stage = 'active'"))
        if experiment in names or experiment in {str(i) for i in names.values()}:
            return None
        hit = con.execute("SELECT 1 FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                          "WHERE t.key = ? AND t.value = ? AND r.lifecycle_stage = 'active' LIMIT 1",
                          (SWEEP_ID_TAG, experiment)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return None if hit else sorted(names)
