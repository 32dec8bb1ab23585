"""The Ray/Optuna private names sweeps.driver.tune_internals relies on still exist with the shape it
uses (one test per function), on the versions it records; and no other sweeps module uses one.

A failure after an upgrade names the function to re-check: fix it there (the only place), then
update RAY_VERSION / OPTUNA_VERSION.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import signal
import subprocess
import sys
import time
import tokenize
from pathlib import Path

import optuna
import pytest
import ray

from sweeps.driver import tune_internals as ti

ROOT = Path(__file__).resolve().parents[1]


def broken(function: str, what: str) -> str:
    return (f"sweeps.driver.tune_internals.{function} relies on {what}, which the installed Ray "
            f"{ray.__version__} / Optuna {optuna.__version__} no longer has: re-check that function")


def require(ok: bool, function: str, what: str) -> None:
    if not ok:
        pytest.fail(broken(function, what), pytrace=False)


def takes(func, *names: str) -> bool:
    params = inspect.signature(func).parameters
    return all(n in params for n in names)


# ------------------------------------------------------------------------------------- versions

def test_recorded_ray_version_is_installed():
    assert ray.__version__ == ti.RAY_VERSION, (
        f"tune_internals was written for Ray {ti.RAY_VERSION}, Ray {ray.__version__} is installed: "
        "run tests/test_tune_internals.py, fix the functions it names, then set RAY_VERSION")


def test_recorded_optuna_version_is_installed():
    assert optuna.__version__ == ti.OPTUNA_VERSION, (
        f"tune_internals was written for Optuna {ti.OPTUNA_VERSION}, Optuna {optuna.__version__} is "
        "installed: run tests/test_tune_internals.py, fix the functions it names, then set OPTUNA_VERSION")


def test_every_function_names_its_version():
    for name in ti.__all__:
        obj = getattr(ti, name)
        if inspect.isfunction(obj):
            doc = obj.__doc__ or ""
            assert re.search(r"(Ray|Optuna) \d+\.\d+", doc), f"tune_internals.{name}: docstring names no version"


# ------------------------------------------------------------------------------------- Ray core

def test_local_cpu_count():
    try:
        n = ti.local_cpu_count()
    except ImportError as exc:
        pytest.fail(broken("local_cpu_count", "ray._private.utils.get_num_cpus") + f" ({exc})", pytrace=False)
    require(isinstance(n, (int, float)) and n >= 1, "local_cpu_count", "get_num_cpus() -> a CPU count")


def test_default_ray_temp_dir():
    try:
        path = ti.default_ray_temp_dir()
    except ImportError as exc:
        pytest.fail(broken("default_ray_temp_dir", "ray._common.utils.get_default_ray_temp_dir") + f" ({exc})",
                    pytrace=False)
    require(isinstance(path, str) and path.endswith("ray"), "default_ray_temp_dir",
            "get_default_ray_temp_dir() -> '<tmp>/ray'")


def test_resolve_auto_address():
    from ray._private import services

    func = getattr(services, "canonicalize_bootstrap_address", None)
    require(func is not None and takes(func, "addr", "temp_dir"), "resolve_auto_address",
            "ray._private.services.canonicalize_bootstrap_address(addr, temp_dir)")


def test_ray_cluster_mode_round_trip():
    from ray._private import ray_constants

    require(isinstance(getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), bool), "ray_cluster_mode",
            "the bool ray._private.ray_constants.ENABLE_RAY_CLUSTER")
    before = ti.ray_cluster_mode()
    saved = ti.set_ray_cluster_mode(not before)
    try:
        assert saved == before and ray_constants.ENABLE_RAY_CLUSTER is (not before)
    finally:
        ti.set_ray_cluster_mode(before)
    assert ti.ray_cluster_mode() == before


def test_local_ray_init_options():
    opts = ti.local_ray_init_options(system_config={"a": 1}, temp_dir=None, node_ip_address="127.0.0.1")
    assert "_temp_dir" not in opts
    opts = ti.local_ray_init_options(system_config={"a": 1}, temp_dir="/tmp/x", node_ip_address="127.0.0.1")
    source = inspect.getsource(inspect.unwrap(ray.init))  # Ray 2.60 pops them from **kwargs
    missing = [k for k in opts if f'kwargs.pop("{k}"' not in source and k not in inspect.signature(ray.init).parameters]
    require(not missing, "local_ray_init_options", f"ray.init's private parameters {missing}")



def test_silence_ray_init_thread_warning():
    """`ray.init` outside the main thread logs the warning on its module's logger."""
    import logging

    import ray._private.worker as worker

    source = inspect.getsource(inspect.unwrap(worker.init))
    head = ti.RAY_INIT_THREAD_WARNING.split(" is not the main")[0]  # two string literals in Ray's source
    require(f'"{head} "' in source and '"is not the main thread."' in source and "logger.warning(" in source, "silence_ray_init_thread_warning",
            "ray._private.worker.init warning that the SIGTERM handler is not set outside the main thread")
    require(worker.logger.name == "ray._private.worker", "silence_ray_init_thread_warning", "its logger's name")
    ti.silence_ray_init_thread_warning()
    ti.silence_ray_init_thread_warning()  # idempotent
    record = logging.LogRecord(worker.logger.name, logging.WARNING, "", 0, ti.RAY_INIT_THREAD_WARNING + ".", (), None)
    assert not worker.logger.filter(record)
    assert len([f for f in worker.logger.filters if type(f).__name__ == "_DropInitThreadWarning"]) == 1

