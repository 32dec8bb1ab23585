"""Every use of a private name of Ray (Tune, core) and Optuna, behind one door.

The sweep driver needs a few things neither library offers publicly: failing a hung trial through
Tune's own failure path, the seeds of a `Repeater` group, the Optuna trials an `OptunaSearch`
holds, a study's trial count without copying its trials, Ray's private `ray.init` options, ...
Each such use is one named function here, with the versions it was written for
(`RAY_VERSION`, `OPTUNA_VERSION`) and what it relies on. tests/test_tune_internals.py checks,
one test per function, that the private attribute or module still exists with the shape used
here, and that the installed versions are the recorded ones: an upgrade of Ray or Optuna fails
there, naming the function to re-check, not deep inside a sweep. No other module of `sweeps`
touches a Ray or Optuna private name (tests/test_tune_internals.py greps for them).

Ray and Optuna are imported inside the functions: the preflight imports this module before Ray
is needed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Container, Iterator
from typing import Any

__all__ = [
    "OPTUNA_VERSION", "RAY_VERSION", "asha_forget_trial", "default_ray_temp_dir", "fail_trial",
    "group_trial_ids", "lazy_rdb_storage", "local_cpu_count", "local_ray_init_options", "optuna_search_completed",
    "optuna_search_study", "optuna_search_trials", "ray_cluster_mode", "raylet_start_options", "rdb_storage_of",
    "repeater_group", "repoint_rdb_storage", "resolve_auto_address", "scheduler_controller",
    "set_ray_cluster_mode", "silence_ray_init_thread_warning", "local_ray_stopped", "stop_local_ray", "study_trial_count", "study_up_to", "trainables_in_job_env",
    "tune_trainable_env_defaults", "tuner_run_config", "tuner_search_alg", "tuner_time_budget_s",
]

RAY_VERSION = "2.60.0"     # every Ray function below was written for (and checked on) this version
OPTUNA_VERSION = "5.1.0"   # every Optuna function below was written for this version


# ------------------------------------------------------------------------------------- Ray core

def local_cpu_count() -> float:
    """CPUs a local Ray would see (cgroup/container limits included).

    Ray 2.60: `ray._private.utils.get_num_cpus()`, what `ray.init` uses for a local node's
    `num_cpus` when none is given."""
    from ray._private.utils import get_num_cpus

    return get_num_cpus()


def default_ray_temp_dir() -> str:
    """The temp folder a local Ray uses when none is given ($RAY_TMPDIR, else $TMPDIR/ray).

    Ray 2.60: `ray._common.utils.get_default_ray_temp_dir()` (moved from `ray._private.utils`
    in 2.4x)."""
    from ray._common.utils import get_default_ray_temp_dir

    return get_default_ray_temp_dir()


def resolve_auto_address(temp_dir: str | None) -> str | None:
    """`ray.init(address="auto")`'s lookup of a running cluster: its "host:port", or None.

    Ray 2.60: `ray._private.services.canonicalize_bootstrap_address("auto", temp_dir)`; raises
    ConnectionError (several clusters) or ValueError (bad address) as Ray does."""
    from ray._private.services import canonicalize_bootstrap_address

    return canonicalize_bootstrap_address("auto", temp_dir)


def ray_cluster_mode() -> bool:
    """Whether this process's Ray runs in "cluster mode" (advertises the machine's address).

    Ray 2.60: `ray._private.ray_constants.ENABLE_RAY_CLUSTER`, read from
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once when `ray` is imported."""
    from ray._private import ray_constants

    return ray_constants.ENABLE_RAY_CLUSTER


def set_ray_cluster_mode(enabled: bool) -> bool:
    """Switch `ray_cluster_mode` for this process; returns the previous value (Ray 2.60: the
    module constant `ray._private.ray_constants.ENABLE_RAY_CLUSTER`, read by `ray.init`)."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = enabled
    return saved


def local_ray_init_options(*, system_config: dict[str, Any], temp_dir: str | None,
                           node_ip_address: str) -> dict[str, Any]:
    """`ray.init` keyword arguments for a private local Ray: Ray's system config, its temp
    folder (None: Ray's default) and the node address.

    Ray 2.60: the underscore parameters `_system_config`, `_temp_dir`, `_node_ip_address` of
    `ray.init` (private, documented as such in its docstring)."""
    out: dict[str, Any] = {"_system_config": dict(system_config), "_node_ip_address": node_ip_address}
    if temp_dir:
        out["_temp_dir"] = temp_dir
    return out


