"""One preflight owns every check (issue 24, item 1): input that Ray, MLflow, peft or the OS would
reject later is one line naming the field, flag or variable, exit 2, before anything is written
and before Ray starts. The CLI cases run the real entry point in a subprocess."""

from __future__ import annotations

import json

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from helpers import cli, one_line_exit_2
from sweeps.errors import runtime_failure
from tests.test_names import SPEC


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[dict]:
    """A valid one-point spec, a run folder and a Ray temp folder that must both stay absent (the
    latter short: pytest's folders are too deep for Ray's socket paths)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(name="edges", extra=""))
    ray_tmp = Path(tempfile.mkdtemp(prefix="slr-", dir="/tmp"))
    ray_tmp.rmdir()
    yield {"spec": spec, "runs": tmp_path / "runs", "ray": ray_tmp, "tmp": tmp_path}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _refused(setup: dict, *args: str, env: dict[str, str] | None = None, needles: tuple[str, ...] = ()) -> str:
    env = {"SLSWEEP_RAY_TMP": str(setup["ray"]), **(env or {})}
    proc = cli("run", str(setup["spec"]), *args, "--runs-dir", str(setup["runs"]), cwd=setup["tmp"], env=env)
    err = one_line_exit_2(proc, *needles)
    assert not setup["runs"].exists(), "nothing written"
    assert not setup["ray"].exists(), "no Ray started"
    return err


@pytest.mark.parametrize("override, field", [
    ("model.lora={r: 0}", "model.lora.r: Input should be greater than or equal to 1"),
    ("model.lora={r: 4, lora_dropout: 1.5}", "model.lora.lora_dropout"),
    ("model.lora={bias: some}", "model.lora.bias"),
    ("model.lora={target_modules: []}", "model.lora.target_modules"),
    ("search.seed=4294967296", "search.seed: Input should be less than or equal to 4294967295"),
    ("ray.runtime_env={pip: 5}", "ray.runtime_env.pip: runtime_env['pip'] must be of type str or List[str]"),
    ("ray.runtime_env={env_vars: {A: 1}}", "ray.runtime_env.env_vars"),
    ("ray.runtime_env={env_var: {A: b}}", "ray.runtime_env.env_var: unknown runtime_env field; "
                                         "did you mean 'env_vars'?"),
    ("task.params.bogus=1", "task.params.bogus: unknown counting parameter 'bogus'"),
    ("task.params.max_count=-3", "task.params.max_count"),
    ("task.image_size=4", "task.image_size"),
    ("task.image_size=5000", "task.image_size: Input should be less than or equal to 4096"),
    ("task.image_size=100000", "task.image_size: Input should be less than or equal to 4096"),
    # checked after the spec is read (against this machine): the error still names the override
    ("resources.cpu=64", "(override resources.cpu=64): resources.cpu: 64 CPUs per trial"),
])
def test_spec_values_ray_or_peft_would_reject(setup: dict, override: str, field: str) -> None:
    _refused(setup, override, needles=(field,))


def test_unknown_lora_options_are_checked_with_peft() -> None:
    pytest.importorskip("peft")
    from sweeps.driver.preflight import lora_problem

    assert lora_problem({"lora_alfa": 4}) == ("model.lora.lora_alfa", "not an option of peft's LoraConfig; did you mean 'lora_alpha'?")
    assert lora_problem({"rank": 4}) == ("model.lora.rank", "not an option of peft's LoraConfig")
    assert lora_problem({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}) == ("model.lora", None)


def test_flags_and_tracking_drivers(setup: dict) -> None:
    _refused(setup, "--search-seed", str(2**32), needles=("--search-seed: 4294967296",))
    err = _refused(setup, "--tracking-uri", "postgresql://me:secret@db.invalid/mlflow",
                   needles=("--tracking-uri: postgresql://me:***@db.invalid/mlflow: its database driver is "
                            "not installed",))
    assert "secret" not in err
    _refused(setup, "--tracking-uri", "mysql+nodriver://db.invalid/m", needles=("--tracking-uri: ",))
    # a SQLite store under a file (absolute, and relative to the current folder: sqlite:///rel.db)
    (setup["tmp"] / "a_file").write_text("")
    for uri in (f"sqlite:///{setup['tmp']}/a_file/mlflow.db", "sqlite:///a_file/mlflow.db"):
        _refused(setup, "--tracking-uri", uri, needles=(f"--tracking-uri: {uri}: cannot create the SQLite file "
                                                        f"there ({setup['tmp'] / 'a_file'}: not a folder",))
    # MLflow 3 refuses to open a file store (it failed after the run folder was made, exit 1)
    for uri in (f"file://{setup['tmp']}/mlruns", "./mlruns"):
        _refused(setup, "--tracking-uri", uri, env={"MLFLOW_ALLOW_FILE_STORE": ""},
                 needles=(f"--tracking-uri: {uri}: MLflow's file store is retired", "MLFLOW_ALLOW_FILE_STORE=true"))
    _refused(setup, "--tracking-uri", f"file://{setup['tmp']}/a_file/mlruns", env={"MLFLOW_ALLOW_FILE_STORE": "true"},
             needles=("is a file, not a folder",))


def test_environment_folders_that_are_files_or_too_deep(setup: dict) -> None:
    tmp = setup["tmp"]
    a_file = tmp / "a_file"
    a_file.write_text("")
    _refused(setup, env={"SLSWEEP_CACHE_DIR": str(a_file / "cache")},
             needles=("SLSWEEP_CACHE_DIR: ", "is a file, not a folder"))
    proc = cli("run", str(setup["spec"]), "--runs-dir", str(setup["runs"]), cwd=tmp,
               env={"SLSWEEP_RAY_TMP": str(a_file)})
    one_line_exit_2(proc, "SLSWEEP_RAY_TMP: ", "not a folder")
    # a Slurm-like job folder: Ray's AF_UNIX socket path under it would pass 107 bytes
    deep = tmp / "job-1234567" / ("x" * 40) / "scratch"
    deep.mkdir(parents=True)
    proc = cli("run", str(setup["spec"]), "--runs-dir", str(setup["runs"]), cwd=tmp,
               env={"TMPDIR": str(deep), "SLSWEEP_RAY_TMP": ""})
    one_line_exit_2(proc, "TMPDIR: ", "over the 107 a Unix socket path may have", "SLSWEEP_RAY_TMP")
    assert not (deep / "ray").exists() and not setup["runs"].exists()
    proc = cli("make-tiny-model", str(a_file), cwd=tmp)
    one_line_exit_2(proc, "PATH: ", "not a folder")
    proc = cli("run", str(setup["spec"]), "--runs-dir", str(a_file / "runs"), cwd=tmp)
    one_line_exit_2(proc, "--runs-dir: ", "is a file, not a folder")


@pytest.mark.parametrize("content, needle", [
    ("[1, 2]", "<root>: a JSON list, not an object"),
    ('{"sweep_id": "x"}', "spec: missing"),
    ('{"sweep_id": "../../elsewhere", "spec": null, "tracking_uri": null, "experiment": "e", "address": null}',
     "sweep_id: '../../elsewhere' is not the file's name 'x'"),
    ('{"sweep_id": "x", "spec": 5, "tracking_uri": null, "experiment": "e", "address": null}',
     "spec: int is not str or NoneType"),
])
def test_a_sweep_record_that_is_json_but_no_record(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "runs" / "sweeps").mkdir(parents=True)
    (tmp_path / "runs" / "sweeps" / "x.json").write_text(content)
    proc = cli("resume", "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path)
    one_line_exit_2(proc, "x.json: ", needle)


def test_ui_ports_and_hosts(tmp_path: Path) -> None:
    for args, needle in ((["--port", "99999"], "--port: 99999: a port is 1 .. 65535"),
                         (["--port", "0"], "--port: 0"),
                         (["--host", "no-such-host.invalid"], "--host: 'no-such-host.invalid'")):
        one_line_exit_2(cli("ui", "--runs-dir", str(tmp_path), *args, cwd=tmp_path), needle)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_exit_2(cli("ui", "--runs-dir", str(tmp_path), "--port", str(port), cwd=tmp_path),
                        f"--port: {port} is in use")


def test_library_errors_at_run_time_are_one_line_exit_1(capsys: pytest.CaptureFixture) -> None:
    """What escapes at run time from Ray, MLflow or the OS: caught by kind in one place."""
    from mlflow.exceptions import MlflowException
    from ray.exceptions import RaySystemError

    from sweeps.cli import user_errors

    for exc, source in ((MlflowException("RESOURCE_DOES_NOT_EXIST: parent run\nis gone"), "MLflow failed"),
                        (RaySystemError("node died"), "Ray failed"),
                        (OSError(28, "No space left on device"), "the OS failed")):
        def run() -> None:
            raise exc

        # the service tells the CLI the command that resumes this sweep in its folder, once Tune
        # saved it; nothing saved (no resume_command): no promise of a resume
        for command in ("slsweep resume s-1 --runs-dir /data/runs", None):
            exc.resume_command = command
            with pytest.raises(typer.Exit) as stop:
                user_errors(run)()
            err = capsys.readouterr().err.strip()
            assert stop.value.exit_code == 1 and "\n" not in err and err.startswith(f"error: {source}: "), err
            if command:
                assert err.endswith("`slsweep resume s-1 --runs-dir /data/runs` continues it"), err
            else:
                assert "resume" not in err, err
    assert runtime_failure(ValueError("a bug")) is None  # anything else keeps its traceback


def test_a_folder_the_os_refuses_to_create_is_refused_in_preflight(setup: dict) -> None:
    """/proc (and a read-only mount) passes os.access for root: a folder there is tried, not
    assumed; the spec's `storage` as well as --runs-dir."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc")
    spec = setup["spec"].parent / "proc.yaml"
    spec.write_text(setup["spec"].read_text() + "storage: /proc/nope\n")
    env = {"SLSWEEP_RAY_TMP": str(setup["ray"])}
    one_line_exit_2(cli("run", str(spec), cwd=setup["tmp"], env=env), "proc.yaml: storage: /proc/nope: cannot create")
    one_line_exit_2(cli("run", str(setup["spec"]), "--runs-dir", "/proc/nope", cwd=setup["tmp"], env=env),
                    "--runs-dir: /proc/nope: cannot create")
    assert not setup["ray"].exists() and not list(Path("/proc").glob(".slsweep-probe-*"))


