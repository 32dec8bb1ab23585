"""Where a sweep keeps its files: the run folder, the MLflow store, the Optuna study, Ray storage."""

from __future__ import annotations

import os
from pathlib import Path

RUNS_DIR_ENV = "SLSWEEP_RUNS_DIR"
CACHE_DIR_ENV = "SLSWEEP_CACHE_DIR"
STORE_LOCK = ".stores.lock"  # held while the run folder's SQLite stores are created
PLANS = "sweeps"  # sub-folder of the run folder: one record (and lock) per sweep, for resume


def default_runs_dir() -> Path:
    """The run folder: `$SLSWEEP_RUNS_DIR` or `./slsweep-runs` (absolute)."""
    return Path(os.environ.get(RUNS_DIR_ENV, "slsweep-runs")).expanduser().resolve()


def cache_dir() -> Path:
    """Cache for built tiny models: `$SLSWEEP_CACHE_DIR` or `~/.cache/slsweep`."""
    default = Path.home() / ".cache" / "slsweep"
    return Path(os.environ.get(CACHE_DIR_ENV, default)).expanduser().resolve()


def default_tracking_uri(runs_dir: Path | None = None) -> str:
    """The embedded MLflow store: a SQLite file inside the run folder."""
    return f"sqlite:///{(runs_dir or default_runs_dir()) / 'mlflow.db'}"


def optuna_storage_uri(runs_dir: Path | None = None) -> str:
    """The Optuna study database beside the MLflow store (opens in `optuna-dashboard`)."""
    return f"sqlite:///{(runs_dir or default_runs_dir()) / 'optuna.db'}"


def ray_storage_dir(runs_dir: Path | None = None) -> Path:
    """Ray Tune's storage path (experiment state, checkpoints)."""
    return (runs_dir or default_runs_dir()) / "ray"
