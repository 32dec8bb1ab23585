"""The Ray side of a sweep: joining or starting Ray, the workers' runtime environment, worker reuse,
and the resources check against the nodes Ray reports.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import ray

from sweeps.errors import SlsweepError, SpecError
from sweeps.plugins import ALLOW_ENV, plugin_roots

from sweeps.driver import tune_internals
from sweeps.driver.preflight import SweepPlan

log = logging.getLogger(__name__)


def worker_slots(nodes: list[dict[str, float]], cpu: float, gpu: float) -> int:
    """How many trial workers of `cpu` CPUs and `gpu` GPUs the `nodes` (Ray resource totals) can
    hold at once, each worker whole on one node."""
    want = {"CPU": cpu, "GPU": gpu}
    return sum(int(min(res.get(k, 0.0) / v for k, v in want.items() if v > 0)) for res in nodes)


def _alive_nodes() -> list[dict[str, float]]:
    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def placeable_trials(plan: SweepPlan) -> int:
    """How many trials of the spec's size the Ray cluster can run at once (at least 1): for
    multi-worker trials, whole worker groups, so that no trial starts with half its workers placed
    and waits for the rest while holding them."""
    res = plan.spec.resources
    return max(1, worker_slots(_alive_nodes(), res.cpu, res.gpu) // res.workers)


def check_cluster_resources(plan: SweepPlan) -> None:
    """After joining Ray: refuse a trial size the cluster can never hold.

    One worker must fit on one node; a trial of `resources.workers` workers needs that many worker
    slots over all nodes. A local Ray is checked against its own totals at once. On a cluster an
    autoscaler may still add nodes, so the driver waits up to `limits.resources_wait_seconds` for
    alive nodes that can hold a trial before refusing (SpecError naming `resources.cpu`,
    `resources.gpu` or `resources.workers`).
    """
    res = plan.spec.resources
    want = {"CPU": res.cpu, "GPU": res.gpu}
    deadline = time.monotonic() + (plan.spec.limits.resources_wait_seconds if plan.address else 0)
    while True:
        nodes = _alive_nodes()
        if worker_slots(nodes, res.cpu, res.gpu) >= res.workers:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(5)
    waited = f" after waiting {plan.spec.limits.resources_wait_seconds:g} s" if plan.address else ""
    best = {k: max((n.get(k, 0.0) for n in nodes), default=0.0) for k in want}
    if all(best[k] >= v for k, v in want.items() if v > 0):  # a worker fits; not all of them
        slots = worker_slots(nodes, res.cpu, res.gpu)
        raise SpecError(str(plan.resolved.path), "resources.workers",
                        f"{res.workers} workers of {res.cpu:g} CPU/{res.gpu:g} GPU per trial, but the Ray "
                        f"cluster can hold {slots}{waited}; no trial could ever start")
    field = "resources.gpu" if want["GPU"] > best["GPU"] else "resources.cpu"
    key = field.split(".")[1].upper()
    raise SpecError(str(plan.resolved.path), field,
                    f"{want[key]:g} {key}s per trial{' worker' if res.workers > 1 else ''}, but no Ray node "
                    f"has that many{waited} (largest: {best[key]:g}); no trial could ever start")


PROBE_TIMEOUT_S = 120.0  # a worker's memory probe: placing it, its runtime environment, importing torch


def _device_memory_here(gpu: float) -> tuple[int, str, str]:
    """On a Ray worker: (bytes, where, node id) of the memory a trial worker there has
    (`sweeps.trial.memory.device_memory`: a GPU's free memory, else available RAM)."""
    import ray.util

    from sweeps.trial.memory import device_memory

    free, where = device_memory(None, gpu)
    where = where.replace("the local GPU", "its GPU")  # "free memory of its GPU" / "available RAM"
    return free, f"{where} on Ray node {ray.util.get_node_ip_address()}", ray.get_runtime_context().get_node_id()


def probe_worker_device(plan: SweepPlan, timeout_s: float = PROBE_TIMEOUT_S) -> tuple[int, str, float] | None:
    """After joining a cluster: the memory of the device one trial worker gets, measured there.

    A Ray task with one worker's `resources.cpu` / `resources.gpu` (so Ray places it where such a
    worker can run) reads its GPU's free memory (`torch.cuda.mem_get_info`), or the node's available
    RAM for CPU trials.

    Returns:
        (bytes, where the number came from, CPUs of that node), or None when no worker could run the
        probe within `timeout_s` (a cluster busy with other jobs).
    """
    res = plan.spec.resources
    ref = ray.remote(_device_memory_here).options(num_cpus=res.cpu, num_gpus=res.gpu, max_retries=0).remote(res.gpu)
    try:
        free, where, node_id = ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        return None
    cpus = next((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("NodeID") == node_id), 0.0)
    return int(free), f"{where} (probed with one trial worker's resources)", cpus or None


def plan_memory_on_worker(plan: SweepPlan, quiet: bool = False) -> str:
    """Joining a cluster without `resources.memory_gb` (the preflight left `plan.memory_check`):
    join it, wait for a node that can hold a trial (`check_cluster_resources`), and plan the trial's
    memory (`preflight.check_memory`) against what a probe on a worker measured
    (`probe_worker_device`), before anything is written. Returns the plan's line.

    Raises:
        SpecError: as `check_memory` (the trial cannot fit a worker's device) or
            `check_cluster_resources`.
    """
    assert plan.memory_check is not None, "the preflight planned memory already"
    init_ray(plan, quiet=quiet)
    check_cluster_resources(plan)
    probed = probe_worker_device(plan)
    check, plan.memory_check = plan.memory_check, None
    if probed is None:  # planned on this machine, and the line says so
        return check() + f" (no worker ran the memory probe within {PROBE_TIMEOUT_S:g} s)"
    free, where, cpus = probed
    return check(device=(free, where), node_cpus=cpus)


SHIP_CODE_ENV = "SLSWEEP_SHIP_CODE"
TRAIN_WORKER_HOOK = "sweeps.trial.train_job.train_worker_setup"


def runtime_env(plan: SweepPlan) -> dict[str, Any] | None:
    """The Ray runtime environment of the sweep's workers.

    The spec's `ray.runtime_env` as given; when joining a cluster (`--address`) and it says
    nothing about code (`py_modules`, `working_dir`), the driver's own `sweeps` and `sl_core`
    packages are shipped as `py_modules`, so workers run the driver's code whether or not they
    have slsweep installed ($SLSWEEP_SHIP_CODE=0 turns this off). Third-party packages (torch,
    transformers, ...) must be on the workers already or come from the spec's `pip`/`uv` entry.
    """
    env = dict(plan.spec.ray.runtime_env or {})
    ship = os.environ.get(SHIP_CODE_ENV, "1") not in ("0", "false", "no")
    if plan.address and ship and not {"py_modules", "working_dir"} & env.keys():
        import sl_core
        import sweeps

        env["py_modules"] = [str(Path(m.__file__).resolve().parent) for m in (sweeps, sl_core)]
        env.setdefault("excludes", ["__pycache__", "*.pyc"])
    plugins = plugin_roots(_plugin_names(plan))
    if plugins:  # user plug-ins travel like the project's own code, on local Ray too
        env["py_modules"] = [*env.get("py_modules", []), *(p for p in plugins if p not in env.get("py_modules", []))]
        env.setdefault("excludes", ["__pycache__", "*.pyc"])
        env["env_vars"] = {**env.get("env_vars", {}), ALLOW_ENV: "1"}  # the driver was allowed
    if plan.spec.resources.workers > 1:  # multi-worker trials: see sweeps.trial.train_job.train_worker_setup
        env.setdefault("worker_process_setup_hook", TRAIN_WORKER_HOOK)
    return env or None


def _plugin_names(plan: SweepPlan) -> list[Any]:
    """Every value the spec or its search space may give a task name, loss family or psi shape."""
    from sweeps.config.space import CategoricalParam, FixedParam

    spec, space = plan.spec, plan.resolved.space
    names: list[Any] = [spec.task.name, spec.loss.family, spec.loss.psi]
    for name, param in space.params.items():
        if space.targets[name] in ("task.name", "loss.family", "loss.psi"):
            names += param.choices if isinstance(param, CategoricalParam) else \
                [param.value] if isinstance(param, FixedParam) else []
    return names


def needs_dashboard(plan: SweepPlan) -> bool:
    """Whether the local Ray starts its dashboard: for multi-worker trials only (a cluster's head
    runs its own)."""
    return plan.spec.resources.workers > 1 and not plan.address


def reuse_workers(plan: SweepPlan) -> bool:
    """Whether Tune keeps trial workers between trials: the spec's `ray.reuse_workers`, else
    only on local Ray (where every trial runs on the one node anyway)."""
    if plan.spec.resources.workers > 1:
        # A multi-worker trial's process only waits for its Train job (whose workers are new
        # processes every trial); Tune cannot reset such a trainable for another configuration.
        return False
    choice = plan.spec.ray.reuse_workers
    return plan.local_ray if choice is None else choice


# A quiet sweep's workers (`-q`, the default): Ray's and transformers' loggers at ERROR in every
# trial worker, whose output reaches the console as "(tune_trainable pid=...)" lines (Tune's
# "Restored ... from checkpoint" on every resumed trial). Workers read them when they start.
# TORCH_CPP_LOG_LEVEL: torch's C++ warnings, such as DDP's note on find_unused_parameters
# (sweeps.trial.distributed.wrap_model) printed by every worker of a multi-worker trial.
# (Not RAY_BACKEND_LOG_LEVEL: the raylet announces that variable on the console for every worker.)
QUIET_WORKER_ENV = {"RAY_LOGGER_LEVEL": "error", "TRANSFORMERS_VERBOSITY": "error", "TORCH_CPP_LOG_LEVEL": "ERROR"}


def quiet_workers(env: dict[str, Any] | None) -> dict[str, Any]:
    """`env` (a runtime environment) with `QUIET_WORKER_ENV` added to its `env_vars` (the spec's
    own values win)."""
    env = dict(env or {})
    env["env_vars"] = {**QUIET_WORKER_ENV, **env.get("env_vars", {})}
    return env


# The module a trial worker imports first (torch, transformers and the trial code come with it).
TRIAL_MODULE = "sweeps.trial.trainable"


def warm_trial_workers(plan: SweepPlan) -> int:
    """How many trial workers a local Ray starts at once, warm (`TRIAL_MODULE` imported: ~4-5 s of
    torch, transformers and the trial code), while the driver is still planning: the trials that
    run at once (`sweeps.trial.memory.trials_per_device` on this machine's CPUs). Tune's trial
    actors then take these workers instead of starting cold ones (with `reuse_workers`, every
    trial runs in them).

    0 when the sweep joins a Ray cluster (its nodes start their own workers), runs multi-worker
    trials (their processes are Ray Train's workers, started per trial), or needs a runtime
    environment (the spec's `ray.runtime_env`, plug-ins): Ray lends prestarted workers only to jobs
    without one.
    """
    if not plan.local_ray or plan.spec.resources.workers > 1 or runtime_env(plan) is not None:
        return 0
    from sweeps.trial.memory import trials_per_device

    res = plan.spec.resources
    return trials_per_device(max_concurrent=plan.spec.search.max_concurrent, trials=plan.resolved.trial_count,
                             cpu=res.cpu, gpu=0.0, cpus=tune_internals.local_cpu_count())


def local_worker_env(quiet: bool, warm: bool) -> dict[str, str]:
    """The variables a local Ray's workers get through the raylet's environment.

    Always the folder holding the driver's `sweeps` first on PYTHONPATH: the trial workers run the
    driver's code, not another copy installed in the environment (a second checkout), and a warm
    worker imports `TRIAL_MODULE` before it knows the driver's job, whose sys.path Ray lends it.
    `warm` (`warm_trial_workers`; the workers then have no runtime environment): also the variables
    Tune gives its trainables (`tune_internals.trainables_in_job_env`) and, when `quiet`,
    `QUIET_WORKER_ENV` (otherwise they travel in the runtime environment, `quiet_workers`).
    """
    import sweeps

    root = str(Path(sweeps.__file__).resolve().parent.parent)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    if warm:
        env = {**tune_internals.tune_trainable_env_defaults(), **env, **(QUIET_WORKER_ENV if quiet else {})}
    return env


def init_ray(plan: SweepPlan, quiet: bool = False) -> float:
    """Start or join Ray (`start_ray`), or wait for the start the preflight began in the background
    (`plan.ray_start`, a `sweeps.driver.early_ray.EarlyRay`); returns the seconds."""
    if plan.ray_start is not None:
        return plan.ray_start.wait()
    return start_ray(plan, quiet)


def start_ray(plan: SweepPlan, quiet: bool = False) -> float:
    """Start or join Ray (`quiet`: its messages at ERROR only, on the driver and in the trial
    workers, for `run` and `resume` alike); returns the seconds. A local Ray starts its trial
    workers warm (`warm_trial_workers`).

    Raises:
        SlsweepError: naming --address, when Ray cannot be started or joined.
    """
    t0 = time.perf_counter()
    if not ray.is_initialized():
        env = runtime_env(plan)
        # Multi-worker trials: Ray Train's placement-group cleaner asks Ray's state API (served by
        # the dashboard) whether a trial's Train controller is alive, and frees its workers' CPUs
        # and GPUs when a stopped trial's controller is gone (`dashboard_problem` checks the packages).
        dashboard = needs_dashboard(plan)
        raylet: Any = contextlib.nullcontext()  # a local Ray's raylet: its workers' variables, prestarted ones
        kwargs: dict[str, Any] = {"include_dashboard": dashboard, "dashboard_host": LOOPBACK, "log_to_driver": True,
                                  "runtime_env": quiet_workers(env) if quiet else env,
                                  "logging_level": logging.ERROR if quiet else logging.INFO}
        if plan.address:
            kwargs["address"] = plan.address
        else:
            # Always a private local instance: never join a `ray start` cluster by accident
            # (`--address auto` does that on purpose).
            kwargs["address"] = "local"
            # Ray starts one idle worker per CPU when the first driver connects: here only the
            # trial workers the sweep runs at once, importing the trial code while the driver plans.
            # Ray runs its workers at nice 15 so that they never starve Ray's own processes; on
            # a machine whose cores the trials fill, that stalls every trial whenever the driver or
            # a Ray process wakes up. Here the trial workers keep the default priority and Ray's
            # helper processes get the lowest one instead (`lower_service_priority`).
            # Nothing of a private Ray is reachable from the network (`loopback_node`).
            warm = warm_trial_workers(plan)
            system: dict[str, Any] = {"prestart_worker_first_driver": warm > 0, "worker_niceness": 0}
            if warm:  # the workers' variables then travel in the raylet's environment (no runtime env)
                system["preload_python_modules"] = [TRIAL_MODULE]
                kwargs["runtime_env"] = None
            raylet = tune_internals.raylet_start_options(prestart_workers=warm, env=local_worker_env(quiet, warm))
            kwargs.update(tune_internals.local_ray_init_options(
                system_config=system, temp_dir=os.environ.get("SLSWEEP_RAY_TMP"), node_ip_address=LOOPBACK))
        # Ray starts its own processes (GCS, raylet, and through the raylet the trial workers)
        # with SIGINT blocked, so that a terminal's Ctrl-C reaches the driver only; SIGTERM sent to
        # the process group (`kill -TERM -PGID`, a scheduler's stop) would still kill them under
        # the driver's graceful stop. A local Ray's processes inherit SIGTERM blocked too.
        local = kwargs["address"] == "local"
        saved = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}) if local else None
        try:
            with loopback_node() if local else contextlib.nullcontext(), raylet:
                ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SlsweepError(f"--address: {plan.address or 'local'}: could not start or join Ray ({exc})") from None
        finally:
            if saved is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, saved)
        if local:
            lower_service_priority()
            _stop_at_exit()
    return time.perf_counter() - t0


