"""A real MLflow SQLite store filled with a known sweep, for the report tests.

Layout (docs/architecture.md "MLflow layout"): experiment ``soft-ablation`` with an older sweep
``sweep-old`` (one group) and the newest sweep ``sweep-new``:

- soft_label, psi in {gaussian, laplace} x eta in {0.1, 0.2} x seeds {0, 1, 2}, lam 1: FINISHED
- soft_label gaussian eta 0.1 lam 3 x seeds {0, 1, 2}: FINISHED
- hard x seeds {0, 1, 2}: FINISHED (the baseline; no psi/eta params)
- label_smoothing x seeds {5, 6, 7}: FINISHED (seeds match no baseline seed: Welch)
- soft_label gaussian eta 0.1 seed 3: KILLED; hard seed 3: FAILED

Each trial logs ``exact_match``, ``mae``, ``train_loss`` and ``step`` at steps 10, 20, 30 (as the
driver logs every numeric Tune result); the step-30 values are the ones in `Store.trials`. A second experiment ``other`` has a sweep too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from sweeps.report.runs import SweepRuns, load_sweep

STEPS = (10, 20, 30)
T0 = 1_700_000_000_000  # ms; start times increase from here so "newest" is well defined


@dataclass
class Trial:
    run_id: str
    family: str
    psi: str | None
    eta: float | None
    lam: float | None
    seed: int
    status: str
    exact_match: float
    mae: float


@dataclass
class Store:
    runs_dir: Path
    uri: str
    experiment: str
    parent_run_id: str
    sweep_id: str
    empty_db: Path
    trials: list[Trial] = field(default_factory=list)

    def empty_store(self, folder: Path) -> str:
        """A fresh, empty (already migrated) MLflow store in `folder`; returns its URI."""
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.empty_db, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    def finished(self, **match: object) -> list[Trial]:
        """FINISHED trials of the newest sweep whose attributes equal `match`."""
        return [t for t in self.trials if t.status == "FINISHED"
                and all(getattr(t, k) == v for k, v in match.items())]


def _effect(family: str, psi: str | None, eta: float | None, lam: float | None) -> float:
    if family == "hard":
        return 0.50
    if family == "label_smoothing":
        return 0.52
    return 0.55 + (0.03 if psi == "laplace" else 0.0) + (eta or 0.0) * 0.2 - 0.01 * ((lam or 1.0) - 1.0)


def fill_store(root: Path) -> Store:
    """Create the store under ``root/runs/mlflow.db`` and return what was written."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    runs_dir = root / "runs"
    runs_dir.mkdir(parents=True)
    uri = f"sqlite:///{runs_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    client.search_experiments()  # creates the schema; keep a copy as an empty-store template
    shutil.copyfile(runs_dir / "mlflow.db", root / "empty.db")
    rng = np.random.default_rng(1234)
    clock = iter(range(T0, T0 + 10**9, 1000))

    def sweep(exp_id: str, sweep_id: str, name: str) -> str:
        parent = client.create_run(exp_id, start_time=next(clock), run_name=name, tags={
            "slsweep.kind": "sweep", "slsweep.sweep_id": sweep_id, "slsweep.spec_name": name})
        pid = parent.info.run_id
        params = {"name": name, "metric.name": "exact_match", "metric.mode": "max",
                  "task.name": "counting", "search.type": "grid", "search.seeds": "3"}
        client.log_batch(pid, params=[Param(k, v) for k, v in params.items()])
        client.log_text(pid, f"name: {name}\ntask:\n  name: counting\nmetric:\n  name: exact_match\n"
                        "  mode: max\n", "spec.yaml")
        client.log_text(pid, "params:\n  eta: {type: categorical, choices: [0.1, 0.2]}\n"
                        "  psi: {type: categorical, choices: [gaussian, laplace]}\n", "search_space.yaml")
        return pid

    def trial(exp_id: str, pid: str, sweep_id: str, family: str, psi: str | None, eta: float | None,
              lam: float | None, seed: int, status: str, index: int) -> Trial:
        final_em = float(np.clip(_effect(family, psi, eta, lam) + rng.normal(0, 0.02), 0, 1))
        final_mae = float(3.0 - 2.0 * final_em + rng.normal(0, 0.05))
        tags = {"mlflow.parentRunId": pid, "slsweep.kind": "trial", "slsweep.sweep_id": sweep_id,
                "trial_id": f"t{index:03d}", "seed": str(seed), "loss": family, "status": status,
                "search_space": "grid.yaml", "search_space_hash": "abc123", "node": "local"}
        tags["psi"] = psi or "none"  # as the tracker writes it for other families
        run = client.create_run(exp_id, start_time=next(clock), tags=tags, run_name=f"trial-{index}")
        rid = run.info.run_id
        params = {"loss.family": family, "seed": str(seed), "task.name": "counting", "model.name": "tiny",
                  "train.lr": "0.001", "space.loss.family": family}
        if psi:
            params.update({"loss.psi": psi, "loss.eta": str(eta), "loss.lam": str(lam),
                           "space.psi": psi, "space.eta": str(eta), "space.lam": str(lam)})
        metrics = []
        for k, step in enumerate(STEPS):
            frac = (k + 1) / len(STEPS)
            ts = T0 + step
            metrics += [Metric("exact_match", final_em * frac, ts, step),
                        Metric("mae", final_mae + (1 - frac), ts, step),
                        Metric("train_loss", 2.0 - frac, ts, step), Metric("step", step, ts, step)]
        client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("slsweep.stop_reason", "asha")] if status == "KILLED" else [])
        client.set_terminated(rid, status=status, end_time=next(clock))
        return Trial(rid, family, psi, eta, lam, seed, status, final_em, final_mae)

    exp = client.create_experiment("soft-ablation", artifact_location=(root / "artifacts").as_uri())
    old = sweep(exp, "sweep-old", "old")
    for s in (0, 1):
        trial(exp, old, "sweep-old", "hard", None, None, None, s, "FINISHED", 900 + s)
    client.set_terminated(old, "FINISHED")

    pid = sweep(exp, "sweep-new", "new")
    store = Store(runs_dir, uri, "soft-ablation", pid, "sweep-new", root / "empty.db")
    i = 0
    plan = [("soft_label", psi, eta, 1.0, s, "FINISHED") for psi in ("gaussian", "laplace")
            for eta in (0.1, 0.2) for s in (0, 1, 2)]
    plan += [("soft_label", "gaussian", 0.1, 3.0, s, "FINISHED") for s in (0, 1, 2)]
    plan += [("hard", None, None, None, s, "FINISHED") for s in (0, 1, 2)]
    plan += [("label_smoothing", None, None, None, s, "FINISHED") for s in (5, 6, 7)]
    plan += [("soft_label", "gaussian", 0.1, 1.0, 3, "KILLED"), ("hard", None, None, None, 3, "FAILED")]
    for family, psi, eta, lam, seed, status in plan:
        store.trials.append(trial(exp, pid, "sweep-new", family, psi, eta, lam, seed, status, i))
        i += 1
    client.set_terminated(pid, "FINISHED")

    # Another experiment whose sweep started earliest: the default (newest sweep) must skip it.
    other = client.create_experiment("other", artifact_location=(root / "artifacts-other").as_uri())
    opid = client.create_run(other, start_time=T0 - 10_000,
                             tags={"slsweep.kind": "sweep", "slsweep.sweep_id": "sweep-other"}).info.run_id
    trial(other, opid, "sweep-other", "hard", None, None, None, 0, "FINISHED", 990)
    return store