def test_symlink_loops_are_one_line_naming_the_flag_or_variable(setup: dict) -> None:
    """A path that is a symlink loop (`a -> b -> a`) is refused by whichever flag, variable or
    field named it, exit 2, for every command that takes a path; nothing written, no Ray."""
    tmp = setup["tmp"]
    (tmp / "b").symlink_to(tmp / "a")
    (tmp / "a").symlink_to(tmp / "b")
    loop = str(tmp / "a")
    _refused(setup, env={"SLSWEEP_RAY_TMP": loop}, needles=("SLSWEEP_RAY_TMP: ", "a symlink loop"))
    _refused(setup, env={"SLSWEEP_CACHE_DIR": loop}, needles=("SLSWEEP_CACHE_DIR: ", "a symlink loop"))
    for command in (["run", str(setup["spec"])], ["resume"], ["status"], ["table"], ["ui"], ["report"]):
        one_line_exit_2(cli(*command, "--runs-dir", loop, cwd=tmp), "--runs-dir: ", "a symlink loop")
        one_line_exit_2(cli(*command, cwd=tmp, env={"SLSWEEP_RUNS_DIR": loop}), "SLSWEEP_RUNS_DIR: ", "a symlink loop")
    looped = setup["spec"].parent / "looped.yaml"
    looped.write_text(setup["spec"].read_text() + f"storage: {loop}/runs\n")
    one_line_exit_2(cli("run", str(looped), cwd=tmp), "looped.yaml: storage: ", "a symlink loop")
    one_line_exit_2(cli("make-tiny-model", loop, cwd=tmp), "PATH: ", "a symlink loop")
    one_line_exit_2(cli("data", "counting", "-n", "1", "--sheet", f"{loop}/s.png", cwd=tmp), "--sheet: ", "a symlink loop")
    assert not setup["runs"].exists() and not setup["ray"].exists()


