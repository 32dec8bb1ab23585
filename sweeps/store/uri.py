"""Can a tracking URI be used, checked before MLflow is imported: a server that answers, a
SQLite file that can be created, an installed database driver, a folder that can be written.
Every command that takes --tracking-uri (writers and readers) checks it here."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from sweeps.errors import SlsweepError, one_line
from sweeps.store import schema


def folder_problem(folder: Path) -> str | None:
    """Why a folder cannot be created or written at `folder`, or None: it (or the nearest existing
    folder above it) is a file, or that folder is not writable."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        return f"{folder}: not a folder (a file of that name exists)"
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{folder}: {existing} is a file, not a folder"
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        return f"{folder}: cannot write in {existing} (permission denied)"
    return None


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
