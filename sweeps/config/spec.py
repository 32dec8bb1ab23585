"""Sweep specs: one YAML file that says what to sweep, how, where, and what to optimise.

`load_spec(path)` validates the spec (unknown keys are errors), resolves and validates its search
space, and returns a `ResolvedSpec` whose `base_trial_config()` is the trial config every trial
starts from (the sampled search-space values and the seed are applied on top).

Paths inside a spec: `search_space: NAME` is looked up next to the spec file first, then among the
packaged spaces (`search_spaces/`); `.yaml` may be omitted. Relative `task.data_path` and
`task.eval_data_path` are relative to the spec file; `model.path` too when such a file or folder
exists there (otherwise it is a hub id or a built-in `tiny*` name). `storage` is relative to the
current directory.

Seeds: every configuration runs with seeds first_seed..first_seed+seeds-1 (first_seed default 0;
`slsweep confirm` starts after the seeds a search used). With `tpe`/`random` the runner repeats each
suggested configuration `seeds` times (Ray Tune's `Repeater`, `__trial_index__` = seed) and the
sampler learns from the mean metric over the seeds; with `grid` the seed is one more grid
dimension. Trial count: `num_samples * seeds` (tpe/random) or `len(grid) * seeds` (grid), plus
`len(baselines) * seeds` for the spec's baseline arms (fixed configurations run on the same seeds).

Scheduler units: `grace_period` and `max_t` count optimizer steps (the trial reports `step`);
defaults: `max_t = train.steps`, `grace_period = train.eval_every`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweeps.config.trial_config import MAX_SEED, LossConfig, ModelConfig, TaskConfig, TrainConfig, TrialConfig
from sweeps.errors import FieldValueError, SpecError, did_you_mean, spec_error_from_validation
from sweeps.store.names import experiment_name_problem, spec_name_problem
from sweeps.config.overrides import (Override, apply_overrides, blame_override, notes_when_valid, overridden_lines,
                                     parse_overrides)
from sweeps.plugins import add_search_dir
from sweeps.config.search import (DEFAULT_ALGORITHM, STRATEGIES, SamplerSettings, SearchStrategy, algorithm_names,
                                  strategy)
from sweeps.config.space import SearchSpace, load_space
from sweeps.config.yamlio import YamlDoc, dump_yaml, load_yaml, require_mapping

__all__ = [
    "ResolvedSpec",
    "SweepSpec",
    "load_spec",
    "packaged_space_dir",
    "packaged_space_path",
    "packaged_spaces",
    "packaged_spec_dir",
    "packaged_spec_path",
    "packaged_specs",
]

MAX_TRIALS = 100_000  # num_samples, seeds: beyond this a typo (Tune reads a huge count as "forever")
_HINTS = {
    "seed": "seeds are per trial: use search.seeds (seeds per configuration) or search.seed (sampler seed)",
}


class _Section(BaseModel):
    # No inf/nan anywhere in a spec: `num_samples: .inf`, `lr: .inf` are typos, not settings.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SearchConfig(_Section):
    """How configurations are chosen. See the module docstring for how seeds compose."""

    algorithm: str = DEFAULT_ALGORITHM  # a name in sweeps.config.search.STRATEGIES
    num_samples: int = Field(8, gt=0, le=MAX_TRIALS)
    seeds: int = Field(1, ge=1, le=MAX_TRIALS)
    first_seed: int = Field(0, ge=0, le=MAX_TRIALS)  # trial seeds are first_seed + 0..seeds-1
    max_concurrent: int = Field(1, ge=1)
    # The sampler's seed; None (the default) = a fresh seed per sweep, recorded with the sweep.
    seed: int | None = Field(None, ge=0, le=MAX_SEED)

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in STRATEGIES:
            names = [repr(n) for n in algorithm_names()]
            raise ValueError(f"unknown {value!r}{did_you_mean(value, algorithm_names())} (choose "
                             f"{', '.join(names[:-1])} or {names[-1]})")
        return value

    @property
    def strategy(self) -> SearchStrategy:
        """The algorithm's `SearchStrategy` (grid or an Optuna sampler)."""
        return strategy(self.algorithm)

    def sampler_settings(self) -> SamplerSettings:
        """What the algorithm's sampler is built from."""
        return SamplerSettings(seed=self.seed, num_samples=self.num_samples, max_concurrent=self.max_concurrent)