_STOPPING = threading.Lock()  # held while `stop_local_ray` runs


def local_ray_stopped() -> bool:
    """Whether this process is connected to no Ray and no `stop_local_ray` is under way (waits for
    one to finish). The thread that started a local Ray waits for this before it ends: its end
    kills the Ray processes it started (their parent-death signal), which must not happen in the
    middle of `stop_local_ray`'s disconnect.

    Ray 2.60: a local Ray's processes are started with `PR_SET_PDEATHSIG` = SIGKILL
    (`ray._private.utils.set_kill_on_parent_death_linux`, called by `services.start_ray_process`),
    which Linux sends when the starting thread ends; no private name is used here.
    """
    import ray

    with _STOPPING:
        return not ray.is_initialized()


def stop_local_ray() -> None:
    """`ray.shutdown()` of the private local Ray this process started, without Ray's graceful wait.

    Ray's shutdown sends each of its processes (raylet, GCS, log monitor, dashboard, ...) SIGTERM and
    waits up to 1 s for it to exit. A sweep's local Ray runs with SIGTERM blocked
    (`sweeps.driver.ray_env.init_ray`: a SIGTERM sent to the process group must not kill Ray under
    the driver's graceful stop), so every one of those waits ran out: about 5 s at the exit of every
    `slsweep run` (the raylet and GCS were then SIGKILLed anyway). Here `ray.shutdown()` disconnects
    the driver first with the node hidden from it, then the node's processes are killed (SIGKILL) and
    reaped at once, as Ray does after its wait, and with the raylet the processes it started (its
    dashboard and runtime-env agents, idle workers), which otherwise outlive a GCS killed at the same
    moment by a minute or more. (Killing them before the driver disconnects makes the disconnect
    wait ~15 s on a raylet that is gone.) A Ray this process joined is only disconnected.

    Ray 2.60: `ray._private.worker._global_node` (a `Node`; `ray.shutdown` kills its processes only
    when it is set), `Node.all_processes["raylet"]` (`ProcessInfo.process`, a Popen),
    `Node.kill_all_processes(check_alive, allow_graceful, wait)`, `Node.destroy_external_storage()`,
    `Node.is_head()`, as `ray.shutdown` itself uses them.
    """
    from sweeps.driver.signals import signals_held

    # A stop signal during the stop (the second of SIGTERM-then-Ctrl-C) raised out of it halfway,
    # the node already forgotten and the raylet's agents not yet killed: they lived on.
    with signals_held(), _STOPPING:
        _stop_local_ray()


def _stop_local_ray() -> None:
    import psutil
    import ray
    import ray._private.worker as worker

    node = getattr(worker, "_global_node", None)
    if node is None or not node.is_head():
        ray.shutdown()
        return

    def raylet_children() -> list[psutil.Process]:
        found = []
        for info in node.all_processes.get("raylet", []):
            try:
                found += psutil.Process(info.process.pid).children(recursive=True)
            except psutil.Error:  # already gone
                pass
        return found

    # Looked up before the disconnect too: should the raylet die during it (a Ray started by a
    # thread that ended: its parent-death signal), its agents would be orphans nobody finds.
    started = raylet_children()
    worker._global_node = None
    try:
        ray.shutdown()
    finally:
        started += [p for p in raylet_children() if p not in started]
        node.destroy_external_storage()
        node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
        for proc in started:  # SIGKILL cannot be refused; not waited for (init reaps them)
            try:
                proc.kill()
            except psutil.Error:
                pass



RAY_INIT_THREAD_WARNING = "SIGTERM handler is not set because current thread is not the main thread"


class _DropInitThreadWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(RAY_INIT_THREAD_WARNING)


def silence_ray_init_thread_warning() -> None:
    """Drop the warning `ray.init` logs when it runs outside the main thread (a local Ray started
    in the background, `sweeps.driver.early_ray`, whose `wait` installs the same SIGTERM handler
    from the main thread). Idempotent.

    Ray 2.60: `ray._private.worker.init` logs `RAY_INIT_THREAD_WARNING` on its module logger
    (`logging.getLogger("ray._private.worker")`) instead of calling `set_sigterm_handler`.
    """
    logger = logging.getLogger("ray._private.worker")
    if not any(isinstance(f, _DropInitThreadWarning) for f in logger.filters):
        logger.addFilter(_DropInitThreadWarning())