def test_raylet_start_options():
    """The raylet's command carries Ray's prestart count, and is started through the module-level
    `start_ray_process` with `env_updates`; the patch is undone after the block."""
    import ray._private.services as services
    from ray._private import ray_constants

    require(takes(services.start_ray_process, "command", "process_type", "env_updates"), "raylet_start_options",
            "ray._private.services.start_ray_process(command, process_type, ..., env_updates)")
    source = inspect.getsource(services.start_raylet)
    require(ti.PRESTART_FLAG in source and "start_ray_process(" in source and "env_updates=env_updates" in source
            and "PROCESS_TYPE_RAYLET" in source, "raylet_start_options",
            f"start_raylet building '{ti.PRESTART_FLAG}N' and starting the raylet through start_ray_process")
    require(ray_constants.PROCESS_TYPE_RAYLET == "raylet", "raylet_start_options", "PROCESS_TYPE_RAYLET 'raylet'")
    seen = []
    original = services.start_ray_process
    services.start_ray_process = lambda command, process_type, *a, **kw: seen.append((command, process_type, kw))
    try:
        with ti.raylet_start_options(prestart_workers=2, env={"A": "1"}):
            services.start_ray_process([f"{ti.PRESTART_FLAG}16", "--x"], "raylet", False, env_updates={"B": "2"})
            services.start_ray_process([f"{ti.PRESTART_FLAG}16"], "gcs_server", False)
    finally:
        services.start_ray_process = original
    assert seen[0] == ([f"{ti.PRESTART_FLAG}2", "--x"], "raylet", {"env_updates": {"B": "2", "A": "1"}})
    assert seen[1] == ([f"{ti.PRESTART_FLAG}16"], "gcs_server", {})  # other processes untouched
    assert services.start_ray_process is original