_CACHE: dict[str, object] = {}


def _scratch_dir(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    """A folder on tmpfs when there is one: MLflow's schema migration commits dozens of times and
    each fsync costs ~0.1 s on a loaded disk (8 s vs 2 s measured). Removed when pytest ends."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        folder = Path(tempfile.mkdtemp(prefix="slsweep-report-", dir=shm))
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
        return folder
    return factory.mktemp("report-store")


@pytest.fixture(scope="session")
def report_store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """The filled store, built once per session (creating an MLflow SQLite store takes seconds).

    Tests may add artifacts to it (figures, report.html) but must not change runs.
    """
    if "store" not in _CACHE:
        _CACHE["store"] = fill_store(_scratch_dir(request.config, tmp_path_factory))
    return _CACHE["store"]


@pytest.fixture(scope="module")
def report_runs(report_store: Store) -> SweepRuns:
    """The newest sweep of the store, finished trials only."""
    return load_sweep(tracking_uri=report_store.uri)


# -- a search sweep and a replicate sweep with known values (issue 20) ---------------------------

# TPE-like: 8 soft-label trials on seed 0, each its own psi/eta/lam/lr (every eta unique), plus hard CE
# on seed 0. Values chosen so that joining the dots by eta would draw a V (eta 0.15 has an unrelated lr).
SEARCH_TRIALS = [  # psi, eta, lam, lr, exact_match
    ("gaussian", 0.05, 1.5, 3e-4, 0.45), ("laplace", 0.15, 2.5, 1e-2, 0.11),
    ("triangular", 0.25, 1.2, 1e-3, 0.44), ("gaussian", 0.08, 3.0, 5e-4, 0.40),
    ("laplace", 0.22, 1.8, 2e-3, 0.38), ("triangular", 0.12, 2.2, 8e-4, 0.42),
    ("gaussian", 0.28, 2.8, 4e-3, 0.30), ("laplace", 0.03, 1.1, 6e-4, 0.43),
]
SEARCH_HARD = 0.36
# Replicates: triangular psi, lam 2, lr 1e-3; seeds per eta; hard CE on seeds 0-4.
REP_HARD = [0.50, 0.60, 0.55, 0.52, 0.58]
REP_SOFT = {
    0.1: [v + 0.125 for v in REP_HARD[:2]],      # constant paired difference: no test
    0.2: [0.55, 0.62],                           # 2 pairs: a test, no power
    0.3: [0.58, 0.66, 0.57],                     # 3 pairs: power, rough
    0.4: [0.60, 0.65, 0.62, 0.55, 0.66],         # 5 pairs: power
    0.5: [0.99, 0.95, 0.90],                     # near 1: a Student-t interval would pass 1
}
EVAL_SIZE = 500


@dataclass
class SearchStore:
    uri: str
    experiment: str  # sweeps "tpe" and "reps"
    run_ids: dict[str, str] = field(default_factory=dict)  # "tpe-<i>", "tpe-hard", "reps-<eta>-<seed>"


def fill_search_store(uri: str) -> SearchStore:
    """Write the sweeps ``tpe`` and ``reps`` of experiment ``search`` into the empty store `uri`."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("search")
    clock = iter(range(T0, T0 + 10**9, 1000))
    out = SearchStore(uri, "search")

    def sweep(sweep_id: str, algorithm: str) -> str:
        pid = client.create_run(exp, start_time=next(clock), run_name=sweep_id, tags={
            "slsweep.kind": "sweep", "slsweep.sweep_id": sweep_id}).info.run_id
        params = {"metric.name": "exact_match", "metric.mode": "max", "search.algorithm": algorithm}
        client.log_batch(pid, params=[Param(k, v) for k, v in params.items()])
        return pid

    def trial(pid: str, sweep_id: str, name: str, seed: int, value: float, family: str = "soft_label",
              psi: str | None = None, eta: float | None = None, lam: float | None = None,
              lr: float = 1e-3) -> None:
        tags = {"mlflow.parentRunId": pid, "slsweep.kind": "trial", "slsweep.sweep_id": sweep_id,
                "seed": str(seed), "loss": family, "trial_id": name}
        rid = client.create_run(exp, start_time=next(clock), tags=tags, run_name=name).info.run_id
        params = {"loss.family": family, "seed": str(seed), "task.name": "counting",
                  "task.eval_size": str(EVAL_SIZE), "train.steps": "200", "train.lr": repr(lr)}
        if psi:
            params.update({"loss.psi": psi, "loss.eta": repr(eta), "loss.lam": repr(lam),
                           "space.loss.psi": psi, "space.loss.eta": repr(eta), "space.loss.lam": repr(lam),
                           "space.train.lr": repr(lr)})
        metrics = []
        for step, frac in ((100, 0.5), (200, 1.0)):
            metrics += [Metric("exact_match", value * frac, T0 + step, step),
                        Metric("mae", 2.0 - value * frac, T0 + step, step)]
        client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                         tags=[])
        client.set_tag(rid, "last_step", "200")
        client.set_terminated(rid, status="FINISHED", end_time=next(clock))
        out.run_ids[name] = rid

    tpe = sweep("tpe", "tpe")
    for i, (psi, eta, lam, lr, value) in enumerate(SEARCH_TRIALS):
        trial(tpe, "tpe", f"tpe-{i}", 0, value, psi=psi, eta=eta, lam=lam, lr=lr)
    trial(tpe, "tpe", "tpe-hard", 0, SEARCH_HARD, family="hard")
    client.set_terminated(tpe, "FINISHED")
    reps = sweep("reps", "grid")
    for seed, value in enumerate(REP_HARD):
        trial(reps, "reps", f"reps-hard-{seed}", seed, value, family="hard")
    for eta, values in REP_SOFT.items():
        for seed, value in enumerate(values):
            trial(reps, "reps", f"reps-{eta}-{seed}", seed, value, psi="triangular", eta=eta, lam=2.0)
    client.set_terminated(reps, "FINISHED")
    return out


@pytest.fixture(scope="session")
def search_store(report_store: Store, tmp_path_factory: pytest.TempPathFactory) -> SearchStore:
    """`fill_search_store` in a copy of the empty store (built once per session)."""
    if "search" not in _CACHE:
        folder = tmp_path_factory.mktemp("search-store")
        _CACHE["search"] = fill_search_store(report_store.empty_store(folder))
    return _CACHE["search"]
