"""Names are data, never paths; a spec runs code only when the user allows it (issue 24, item 2).

The CLI cases run the real entry point in a subprocess, as a user (or a hostile spec) would: each
is refused in preflight with one line naming the field or flag, exit 2, nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from helpers import cli, one_line_exit_2
from sweeps.store import names
from sweeps.store import paths
from sweeps.errors import SpecError
from sweeps.driver.preflight import plan_sweep

SPEC = """name: {name}
task: {{name: counting, eval_size: 8, train_size: 16, image_size: 32}}
model: {{path: tiny}}
train: {{steps: 2, batch_size: 4, warmup_steps: 0, eval_every: 2, max_new_tokens: 4, data_workers: 0}}
loss: {{family: hard}}
search_space: {{name: one, params: {{lr: {{type: fixed, value: 0.001, target: train.lr}}}}}}
search: {{algorithm: grid, seeds: 1, max_concurrent: 1}}
scheduler: {{type: fifo}}
resources: {{cpu: 1, gpu: 0}}
{extra}"""

HOSTILE = ["..", "../../..", "../../escape", "/Users/me@example.org/soft-labels", "/etc/passwd",
           "a/../../b", "~/x", ".hidden", "x\\..\\y", "名前/..", "a" * 500, "-rf"]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


# --------------------------------------------------------------------------- folder names


@pytest.mark.parametrize("name", HOSTILE)
def test_every_experiment_name_maps_to_one_folder_inside(name: str, tmp_path: Path) -> None:
    folder = names.folder_name(name)
    assert "/" not in folder and "\\" not in folder and folder not in (".", "..")
    assert not folder.startswith((".", "-", "~")) and 0 < len(folder) <= 64
    target = names.artifacts_dir(tmp_path / "runs", name)
    assert target.parent == tmp_path / "runs" / "artifacts"
    assert target.resolve().parent == (tmp_path / "runs" / "artifacts").resolve()


def test_folder_names_keep_safe_names_and_never_merge_two_names() -> None:
    assert names.folder_name("soft-labels_v2.1") == "soft-labels_v2.1"
    mapped = {names.folder_name(n) for n in [*HOSTILE, "a/b", "a_b", "a b", "a:b", "A/B"]}
    assert len(mapped) == len(HOSTILE) + 5


def test_experiment_name_limit_is_mlflows() -> None:
    from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH

    assert names.MAX_EXPERIMENT_NAME == MAX_EXPERIMENT_NAME_LENGTH


def test_a_symlinked_experiment_folder_that_leads_outside_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name="linked", extra="tracking: {experiment: mine}\n"))
    outside = tmp_path / "outside"
    outside.mkdir()
    runs = tmp_path / "runs"
    (runs / "artifacts").mkdir(parents=True)
    (runs / "artifacts" / names.folder_name("mine")).symlink_to(outside)
    with pytest.raises(SpecError, match=r"tracking\.experiment: .*symbolic link .* outside the run folder"):
        plan_sweep(spec, runs_dir=runs, check=True)
    proc = cli("run", str(spec), "--runs-dir", str(runs), "--experiment", "mine", cwd=tmp_path)
    one_line_exit_2(proc, "--experiment", "outside the run folder")
    assert _files(runs) == {runs / "artifacts", runs / "artifacts" / "mine"}
    assert not any(outside.iterdir())
    # a link that stays inside the folder is the user's own layout
    (runs / "artifacts" / "mine").unlink()
    (runs / "artifacts" / "real").mkdir()
    (runs / "artifacts" / "mine").symlink_to(runs / "artifacts" / "real")
    assert names.artifacts_dir_problem(runs, "mine") is None


@pytest.mark.slow
def test_a_hostile_experiment_name_writes_nothing_outside_the_run_folder(tmp_path: Path) -> None:
    """`..` and an absolute Databricks-style name, in one real sweep on local Ray."""
    from sweeps.driver.service import run_sweep

    hostile = "/Users/me@example.org/../../../../escape"
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name="hostile", extra=f"tracking: {{experiment: '{hostile}'}}\n"))
    runs = tmp_path / "a" / "b" / "runs"
    before = _files(tmp_path)
    try:
        run_sweep(spec, runs_dir=runs, verbose=0, print_summary=False)
    finally:
        ray.shutdown()
    outside = {p for p in _files(tmp_path) - before if runs not in p.parents and p != runs}
    assert outside <= {tmp_path / "a", tmp_path / "a" / "b"}, outside
    assert not Path("/Users/me@example.org").exists() and not Path("/escape").exists()
    exp = MlflowClient(paths.default_tracking_uri(runs)).get_experiment_by_name(hostile)
    assert exp is not None and exp.artifact_location == names.artifacts_dir(runs, hostile).as_uri()
    logged = list((runs / "artifacts").rglob("spec.yaml"))
    assert logged and all(names.artifacts_dir(runs, hostile) in p.parents for p in logged)


def test_mlflows_default_experiment_is_pointed_inside_the_run_folder(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow creates a SQLite store's `Default` experiment at `<cwd>/mlruns/0`; `--experiment
    Default` (or a store `mlflow` made elsewhere) would put the sweep's artifacts there."""
    from sweeps.driver.tracking import prepare_experiment

    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runs = tmp_path / "runs"
    runs.mkdir()
    client = MlflowClient(paths.default_tracking_uri(runs))
    eid = prepare_experiment(client, "Default", names.artifacts_dir(runs, "Default").as_uri())
    assert str(elsewhere) in client.get_experiment(eid).artifact_location  # MLflow's own choice
    old_run = client.create_run(eid)
    assert paths.relocate_store(runs) == 1
    assert client.get_experiment(eid).artifact_location == names.artifacts_dir(runs, "Default").as_uri()
    assert client.get_run(old_run.info.run_id).info.artifact_uri == old_run.info.artifact_uri  # its files are there
    note = tmp_path / "note.txt"
    note.write_text("x")
    run = client.create_run(prepare_experiment(client, "Default", None))
    client.log_artifact(run.info.run_id, str(note))
    assert [p.parent.parent.parent for p in runs.rglob("note.txt")] == [names.artifacts_dir(runs, "Default")]
    assert not list(elsewhere.rglob("note.txt"))
    assert paths.relocate_store(runs) == 0  # idempotent