PRESTART_FLAG = "--num_prestart_python_workers="


@contextlib.contextmanager
def raylet_start_options(*, prestart_workers: int, env: dict[str, str]) -> Iterator[None]:
    """Inside the block, a local Ray's raylet is started with `prestart_workers` idle Python workers
    (instead of one per CPU of the node) and with `env` added to its environment (its workers
    inherit it).

    With the system config `prestart_worker_first_driver` (Ray starts idle workers when the first
    driver connects) and `preload_python_modules` (each worker imports those modules when it
    starts), this lets a sweep's trial workers import torch and the trial code while the driver
    still plans: Tune's trial actor then takes a worker that is already warm. Ray prestarts one
    worker per CPU; on a many-core machine most would import torch for nothing, so the count is
    set here. Prestarted workers serve only jobs without a runtime environment (their runtime-env
    hash is empty), which is why the workers' variables travel in the raylet's environment.

    Ray 2.60: `ray._private.services.start_raylet` builds the raylet's command with
    `--num_prestart_python_workers=<node CPUs>` and starts it through the module-level
    `ray._private.services.start_ray_process(command, process_type, fate_share, env_updates=...)`
    with `process_type == ray_constants.PROCESS_TYPE_RAYLET` ("raylet").
    """
    import ray._private.services as services

    original = services.start_ray_process

    def start(command: list[str], process_type: str, *args: Any, **kwargs: Any) -> Any:
        if process_type == "raylet":
            command = [f"{PRESTART_FLAG}{prestart_workers}" if c.startswith(PRESTART_FLAG) else c for c in command]
            kwargs["env_updates"] = {**(kwargs.get("env_updates") or {}), **env}
        return original(command, process_type, *args, **kwargs)

    services.start_ray_process = start
    try:
        yield
    finally:
        services.start_ray_process = original


# ------------------------------------------------------------------------------------- Ray Tune

@contextlib.contextmanager
def trainables_in_job_env() -> Iterator[None]:
    """Inside the block, Tune creates its trainable actors without a runtime environment of their
    own: they run in the job's (a warm local sweep's: none), so they can take the workers a local
    Ray prestarted (`raylet_start_options`; Ray lends a prestarted worker only to a task or actor
    whose runtime environment is the one it was started with, and prestarted workers have none).

    Tune's own runtime environment for trainables holds only environment variables: `PL_DISABLE_FORK=1`
    and the driver's values of a few variables (AWS credentials, Ray Train's), which a local Ray's
    workers inherit anyway from the raylet, started from the driver's environment
    (`sweeps.driver.ray_env.local_worker_env` adds `PL_DISABLE_FORK`).

    Ray 2.60: `ray.tune.execution.class_cache._ActorClassCache.get(self, trainable_cls)` wraps a
    trainable class with `ray.remote(runtime_env={"env_vars": ...})` and caches it in `self._cache`
    (a dict keyed by the class); `DEFAULT_ENV_VARS` holds `PL_DISABLE_FORK`.
    """
    import ray
    from ray.tune.execution import class_cache

    original = class_cache._ActorClassCache.get

    def get(self: Any, trainable_cls: type) -> Any:
        if trainable_cls not in self._cache:
            self._cache[trainable_cls] = ray.remote(trainable_cls)
        return self._cache[trainable_cls]

    class_cache._ActorClassCache.get = get
    try:
        yield
    finally:
        class_cache._ActorClassCache.get = original


def tune_trainable_env_defaults() -> dict[str, str]:
    """The environment variables Tune sets on every trainable actor (Ray 2.60:
    `ray.tune.execution.class_cache.DEFAULT_ENV_VARS`, a dict literal at the module's top level).

    Read from that module's source unless Tune is already imported: the local Ray's start needs
    them (`sweeps.driver.ray_env.local_worker_env`) and importing `ray.tune` for one constant took
    ~1-1.5 s of that start, in the thread that races the preflight's imports for the GIL.

    Raises:
        RuntimeError: the module no longer assigns a literal `DEFAULT_ENV_VARS`.
    """
    import sys

    loaded = sys.modules.get("ray.tune.execution.class_cache")
    if loaded is not None:
        return dict(loaded.DEFAULT_ENV_VARS)
    import ast
    from pathlib import Path

    import ray

    source = Path(ray.__file__).parent / "tune" / "execution" / "class_cache.py"
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DEFAULT_ENV_VARS" for t in node.targets):
            try:
                return dict(ast.literal_eval(node.value))
            except ValueError:
                break
    raise RuntimeError(f"{source}: no literal DEFAULT_ENV_VARS (written for Ray {RAY_VERSION})")


