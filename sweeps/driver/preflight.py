"""Plan a sweep: resolve the spec and check everything a user can get wrong, before anything is created.

`plan_sweep` loads the spec and its search space, then checks the run folder, the tracking URI, the
Ray address, the trial size against this machine, and (`preflight`) what every trial would load
first: the task's data, the model's tokenizer and processor against every loss family the sweep
can choose (tokens, soft-target coverage, chat template). Each problem is one SpecError naming
the file (or command-line flag) and the field.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import secrets
import socket
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse


from sweeps.store import names
from sweeps.store import paths, schema
from sweeps.config.trial_config import MAX_SEED, TrialConfig
from sweeps.errors import SlsweepError, SpecError, did_you_mean, one_line
from sweeps.store.uri import (  # noqa: F401 - check_tracking_uri and database_driver_problem: used from here by the CLI
    check_tracking_uri, database_driver_problem, folder_problem, tracking_uri_problem)
from sweeps.config.spec import ResolvedSpec, load_spec

# -- planning: every user error surfaces here, before side effects --------------------------------
@dataclass
class SweepPlan:
    """A validated sweep, ready to run."""

    resolved: ResolvedSpec
    runs_dir: Path
    tracking_uri: str
    experiment: str
    address: str | None
    sweep_id: str
    fresh_search_seed: bool = False  # the sampler seed was drawn for this sweep (none was given)
    # one line per task split the preflight read: rows, answer range, soft-target coverage
    # (`sweeps.trial.figures.preflight_lines`); `slsweep run` prints them before Ray starts
    data_lines: tuple[str, ...] = ()
    # Joining a cluster without `resources.memory_gb`: the memory plan waits for a worker's device
    # (`sweeps.driver.ray_env.plan_memory_on_worker` calls it with what a probe on a worker saw)
    memory_check: Callable[..., str] | None = None
    # `slsweep run`/`resume`: called once the task's data files are read, to start the local Ray in
    # the background while the model is checked (`sweeps.driver.early_ray.EarlyRay.start`), which
    # then sets `ray_start` (`sweeps.driver.ray_env.init_ray` waits for it)
    start_ray: Callable[[SweepPlan], None] | None = None
    ray_start: Any = None

    @property
    def spec(self):  # noqa: ANN201 - the pydantic SweepSpec
        return self.resolved.spec

    @property
    def storage_dir(self) -> Path:
        return paths.ray_storage_dir(self.runs_dir)

    @property
    def local_ray(self) -> bool:
        """Whether the sweep starts its own private local Ray (no cluster address given)."""
        return self.address in (None, "", "local")

    @property
    def local_store(self) -> bool:
        """Whether the MLflow store is on this machine's disk (`sweeps.store.schema.is_local_store`)."""
        return schema.is_local_store(self.tracking_uri)


def plan_sweep(spec_path: str | Path | None = None, *, address: str | None = None,
               tracking_uri: str | None = None, runs_dir: str | Path | None = None,
               experiment: str | None = None, check: bool = True, overrides: Sequence[str] = (),
               search_seed: int | None = None,
               start_ray: Callable[[SweepPlan], None] | None = None) -> SweepPlan:
    """Validate a spec and the places it points to; creates nothing.

    `overrides` (`train.steps=50`) are applied to the spec before validation; `search_seed`
    (`--search-seed`) is the override `search.seed=N`. `start_ray` (`SweepPlan.start_ray`) is called
    by the preflight once the task's data files are read. A spec without a sampler seed gets a fresh
    one, recorded as the override `search.seed=N`: the sweep's spec artifact, params and resume
    record then hold the seed that ran, and two sweeps of one spec explore different configurations.
    """
    from sweeps.config.overrides import notes_when_valid

    with notes_when_valid():  # a refused sweep gets one line: its error
        return _plan_sweep(spec_path, address=address, tracking_uri=tracking_uri, runs_dir=runs_dir,
                           experiment=experiment, check=check, overrides=overrides, search_seed=search_seed,
                           start_ray=start_ray)