def test_trainables_in_job_env():
    """Tune's actor-class cache wraps trainables with a runtime environment of environment variables
    only (the defaults `tune_trainable_env_defaults` hands the raylet); inside the block without."""
    from ray.tune.execution import class_cache

    source = inspect.getsource(class_cache._ActorClassCache.get)
    require("self._cache" in source and 'runtime_env = {"env_vars": env_vars}' in source
            and "DEFAULT_ENV_VARS" in source, "trainables_in_job_env",
            "_ActorClassCache.get wrapping trainables with runtime_env={'env_vars': ...} into self._cache")
    require(isinstance(class_cache.DEFAULT_ENV_VARS, dict), "tune_trainable_env_defaults",
            "ray.tune.execution.class_cache.DEFAULT_ENV_VARS")
    assert ti.tune_trainable_env_defaults() == class_cache.DEFAULT_ENV_VARS
    # before Tune is imported (a local Ray's start), the same values, read from the module's source
    probe = ("import sys; from sweeps.driver import tune_internals as ti; d = ti.tune_trainable_env_defaults(); "
             "assert 'ray.tune' not in sys.modules, 'ray.tune imported'; print(repr(d))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    require(out.returncode == 0, "tune_trainable_env_defaults", f"a literal DEFAULT_ENV_VARS ({out.stderr[-300:]})")
    assert ast.literal_eval(out.stdout.strip()) == class_cache.DEFAULT_ENV_VARS

    class Trainable:
        pass

    original = class_cache._ActorClassCache.get
    with ti.trainables_in_job_env():
        wrapped = class_cache._ActorClassCache().get(Trainable)
    assert class_cache._ActorClassCache.get is original
    assert not (getattr(wrapped, "_default_options", {}) or {}).get("runtime_env")
    assert original(class_cache._ActorClassCache(), Trainable)._default_options["runtime_env"]  # Tune's own: one


# ------------------------------------------------------------------------------------- Ray Tune

@pytest.fixture(scope="module")
def tuner(tmp_path_factory):
    from ray import tune

    def trainable(config):  # never run
        return {"x": 1}

    return tune.Tuner(trainable, tune_config=tune.TuneConfig(time_budget_s=12.0),
                      run_config=tune.RunConfig(name="t", storage_path=str(tmp_path_factory.mktemp("tune"))))


def test_tuner_run_config(tuner):
    from ray import tune

    cfg = ti.tuner_run_config(tuner)
    require(isinstance(cfg, tune.RunConfig), "tuner_run_config", "Tuner._local_tuner.get_run_config()")
    require(cfg is ti.tuner_run_config(tuner) or cfg.callbacks is ti.tuner_run_config(tuner).callbacks,
            "tuner_run_config", "the RunConfig (and its callbacks list) Tune will use, not a copy")


def test_tuner_time_budget_s(tuner):
    require(ti.tuner_time_budget_s(tuner) == 12.0, "tuner_time_budget_s",
            "Tuner._local_tuner._tune_config.time_budget_s")


def test_tuner_search_alg(tuner):
    from ray import tune

    require(isinstance(tuner._local_tuner._tune_config, tune.TuneConfig), "tuner_search_alg",
            "Tuner._local_tuner._tune_config (a TuneConfig)")
    assert ti.tuner_search_alg(tuner) is None  # none given


def test_scheduler_controller():
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController

    controller = object()
    wrapped = TrialRunnerWrapper(controller, trial_executor=None)
    require(ti.scheduler_controller(wrapped) is controller, "scheduler_controller",
            "TrialRunnerWrapper._tune_controller")
    require(hasattr(TuneController, "get_live_trials"), "scheduler_controller",
            "TuneController.get_live_trials()")
    # the wrapper Tune hands a scheduler is a TrialRunnerWrapper
    require("TrialRunnerWrapper(" in inspect.getsource(TuneController._wrapped), "scheduler_controller",
            "TuneController._wrapped() -> TrialRunnerWrapper")


def test_fail_trial():
    from ray.tune.execution.tune_controller import TuneController

    func = getattr(TuneController, "_process_trial_failure", None)
    require(func is not None and takes(func, "trial", "exception"), "fail_trial",
            "TuneController._process_trial_failure(trial, exception)")


def test_asha_forget_trial():
    from ray.tune.schedulers import ASHAScheduler

    sched = ASHAScheduler(time_attr="step", max_t=10, grace_period=1, metric="m", mode="max")
    require(isinstance(getattr(sched, "_trial_info", None), dict), "asha_forget_trial",
            "AsyncHyperBandScheduler._trial_info (a dict trial id -> bracket)")
    sched._trial_info["t1"] = object()
    ti.asha_forget_trial(sched, "t1")
    ti.asha_forget_trial(sched, "unknown")
    assert "t1" not in sched._trial_info


def _optuna_search(**kw):
    from ray.tune.search.optuna import OptunaSearch

    def space(trial):
        trial.suggest_float("x", 0.0, 1.0)

    return OptunaSearch(space=space, metric="m", mode="max", sampler=optuna.samplers.RandomSampler(seed=0), **kw)


def test_repeater_group_and_group_trial_ids():
    from ray.tune.search import Repeater

    rep = Repeater(_optuna_search(), repeat=2, set_index=True)
    require(isinstance(getattr(rep, "_trial_id_to_group", None), dict), "repeater_group",
            "Repeater._trial_id_to_group (a dict)")
    rep.suggest("a")
    rep.suggest("b")
    group = ti.repeater_group(rep, "b")
    assert ti.repeater_group(rep, "nope") is None
    require(group is not None and all(hasattr(group, a) for a in
                                      ("primary_trial_id", "max_trials", "full", "report",
                                       "finished_reporting", "scores")),
            "repeater_group", "_TrialGroup's primary_trial_id, max_trials, full, report, finished_reporting, scores")
    require(ti.group_trial_ids(group) == ["a", "b"], "group_trial_ids",
            "_TrialGroup._trials (insertion-ordered trial id -> score)")
    assert group.primary_trial_id == "a" and group.full()


def test_optuna_search_study_trials_completed():
    search = _optuna_search()
    study = ti.optuna_search_study(search)
    require(isinstance(study, optuna.Study), "optuna_search_study", "OptunaSearch._ot_study (an optuna.Study)")
    search.suggest("t1")
    trials = ti.optuna_search_trials(search)
    require(isinstance(trials, dict) and isinstance(trials.get("t1"), optuna.Trial), "optuna_search_trials",
            "OptunaSearch._ot_trials (trial id -> optuna.Trial)")
    search.on_trial_complete("t1", {"m": 1.0})
    completed = ti.optuna_search_completed(search)
    require(isinstance(completed, set) and "t1" in completed, "optuna_search_completed",
            "OptunaSearch._completed_trials (a set of told trial ids)")
    from ray.tune.search.optuna import OptunaSearch

    assert ti.optuna_search_study(OptunaSearch()) is None  # no space yet: no study


# ------------------------------------------------------------------------------------- Optuna

def test_study_trial_count():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.ask()
    study.ask()
    require(ti.study_trial_count(study) == 2, "study_trial_count", "Study._storage.get_n_trials(Study._study_id)")


def test_rdb_storage_of_and_repoint(tmp_path):
    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    study = optuna.create_study(storage=first, study_name="s")
    assert ti.rdb_storage_of(optuna.create_study()) is None  # in memory
    rdb = ti.rdb_storage_of(study)
    require(isinstance(rdb, optuna.storages.RDBStorage), "rdb_storage_of",
            "Study._storage (an RDBStorage, or a _CachedStorage with it as _backend)")
    require("url" in rdb.__getstate__(), "repoint_rdb_storage", "RDBStorage.__getstate__() holding 'url'")
    optuna.create_study(storage=second, study_name="other")
    ti.repoint_rdb_storage(rdb, second)
    require(rdb.url == second and [s.study_name for s in rdb.get_all_studies()] == ["other"],
            "repoint_rdb_storage", "RDBStorage.__setstate__ building the engine from state['url']")


def test_lazy_rdb_storage_opens_nothing_when_unpickled(tmp_path):
    import pickle

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    study = optuna.create_study(storage=ti.lazy_rdb_storage(f"sqlite:///{old / 'o.db'}"), study_name="s")
    study.ask()
    blob = pickle.dumps(study)
    old.rename(new)  # the run folder moved: the pickled URL names a folder that is gone
    again = pickle.loads(blob)
    rdb = ti.rdb_storage_of(again)
    require(rdb is not None and "engine" not in rdb.__dict__, "lazy_rdb_storage",
            "RDBStorage.__getstate__/__setstate__ with engine, scoped_session, _version_manager")
    ti.repoint_rdb_storage(rdb, f"sqlite:///{new / 'o.db'}")
    assert len(again.trials) == 1 and not old.exists()


def test_study_up_to():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=4)
    require(takes(optuna.Study._get_trials, "deepcopy", "states", "use_cache"), "study_up_to",
            "Study._get_trials(deepcopy, states, use_cache)")
    tpe_source = inspect.getsource(optuna.samplers.TPESampler)
    require("study._get_trials(" in tpe_source, "study_up_to", "TPESampler reading history via study._get_trials")
    view = ti.study_up_to(study, 1)
    assert [t.number for t in view.trials] == [0, 1]
    assert [t.number for t in view._get_trials(deepcopy=False, use_cache=True)] == [0, 1]
    assert view.direction == study.direction