# --------------------------------------------------------------------------- names checked in preflight


def test_a_240_character_spec_name_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "long.yaml"
    spec.write_text(SPEC.format(name="a" * 240, extra=""))
    one_line_exit_2(cli("run", str(spec), "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path),
                    "long.yaml", ": name: 240 characters: at most 100")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["../up", "/abs", "a b", ".hidden", "a/b"])
def test_spec_names_with_path_characters_are_refused(name: str, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name=f"'{name}'", extra=""))
    with pytest.raises(SpecError, match=r": name: "):
        plan_sweep(spec, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_experiment_names_beyond_mlflows_rules_are_one_line(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name="ok", extra=f"tracking: {{experiment: '{'x' * 501}'}}\n"))
    one_line_exit_2(cli("run", str(spec), "--runs-dir", str(runs), cwd=tmp_path),
                    "tracking.experiment: 501 characters: MLflow takes at most 500")
    spec.write_text(SPEC.format(name="ok", extra=""))
    one_line_exit_2(cli("run", str(spec), "--runs-dir", str(runs), "--experiment", "y" * 600, cwd=tmp_path),
                    "--experiment: 600 characters")
    one_line_exit_2(cli("run", str(spec), "--runs-dir", str(runs), "--experiment", "a\nb", cwd=tmp_path),
                    "--experiment: ", "control characters")
    one_line_exit_2(cli("run", str(spec), "--runs-dir", str(runs), "--experiment", "a\u009bb", cwd=tmp_path),
                    "--experiment: ", "control characters")  # a C1 control (CSI) too
    one_line_exit_2(cli("run", str(spec), "--runs-dir", str(runs), "--experiment", " ", cwd=tmp_path),
                    "--experiment: empty experiment name")
    assert not runs.exists()