class SchedulerConfig(_Section):
    """Early stopping: `asha` (asynchronous successive halving) or `fifo` (none). Units: steps."""

    type: Literal["asha", "fifo"] = "asha"
    grace_period: int | None = Field(None, gt=0)
    reduction_factor: float = Field(3.0, gt=1)
    max_t: int | None = Field(None, gt=0)


class ResourcesConfig(_Section):
    """Resources per trial worker (Ray's `cpu`/`gpu`; fractions allowed) and how many workers.

    `workers: 1` (the default) is one process per trial. `workers: N > 1` runs each trial as a Ray
    Train data-parallel job (`sweeps.trial.train_job`): N worker processes with `cpu`/`gpu` each
    (also spelled `cpus_per_worker`/`gpus_per_worker`), `strategy` ddp (replicated model) or fsdp
    (parameters, gradients and optimizer states sharded, FSDP2 `fully_shard`). `train.batch_size`
    stays the global batch: each worker trains on its 1/N share of every micro-batch.
    """

    # Each spelled-out name is the same field: an error names the spelling the spec used.
    SPELLED_OUT: ClassVar[dict[str, str]] = {"cpu": "cpus_per_worker", "gpu": "gpus_per_worker"}
    cpu: float = Field(1.0, gt=0, validation_alias=AliasChoices("cpu", "cpus_per_worker"))
    gpu: float = Field(0.0, ge=0, validation_alias=AliasChoices("gpu", "gpus_per_worker"))
    workers: int = Field(1, ge=1, le=4096)
    strategy: Literal["ddp", "fsdp"] = "ddp"

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data: Any) -> Any:
        # (an override of either spelling replaces the file's other one: `drop_other_spelling`)
        if isinstance(data, dict):
            for short, long in cls.SPELLED_OUT.items():
                if short in data and long in data:
                    raise FieldValueError(long, f"{short} and {long} are the same field (per trial worker); "
                                                "give one")
        return data

    @classmethod
    def drop_other_spelling(cls, resources: dict[str, Any], key: str) -> None:
        """An override set `resources.<key>`: remove the same field's other spelling from
        `resources` (the file's), so that the override wins as it does for any other field."""
        for short, long in cls.SPELLED_OUT.items():
            if key in (short, long):
                resources.pop(long if key == short else short, None)
    # memory of the device one trial runs on, in GB (1e9 bytes), for the memory planner
    # (sweeps.trial.memory); unset: the local GPU's free memory when trials get a GPU, else available RAM
    memory_gb: float | None = Field(None, gt=0)


class MetricConfig(_Section):
    """The metric to optimise; default: the task's main metric, mode inferred from the metric."""

    name: str | None = None
    mode: Literal["max", "min"] | None = None


class TrackingConfig(_Section):
    """MLflow: tracking URI (None = SQLite in the run folder) and experiment (None = spec name)."""

    uri: str | None = None
    experiment: str | None = None

    @field_validator("experiment")
    @classmethod
    def _experiment_ok(cls, value: str | None) -> str | None:
        # Free text for MLflow (never a path: sweeps.store.names.folder_name), within MLflow's rules.
        problem = None if value is None else experiment_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class RayConfig(_Section):
    """Ray: cluster address (None = local) and runtime environment for workers."""

    address: str | None = None
    runtime_env: dict[str, Any] = Field(default_factory=dict)
    # Keep a trial's worker process for the next trial (saves re-importing torch/transformers,
    # ~10 s a trial on a laptop CPU). None = on for local Ray, off on a cluster, where reused
    # workers pin later trials to the nodes of the first ones instead of spreading them.
    reuse_workers: bool | None = None