def _plan_sweep(spec_path: str | Path | None, *, address: str | None, tracking_uri: str | None,
                runs_dir: str | Path | None, experiment: str | None, check: bool, overrides: Sequence[str],
                search_seed: int | None, start_ray: Callable[[SweepPlan], None] | None) -> SweepPlan:
    overrides = [*overrides, *([f"search.seed={search_seed}"] if search_seed is not None else [])]
    if experiment is not None:  # flags: checked before the spec is read
        _blame(names.experiment_name_problem(experiment), "", "--experiment")
    if search_seed is not None and not 0 <= search_seed <= MAX_SEED:
        _blame(f"{search_seed}: the sampler takes 0 .. 2**32-1 ({MAX_SEED})", "", "--search-seed")
    resolved = load_spec(spec_path, overrides)
    fresh = resolved.spec.search.seed is None
    if fresh:
        resolved = load_spec(spec_path, [*overrides, f"search.seed={fresh_search_seed()}"])
    spec = resolved.spec
    where_folder = "storage" if spec.storage and not runs_dir else paths.runs_dir_source(runs_dir)
    if runs_dir or spec.storage:  # a symlink loop: one line naming where the folder came from
        _blame(paths.path_problem(runs_dir or spec.storage), str(resolved.path), where_folder)
    folder = Path(runs_dir or spec.storage or paths.default_runs_dir()).expanduser().resolve()
    uri = tracking_uri or spec.tracking.uri or paths.default_tracking_uri(folder)
    plan = SweepPlan(resolved=resolved, runs_dir=folder, tracking_uri=uri,
                     experiment=experiment or spec.tracking.experiment or spec.name,
                     address=address or spec.ray.address, sweep_id=new_sweep_id(spec.name),
                     fresh_search_seed=fresh, start_ray=start_ray)
    if check:
        try:
            _check_plan(plan, tracking_uri=tracking_uri, address=address, experiment=experiment,
                        where_folder=where_folder)
        except SpecError as err:  # a value an override set: the error names the override
            from sweeps.config.overrides import blame_override, parse_overrides

            # (only the override of the error's own field: a memory plan names its inputs in passing)
            raise blame_override(err, parse_overrides(resolved.overrides), mentioned=False) from None
    return plan


def _check_plan(plan: SweepPlan, *, tracking_uri: str | None, address: str | None, experiment: str | None,
                where_folder: str) -> None:
    """`plan_sweep`'s checks of what the spec points to (SpecError naming where the value came from)."""
    resolved, spec, folder = plan.resolved, plan.spec, plan.runs_dir
    spec_file = str(resolved.path)
    # Each problem names where the value came from: a command-line flag, the spec's field,
    # or $SLSWEEP_RUNS_DIR.
    _blame(runs_dir_problem(folder), spec_file, where_folder)
    if plan.local_store:  # artifacts go to <folder>/artifacts/<safe name>, never elsewhere
        _blame(names.artifacts_dir_problem(folder, plan.experiment), spec_file,
               "--experiment" if experiment else "tracking.experiment" if spec.tracking.experiment else "name")
    where_address = "--address" if address else "ray.address"
    _blame(ray_client_problem(plan), spec_file, where_address)  # no I/O: before the server is asked
    _blame(tracking_uri_problem(plan.tracking_uri), spec_file,
           "--tracking-uri" if tracking_uri else "tracking.uri" if spec.tracking.uri else where_folder)
    _blame(ray_address_problem(plan.address), spec_file, where_address)
    field, problem = runtime_env_problem(spec.ray.runtime_env)
    _blame(problem, spec_file, field)
    if plan.local_ray:
        field, problem = local_resources_problem(spec.resources.cpu, spec.resources.gpu, spec.resources.workers)
        _blame(problem, spec_file, field)
        if spec.resources.workers > 1:
            _blame(dashboard_problem(), spec_file, "resources.workers")
        variable, problem = ray_temp_problem()
        _blame(problem, spec_file, variable)
    if spec.model.path.startswith("tiny"):  # the tiny model is built into the cache folder
        _blame(folder_problem(paths.cache_dir()), spec_file, paths.CACHE_DIR_ENV)
    preflight(plan)


