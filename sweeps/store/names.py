"""Names are data, never paths: the rules for the names a spec or a flag gives.

A spec's `name` becomes the sweep id (`NAME-YYYYmmdd-HHMMSS-xxxxxxxxxxxx`), and through it file
names in the run folder (`sweeps/<id>.json`, `.lock`), Ray's experiment folder and the Optuna
study; it is checked against `NAME_RE` and `MAX_SPEC_NAME`, so every file name it makes stays far
below the 255-byte limit of common file systems. An MLflow experiment name (`tracking.experiment`,
`--experiment`) is free text for MLflow (Databricks names such as `/Users/me@org/soft-labels` are
valid there): it is checked for MLflow's own rules (non-empty, at most
`MAX_EXPERIMENT_NAME` characters) and control characters, and never used as a path: the run
folder keeps an experiment's artifacts under `artifacts/<folder_name(experiment)>`, a single safe
folder name. Trial run names are generated (`t03 soft_label eta=...`) and live in MLflow only.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path

__all__ = ["MAX_EXPERIMENT_NAME", "MAX_SPEC_NAME", "NAME_RE", "artifacts_dir", "artifacts_dir_problem",
           "experiment_name_problem", "folder_name", "spec_name_problem"]

# MLflow's limit (mlflow.utils.validation.MAX_EXPERIMENT_NAME_LENGTH; tests/test_names.py keeps
# the two equal without importing MLflow here, which costs ~1.5 s on every spec load).
MAX_EXPERIMENT_NAME = 500
# A sweep id adds 29 characters and the record file `.json`: 100 keeps file names < 140 bytes.
MAX_SPEC_NAME = 100
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (U+0080-U+009F: e.g. CSI)


def spec_name_problem(name: str) -> str | None:
    """Why `name` cannot be a spec's `name` (the sweep id's prefix, used in file names), or None."""
    if not NAME_RE.match(name):
        return f"{name[:80]!r}: use letters, digits, '_', '-' and '.', starting with a letter or digit"
    if len(name) > MAX_SPEC_NAME:
        return (f"{len(name)} characters: at most {MAX_SPEC_NAME} (the name becomes the sweep id and "
                "file names in the run folder)")
    return None


def experiment_name_problem(name: str) -> str | None:
    """Why MLflow (or a terminal) cannot take `name` as an experiment name, or None."""
    if not name.strip():
        return "empty experiment name"
    if len(name) > MAX_EXPERIMENT_NAME:
        return f"{len(name)} characters: MLflow takes at most {MAX_EXPERIMENT_NAME}"
    if _CONTROL.search(name):
        return f"{name[:80]!r}: control characters (newline, tab, NUL, ...) are not allowed"
    return None


def folder_name(name: str) -> str:
    """One safe folder name for `name`: the name itself when it already is one (letters, digits,
    '_', '-', '.', starting with a letter or digit, at most 64 characters), else its safe
    characters (at most 40) and 10 hex digits of its SHA-256, so two names never share a folder.
    `..`, `/`, an absolute or Databricks-style name never leave the folder they are joined to.
    """
    if _FOLDER_RE.match(name):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ascii_name).strip("._-")[:40]
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}" if slug else f"experiment-{digest}"


def artifacts_dir(runs_dir: Path, experiment: str) -> Path:
    """Where the run folder keeps `experiment`'s MLflow artifacts: `<runs_dir>/artifacts/<folder>`."""
    return runs_dir / "artifacts" / folder_name(experiment)


def artifacts_dir_problem(runs_dir: Path, experiment: str) -> str | None:
    """Why the artifacts of `experiment` would be written outside the run folder, or None: the
    experiment's folder exists as a symbolic link (or through one) that leads out of
    `<runs_dir>/artifacts` (that root itself may be a link the user made, e.g. to a larger disk)."""
    root = runs_dir / "artifacts"
    target = artifacts_dir(runs_dir, experiment)
    if not (target.exists() or target.is_symlink()):
        return None
    real_root, real = root.resolve(), target.resolve()
    if real != real_root and real_root not in real.parents:
        return (f"{target} is a symbolic link to {real}, outside the run folder; remove the link or "
                "choose another experiment name")
    return None