def test_report_outputs_are_checked_before_the_report_is_built(tmp_path: Path) -> None:
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    for command in (["report"], ["table"], ["plot", "-k", "eta-curve"]):
        one_line_exit_2(cli(*command, "-o", str(tmp_path / "a"), cwd=tmp_path), "--output: ", "a symlink loop")
        one_line_exit_2(cli(*command, "-o", str(tmp_path), cwd=tmp_path), "--output: ", "a folder, not a file")


def test_trial_outputs_are_checked_before_the_trial_trains(tmp_path: Path) -> None:
    """`slsweep trial -o / --checkpoint-dir / --resume-from`: refused in one line before any training
    (they were written, or read, only after the trial had run)."""
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "file").write_text("x")
    trial = ("trial", "counting", "train.steps=2")
    one_line_exit_2(cli(*trial, "-o", str(tmp_path / "a"), cwd=tmp_path), "--output: ", "a symlink loop")
    one_line_exit_2(cli(*trial, "-o", str(tmp_path), cwd=tmp_path), "--output: ", "a folder, not a file")
    one_line_exit_2(cli(*trial, "--checkpoint-dir", str(tmp_path / "file"), cwd=tmp_path),
                    "--checkpoint-dir: ", "not a folder (a file of that name exists)")
    one_line_exit_2(cli(*trial, "--checkpoint-dir", str(tmp_path / "file" / "ck"), cwd=tmp_path),
                    "--checkpoint-dir: ", "is a file, not a folder")
    one_line_exit_2(cli(*trial, "--resume-from", str(tmp_path / "gone"), cwd=tmp_path), "--resume-from: ",
                    "no such folder")
    one_line_exit_2(cli(*trial, "--resume-from", str(tmp_path / "a"), cwd=tmp_path), "--resume-from: ",
                    "a symlink loop")
    one_line_exit_2(cli(*trial, "--resume-from", str(tmp_path / "file"), cwd=tmp_path), "--resume-from: ",
                    "not a folder")
    (tmp_path / "empty").mkdir()
    one_line_exit_2(cli(*trial, "--resume-from", str(tmp_path / "empty"), cwd=tmp_path), "--resume-from: ",
                    "not a trial checkpoint (no trial_state.pt")
    # a trial's record-only last checkpoint (no weights): not continued to more steps, nor past its own
    from sweeps.trial.checkpoint import TrainState, save_checkpoint

    save_checkpoint(tmp_path / "ended1", None, None, None, TrainState(step=1), weights=False)
    save_checkpoint(tmp_path / "ended4", None, None, None, TrainState(step=4), weights=False)
    trial = (*trial, "train.eval_every=2", "train.warmup_steps=0")  # no note on what train.steps brings along
    one_line_exit_2(cli(*trial, "--resume-from", str(tmp_path / "ended1"), cwd=tmp_path), "--resume-from: ",
                    "ended at step 1 holds no weights (train.keep_final_weights: false); it cannot continue "
                    "to train.steps=2")
    one_line_exit_2(cli(*trial, "--resume-from", str(tmp_path / "ended4"), cwd=tmp_path), "--resume-from: ",
                    "at step 4, past train.steps=2")
    # the --checkpoint-dir folder itself: its newest step is the checkpoint, said in a note
    for step in (1, 4):
        save_checkpoint(tmp_path / "ck" / f"step_{step:06d}", None, None, None, TrainState(step=step), weights=False)
    proc = cli(*trial, "--resume-from", str(tmp_path / "ck"), cwd=tmp_path)
    note, error = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and note == f"note: --resume-from {tmp_path / 'ck'}: its newest checkpoint, step_000004"
    assert error.startswith(f"error: --resume-from: {tmp_path / 'ck' / 'step_000004'}: the checkpoint is at step 4")