_STOP_REGISTERED: list[bool] = []


def _stop_at_exit() -> None:
    """At interpreter exit, stop the local Ray at once (`tune_internals.stop_local_ray`; registered
    after Ray's own exit hook, so it runs first and Ray's finds nothing left to wait for)."""
    if not _STOP_REGISTERED:
        atexit.register(_stop_ray_at_exit)
        _STOP_REGISTERED.append(True)


def _stop_ray_at_exit() -> None:
    try:
        tune_internals.stop_local_ray()
    except (KeyboardInterrupt, SystemExit):  # a stop signal during it, handled after it: the process is ending anyway
        pass


LOOPBACK = "127.0.0.1"
RAY_CLUSTER_MODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """For the block, Ray keeps a loopback node address instead of replacing it.

    A node whose address is 127.0.0.1 binds every server of Ray 2.60 to loopback: the GCS, the
    raylet's node and object managers and every core worker (driver and trial workers) pass
    `listen_to_localhost_only = (node_ip_address == "127.0.0.1")` to their gRPC server, and the
    runtime-env and dashboard agents bind to 127.0.0.1 when the node address is a loopback one
    (`ray/dashboard/agent.py`, `http_server_agent.py`). But `ray.init(_node_ip_address=...)`
    first passes the address through `services.resolve_ip_for_localhost`, which turns a loopback
    address into the machine's network address unless Ray's "cluster mode" is off
    (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the single-machine mode Ray uses on macOS and
    Windows). That variable is read once, when `ray` is imported, so both the variable (for the
    processes Ray starts, which inherit it) and the constant it set (for this process) are
    switched off here, and restored afterwards: a later `ray.init` joining a cluster must
    advertise the machine's real address again.
    """
    saved_env = os.environ.get(RAY_CLUSTER_MODE_ENV)
    os.environ[RAY_CLUSTER_MODE_ENV] = "0"
    saved = tune_internals.set_ray_cluster_mode(False)
    try:
        yield
    finally:
        tune_internals.set_ray_cluster_mode(saved)
        if saved_env is None:
            os.environ.pop(RAY_CLUSTER_MODE_ENV, None)
        else:
            os.environ[RAY_CLUSTER_MODE_ENV] = saved_env


SERVICE_NICE = 19
KEEP_PRIORITY = frozenset({"raylet", "gcs_server"})


def lower_service_priority(nice: int = SERVICE_NICE) -> int:
    """Give the local Ray's helper processes (dashboard and runtime-env agents, log monitor,
    autoscaler monitor) the lowest CPU priority; returns how many threads were changed.

    On a machine whose cores the trials fill (2 trial threads on 2 cores), every slice another
    process takes stalls a trial's parallel ops: a 2-thread trial slows down by about the CPU
    share other processes take (docs/benchmarks.md, "Service overhead"). At nice 19 the helpers
    run when a core is free instead. The raylet (it starts the trial workers, which would inherit
    its priority) and the GCS (Ray's health checks) keep theirs. Linux keeps a priority per
    thread, so every thread is changed (threads started later inherit from their creator).
    """
    import psutil

    changed = 0
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() in KEEP_PRIORITY:
                continue
            for thread in proc.threads():
                os.setpriority(os.PRIO_PROCESS, thread.id, nice)
                changed += 1
        except (psutil.Error, OSError, AttributeError):
            continue
    return changed
