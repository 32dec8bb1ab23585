"""Helpers shared by several test files (one copy each): the CLI in a subprocess and its one-line
errors, which libraries a command imported, and an ablation table's row."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real `slsweep` entry point in a subprocess (stdin closed, 60 s cap)."""
    full_env = {k: v for k, v in os.environ.items() if k != "SLSWEEP_ALLOW_PLUGINS"}
    full_env.update({"HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def one_line_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The stderr of a subprocess that exited 2 with one ``error: ...`` line holding every needle."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def one_error_line(res: Any) -> str:  # res: a CliRunner Result
    """The output of an in-process CLI call that exited 2 with one ``error: ...`` line."""
    err = res.output.strip()
    assert res.exit_code == 2 and err.startswith("error: ") and err.count("\n") == 0, res.output
    assert "Traceback" not in err
    return err


def imported_after(args: Sequence[str], heavy: Sequence[str], *, cwd: Path | None = None,
                   env: dict[str, str] | None = None) -> tuple[int | None, list[str], str, str]:
    """Run ``slsweep ARGS`` in a fresh interpreter; returns (exit code, the `heavy` modules it
    imported, stdout, stderr)."""
    code = ("import sys\nfrom sweeps.cli import app\ncode = 0\n"
            f"try:\n    app({list(args)!r})\nexcept SystemExit as e:\n    code = e.code\n"
            f"print('RC', code)\nprint('HEAVY', [m for m in {tuple(heavy)!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)
    lines = proc.stdout.splitlines()
    rc = next((ln for ln in lines if ln.startswith("RC ")), None)
    loaded = next((ln for ln in lines if ln.startswith("HEAVY ")), None)
    assert rc is not None and loaded is not None, proc.stdout + proc.stderr
    return (None if rc == "RC None" else int(rc[3:])), eval(loaded[6:]), proc.stdout, proc.stderr  # noqa: S307 - our own printed list


def store_has_runs(db: Path) -> bool:
    """Whether the SQLite MLflow store `db` exists with its tables and a run (a read-only peek that
    never creates or locks the file: a driver may be writing it)."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def table_row(table: Any, **keys: object) -> Any:  # table: AblationTable -> pandas Series
    """The one row of an ablation table whose key columns equal `keys` (None = absent param)."""
    rows = table.rows
    mask = rows.index == rows.index
    for name, value in keys.items():
        col = rows[name]
        mask &= (col.isna() if value is None else col == value).to_numpy()
    assert mask.sum() == 1, keys
    return rows[mask].iloc[0]