@pytest.mark.slow
def test_a_resumed_trial_must_ask_the_training_its_checkpoint_had(tmp_path: Path) -> None:
    """`slsweep trial --resume-from` with another learning rate (or any setting that decides what
    is trained) is refused in one line naming each field with both values, before the model loads;
    it used to continue silently with the checkpoint's optimizer and the new schedule. Settings of
    evaluation only (`train.eval_every`) may change."""
    trial = ("trial", "counting", "train.steps=4", "train.eval_every=2", "train.warmup_steps=0",
             "train.batch_size=4", "task.eval_size=4", "task.train_size=16")
    first = cli(*trial, "--checkpoint-dir", str(tmp_path / "ck"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    step2 = tmp_path / "ck" / "step_000002"
    one_line_exit_2(cli(*trial, "train.lr=0.01", "--resume-from", str(step2), cwd=tmp_path), "--resume-from: ",
                    "trained with train.lr=0.001 (this run: 0.01)", "(override: train.lr=0.001)")
    one_line_exit_2(cli(*trial, "loss.family=soft_label", "loss.eta=0.2", "--resume-from", str(step2), cwd=tmp_path),
                    "loss.family='hard' (this run: 'soft_label')", "loss.eta unset (this run: 0.2)")
    again = cli(*trial, "train.eval_every=1", "--resume-from", str(step2), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["restarts"] == 1


@pytest.mark.parametrize("sub", ["artifacts", "ray", "sweeps"])
def test_a_run_folder_sub_folder_linked_outside_is_refused(setup: dict, sub: str) -> None:
    outside = setup["tmp"] / "outside"
    outside.mkdir()
    runs = setup["tmp"] / "linked-runs"
    runs.mkdir()
    (runs / sub).symlink_to(outside)
    proc = cli("run", str(setup["spec"]), "--runs-dir", str(runs), cwd=setup["tmp"],
               env={"SLSWEEP_RAY_TMP": str(setup["ray"])})
    one_line_exit_2(proc, f"--runs-dir: {runs / sub} is a symbolic link to {outside}, outside the run folder")
    assert not any(outside.iterdir()) and sorted(p.name for p in runs.iterdir()) == [sub]
    assert not setup["ray"].exists()
    (runs / sub).unlink()
    (runs / "real").mkdir()
    (runs / sub).symlink_to(runs / "real")  # a link inside the run folder is the user's own layout
    from sweeps.driver.preflight import runs_dir_problem

    assert runs_dir_problem(runs) is None