# ------------------------------------------------------------------------------------- one door

PRIVATE = re.compile(
    r"\b(?:ray|optuna)(?:\.\w+)*\._[a-z]"                         # ray._private, optuna.samplers._tpe
    r"|\bfrom (?:ray|optuna)\S*\._[a-z]"
    r"|\.(?:_local_tuner|_tune_config|_tune_controller|_process_trial_failure|_trial_info"
    r"|_trial_id_to_group|_ot_study|_ot_trials|_completed_trials|_get_trials|_study_id|_backend)\b"
    r"|\"_(?:ot_study|storage|backend)\"|\b_(?:system_config|temp_dir|node_ip_address)\b")


def _code_lines(path: Path) -> dict[int, str]:
    """Line number -> the line's code: comments and docstrings (long strings) left out, short
    string literals (getattr names, keyword names) kept."""
    out: dict[int, list[str]] = {}
    with path.open("rb") as fh:
        for tok in tokenize.tokenize(fh.readline):
            if tok.type == tokenize.COMMENT or (tok.type == tokenize.STRING and len(tok.string) > 40):
                continue
            out.setdefault(tok.start[0], []).append(tok.string)
    return {no: " ".join(parts).replace(" . ", ".") for no, parts in out.items()}


def test_no_other_module_uses_ray_or_optuna_private_names():
    hits = []
    for path in sorted((ROOT / "sweeps").rglob("*.py")):
        if path.name == "tune_internals.py":
            continue
        for no, code in _code_lines(path).items():
            if PRIVATE.search(code):
                hits.append(f"{path.relative_to(ROOT)}:{no}: {code}")
    assert not hits, "Ray/Optuna private names outside sweeps.driver.tune_internals:\n" + "\n".join(hits)


