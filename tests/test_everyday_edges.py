"""The everyday path has no traps (issue 24, item 4): a short `train.steps` brings its dependent
fields along and says so; near-miss names get "did you mean"; hints are complete and quoted;
shell completion and today's license field."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from helpers import cli, imported_after, one_line_exit_2
from report_fixtures import Store, report_runs, report_store  # noqa: F401  (fixtures)
from sweeps.config.trial_config import TrainConfig, TrialConfig
from sweeps.report import UnknownColumnError, UnknownMetricError
from sweeps.config.spec import find_trial_config, load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_steps_override_brings_eval_warmup_and_the_scheduler_along(capsys: pytest.CaptureFixture) -> None:
    # the README's `slsweep trial counting train.steps=50` (eval_every 100 in the file)
    cfg = TrialConfig.from_yaml(find_trial_config("counting"), ["train.steps=50"])
    assert (cfg.train.steps, cfg.train.eval_every, cfg.train.warmup_steps) == (50, 50, 30)
    assert "note: train.steps=50 brings along train.eval_every 100 -> 50" in capsys.readouterr().err
    cfg = TrialConfig.from_yaml(find_trial_config("counting"), ["train.steps=10"])
    assert (cfg.train.eval_every, cfg.train.warmup_steps) == (10, 0)  # warmup keeps its share: 30/400
    spec = load_spec("default", ["train.steps=50"]).spec
    assert (spec.train.eval_every, spec.scheduler.max_t, spec.scheduler.grace_period) == (50, 50, 50)
    # what the user sets is never moved: a bad combination is still one error naming it
    spec = load_spec("default", ["train.steps=50", "train.eval_every=25"]).spec
    assert (spec.train.eval_every, spec.scheduler.max_t) == (25, 50)
    with pytest.raises(Exception, match="train.eval_every: must be <= train.steps"):
        load_spec("default", ["train.steps=50", "train.eval_every=80"])
    # a longer run leaves everything as the file says, but ASHA's max_t that was the file's whole
    # budget: left at 300, every trial would be stopped at step 300 of 900
    spec = load_spec("default", ["train.steps=900"]).spec
    assert (spec.train.eval_every, spec.train.warmup_steps, spec.scheduler.max_t) == (100, 30, 900)
    assert "note: train.steps=900 brings along scheduler.max_t 300 -> 900" in capsys.readouterr().err
    # a max_t below the steps is refused, naming it, whoever set it
    with pytest.raises(Exception, match=r"scheduler.max_t: 300 is below train.steps \(900\): ASHA would stop"):
        load_spec("default", ["train.steps=900", "scheduler.max_t=300"])


def test_a_short_run_in_a_file_evaluates_at_its_end_unless_eval_every_is_set(tmp_path: Path) -> None:
    """A file's `train: {steps: 20}` leaving eval_every unset: its default (100) is not a choice, the
    run is evaluated at step 20 (was refused: "eval_every: must be <= train.steps (20), got 100", a
    field the file never set); a file that sets it too high is still refused, naming it."""
    spec = tmp_path / "short.yaml"
    body = ("name: short\ntask: {name: counting}\nloss: {family: hard}\n"
            "search_space: {name: lr, params: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, target: train.lr}}}\n")
    spec.write_text(body + "train: {steps: 20}\n")
    assert load_spec(spec).spec.train.eval_every == 20
    assert TrainConfig(steps=20).eval_every == 20 and TrainConfig(steps=500).eval_every == 100
    spec.write_text(body + "train: {steps: 20, eval_every: 50}\n")
    with pytest.raises(Exception, match="train.eval_every: must be <= train.steps"):
        load_spec(spec)


@pytest.mark.parametrize("args, needle", [
    (["run", "countng"], "did you mean 'counting'?"),
    (["run", "default", "search_space=papr"], "did you mean 'paper'?"),
    (["run", "default", "metric.name=exact_mach"], "metric.name: 'exact_mach' is not a metric of task counting; "
                                                   "did you mean 'exact_match'?"),
    (["run", "default", "loss.family=soft_lable"], "did you mean 'soft_label'?"),
    (["run", "default", "task.name=countin"], "did you mean 'counting'?"),
    (["run", "default", "train.stpes=5"], "did you mean 'steps'?"),
    (["trial", "countin"], "did you mean 'counting'?"),
    (["run", "default", "loss.psi=gausian"], "laplace; did you mean 'gaussian'?"),
    (["run", "default", "-q", "-v"], "-q/--quiet and -v/--verbose: give one"),
    (["resume", "-q", "-v"], "-q/--quiet and -v/--verbose: give one"),
    (["resume", "--runs-dir", "nowhere"], "no sweep to resume"),
    (["trial", str(Path(__file__).parents[1] / "sweeps" / "specs" / "default.yaml")],
     "search_space: this is a sweep spec: `slsweep trial` runs one trial config"),
])
def test_near_misses_answer_at_once(tmp_path: Path, args: list[str], needle: str) -> None:
    """Each is refused before Ray, MLflow or torch are imported (well under 2 s on an idle core)."""
    one_line_exit_2(cli(*args, cwd=tmp_path), needle)


def test_report_columns_and_metrics_get_did_you_mean(report_runs) -> None:  # noqa: ANN001, F811
    with pytest.raises(UnknownColumnError, match="unknown column 'lamda'.*did you mean 'lam'"):
        report_runs.resolve("lamda")
    with pytest.raises(UnknownMetricError, match="metric 'exact_mach' .*did you mean 'exact_match'"):
        report_runs.resolve_metric("exact_mach")


def test_license_is_an_spdx_expression() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # PEP 639; the table form is deprecated
    assert not any(c.startswith("License ::") for c in project["project"].get("classifiers", []))


def test_shell_completion_completes_commands_flags_and_builtin_specs() -> None:
    slsweep = Path(sys.executable).parent / "slsweep"
    if not slsweep.exists():
        pytest.skip("the slsweep entry point is not installed in this environment")

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_SLSWEEP_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - 1)}
        out = subprocess.run([str(slsweep)], env=env, capture_output=True, text=True, timeout=60)
        return out.stdout.split()

    assert "run" in complete("slsweep ru")
    assert "--runs-dir" in complete("slsweep run --runs")
    assert "counting" in complete("slsweep run coun")
    help_text = subprocess.run([str(slsweep), "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "--install-completion" in help_text


def test_hints_are_shell_quoted(tmp_path: Path) -> None:
    """`Next:`/resume/confirm hints carry the run folder and tracking URI, quoted for a shell."""
    import shlex

    from sweeps.driver import service
    from sweeps.driver.preflight import plan_sweep

    spec = ROOT / "sweeps" / "specs" / "default.yaml"
    runs = tmp_path / "my runs; rm -rf ~"
    plan = plan_sweep(spec, runs_dir=runs, check=False)
    resume = service._resume_command(plan)
    assert shlex.split(resume) == ["slsweep", "resume", plan.sweep_id, "--runs-dir", str(runs.resolve())]
    confirm = service.confirm_command(plan, "loss=hard train.lr=0.1")
    words = shlex.split(confirm)
    assert words[words.index("--baseline") + 1] == "loss=hard train.lr=0.1"
    assert words[words.index("--runs-dir") + 1] == str(runs.resolve())


def test_table_degrades_to_ascii_where_stdout_cannot_encode_unicode(report_store, tmp_path: Path) -> None:  # noqa: ANN001, F811
    """`PYTHONIOENCODING=ascii slsweep table` (an ASCII locale) prints "^" for "↑", never a traceback."""
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C"}
    proc = subprocess.run([sys.executable, "-m", "sweeps.cli", "table", "--tracking-uri", report_store.uri,
                           "--by", "family", "--baseline", "loss=hard"], env=env, capture_output=True,
                          timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode("ascii", "replace")[-2000:]
    out = proc.stdout.decode("ascii")  # every byte is ASCII
    assert "exact_match ^" in out and "Traceback" not in proc.stderr.decode("ascii", "replace")
    from sweeps.textout import stand_in

    assert stand_in("Δ exact_match ↑ [95% CI] ± 0.1 — p†") == "d exact_match ^ [95% CI] +/- 0.1 - p+"


# -- issue 24, the last items: fast answers to bad input, a quiet resume, clean one-line messages,
# -- and what a built-in name means

def test_an_unknown_model_preset_answers_before_torch(tmp_path: Path) -> None:
    """`make-model` checks the preset name in the torch-free registry (was ~4.5 s: torch and
    transformers were imported first); nothing is written."""
    from helpers import imported_after

    out = tmp_path / "model"
    rc, heavy, _, err = imported_after(["make-model", "qwen2-vl-3b", str(out)], ["torch", "transformers"])
    assert rc == 2 and heavy == [], (rc, heavy, err)
    one_line_exit_2(cli("make-model", "qwen2-vl-3b", str(out), cwd=tmp_path),
                    "unknown model preset 'qwen2-vl-3b'; did you mean 'qwen2-vl-2b'?", "paligemma-3b")
    assert not out.exists()


def test_confirm_refuses_a_bad_override_before_reading_the_store(report_store, tmp_path: Path) -> None:  # noqa: ANN001, F811
    """What needs no store (syntax, unknown keys, a field's type and bounds, a loss parameter no
    loss family accepts, --top/--seeds) is refused before MLflow is imported (was ~2-3 s); the rest
    after the sweep is read, blaming the confirm spec, never a temporary file."""
    from helpers import imported_after

    for words, needle in ((["train.stpes=5"], "train.stpes: unknown key; did you mean 'steps'?"),
                          (["train.steps=-3"], "train.steps: Input should be greater than 0 (got -3)"),
                          (["scheduler.type=ashaa"], "scheduler.type: Input should be 'asha' or 'fifo'"),
                          (["train.steps"], "expected KEY=VALUE"),
                          (["loss.eta=7"], "confirm spec (override loss.eta=7): loss.eta: must be in [0, 1], got 7"),
                          (["loss.sigma=-2"], "(override loss.sigma=-2): loss.sigma: must be >= 0"),
                          (["loss.psi=gausian"], "(override loss.psi=gausian): loss.psi: unknown 'gausian'"),
                          (["--baseline", "loss=hardd"], "--baseline 'loss=hardd': loss: unknown 'hardd'; did you mean 'hard'?"),
                          (["--top", "0"], "--top 0: confirm at least 1 configuration"),
                          (["--seeds", "1"], "--seeds 1: give at least 2 seeds")):
        rc, heavy, _, err = imported_after(["confirm", report_store.sweep_id, *words, "--tracking-uri",
                                            report_store.uri], ["mlflow", "ray", "torch"], cwd=tmp_path)
        assert rc == 2 and heavy == [] and needle in err, (words, rc, heavy, err)
    # judged on the confirm spec built from the sweep: by the spec's rules, then by the preflight
    # (task data, model, memory); neither leaves a confirm spec behind, and neither names one
    for word, needle in (("scheduler.grace_period=3", "scheduler.grace_period: applies to scheduler type asha only"),
                         ("task.params.max_count=-1", "task.params.max_count: parameter 'max_count' must be >= 0")):
        proc = cli("confirm", report_store.sweep_id, word, "--tracking-uri", report_store.uri, "--runs-dir",
                   str(tmp_path / "runs"), cwd=tmp_path)
        err = one_line_exit_2(proc, f"confirm spec of {report_store.sweep_id} (override {word}): {needle}")
        assert "/tmp" not in err and "-confirm.yaml" not in err and not (tmp_path / "runs" / "confirm").exists()


@pytest.mark.parametrize("args, needle", [
    (["table", "--format", "mdd"], "'mdd' is not one of 'md'"),
    (["plot", "--kind", "psi-bar"], "did you mean 'psi-bars'?"),
    (["table", "--adjust", "holmes"], "did you mean 'holm'?"),
])
def test_option_errors_carry_no_pydantic_boilerplate(tmp_path: Path, args: list[str], needle: str) -> None:
    """typer validates option values with pydantic; its "Value error, " prefix is not shown."""
    err = one_line_exit_2(cli(*args, cwd=tmp_path), needle)
    assert "Value error" not in err and "Assertion failed" not in err, err
    from sweeps.errors import pydantic_message

    assert pydantic_message("Invalid value for '--kind': Value error, 'x' is not one of 'a'") == \
        "Invalid value for '--kind': 'x' is not one of 'a'"


def test_a_built_in_name_says_which_spec_it_is(tmp_path: Path) -> None:
    """`slsweep run counting` is the GPU spec sweeps/specs/counting.yaml (SmolVLM from the Hub),
    `slsweep trial counting` the tiny trial: `list` shows which specs run offline, and a GPU spec
    that cannot get its resources or model here names the offline spec of its task."""
    listing = cli("list", cwd=tmp_path).stdout
    offline = next(ln for ln in listing.splitlines() if ln.startswith("specs:"))
    gpu = next(ln for ln in listing.splitlines() if ln.startswith("GPU specs:"))
    assert "default.yaml" in offline and "counting.yaml" not in offline
    assert "counting.yaml (HuggingFaceTB/SmolVLM-256M-Instruct)" in gpu
    runs = tmp_path / "runs"
    proc = cli("run", "counting", "resources.cpu=100000", "--runs-dir", str(runs), cwd=tmp_path)
    one_line_exit_2(proc, "specs/counting.yaml", "resources.cpu", "'counting' names the built-in GPU spec",
                    "`slsweep run default` sweeps the counting task on the tiny model")
    assert not runs.exists()
    proc = cli("run", "default", "resources.cpu=100000", "--runs-dir", str(runs), cwd=tmp_path)
    assert "GPU spec" not in one_line_exit_2(proc, "resources.cpu")  # an offline spec: no note


@pytest.mark.slow
def test_resume_is_as_quiet_as_run(tmp_path: Path) -> None:
    """`resume -q` prints no trial-worker log lines: Ray Tune's "(tune_trainable pid=...)
    Restored ... from checkpoint" for each resumed trial was one (the workers' loggers are at
    ERROR in a quiet sweep, `sweeps.driver.ray_env.QUIET_WORKER_ENV`)."""
    import signal
    import time

    from cluster_utils import TINY, kill_leftovers, short_tmp, stop_session

    spec = tmp_path / "quiet.yaml"
    spec.write_text("name: quiet" + TINY + "train: {steps: 36, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, "
                    "eval_every: 3, max_new_tokens: 4}\nsearch_space: {name: eta-only, params: {eta: {type: float, "
                    "low: 0.0, high: 0.3}}}\nsearch: {algorithm: random, num_samples: 1, seed: 3}\nbaselines: []\n")
    runs, ray_tmp = tmp_path / "runs", short_tmp("slq-")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SLSWEEP_RAY_TMP": str(ray_tmp)}
    log = tmp_path / "run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "run", str(spec), "--runs-dir", str(runs), "-q"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while "step 9/36" not in log.read_text(errors="replace"):  # checkpoints from step 3 on
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(120) == 128 + signal.SIGINT
        resumed = subprocess.run([sys.executable, "-m", "sweeps.cli", "resume", "--runs-dir", str(runs), "-q"],
                                 capture_output=True, text=True, env=env, timeout=400, stdin=subprocess.DEVNULL)
    finally:
        stop_session(proc.pid, grace=3.0)
        kill_leftovers(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, text[-3000:]
    assert "finished" in text  # the trial's own progress line, under its run name
    assert "pid=" not in text and "Restored" not in text, text[-3000:]


@pytest.mark.slow
def test_reports_refuse_an_unknown_experiment_on_a_server_before_mlflow(tmp_path: Path) -> None:
    """`table/report/plot NAME --tracking-uri http://...` with a NAME the server does not know: one
    line from MLflow's REST API before MLflow is imported (was ~3 s of client import, more on a
    loaded machine); experiment names, ids and sweep ids the server knows pass to the full check."""
    from mlflow.tracking import MlflowClient

    from cluster_utils import MlflowServer
    from helpers import imported_after
    from sweeps.store import schema
    from sweeps.store.uri import server_experiment_names

    with MlflowServer(tmp_path / "server") as server:
        client = MlflowClient(server.uri)
        exp = client.create_experiment("soft-ablation")
        client.create_run(exp, tags={schema.KIND_TAG: schema.KIND_SWEEP, schema.SWEEP_ID_TAG: "sweep-x1"})
        for cmd in (["table"], ["report", "-o", str(tmp_path / "r.html")], ["plot", "--kind", "psi-bars"]):
            rc, heavy, _, err = imported_after([*cmd, "soft-ablaton", "--tracking-uri", server.uri], ["mlflow"],
                                               cwd=tmp_path)
            assert rc == 2 and heavy == [], (cmd, rc, heavy, err)
            assert f"no experiment or sweep named 'soft-ablaton' in {server.uri} (experiments: Default, " \
                   "soft-ablation)" in err, err
        for known in ("soft-ablation", exp, "sweep-x1"):  # a name, an id, a sweep id
            assert server_experiment_names(server.uri, known) is None, known
        assert server_experiment_names(server.uri, "nope") == ["Default", "soft-ablation"]
    assert not (tmp_path / "r.html").exists()
    assert server_experiment_names(server.uri, "nope") is None  # a server that cannot answer: the full check


@pytest.mark.parametrize("command", [["table"], ["report"], ["plot", "-k", "eta-curve"], ["confirm"]])
def test_reports_on_a_folder_without_a_store_answer_before_mlflow(command: list[str], tmp_path: Path) -> None:
    """No store in the run folder: one line naming where the folder came from (here the default
    folder, no --runs-dir given), before MLflow or pandas are imported."""
    env = {k: v for k, v in os.environ.items() if k != "SLSWEEP_RUNS_DIR"}
    rc, heavy, _, err = imported_after(command, ["mlflow", "pandas", "ray"], cwd=tmp_path, env=env)
    assert rc == 2 and heavy == [], (rc, heavy, err)
    assert "the run folder from the default ./slsweep-runs" in err and "--runs-dir;" not in err, err
    assert not (tmp_path / "slsweep-runs").exists()


def test_switching_the_scheduler_type_by_override_drops_the_other_types_fields(capsys: pytest.CaptureFixture) -> None:
    # default.yaml sets the asha-only grace_period and max_t: fifo by override leaves them out, saying so
    sched = load_spec("default", ["scheduler.type=fifo"]).spec.scheduler
    assert (sched.type, sched.grace_period, sched.max_t) == ("fifo", None, None)
    assert "note: scheduler.type=fifo drops the asha-only scheduler.grace_period 100, scheduler.max_t 300" \
        in capsys.readouterr().err
    # what the user sets is kept, and a fifo with an asha field is still one error naming it
    with pytest.raises(Exception, match="scheduler.max_t: applies to scheduler type asha only"):
        load_spec("default", ["scheduler.type=fifo", "scheduler.max_t=5"])
    assert load_spec("default", ["scheduler.type=asha"]).spec.scheduler.grace_period == 100


def test_the_contact_sheet_gets_an_ordinary_file_mode(tmp_path: Path) -> None:
    """`data --sheet` writes through a temporary file (mkstemp: mode 0600); the sheet ends with the
    mode any new file gets under the umask, readable by others where the umask says so."""
    old = os.umask(0o022)
    try:
        proc = cli("data", "default", "-n", "1", "--sheet", str(tmp_path / "s.png"), cwd=tmp_path)
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.png").stat().st_mode & 0o777 == 0o644


def test_confirm_refuses_an_unknown_sweep_before_mlflow(tmp_path: Path) -> None:
    """A misspelt sweep or experiment in the run folder's own store: read with sqlite3, one line
    with the store's experiments, before MLflow is imported (was 2-3 s)."""
    from mlflow import MlflowClient

    from helpers import imported_after

    runs = tmp_path / "runs"
    runs.mkdir()
    MlflowClient(f"sqlite:///{runs / 'mlflow.db'}").create_experiment("counting-eta")
    rc, heavy, _, err = imported_after(["confirm", "counting-etaa", "--runs-dir", str(runs)],
                                       ["mlflow", "ray", "torch"], cwd=tmp_path)
    assert rc == 2 and heavy == [], (rc, heavy, err)
    assert "no experiment or sweep named 'counting-etaa'" in err and "counting-eta" in err, err


def test_a_pipe_whose_reader_left_ends_quietly(tmp_path: Path) -> None:
    """`slsweep list | true` (or `| head` after the reader is done): no "error: the OS failed"
    line, exit 141 (128 + SIGPIPE) as Unix tools end."""
    script = (f"{shlex.quote(sys.executable)} -m sweeps.cli list 2>{shlex.quote(str(tmp_path / 'err'))} | true; "
              "echo ${PIPESTATUS[0]}")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.stdout.strip() == "141" and (tmp_path / "err").read_text() == "", (proc.stdout, proc.stderr)