# --------------------------------------------------------------------------- plug-ins need an allow


def _evil_package(root: Path) -> Path:
    """A plug-in package whose import leaves a marker file (and would do anything else)."""
    pkg = root / "evil_pkg"
    pkg.mkdir()
    marker = root / "IMPORTED"
    (pkg / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (pkg / "mod.py").write_text("from sweeps.tasks import CountingTask\n\nclass Task(CountingTask):\n"
                                "    name = 'evil_task'\n")
    return marker


@pytest.mark.parametrize("field, extra, where", [
    ("task", "", "task.name"),
    ("loss", "", "loss.family"),
    ("psi", "", "loss.psi"),
])
def test_a_spec_naming_a_plugin_imports_nothing_without_an_allow(field: str, extra: str, where: str,
                                                                  tmp_path: Path) -> None:
    marker = _evil_package(tmp_path)
    text = SPEC.format(name="evil", extra=extra)
    if field == "task":
        text = text.replace("name: counting,", "name: 'evil_pkg.mod:Task',")
    elif field == "loss":
        text = text.replace("{family: hard}", "{family: 'evil_pkg.mod:builder'}")
    else:
        text = text.replace("{family: hard}", "{family: soft_label, eta: 0.1, psi: 'evil_pkg.mod:shape'}")
    (tmp_path / "s.yaml").write_text(text)
    for command in (["run", "s.yaml", "--runs-dir", "runs"], ["data", "s.yaml"]):
        proc = cli(*command, cwd=tmp_path)
        one_line_exit_2(proc, where, "not imported", "--allow-plugins", "SLSWEEP_ALLOW_PLUGINS=1")
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("loss", ["{family: 'evil_pkg.mod:builder'}",
                                  "{family: soft_label, eta: 0.1, psi: 'evil_pkg.mod:shape'}"])
def test_a_refused_plugin_is_refused_before_torch_is_imported(loss: str, tmp_path: Path) -> None:
    """The refusal is a name check: it must not wait for torch (~4 s on a busy core), as the loss
    family's registration used to."""
    marker = _evil_package(tmp_path)
    (tmp_path / "s.yaml").write_text(SPEC.format(name="evil", extra="").replace("{family: hard}", loss))
    code = ("import sys\nfrom sweeps.errors import SpecError\nfrom sweeps.config.spec import load_spec\n"
            "try:\n    load_spec('s.yaml')\nexcept SpecError as exc:\n    print(exc)\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "SLSWEEP_ALLOW_PLUGINS"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert "not imported" in proc.stdout and "torch imported: False" in proc.stdout, (proc.stdout, proc.stderr)
    assert not marker.exists()


def test_allowed_plugins_are_imported_at_validation(tmp_path: Path) -> None:
    marker = _evil_package(tmp_path)
    text = SPEC.format(name="evil", extra="").replace("name: counting,", "name: 'evil_pkg.mod:Task',")
    (tmp_path / "s.yaml").write_text(text)
    # the allow comes from the command line or the environment, never from the spec
    proc = cli("data", "s.yaml", "-n", "0", "--allow-plugins", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert marker.read_text() == "ran"
    marker.unlink()
    proc = cli("data", "s.yaml", "-n", "0", cwd=tmp_path, env={"SLSWEEP_ALLOW_PLUGINS": "1"})
    assert proc.returncode == 0 and marker.exists(), proc.stderr


def test_plugin_gate_is_the_one_import_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeps.plugins import ALLOW_ENV, load_object, plugin_roots

    monkeypatch.delenv(ALLOW_ENV, raising=False)
    with pytest.raises(ValueError, match="not imported"):
        load_object("json:dumps", what="psi shape")
    assert plugin_roots(["json:dumps"]) == []
    monkeypatch.setenv(ALLOW_ENV, "1")
    import json

    assert load_object("json:dumps", what="psi shape") is json.dumps