def _local_tuner(tuner: Any) -> Any:
    # Ray 2.60: `Tuner._local_tuner` is the `TunerInternal` (None only in Ray Client mode, which
    # slsweep does not use).
    local = tuner._local_tuner
    if local is None:
        raise RuntimeError("Ray Client tuners are not supported (no local TunerInternal)")
    return local


def tuner_run_config(tuner: Any) -> Any:
    """The `RunConfig` a `tune.Tuner` will run with: the same object, so callbacks appended to
    its `callbacks` list are the ones Tune calls.

    Ray 2.60: `Tuner._local_tuner.get_run_config()` (`TunerInternal`)."""
    return _local_tuner(tuner).get_run_config()


def tuner_time_budget_s(tuner: Any) -> float | None:
    """The `TuneConfig.time_budget_s` of a (maybe restored) `tune.Tuner`.

    Ray 2.60: `Tuner._local_tuner._tune_config` (`TunerInternal`'s TuneConfig)."""
    return _local_tuner(tuner)._tune_config.time_budget_s


def tuner_search_alg(tuner: Any) -> Any:
    """The search algorithm of a (maybe restored) `tune.Tuner` (after `Tuner.restore`: the
    unpickled one Tune will continue with).

    Ray 2.60: `Tuner._local_tuner._tune_config.search_alg`."""
    return _local_tuner(tuner)._tune_config.search_alg


def scheduler_controller(wrapped: Any) -> Any:
    """The `TuneController` behind the wrapper Tune passes to a scheduler's
    `choose_trial_to_run` (reaching through the wrapper logs an access warning).

    Ray 2.60: `TrialRunnerWrapper._tune_controller`."""
    return wrapped._tune_controller


def fail_trial(controller: Any, trial: Any, exception: BaseException) -> None:
    """Fail a running trial through Tune's own failure path: its error file is written, the
    searcher and callbacks see an errored trial, `FailureConfig.max_failures` may retry it, and
    its actor is stopped.

    Ray 2.60: `TuneController._process_trial_failure(trial, exception=...)`."""
    controller._process_trial_failure(trial, exception=exception)


def asha_forget_trial(scheduler: Any, trial_id: str) -> None:
    """Drop a trial from an `ASHAScheduler`'s bookkeeping without letting it set a rung's cutoff
    (what its `on_trial_complete` does besides recording the result).

    Ray 2.60: `AsyncHyperBandScheduler._trial_info` (trial id -> bracket)."""
    scheduler._trial_info.pop(trial_id, None)


def repeater_group(repeater: Any, trial_id: str) -> Any:
    """The `Repeater` group (one configuration on its seeds) a trial belongs to, or None.

    Ray 2.60: `Repeater._trial_id_to_group` (trial id -> `_TrialGroup`, whose public attributes
    `primary_trial_id`, `max_trials` and methods `full`, `report`, `finished_reporting`, `scores`
    are used as they are)."""
    return repeater._trial_id_to_group.get(trial_id)


def group_trial_ids(group: Any) -> list[str]:
    """The trial ids of a `Repeater` group, primary first.

    Ray 2.60: `_TrialGroup._trials` (an insertion-ordered dict trial id -> score)."""
    return list(group._trials)


def optuna_search_study(searcher: Any) -> Any:
    """The Optuna study of a `ray.tune.search.optuna.OptunaSearch` (None before it is set up).

    Ray 2.60: `OptunaSearch._ot_study`."""
    return searcher.__dict__.get("_ot_study")


def optuna_search_trials(searcher: Any) -> dict[str, Any]:
    """Tune trial id -> the live `optuna.Trial` an `OptunaSearch` asked for it (the dict itself).

    Ray 2.60: `OptunaSearch._ot_trials`."""
    return searcher._ot_trials


