"""Where a sweep keeps its files: the run folder, the MLflow store, the Optuna study, Ray storage."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from sweeps.errors import SlsweepError

RUNS_DIR_ENV = "SLSWEEP_RUNS_DIR"
CACHE_DIR_ENV = "SLSWEEP_CACHE_DIR"
STORE_LOCK = ".stores.lock"  # held while the run folder's SQLite stores are created
PLANS = "sweeps"  # sub-folder of the run folder: one record (and lock) per sweep, for resume
RESERVE = ".space-reserve"  # freed when the disk fills, so the driver can still close its runs
RESERVE_BYTES = 4 << 20
MLFLOW_DB = "mlflow.db"  # the run folder's MLflow store (SQLite)
OPTUNA_DB = "optuna.db"  # the run folder's Optuna studies (SQLite)


class NoStoreError(SlsweepError):
    """The MLflow store a command is to read does not exist."""


def path_problem(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be resolved to an absolute path (a symlink loop, an OS error), or None."""
    try:
        Path(path).expanduser().resolve()
    except RuntimeError:  # Python 3.11-3.12: "Symlink loop from ..."
        return f"{path}: a symlink loop"
    except OSError as exc:  # ELOOP on 3.13+, a name too long, ...
        return f"{path}: cannot be resolved ({exc.strerror or exc})"
    return None


def resolved(path: str | os.PathLike, what: str) -> Path:
    """`path` made absolute (`~` expanded, symlinks followed).

    Raises SlsweepError "`what`: `path`: a symlink loop" (one line naming the flag, variable or
    field `what`) when it cannot be resolved."""
    problem = path_problem(path)
    if problem:
        raise SlsweepError(f"{what}: {problem}")
    return Path(path).expanduser().resolve()


def run_folder(given: str | os.PathLike | None = None) -> Path:
    """The run folder a command uses: `given` (--runs-dir) or `default_runs_dir()`, absolute;
    SlsweepError naming its source when it is a symlink loop."""
    return resolved(given, "--runs-dir") if given else default_runs_dir()


def default_runs_dir() -> Path:
    """The run folder: `$SLSWEEP_RUNS_DIR` or `./slsweep-runs` (absolute).

    A variable set but empty (`SLSWEEP_RUNS_DIR=`, or `export SLSWEEP_RUNS_DIR=$UNSET`) counts as
    unset, as in `runs_dir_source`: `Path("")` is the current folder, which would fill it with
    the run folder's stores.
    """
    return resolved(os.environ.get(RUNS_DIR_ENV) or "slsweep-runs", runs_dir_source())


def runs_dir_source(given: object = None) -> str:
    """What chose the run folder, for messages: `--runs-dir` when `given` (the flag's value),
    else `SLSWEEP_RUNS_DIR` when that variable is set (`default_runs_dir` reads it), else
    `--runs-dir` (the default folder; the flag is how to choose another)."""
    return "--runs-dir" if given or not os.environ.get(RUNS_DIR_ENV) else RUNS_DIR_ENV


def runs_dir_origin(given: object = None) -> str:
    """Where the run folder came from, in words: `--runs-dir`, `SLSWEEP_RUNS_DIR` or the default."""
    if given:
        return "--runs-dir"
    return RUNS_DIR_ENV if os.environ.get(RUNS_DIR_ENV) else "the default ./slsweep-runs"


def cache_dir() -> Path:
    """Cache for built tiny models: `$SLSWEEP_CACHE_DIR` (empty counts as unset) or `~/.cache/slsweep`."""
    default = Path.home() / ".cache" / "slsweep"
    return resolved(os.environ.get(CACHE_DIR_ENV) or default, CACHE_DIR_ENV)


def default_tracking_uri(runs_dir: Path | None = None) -> str:
    """The embedded MLflow store: a SQLite file inside the run folder."""
    return f"sqlite:///{(runs_dir or default_runs_dir()) / MLFLOW_DB}"


def optuna_storage_uri(runs_dir: Path | None = None) -> str:
    """The Optuna study database beside the MLflow store (opens in `optuna-dashboard`)."""
    return f"sqlite:///{(runs_dir or default_runs_dir()) / OPTUNA_DB}"


def ray_storage_dir(runs_dir: Path | None = None) -> Path:
    """Ray Tune's storage path (experiment state, checkpoints)."""
    return (runs_dir or default_runs_dir()) / "ray"


def artifacts_root(runs_dir: Path) -> str:
    """Where the run folder's MLflow artifacts live: `<runs_dir>/artifacts` as a file URI."""
    return (runs_dir / "artifacts").as_uri()