def runs_dir_problem(folder: Path) -> str | None:
    """Why `folder` cannot be a run folder (a file, an unreadable or foreign store in it, a
    sub-folder that is a symbolic link leading out of it), or None."""
    problem = folder_problem(folder)
    if problem:
        return problem
    for sub in ("artifacts", "ray", paths.PLANS):  # what a sweep writes stays in the run folder
        linked = folder / sub
        if linked.is_symlink() and folder.resolve() not in linked.resolve().parents:
            return (f"{linked} is a symbolic link to {linked.resolve()}, outside the run folder; remove the "
                    "link, or make the disk it leads to the run folder (--runs-dir)")
    for name, table in ((paths.MLFLOW_DB, "experiments"), (paths.OPTUNA_DB, "studies")):
        db = folder / name
        if not db.exists():
            continue
        if not db.is_file():
            return f"{db}: not a file"
        try:
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
                tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                check = con.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.Error as exc:
            return f"{db}: unreadable SQLite store ({exc}); move it away or choose another run folder"
        if check != "ok":
            return f"{db}: damaged SQLite store ({check}); move it away or choose another run folder"
        if tables and table not in tables:
            return f"{db}: not an {'MLflow' if table == 'experiments' else 'Optuna'} store"
    return None


def local_resources_problem(cpu: float, gpu: float, workers: int = 1) -> tuple[str, str | None]:
    """(field, why) when one trial (`workers` processes of `cpu` CPUs and `gpu` GPUs each) asks
    more than this machine has (a local Ray never schedules it), else (field, None)."""
    from sweeps.driver.tune_internals import local_cpu_count

    cpus = local_cpu_count()
    if workers > 1 and cpu <= cpus and cpu * workers > cpus:
        return "resources.workers", (f"{workers} workers x {cpu:g} CPUs per trial, but the local Ray has "
                                     f"{cpus}: no trial could ever start (fewer workers or CPUs per worker, "
                                     "or join a cluster with --address)")
    if cpu > cpus:
        return "resources.cpu", (f"{cpu:g} CPUs per trial, but the local Ray has {cpus}: no trial "
                                 "could ever start (lower it, or join a cluster with --address)")
    if gpu > 0:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpu * workers > gpus:
            each = f" ({workers} workers x {gpu:g})" if workers > 1 else ""
            return "resources.gpu", (f"{gpu * workers:g} GPUs per trial{each}, but this machine has {gpus}: no "
                                     "trial could ever start (lower it, or join a cluster with --address)")
    return "resources.cpu", None


def dashboard_problem() -> str | None:
    """Why a local Ray cannot run multi-worker trials, or None: Ray Train frees a stopped trial's
    workers through Ray's state API, which the dashboard serves (packages of `ray[default]`)."""
    import importlib

    try:
        importlib.import_module("ray.dashboard.optional_deps")
    except ImportError as exc:
        return (f"multi-worker trials on a local Ray need Ray's dashboard ({exc}): "
                "pip install 'slsweep[distributed]' (or 'ray[default]')")
    return None


RAY_TMP_ENV = "SLSWEEP_RAY_TMP"
AF_UNIX_MAX = 107  # bytes of a Unix socket path on Linux (108 with the NUL; Ray checks the same)
# What a local Ray adds under its temp folder for its longest socket:
# /session_2025-01-01_00-00-00_000000_<pid up to 7 digits>/sockets/plasma_store.<n>
_RAY_SOCKET_TAIL = len("/session_2025-01-01_00-00-00_000000_4194304/sockets/plasma_store.9")


def ray_temp_problem() -> tuple[str, str | None]:
    """(variable, why) when a local Ray cannot start under its temp folder ($SLSWEEP_RAY_TMP, else
    Ray's own choice from $RAY_TMPDIR or $TMPDIR): the folder is a file or unwritable, or Ray's
    socket paths under it would pass the AF_UNIX limit (deep Slurm job folders); else (.., None)."""
    custom = os.environ.get(RAY_TMP_ENV)
    if custom:
        where, root = RAY_TMP_ENV, Path(custom).expanduser()
    else:
        from sweeps.driver.tune_internals import default_ray_temp_dir

        where = "RAY_TMPDIR" if os.environ.get("RAY_TMPDIR") else "TMPDIR"
        root = Path(default_ray_temp_dir())
    problem = folder_problem(root)
    if problem:
        return where, problem
    length = len(str(root).encode()) + _RAY_SOCKET_TAIL
    if length > AF_UNIX_MAX:
        return where, (f"{root}: Ray's socket paths under this folder would be {length} bytes, over the "
                       f"{AF_UNIX_MAX} a Unix socket path may have; set {RAY_TMP_ENV} to a short folder "
                       "such as /tmp/slsweep-ray")
    return where, None


