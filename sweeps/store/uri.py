"""Can a tracking URI be used, checked before MLflow is imported: a server that answers, a
SQLite file that can be created, an installed database driver, a folder that can be written.
Every command that takes --tracking-uri (writers and readers) checks it here."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from sweeps.errors import SlsweepError, one_line
from sweeps.store import schema
from sweeps.store.paths import path_problem


def folder_problem(folder: Path) -> str | None:
    """Why a folder cannot be created or written at `folder`, or None: it (or the nearest existing
    folder above it) is a file, or that folder is not writable, or it is a symlink loop."""
    problem = path_problem(folder)
    if problem:
        return problem
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        return f"{folder}: not a folder (a file of that name exists)"
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{folder}: {existing} is a file, not a folder"
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return f"{folder}: cannot write in {existing} (permission denied)"
    if existing is not None:  # os.access passes for root on /proc, a read-only mount: try it
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".slsweep-probe-", dir=existing))
        except OSError as exc:
            return f"{folder}: cannot create a folder in {existing} ({exc.strerror or exc})"
    return None


def output_file_problem(path: Path) -> str | None:
    """Why a file cannot be written at `path` (checked before the work that produces it), or None:
    a symlink loop, an existing folder of that name, or a folder above it that cannot be made."""
    problem = path_problem(path)
    if problem:
        return problem
    path = Path(path).expanduser()
    if path.is_dir():
        return f"{path}: a folder, not a file"
    return folder_problem(path.parent)


def tracking_uri_problem(uri: str) -> str | None:
    """Why the MLflow store at `uri` cannot be used (unreachable, unwritable, unknown kind), or None."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5) as resp:
                if resp.status != 200:
                    return f"{uri}: MLflow server answered {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            return f"{uri}: MLflow server unreachable ({exc})"
    elif parsed.scheme == "sqlite":
        # SQLAlchemy: sqlite:///rel.db is relative to the current folder, sqlite:////abs.db absolute
        db = schema.sqlite_path(uri)
        problem = folder_problem(db.absolute().parent) if db is not None else None  # None: in memory
        if problem or (db is not None and db.is_dir()):
            return f"{uri}: cannot create the SQLite file there ({problem or f'{db} is a folder'})"
    elif parsed.scheme.split("+")[0] in _DATABASES:
        return database_driver_problem(uri)
    elif parsed.scheme in ("file", ""):  # MLflow 3 refuses to open a file store for writing
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() not in ("1", "true"):
            return (f"{uri}: MLflow's file store is retired (MLflow 3 refuses it); use "
                    "sqlite:///PATH/mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true")
        problem = folder_problem(Path(parsed.path or uri).expanduser().absolute())
        return f"{uri}: {problem}" if problem else None
    elif parsed.scheme != "databricks":
        return f"{uri}: unsupported scheme {parsed.scheme!r}"
    return None


_DATABASES = ("postgresql", "mysql", "mssql")  # the SQLAlchemy stores MLflow supports (and sqlite)


def database_driver_problem(uri: str) -> str | None:
    """Why SQLAlchemy cannot load the database driver a `postgresql://` / `mysql+pymysql://` ...
    URI needs (not installed, unknown driver name), or None. Connecting is left to MLflow."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(uri)
        shown = url.render_as_string(hide_password=True)  # never print a password
        url.get_dialect().import_dbapi()
    except ImportError as exc:
        module = getattr(exc, "name", None) or one_line(str(exc))
        return (f"{shown}: its database driver is not installed (no module {module!r}); install the "
                f"driver, or name an installed one in the scheme ({url.get_backend_name()}+DRIVER://)")
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        return f"{uri.split('://')[0]}://...: {one_line(str(exc))}"
    return None


def check_tracking_uri(uri: str) -> None:
    """Fail fast (SlsweepError naming --tracking-uri) when the MLflow store cannot be used."""
    problem = tracking_uri_problem(uri)
    if problem:
        raise SlsweepError(f"--tracking-uri: {problem}")


def server_experiment_names(uri: str, experiment: str) -> list[str] | None:
    """Whether the MLflow tracking server at `uri` (http/https) knows `experiment`, asked over its
    REST API with urllib before MLflow is imported (~0.1 s instead of the client's ~3 s): None
    when `experiment` names an experiment (by name, or id) or a sweep (its parent run's sweep-id
    tag), and also when the server cannot say (an error, an old server: the full check decides);
    else the server's experiment names, sorted, for the "no experiment or sweep named" line.

    The lookups are those of `sweeps.report.runs.load_sweep`: by name, by id when it is a number,
    then the sweep-id tag over every active experiment.
    """
    import json
    import re

    api = f"{uri.rstrip('/')}/api/2.0/mlflow"

    def call(path: str, body: dict | None = None, query: dict | None = None) -> dict | None:
        """The JSON answer, or None for "does not exist" (HTTP 404)."""
        from urllib.parse import urlencode

        url = f"{api}/{path}" + (f"?{urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    try:
        if call("experiments/get-by-name", query={"experiment_name": experiment}) is not None:
            return None
        if experiment.isdigit() and call("experiments/get", query={"experiment_id": experiment}) is not None:
            return None
        experiments, token = [], None
        while True:
            page = call("experiments/search", {"max_results": 1000, **({"page_token": token} if token else {})}) or {}
            experiments += page.get("experiments", [])
            token = page.get("next_page_token")
            if not token:
                break
        ids = [e["experiment_id"] for e in experiments]
        if ids and re.fullmatch(r"[\w.:-]+", experiment):  # a sweep id is a plain token
            found = call("runs/search", {"experiment_ids": ids, "max_results": 1,
                                         "filter": schema.run_filter(schema.KIND_SWEEP, experiment)}) or {}
            if found.get("runs"):
                return None
        return sorted(e["name"] for e in experiments)
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None