def resolve_tracking_uri(tracking_uri: str | None = None, runs_dir: Path | str | None = None) -> str:
    """The store a reading command opens: `tracking_uri`, else the run folder's own SQLite store
    (`runs_dir`, else `default_runs_dir()`), relocated to that folder (`relocate_store`) when it
    was moved or copied.

    Raises:
        NoStoreError: the SQLite file or the file store's folder does not exist (opening it would
            silently create an empty store, hiding a wrong path).
    """
    from sweeps.store.schema import file_store_path, sqlite_path

    uri = tracking_uri or default_tracking_uri(run_folder(runs_dir) if runs_dir else None)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        chosen = "" if tracking_uri else f"the run folder from {runs_dir_origin(runs_dir)}; "
        hint = f"{chosen}pass --tracking-uri or --runs-dir, or run `slsweep run` first"
        raise NoStoreError(f"no MLflow store at {db} ({hint})")
    if db is not None and not tracking_uri:
        relocate_store(db.parent)  # a moved or copied run folder reads and writes only itself
    local = file_store_path(uri)
    if local is not None and not local.exists():
        raise NoStoreError(f"no MLflow store at {local} (pass --tracking-uri or --runs-dir)")
    return uri


def relocate_store(runs_dir: Path) -> int:
    """Point the artifact locations in `<runs_dir>/mlflow.db` at this folder; returns how many
    experiments changed.

    MLflow stores each experiment's artifact location and each run's artifact URI as absolute
    strings (`file:///old/place/artifacts/EXPERIMENT`); after the folder was moved or copied they
    would still name the old folder, and a copy would write its figures into the original. Every
    location of this layout (`<folder>/artifacts/...`) whose folder is not `runs_dir` is rewritten
    in place, in one transaction. An experiment whose location is any other local folder (MLflow
    creates the store's `Default` experiment at `<creator's cwd>/mlruns/0`; `mlflow` run elsewhere
    makes others so) is pointed at `names.artifacts_dir(runs_dir, name)` for its new runs; its
    existing runs keep their artifact URIs (their files are not here). A store that cannot be
    written (a read-only archive) is left as it is; locations elsewhere (an artifact server, a
    bucket) are never touched.
    """
    db = runs_dir / MLFLOW_DB
    if not db.is_file() or not os.access(db, os.W_OK) or not os.access(runs_dir, os.W_OK):
        return 0
    from sweeps.store.names import artifacts_dir

    here = artifacts_root(runs_dir)
    changed = 0
    try:
        with closing(sqlite3.connect(str(db), timeout=30)) as con:
            rows = con.execute("SELECT experiment_id, name, artifact_location FROM experiments").fetchall()
            for exp_id, name, location in rows:
                local = bool(location) and (location.startswith(("file:", "/")))
                if local and not location.startswith(here + "/") and (
                        not location.startswith("file://") or "/artifacts/" not in location):
                    con.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                                (artifacts_dir(runs_dir, name).as_uri(), exp_id))
                    changed += 1
                    continue
                if not location or not location.startswith("file://") or "/artifacts/" not in location:
                    continue
                old = location[: location.rindex("/artifacts/")] + "/artifacts"
                if old == here:
                    continue
                cut = len(old) + 1  # SQLite substr is 1-based
                con.execute("UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?) "
                            "WHERE experiment_id = ?", (here, cut, exp_id))
                con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                            "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                            (here, cut, exp_id, len(old) + 1, old + "/"))
                changed += 1
            con.commit()
    except sqlite3.Error:
        return 0  # not ours to repair here: the commands that open the store report it
    return changed


def keep_reserve(runs_dir: Path) -> None:
    """Set aside `RESERVE_BYTES` in the run folder (a file of zeros), if not already there.

    When the disk fills mid-sweep the driver deletes it (`free_reserve`) and uses the room to
    close its MLflow runs (SQLite needs space for its journal): the store then tells the truth
    instead of keeping runs RUNNING that nothing will end.
    """
    path = runs_dir / RESERVE
    if path.is_file() and path.stat().st_size >= RESERVE_BYTES:
        return
    try:
        with open(path, "wb") as out:
            out.write(b"\0" * RESERVE_BYTES)
            out.flush()
            os.fsync(out.fileno())
    except OSError:
        path.unlink(missing_ok=True)  # already short of space: the sweep will say so


def free_reserve(runs_dir: Path) -> bool:
    """Delete the reserve file; True if there was one."""
    try:
        (runs_dir / RESERVE).unlink()
        return True
    except OSError:
        return False