def runtime_env_problem(env: dict[str, Any]) -> tuple[str, str | None]:
    """(field, why) when Ray would reject the spec's `ray.runtime_env` (checked with Ray's own
    `RuntimeEnv`; unknown fields too, unless $RAY_RUNTIME_ENV_PLUGINS declares plug-ins)."""
    if not env:
        return "ray.runtime_env", None
    from ray.runtime_env import RuntimeEnv

    unknown = [k for k in env if k not in RuntimeEnv.known_fields]
    if unknown and not os.environ.get("RAY_RUNTIME_ENV_PLUGINS"):
        guess = did_you_mean(unknown[0], sorted(RuntimeEnv.known_fields))
        return f"ray.runtime_env.{unknown[0]}", (f"unknown runtime_env field{guess} (known: "
                                                 f"{', '.join(sorted(k for k in RuntimeEnv.known_fields if not k.startswith('_')))})")
    try:
        RuntimeEnv(**env)
    except Exception as exc:  # noqa: BLE001 - Ray raises TypeError, ValueError, RuntimeEnvSetupError...
        text = one_line(str(exc))
        field = next((f"ray.runtime_env.{k}" for k in env if f"'{k}'" in text or f"`{k}`" in text), "ray.runtime_env")
        return field, text[:300]
    return "ray.runtime_env", None


def fresh_search_seed() -> int:
    """A new sampler seed (0 .. 2**31-1) for a sweep whose spec does not fix one."""
    return secrets.randbelow(2**31)


def new_sweep_id(name: str) -> str:
    """`NAME-YYYYmmdd-HHMMSS-xxxxxxxxxxxx`: readable and ordered by start time; the 48 random bits
    keep sweeps started in the same second apart (they share no run, study or Ray folder): even
    2000 of them collide with probability ~7e-9 (24 bits: ~11%)."""
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}"


def _blame(problem: str | None, spec_file: str, where: str) -> None:
    if problem is None:
        return
    if where.startswith("--") or where.isupper():  # a flag or an environment variable, not a spec field
        raise SlsweepError(f"{where}: {problem}")
    raise SpecError(spec_file, where, problem)




def ray_address_problem(address: str | None) -> str | None:
    """Why the Ray address cannot be joined (malformed, nothing listening), or None."""
    if address in (None, "", "local"):
        return None
    if address == "auto":
        from sweeps.driver.tune_internals import resolve_auto_address

        try:
            found = resolve_auto_address(os.environ.get("SLSWEEP_RAY_TMP"))
        except (ConnectionError, ValueError) as exc:
            return (f"auto: no running Ray cluster found ({one_line(str(exc))[:200]}); start one "
                    "with `ray start --head`, or leave the address out for a local Ray")
        return None if found is None else ray_address_problem(found)
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        port = parsed.port
    except ValueError:  # a port that is not a number
        port = None
    if parsed.scheme != "ray" or not parsed.hostname or not port:
        return f"{address}: expected ray://HOST:PORT, HOST:PORT or auto"
    try:
        with socket.create_connection((parsed.hostname, port), timeout=5):
            pass
    except OSError as exc:
        return f"{address}: Ray cluster unreachable ({exc})"
    return None


def ray_client_problem(plan: SweepPlan) -> str | None:
    """Why a `ray://` (Ray Client) address cannot work for this plan, or None.

    Under Ray Client, `Tuner.fit` runs the sweep's driver loop (and so the MLflow writer and the
    Optuna study) on the cluster's head node: a store on this machine's disk is out of its reach.
    """
    if not (plan.address or "").startswith("ray://"):
        return None
    if plan.local_store:
        return (f"{plan.address}: with Ray Client the sweep's driver loop runs on the head node, which "
                f"cannot write the local MLflow store {plan.tracking_uri}; give an MLflow server "
                "(--tracking-uri http://HOST:PORT) or join with HOST:PORT / auto")
    if importlib.util.find_spec("grpc") is None:
        return f"{plan.address}: ray:// addresses need the Ray Client: pip install 'ray[client]'"
    return None


def check_ray_address(address: str | None) -> None:
    """Fail fast (SlsweepError naming --address) when the Ray address cannot be joined."""
    _blame(ray_address_problem(address), "", "--address")


# -- preflight: what every trial loads first, loaded once on the driver ----------------------------
PREFLIGHT_RECORDS = 64  # records per data file read up front (trials report later bad records)