def test_stop_local_ray():
    """The private node `ray.shutdown` kills its processes through, with the same parameters."""
    import ray._private.worker as worker
    from ray._private.node import Node

    require(hasattr(worker, "_global_node"), "stop_local_ray", "ray._private.worker._global_node")
    require(takes(Node.kill_all_processes, "check_alive", "allow_graceful", "wait") and hasattr(Node, "is_head")
            and hasattr(Node, "destroy_external_storage"), "stop_local_ray",
            "Node.kill_all_processes(check_alive, allow_graceful, wait), Node.is_head, Node.destroy_external_storage")
    shutdown = inspect.getsource(inspect.unwrap(ray.shutdown))
    require("if _global_node is not None:" in shutdown, "stop_local_ray",
            "ray.shutdown killing the node's processes only when _global_node is set")
    ti.stop_local_ray()  # without a Ray: nothing to stop, no error
    assert not ray.is_initialized()
    source = inspect.getsource(Node)
    require("self.all_processes" in source and "PROCESS_TYPE_RAYLET" in source, "stop_local_ray",
            "Node.all_processes keyed by process type ('raylet')")
    from ray._private import ray_constants

    require(ray_constants.PROCESS_TYPE_RAYLET == "raylet", "stop_local_ray", "PROCESS_TYPE_RAYLET 'raylet'")


def test_a_signal_during_stop_local_ray_is_handled_after_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT sent to this process while `stop_local_ray` runs reaches the handler only
    once the stop is done (raised halfway, it left the raylet's agents running)."""
    events: list[str] = []

    def shutdown() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)  # the handler would run here, at the next bytecode
        events.append("stopped")

    def handler(_signum: int, _frame: object) -> None:
        events.append("handled")
        raise KeyboardInterrupt

    monkeypatch.setattr(ray, "shutdown", shutdown)
    saved = signal.signal(signal.SIGINT, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            ti.stop_local_ray()
    finally:
        signal.signal(signal.SIGINT, saved)
    assert events == ["stopped", "handled"]
    assert signal.getsignal(signal.SIGINT) is saved
    # at the process's exit the same signal ends nothing more: no "Exception ignored in atexit" traceback
    from sweeps.driver import ray_env

    events.clear()
    saved = signal.signal(signal.SIGINT, handler)
    try:
        ray_env._stop_ray_at_exit()
    finally:
        signal.signal(signal.SIGINT, saved)
    assert events == ["stopped", "handled"]