def optuna_search_completed(searcher: Any) -> set[str]:
    """The Tune trial ids an `OptunaSearch` has told its study about (the set itself: add a
    trial told by other means).

    Ray 2.60: `OptunaSearch._completed_trials`."""
    return searcher._completed_trials


# ------------------------------------------------------------------------------------- Optuna

def study_trial_count(study: Any) -> int:
    """How many trials a study has (any state), without copying them.

    Optuna 5.1: `Study._storage.get_n_trials(Study._study_id)`."""
    return study._storage.get_n_trials(study._study_id)


def rdb_storage_of(study: Any) -> Any:
    """The `optuna.storages.RDBStorage` behind a study, or None (in-memory, journal, ...).

    Optuna 5.1: `Study._storage`, an RDBStorage wrapped in `_CachedStorage` whose `_backend` it is."""
    import optuna

    storage = getattr(study, "_storage", None)
    rdb = getattr(storage, "_backend", storage)
    return rdb if isinstance(rdb, optuna.storages.RDBStorage) else None


def repoint_rdb_storage(rdb: Any, url: str) -> None:
    """Point an (unpickled) `RDBStorage` at another database URL in place: a new engine on `url`.

    Optuna 5.1: `RDBStorage.__getstate__` returns its `__dict__` (with `url`, `engine_kwargs`)
    and `__setstate__` builds the engine from them."""
    state = rdb.__getstate__()
    state["url"] = url
    rdb.__setstate__(state)


_ENGINE_STATE = ("engine", "scoped_session", "_version_manager")


@functools.cache
def _lazy_rdb_class() -> type:
    import optuna

    class LazyRDBStorage(optuna.storages.RDBStorage):
        """An RDBStorage that pickles as its URL and opens its database on first use."""

        def __getstate__(self) -> dict[str, Any]:
            return {k: v for k, v in self.__dict__.items() if k not in _ENGINE_STATE}

        def __setstate__(self, state: dict[str, Any]) -> None:
            for key in _ENGINE_STATE:
                self.__dict__.pop(key, None)
            self.__dict__.update(state)

        def __getattr__(self, name: str) -> Any:
            if name not in _ENGINE_STATE or "url" not in self.__dict__:
                raise AttributeError(name)
            optuna.storages.RDBStorage.__setstate__(self, self.__getstate__())  # connect now
            return self.__dict__[name]

    LazyRDBStorage.__module__, LazyRDBStorage.__qualname__ = __name__, "LazyRDBStorage"
    return LazyRDBStorage


def __getattr__(name: str) -> Any:  # pickle finds the class by name without importing Optuna here first
    if name == "LazyRDBStorage":
        return _lazy_rdb_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def lazy_rdb_storage(url: str) -> Any:
    """An `optuna.storages.RDBStorage` on `url` whose pickle holds no open database: unpickling
    it (Tune restoring a searcher from a moved run folder, where the old `url` no longer
    exists) opens nothing; the engine is built from `url` when first used, so
    `repoint_rdb_storage` before that use means the old database is never touched.

    Optuna 5.1: `RDBStorage.__getstate__` drops `engine`, `scoped_session`, `_version_manager`
    and `__setstate__` rebuilds them from `url` and `engine_kwargs` (connecting at once)."""
    return _lazy_rdb_class()(url)


class _StudyUpTo:
    """A read view of an Optuna study holding only its trials numbered <= `last` (everything
    else is the study's own).

    Optuna 5.1: TPESampler reads a study's history through `Study._get_trials(deepcopy, states,
    use_cache)` (samplers/_tpe/sampler.py), the public `get_trials`/`trials` go through it too."""

    def __init__(self, study: Any, last: int) -> None:
        self._ordered_study, self._ordered_last = study, last

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ordered_study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[Any] | None = None,
                    use_cache: bool = False) -> list[Any]:
        trials = self._ordered_study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if t.number <= self._ordered_last]

    def get_trials(self, deepcopy: bool = True, states: Container[Any] | None = None) -> list[Any]:
        return self._get_trials(deepcopy, states, use_cache=False)

    @property
    def trials(self) -> list[Any]:
        return self.get_trials()


def study_up_to(study: Any, last: int) -> Any:
    """A view of `study` a sampler can be given in its place, holding only the trials numbered
    <= `last` (see `_StudyUpTo`: Optuna 5.1's private `Study._get_trials`)."""
    return _StudyUpTo(study, last)