def preflight(plan: SweepPlan) -> None:
    """Load the model's tokenizer and the first records of the task's data files on the driver.

    A tokenizer that cannot serve a loss family the sweep may choose (no digit tokens, merged digits,
    answers whose numeric tokens no soft target reaches), a chat template that cannot render an image
    prompt, a missing or empty data file or an unreadable image would otherwise fail every trial
    after Ray started and MLflow runs exist; here it is one SpecError naming the spec file and the
    field, and nothing has been created yet (a tiny model is built into the model cache, never into
    the run folder). Partial soft-target coverage is printed as a warning.
    """
    cfg = plan.resolved.base_trial_config()
    spec_file = str(plan.resolved.path)
    field, problem = lora_problem(cfg.model.lora)
    _blame(problem, spec_file, field)
    samples = check_data(cfg, spec_file)
    check_rows(cfg, spec_file)
    if plan.start_ray is not None:  # the data is there: Ray starts while the model is checked
        plan.start_ray(plan)
    batcher, tokens = _check_loss_tokens(plan, cfg, spec_file, [e.answer for _, ex in samples for e in ex])
    from sweeps.trial.figures import preflight_lines

    plan.data_lines = tuple(preflight_lines(samples, batcher, list(tokens.values()), limit=PREFLIGHT_RECORDS))
    examples = [e for _, ex in samples for e in ex]
    if plan.local_ray or plan.spec.resources.memory_gb is not None:
        plan.data_lines += (check_memory(plan, cfg, spec_file, batcher, examples),)
    else:  # this machine's memory says nothing about a worker's: planned once the cluster is joined
        plan.memory_check = functools.partial(check_memory, plan, cfg, spec_file, batcher, examples)


def check_memory(plan: SweepPlan, cfg: TrialConfig, spec_file: str, batcher: Any, examples: list[Any], *,
                 device: tuple[int, str] | None = None, node_cpus: float | None = None) -> str:
    """Estimate a trial's peak memory (`sweeps.trial.memory`) against its device's; resolve
    `train.batch_size: auto` into the plan's spec (every trial then starts from it). Returns the line
    to print.

    The plan is made for the worst case the search space can propose (`space_extremes`), against the
    device's memory divided among the trials that run on it at once (`trials_per_device`).

    Args:
        device: (bytes, where the number came from) of one trial worker's device, as a probe on a
            cluster node measured it (`sweeps.driver.ray_env.probe_worker_device`); default:
            `resources.memory_gb`, else this machine's (`sweeps.trial.memory.device_memory`).
        node_cpus: CPUs of the node `device` is on (default: this machine's).

    Raises:
        SpecError: a trial cannot fit at micro-batch 1 (naming resources.memory_gb when given, else
            model.path), or the search space's worst case cannot (naming the space's parameter), with
            the estimate and what would make it fit.
    """
    from transformers import AutoConfig

    from sweeps.driver.tune_internals import local_cpu_count
    from sweeps.trial.memory import (MemoryFitError, device_memory, plan_trial_memory, space_extremes,
                                      trials_per_device)

    resources, space = plan.spec.resources, plan.resolved.space
    memory, where = device or device_memory(resources.memory_gb, resources.gpu)
    if device is None and not plan.local_ray and resources.memory_gb is None:  # no worker was seen
        where += (" of this driver machine, not a worker's: on a cluster give resources.memory_gb, one "
                  "worker's GPU memory (or RAM for CPU trials)")
    cpus, limit = node_cpus or local_cpu_count(), plan.spec.search.max_concurrent
    workers = resources.workers
    sharing = trials_per_device(max_concurrent=limit, trials=plan.resolved.trial_count, cpu=resources.cpu,
                                gpu=resources.gpu, cpus=cpus, workers=workers)
    if sharing > 1:
        where = (f"{where} ({memory / 1e9:.3g} GB) divided among the {sharing} trial processes that run on it "
                 f"at once (search.max_concurrent {limit}, {cpus:g} CPUs / resources.cpu {resources.cpu:g}"
                 f"{f' x resources.workers {workers}' if workers > 1 else ''}"
                 f"{f', resources.gpu {resources.gpu:g}' if resources.gpu else ''})")
        memory //= sharing
    device = "cuda" if resources.gpu > 0 else "cpu"
    try:
        config = AutoConfig.from_pretrained(model_source(cfg, spec_file))
        mem = plan_trial_memory(cfg, model_config=config, batcher=batcher, examples=examples[:16], memory=memory,
                                source=where, device_type=device, space_values=space_extremes(space),
                                workers=workers)
    except MemoryFitError as exc:
        if exc.field.startswith("params."):
            raise space._error(("params", exc.field.split(".", 1)[1]), one_line(str(exc))) from None
        field = exc.field if exc.field != "model.path" or not resources.memory_gb else "resources.memory_gb"
        raise SpecError(spec_file, field, one_line(str(exc))) from None
    if mem.cfg.train.eval_batch != cfg.train.eval_batch:  # evaluation in smaller chunks than 64
        plan.spec.train.eval_batch = mem.cfg.train.eval_batch
    if cfg.train.batch_size == "auto":
        plan.spec.train.batch_size, plan.spec.train.grad_accum = mem.cfg.train.batch_size, mem.cfg.train.grad_accum
        return f"{mem.line()}; train.batch_size auto -> {mem.cfg.train.batch_size} (effective batch " \
               f"{mem.cfg.train.batch_size * mem.cfg.train.grad_accum})"
    return mem.line()