class LimitsConfig(_Section):
    """Wall-clock limits in seconds (None: no limit).

    `trial_seconds`: one attempt of a trial; a trial running longer (a hung worker included) ends
    FAILED with `slsweep.stop_reason=timeout` and the sweep goes on (a retry under
    `failure.max_failures` gets the limit afresh). `sweep_seconds`: the whole sweep (Tune's
    `time_budget_s`); when it runs out, running trials end KILLED `sweep_time_limit` and the sweep
    is over. `resources_wait_seconds`: on a cluster, how long the driver waits for a node that can
    hold one trial's `resources` before refusing the sweep (a local Ray is checked up front).
    """

    trial_seconds: float | None = Field(None, gt=0)
    sweep_seconds: float | None = Field(None, gt=0)
    resources_wait_seconds: float = Field(300.0, ge=0)


class FailureConfig(_Section):
    """How many times a failed trial is retried (from its last checkpoint)."""

    max_failures: int = Field(0, ge=0)




class SweepSpec(_Section):
    """A validated sweep spec (the YAML file's content)."""

    name: str
    description: str = ""
    task: TaskConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig
    search_space: str | dict[str, Any]
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    metric: MetricConfig = Field(default_factory=MetricConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    storage: str | None = None
    failure: FailureConfig = Field(default_factory=FailureConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    # Fixed arms run beside the search on the same seeds, outside it (not in the Optuna study,
    # never stopped early; a grid runs them as more points): `[{loss.family: hard}]` is the
    # hard-CE baseline. Each arm is dotted TrialConfig keys over the base config; see
    # `ResolvedSpec.arm_overrides`.
    baselines: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        # The name becomes the sweep id: file names in the run folder, the Optuna study, Ray's
        # folder (sweeps.store.names), and the experiment unless tracking.experiment names one.
        problem = spec_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("search_space")
    @classmethod
    def _space_ref_ok(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty string: give a search-space file name or an inline mapping")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepSpec:
        task = self.task.name
        from sweeps.tasks import get_task  # the one task registry

        known = {**get_task(task).metric_modes, "train_loss": "min"}
        metric = self.metric.name or get_task(task).primary_metric
        if metric not in known:
            raise FieldValueError(
                "metric.name", f"'{metric}' is not a metric of task {task}{did_you_mean(metric, list(known))} "
                f"(one of: {', '.join(known)})"
            )
        if self.metric.mode is not None and self.metric.mode != known[metric]:
            raise FieldValueError(
                "metric.mode", f"{metric} is better when {'higher' if known[metric] == 'max' else 'lower'}: "
                f"mode must be {known[metric]}"
            )
        self.metric.name, self.metric.mode = metric, known[metric]

        sched = self.scheduler
        if sched.type == "fifo":
            for key in ("grace_period", "max_t"):
                if getattr(sched, key) is not None:
                    raise FieldValueError(f"scheduler.{key}", "applies to scheduler type asha only")
        else:
            sched.max_t = sched.max_t or self.train.steps
            sched.grace_period = sched.grace_period or min(self.train.eval_every, sched.max_t)
            if sched.grace_period > sched.max_t:
                raise FieldValueError(
                    "scheduler.grace_period", f"must be <= scheduler.max_t ({sched.max_t}), got {sched.grace_period}"
                )
            if sched.max_t < self.train.steps:  # ASHA stops every trial at max_t
                raise FieldValueError(
                    "scheduler.max_t", f"{sched.max_t} is below train.steps ({self.train.steps}): ASHA would stop "
                    f"every trial at step {sched.max_t}, before its budget, and none would reach full budget; "
                    "set it to train.steps or leave it out (it defaults to train.steps)")
        workers, batch = self.resources.workers, self.train.batch_size
        if workers > 1 and batch != "auto" and batch % workers:
            raise FieldValueError(
                "train.batch_size", f"{batch} is the global micro-batch and must divide evenly among "
                f"resources.workers ({workers}): use a multiple of {workers}")
        return self


@dataclass(frozen=True)
class ResolvedSpec:
    """A loaded spec with its search space.

    Attributes:
        spec: the validated spec (paths resolved, scheduler/metric defaults filled in).
        space: the validated search space.
        path: the spec file (the packaged default.yaml when `load_spec(None)`).
        spec_yaml: the spec file's text (for the `spec.yaml` artifact); with overrides, the
            resolved spec as YAML under a comment naming the file and the overrides.
        overrides: the command-line overrides applied, as typed (`train.steps=50`).
    """

    spec: SweepSpec
    space: SearchSpace
    path: Path
    spec_yaml: str
    overrides: tuple[str, ...] = ()

    def base_trial_config(self) -> TrialConfig:
        """The config every trial starts from: the spec's task/model/train/loss, seed
        `search.first_seed` (a trial's seed is this plus its seed index)."""
        s = self.spec
        return TrialConfig(name=s.name, task=s.task, model=s.model, train=s.train, loss=s.loss,
                           seed=s.search.first_seed)

    @property
    def trial_count(self) -> int:
        """How many trials the sweep runs ((configurations + baseline arms) x seeds)."""
        s = self.spec.search
        configs = len(self.space.grid()) if s.strategy.is_grid else s.num_samples
        return (configs + len(self.spec.baselines)) * s.seeds

    def arm_overrides(self) -> list[dict[str, Any]]:
        """The spec's `baselines` as `TrialConfig.with_overrides` mappings, one per arm.

        An arm that switches `loss.family` starts from that family's defaults: the base's loss
        parameters belong to another family (`{loss.family: hard}` on a soft-label spec is plain
        hard CE), the same rule `slsweep confirm --baseline` follows.
        """
        return [arm_overrides(self.spec.loss.family, arm) for arm in self.spec.baselines]

    def arm_labels(self) -> list[str]:
        """A short name per baseline arm: `hard` for `{loss.family: hard}`, else `k=v ...`."""
        return [arm_label(arm) for arm in self.spec.baselines]

    def flat_params(self) -> dict[str, Any]:
        """The spec as dotted keys (None omitted), for the parent MLflow run's params."""
        data = self.spec.model_dump(mode="json")
        data["search_space"] = self.space.source
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif value is not None and value != {}:
                out[prefix] = value

        walk("", data)
        return out


def arm_overrides(base_family: str, arm: dict[str, Any]) -> dict[str, Any]:
    """One baseline arm (dotted keys) as `with_overrides` keys (see `ResolvedSpec.arm_overrides`)."""
    family = arm.get("loss.family")
    if family is None or family == base_family:
        return dict(arm)
    loss = {"family": family, **{k[5:]: v for k, v in arm.items() if k.startswith("loss.") and k != "loss.family"}}
    return {"loss": loss, **{k: v for k, v in arm.items() if not k.startswith("loss.")}}


def arm_label(arm: dict[str, Any]) -> str:
    """`hard` for `{loss.family: hard}`; otherwise the arm's `key=value` pairs."""
    if list(arm) == ["loss.family"]:
        return str(arm["loss.family"])
    return " ".join(f"{k}={v}" for k, v in arm.items())


def _check_baselines(spec: SweepSpec, base: TrialConfig, file: str, doc: YamlDoc) -> None:
    """Each baseline arm must be a non-empty mapping of dotted TrialConfig keys that makes a
    valid trial config."""
    for i, arm in enumerate(spec.baselines):
        where = f"baselines.{i}"
        if not arm:
            raise SpecError(file, where, "empty arm: give dotted config keys, e.g. {loss.family: hard}",
                            line=doc.line_of(("baselines", i)))
        for key in arm:
            if key in ("seed", "name") or not isinstance(key, str):
                raise SpecError(file, f"{where}.{key}", "seeds come from search.seeds; an arm sets config "
                                "fields such as loss.family or train.lr", line=doc.line_of(("baselines", i)))
        try:
            base.with_overrides(arm_overrides(base.loss.family, arm), source=file)
        except SpecError as err:
            field = err.field if str(err.field).startswith(tuple(arm)) else next(iter(arm))
            raise SpecError(file, f"{where}.{field}", err.message, line=doc.line_of(("baselines", i))) from None


# --------------------------------------------------------------------------- packaged files


def packaged_spec_dir() -> Path:
    return Path(str(resources.files("sweeps") / "specs"))


def packaged_space_dir() -> Path:
    return Path(str(resources.files("search_spaces")))


def packaged_specs() -> list[str]:
    """Names of the built-in specs (`default`, `counting`, ...)."""
    return sorted(p.stem for p in packaged_spec_dir().glob("*.yaml"))


def packaged_spaces() -> list[str]:
    """Names of the built-in search spaces (`paper`, `eta_grid`, ...)."""
    return sorted(p.stem for p in packaged_space_dir().glob("*.yaml"))


def _packaged_path(folder: Path, name: str, what: str, known: list[str]) -> Path:
    path = folder / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        raise SpecError(name, "<file>", f"no built-in {what} of that name{did_you_mean(name, known)} "
                        f"(built-in: {', '.join(known)})")
    return path


def packaged_spec_path(name: str) -> Path:
    """Path of a built-in spec by name (`default` or `default.yaml`); SpecError if unknown."""
    return _packaged_path(packaged_spec_dir(), name, "spec", packaged_specs())


def packaged_space_path(name: str) -> Path:
    """Path of a built-in search space by name (`paper` or `paper.yaml`); SpecError if unknown."""
    return _packaged_path(packaged_space_dir(), name, "search space", packaged_spaces())


def _find_space_file(ref: str, spec_dir: Path, spec_path: Path | None = None) -> Path | None:
    names = [ref] if ref.endswith((".yaml", ".yml")) else [ref, f"{ref}.yaml"]
    # Built-in specs name built-in spaces: their folder holds specs, some named like a space
    # (sweeps/specs/baselines.yaml). Elsewhere a file beside the spec wins, but never the spec itself.
    builtin = spec_dir.resolve() == packaged_spec_dir().resolve()
    for folder in (packaged_space_dir(),) if builtin else (spec_dir, packaged_space_dir()):
        for n in names:
            candidate = (folder / n).expanduser()
            if candidate.is_file() and candidate.resolve() != spec_path:
                return candidate.resolve()
    return None


# --------------------------------------------------------------------------- loading


def _resolve_paths(spec: SweepSpec, spec_dir: Path) -> SweepSpec:
    """Make relative data paths (and an existing relative model folder) absolute."""
    task_updates: dict[str, Any] = {}
    for key in ("data_path", "eval_data_path"):
        value = getattr(spec.task, key)
        if value and not Path(value).expanduser().is_absolute():
            task_updates[key] = str((spec_dir / Path(value).expanduser()).resolve())
        elif value:
            task_updates[key] = str(Path(value).expanduser())
    model_updates: dict[str, Any] = {}
    local = spec_dir / spec.model.path
    if not Path(spec.model.path).is_absolute() and not spec.model.path.startswith("tiny") and local.exists():
        model_updates["path"] = str(local.resolve())
    return spec.model_copy(update={
        "task": spec.task.model_copy(update=task_updates),
        "model": spec.model.model_copy(update=model_updates),
    })


def _file_or_builtin(path: str | Path, folder: Path, what: str) -> Path:
    """`path` if it exists (or has a folder part), else `folder/<name>.yaml` for a bare name."""
    candidate = Path(path).expanduser()
    if candidate.exists() or len(candidate.parts) != 1:
        return candidate
    builtin = sorted(p.stem for p in folder.glob("*.yaml"))
    stem = candidate.name.removesuffix(".yaml")
    if stem in builtin:
        return folder / f"{stem}.yaml"
    raise SpecError(str(path), "<file>", f"no such file, and no built-in {what} of that name"
                    f"{did_you_mean(stem, builtin)} "
                    f"(built-in: {', '.join(builtin)})")


def find_spec(path: str | Path | None) -> Path:
    """The spec file `path` names: the file itself, else the built-in spec of that name
    (`counting` or `counting.yaml`, as `slsweep list` shows them); None = the built-in default.

    Raises:
        SpecError: neither a file nor a built-in spec has that name.
    """
    return packaged_spec_path("default") if path is None else _file_or_builtin(path, packaged_spec_dir(), "spec")


def find_trial_config(path: str | Path) -> Path:
    """The trial config file `path` names: the file itself, else the built-in trial config of that
    name (`slsweep list`: `counting`). SpecError if neither exists."""
    return _file_or_builtin(path, packaged_spec_dir() / "trials", "trial config")


def load_spec(path: str | Path | None = None, overrides: Sequence[str] = ()) -> ResolvedSpec:
    """Load, validate and resolve a sweep spec.

    Args:
        path: a spec file, or a built-in spec's name (None = the built-in default.yaml).
        overrides: `key=value` words applied to the file's mapping before validation
            (`train.steps=50`, `search.num_samples=4`; see `sweeps.config.overrides`).

    Raises:
        SpecError: naming the spec (or search-space) file, or the override, and the dotted field.
    """
    parsed = parse_overrides(overrides)
    try:
        with notes_when_valid():  # a refused spec gets one line: its error
            return _load_spec(find_spec(path), parsed)
    except SpecError as err:
        raise blame_override(err, parsed) from None


def _load_spec(spec_path: Path, overrides: list[Override]) -> ResolvedSpec:
    doc: YamlDoc = load_yaml(spec_path, what="sweep spec")
    file = doc.source
    add_search_dir(spec_path.expanduser().resolve().parent)  # plug-in packages beside the spec
    data = apply_overrides(require_mapping(doc, "sweep spec"), overrides, source=file)
    for ov in overrides:
        if ov.parts[0] == "resources" and len(ov.parts) == 2 and isinstance(data.get("resources"), dict):
            ResourcesConfig.drop_other_spelling(data["resources"], ov.parts[1])
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, file=file, model=SweepSpec,
                                         line_of=overridden_lines(doc.line_of, overrides),
                                         hints=_HINTS) from None
    spec_dir = spec_path.expanduser().resolve().parent
    spec = _resolve_paths(spec, spec_dir)
    base = TrialConfig(name=spec.name, task=spec.task, model=spec.model, train=spec.train,
                       loss=spec.loss, seed=0)

    if isinstance(spec.search_space, dict):
        space = load_space(spec.search_space, source=file, base=base, doc=doc, prefix=("search_space",))
    else:
        found = _find_space_file(spec.search_space, spec_dir, spec_path.expanduser().resolve())
        if found is None:
            raise SpecError(
                file, "search_space",
                f"search space file '{spec.search_space}' not found"
                f"{did_you_mean(spec.search_space, packaged_spaces())} (looked in {spec_dir} and the "
                f"built-in spaces: {', '.join(packaged_spaces())})",
                line=doc.line_of(("search_space",)),
            )
        space = load_space(found, base=base)

    if spec.search.strategy.is_grid:
        points = space.grid()
        if "num_samples" in spec.search.model_fields_set and spec.search.num_samples != len(points):
            raise SpecError(
                file, "search.num_samples",
                f"grid search runs every grid point ({len(points)}); omit num_samples or set it to {len(points)}",
                line=doc.line_of(("search", "num_samples")),
            )
    _check_baselines(spec, base, file, doc)
    text = doc.text or dump_yaml(data)
    if overrides:  # the artifact is the spec that ran: the file's values with the overrides set
        text = (f"# {file} with command-line overrides: {' '.join(o.text for o in overrides)}\n"
                + dump_yaml(data))
    return ResolvedSpec(spec=spec, space=space, path=spec_path, spec_yaml=text,
                        overrides=tuple(o.text for o in overrides))