def lora_problem(lora: dict[str, Any] | None) -> tuple[str, str | None]:
    """(field, why) when peft is missing or does not know a `model.lora` option (its values are
    checked by `ModelConfig`), else (.., None)."""
    if lora is None:
        return "model.lora", None
    if importlib.util.find_spec("peft") is None:
        return "model.lora", "LoRA needs the optional package peft (pip install 'slsweep[lora]')"
    import dataclasses

    from peft import LoraConfig

    known = sorted(f.name for f in dataclasses.fields(LoraConfig) if f.init)
    for key in lora:
        if key not in known:
            return f"model.lora.{key}", f"not an option of peft's LoraConfig{did_you_mean(key, known)}"
    return "model.lora", None


def model_source(cfg: TrialConfig, spec_file: str) -> str:
    """The model folder or hub id `cfg.model.path` names (a tiny alias is built into the cache).

    Raises:
        SpecError: naming `spec_file` and model.path.
    """
    from sweeps.models.loading import ModelLoadError, resolve_model_path

    try:
        return resolve_model_path(cfg.model.path)
    except ModelLoadError as exc:
        raise SpecError(spec_file, "model.path", one_line(str(exc)).removeprefix("model.path: ")) from None


def load_batcher(cfg: TrialConfig, spec_file: str, source: str) -> Any:
    """The trial's `sweeps.models.Batcher` for the processor at `source`.

    Raises:
        SpecError: naming `spec_file` and model.path when the processor cannot be loaded.
    """
    from transformers import AutoProcessor

    from sweeps.models import Batcher

    try:
        processor = AutoProcessor.from_pretrained(source)
        return Batcher(processor, max_new_tokens=cfg.train.max_new_tokens)
    except Exception as exc:  # noqa: BLE001 - a broken processor folder is user-caused too
        raise SpecError(spec_file, "model.path", f"{cfg.model.path}: cannot load its processor "
                        f"({one_line(str(exc))[:300] or type(exc).__name__})") from None


def _check_loss_tokens(plan: SweepPlan, cfg: TrialConfig, spec_file: str,
                       answers: list[str]) -> tuple[Any, dict[str, Any]]:
    """Every family the sweep can choose: its required parameters, its tokens, its coverage of `answers`.
    Returns the trial's Batcher and each family's `sweeps.trial.coverage.LossTokens`."""
    from transformers import AutoTokenizer

    from sweeps.trial.coverage import coverage_warning, loss_tokens, measure_coverage

    families = reachable_families(plan.resolved)
    searched = set(plan.resolved.space.targets.values())
    for family in families:
        missing = [m for m in cfg.loss.model_copy(update={"family": family}).missing_required()
                   if f"loss.{m}" not in searched]
        if missing:
            raise SpecError(spec_file, f"loss.{missing[0]}", f"loss family {family!r} needs {missing[0]}: "
                            f"set loss.{missing[0]} or put it in the search space")
    source = model_source(cfg, spec_file)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as exc:  # hub misses, unknown tokenizer classes, broken files: all user-caused
        raise SpecError(spec_file, "model.path", f"{cfg.model.path}: cannot load its tokenizer "
                        f"({one_line(str(exc))[:300] or type(exc).__name__})") from None
    tokens = {}
    for family, field in families.items():  # the tokens each family needs, before the processor
        try:
            tokens[family] = loss_tokens(family, tokenizer, model=cfg.model.path)
            _check_plugin_builder(family, tokens[family].tokens, cfg.loss.model_copy(update={"family": family}))
        except SlsweepError as exc:
            origin = "" if field == "loss.family" else f" (chosen by {field})"
            raise SpecError(spec_file, "model.path", one_line(str(exc)).replace(
                f"loss family {family!r}", f"loss family {family!r}{origin}", 1)) from None
    batcher = load_batcher(cfg, spec_file, source)
    processor = batcher.processor
    try:
        batcher.prompt_text("How many?")  # a chat template that cannot render an image prompt fails here
        answer_ids = [batcher.answer_ids(a) for a in answers]
        for family, field in families.items():
            lt = tokens[family]
            warning = coverage_warning(lt, measure_coverage(lt, processor.tokenizer, answer_ids))
            if warning:
                print(f"warning: {spec_file}: {field}: {warning}", file=sys.stderr)
    except SlsweepError as exc:
        field = next((f for fam, f in families.items() if f"family {fam!r}" in str(exc)), "model.path")
        raise SpecError(spec_file, field, one_line(str(exc))) from None
    return batcher, tokens


def _check_plugin_builder(family: str, tokens: Any, loss: Any) -> None:
    """Build a plug-in loss family once (when its parameters are known now): a builder that raises
    or returns no callable fails here, before Ray starts. Raises SlsweepError."""
    import sl_core

    if family in sl_core.LOSS_FAMILIES or loss.missing_required():
        return
    try:
        fn = sl_core.build_loss(family, tokens, **loss.loss_kwargs(strict=False))
    except Exception as exc:  # noqa: BLE001 - the user's builder may raise anything
        raise SlsweepError(f"loss family {family!r}: its builder failed: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise SlsweepError(f"loss family {family!r}: its builder returned {type(fn).__name__}, not a loss function")


def reachable_families(resolved: ResolvedSpec) -> dict[str, str]:
    """Loss family -> the spec or search-space field that can choose it (the space's fixed value or
    categorical choices for `loss.family`, else the spec's `loss.family`; then the spec's
    baseline arms, `baselines.<i>.loss.family`)."""
    families = _searched_families(resolved)
    for i, arm in enumerate(resolved.spec.baselines):
        if "loss.family" in arm:
            families.setdefault(str(arm["loss.family"]), f"baselines.{i}.loss.family")
    return families


def _searched_families(resolved: ResolvedSpec) -> dict[str, str]:
    from sweeps.config.space import CategoricalParam, FixedParam

    space = resolved.space
    for name, param in space.params.items():
        if space.targets[name] != "loss.family":
            continue
        where = f"{space.source} params.{name}"
        if isinstance(param, FixedParam):
            return {param.value: where}
        if isinstance(param, CategoricalParam):
            return {c: where for c in param.choices}
    return {resolved.spec.loss.family: "loss.family"}


def _param_field(message: str, params: dict[str, Any]) -> str:
    """The field a task's complaint about `parameter 'NAME'` blames: `task.params.NAME` when the
    spec set it there, `task.image_size` for the image size, else `task.params`."""
    import re

    found = re.search(r"parameter '(\w+)'", message)
    name = found.group(1) if found else None
    if name in params:
        return f"task.params.{name}"
    return "task.image_size" if name == "image_size" else "task.params"


def check_data(cfg: TrialConfig, spec_file: str) -> list[tuple[str, list[Any]]]:
    """Read the first `PREFLIGHT_RECORDS` records of each data file or split (or draw as many
    synthetic examples); returns (label, examples) per read, the label naming the split and the
    field it came from (`train task.data_path`).

    Raises:
        SpecError: naming `spec_file` and the field (data path, split, columns, params, loader).
    """
    from sweeps.tasks import DataError, get_task

    task_cfg = cfg.task
    task = get_task(task_cfg.name)
    from sweeps.trial.data import check_held_out_apart  # never score a trial on its training rows

    try:
        check_held_out_apart(task_cfg)
    except DataError as exc:
        raise SpecError(spec_file, "task.data.eval_split" if task_cfg.data else "task.eval_split",
                        one_line(str(exc))) from None
    if task_cfg.data is not None:  # a Hugging Face dataset: the first rows of each split it reads
        from sweeps.tasks.hf import load_hf

        data, samples = task_cfg.data, []
        for field, split in (("task.data.split", data.split), ("task.data.eval_split", data.eval_split)):
            if split is None:
                continue
            try:
                rows = load_hf(data, task, split=split, limit=PREFLIGHT_RECORDS, image_size=task_cfg.image_size,
                               params=task_cfg.params)
            except DataError as exc:
                raise _data_error(spec_file, field, exc, hf=True) from None
            except (ValueError, TypeError) as exc:  # the task's params do not fit
                raise SpecError(spec_file, "task.params", one_line(str(exc))) from None
            role = "eval" if field == "task.data.eval_split" else "train" if data.eval_split else "train+eval"
            samples.append((f"{role} {field}={split}", rows))
        return samples
    if not task_cfg.data_path:  # synthetic data: draw examples with the trials' parameters
        from sweeps.trial.data import synthetic_params

        try:
            drawn = task.synthetic(PREFLIGHT_RECORDS, seed=0, **synthetic_params(task_cfg))
        except (ValueError, TypeError) as exc:
            text = one_line(str(exc))
            raise SpecError(spec_file, _param_field(text, task_cfg.params), text) from None
        return [(f"train+eval synthetic {task.name}", drawn)]
    samples: list[tuple[str, list[Any]]] = []
    loads = [("task.data_path", task_cfg.data_path, task_cfg.train_split)]
    if task_cfg.eval_data_path or task_cfg.eval_split:
        field = "task.eval_data_path" if task_cfg.eval_data_path else "task.eval_split"
        loads.append((field, task_cfg.eval_data_path or task_cfg.data_path, task_cfg.eval_split))
    for field, path, split in loads:
        if not Path(path).exists():
            raise SpecError(spec_file, field, f"{path}: file or folder not found")
        if not (Path(path).is_file() or Path(path).is_dir()):  # a FIFO or device would block reads
            raise SpecError(spec_file, field, f"{path}: not a regular file or folder")
        try:
            from sweeps.trial.data import loader_options  # task.loader + the task's data params

            examples = task.load(path, split=split, limit=PREFLIGHT_RECORDS,
                                 image_size=task_cfg.image_size, **loader_options(task, task_cfg))
        except DataError as exc:
            raise _data_error(spec_file, field, exc, hf=False) from None
        except (ValueError, TypeError) as exc:  # unknown loader option and the like
            raise SpecError(spec_file, "task.loader", one_line(str(exc))) from None
        if not examples:
            raise SpecError(spec_file, field, f"{path}: no examples")
        role = "eval" if field != "task.data_path" else "train" if len(loads) > 1 else "train+eval"
        samples.append((f"{role} {field}", examples))
    return samples


def check_rows(cfg: TrialConfig, spec_file: str) -> None:
    """Check every row a trial will read, not only the first `PREFLIGHT_RECORDS`: each answer (and
    box) by the task's own loader, each image file's existence, no image decoded.

    The reads are the trial's own (`sweeps.trial.data.data_reads`: bounded by task.train_size /
    task.eval_size where the trial reads that many, else the whole file or split), made with
    `images=False` (`Task.load`; for Hugging Face data `load_hf` reads each image's header for its
    size). A plug-in task whose `load` takes no `images` keeps the first-records check only.
    Measured on a shared 2-core machine under load: 20,000 JSON counting records with 20,000 image
    files in 0.5 s; a saved Hugging Face split of 20,000 JPEG rows in 4-6 s (header reads).

    Raises:
        SpecError: naming `spec_file`, the field of the read, and the loader's one-line DataError
            (file, record, field).
    """
    from sweeps.trial.data import data_reads, loads_without_images, read_examples
    from sweeps.tasks import DataError, get_task

    task = get_task(cfg.task.name)
    if cfg.task.data is None and not loads_without_images(task):
        return
    for read in data_reads(cfg.task):
        try:
            read_examples(task, cfg.task, read, images=False)
        except DataError as exc:
            raise _data_error(spec_file, read.field, exc, hf=read.path is None) from None
        except (ValueError, TypeError) as exc:  # the task's params or loader options do not fit
            raise SpecError(spec_file, "task.params" if read.path is None else "task.loader",
                            one_line(str(exc))) from None


def _data_error(spec_file: str, field: str, exc: Exception, *, hf: bool) -> SpecError:
    """A loader's DataError as the SpecError naming the spec field it blames: for Hugging Face data
    the column's `task.data.columns.*` field, the split's field, or task.data.hf."""
    text = one_line(str(exc))
    if hf:
        field = next((f"task.data.columns.{r}" for r in ("image", "question", "answer")
                      if f"task.data.columns.{r}" in text), field if "split" in text else "task.data.hf")
    return SpecError(spec_file, field, text)
