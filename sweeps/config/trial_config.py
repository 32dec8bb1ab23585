"""The resolved configuration of one trial: task, model, training, loss and seed.

A `TrialConfig` is what a sweep hands to one trial (base sections of the spec plus the sampled
search-space values plus the seed) and what MLflow records (`flatten()`, dotted keys).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from sl_core.registry import LOSS_FAMILY_SPECS, ParamSpec, check_family_params

from sweeps.errors import FieldValueError, SpecError, did_you_mean, pydantic_message, spec_error_from_validation
from sweeps.config.yamlio import load_yaml, require_mapping

__all__ = [
    "FREE_FORM_SECTIONS",
    "LOSS_FAMILIES",
    "LossConfig",
    "ModelConfig",
    "RESUME_MAY_CHANGE",
    "TaskConfig",
    "TrainConfig",
    "TrialConfig",
]

# The loss families come from sl_core's registry (torch-free), the tasks from sweeps.tasks (imported
# when a config is validated): neither list is restated here.
LOSS_FAMILIES: tuple[str, ...] = tuple(LOSS_FAMILY_SPECS)
MAX_SEED = 2**32 - 1  # numpy's RandomState (Optuna's samplers, transformers.set_seed) takes no more
MAX_IMAGE_SIZE = 4096  # task.image_size: the largest square side (pixels) a task renders or resizes to


class _Section(BaseModel):
    # No inf/nan anywhere in a config: `lr: .inf` is a typo, not a setting.
    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)


class HFColumns(_Section):
    """Which dataset column holds each part of an example."""

    image: str = Field("image", min_length=1)
    question: str = Field("question", min_length=1)
    answer: str = Field("answer", min_length=1)


class HFDataConfig(_Section):
    """A Hugging Face dataset as a task's data (`datasets.load_dataset` / `load_from_disk`).

    `hf` is a local folder saved with `save_to_disk`, a parquet / arrow / json / csv file or a
    folder of them (or an `imagefolder`), or a hub id when the machine is online (`HF_HUB_OFFLINE`
    is honoured). Training examples come from `split`; held-out ones from `eval_split`, else the
    last `task.eval_size` rows of `split`.
    """

    hf: str = Field(..., min_length=1)
    split: str = Field("train", min_length=1)
    eval_split: str | None = None
    config: str | None = None
    columns: HFColumns = Field(default_factory=HFColumns)
    streaming: bool = False


class TaskConfig(_Section):
    """Which task, its generator parameters, and where real data lives (None = synthetic)."""

    name: str = Field(..., min_length=1, description="a task of sweeps.tasks.TASKS, or a plug-in "
                      "'package.module:TaskClass'")
    params: dict[str, Any] = Field(default_factory=dict)
    data_path: str | None = None
    eval_data_path: str | None = None
    # Real-format data only: options for the task's loader and the dataset's own split names
    # (TallyQA train/test, RefCOCO train/val/testA/testB, ChartQA train/val/test).
    loader: dict[str, Any] = Field(default_factory=dict)
    train_split: str | None = None
    eval_split: str | None = None
    train_size: int = Field(20000, gt=0)
    eval_size: int = Field(500, gt=0)
    # Square side in pixels; above 4096 (48 MB an image) a synthetic set is a MemoryError or hangs
    # while it renders, and no supported processor takes a larger image.
    image_size: int = Field(48, gt=0, le=MAX_IMAGE_SIZE)
    # A Hugging Face dataset (instead of data_path): see HFDataConfig.
    data: HFDataConfig | None = None

    @field_validator("name")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from sweeps.tasks import get_task  # the task registry (plug-ins are imported here)

        get_task(value)
        return value

    @model_validator(mode="after")
    def _one_data_source(self) -> TaskConfig:
        if self.data is not None and (self.data_path or self.eval_data_path):
            raise FieldValueError("data", "give either data (a Hugging Face dataset) or data_path, not both")
        return self


class ModelConfig(_Section):
    """The model: hub id, local path, or a built-in tiny model (`tiny`, `tiny-llava`, ...)."""

    path: str = Field("tiny", min_length=1)
    freeze_vision: bool = False
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"

    @field_validator("lora")
    @classmethod
    def _lora_ok(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # peft's LoraConfig takes r=0, lora_dropout=1.5 and the like, and every trial then fails
        # when the adapters are built; the values peft would reject later are refused here
        # (unknown option names: `sweeps.driver.preflight`, which imports peft).
        if value is None:
            return value
        try:
            _LoraOptions.model_validate(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            key = ".".join(str(p) for p in err["loc"])
            raise FieldValueError(key, f"{pydantic_message(err['msg'])} "
                                  f"(got {err.get('input')!r})") from None
        return value


class _LoraOptions(BaseModel):
    """The LoRA options whose values peft rejects only when it builds the adapters."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)

    r: int = Field(8, ge=1)
    lora_alpha: int | float = Field(16, gt=0)
    lora_dropout: float | int = Field(0.0, ge=0, lt=1)
    target_modules: str | list[str] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"

    @field_validator("target_modules")
    @classmethod
    def _modules_ok(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and (not value or (isinstance(value, list) and not all(value))):
            raise ValueError("give a module name, a list of names or a regular expression")
        return value


class TrainConfig(_Section):
    """Optimiser and schedule. Steps count optimizer updates (each `grad_accum` micro-batches)."""

    steps: int = Field(1000, gt=0)
    # examples per micro-batch; "auto": the largest that fits the device's memory, with grad_accum
    # set to keep `effective_batch_size` (sweeps.trial.memory.plan_trial_memory)
    batch_size: int | Literal["auto"] = 32
    grad_accum: int = Field(1, ge=1)
    effective_batch_size: int = Field(32, gt=0)  # batch_size x grad_accum, for batch_size: auto
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    # steps between evaluations; left unset in a run of fewer steps, it is that run's steps (an
    # evaluation at the end)
    eval_every: int = Field(100, gt=0)
    # bf16 autocast: "auto" = on CUDA, and on CPU when model.dtype is bfloat16
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    # torch.compile each decoder layer of the language model (sweeps.models.loading.compile_decoder_layers)
    compile: bool = False
    max_new_tokens: int = Field(8, gt=0)
    # examples generated at once in evaluation (None: 64); the memory planner lowers it when 64 does not fit
    eval_batch: int | None = Field(None, gt=0)
    checkpoint_every: int | None = Field(None, gt=0)
    # The last step's checkpoint holds the weights and optimizer too (false: only the step and the
    # evaluation history; a finished trial has nothing left to train, so a sweep keeps no weights per trial)
    keep_final_weights: bool = False
    # DataLoader worker processes that build training batches ahead of the step (0 = inline)
    data_workers: int = Field(1, ge=0, le=64)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size_ok(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return value
        raise ValueError(f"a positive integer or 'auto' (got {value!r})")

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrainConfig:
        if self.warmup_steps > self.steps:
            raise FieldValueError(
                "warmup_steps", f"must be <= train.steps ({self.steps}), got {self.warmup_steps}"
            )
        if self.eval_every > self.steps and "eval_every" not in self.model_fields_set:
            self.eval_every = self.steps  # the default, not a choice: evaluate at the end
        if self.eval_every > self.steps:  # the trial would never be evaluated
            raise FieldValueError(
                "eval_every", f"must be <= train.steps ({self.steps}), got {self.eval_every}"
            )
        return self


def _loss_param_specs() -> dict[str, ParamSpec]:
    """Every loss parameter of any family, by name (the first family that declares it gives its bounds)."""
    out: dict[str, ParamSpec] = {}
    for family in LOSS_FAMILY_SPECS.values():
        for p in family.params:
            out.setdefault(p.name, p)
    return out


_LOSS_PARAMS = _loss_param_specs()


def _without_name(exc: Exception, name: str) -> str:
    """A parameter check's message without the leading parameter name (the error names the field)."""
    return str(exc).removeprefix(f"{name}: ").removeprefix(f"{name} ")


def loss_family_problem(family: str) -> str | None:
    """Why `family` names no loss family (neither registered nor a plug-in's dotted path), or None."""
    from sweeps.plugins import is_dotted

    if family in LOSS_FAMILY_SPECS or is_dotted(family):
        return None
    return (f"unknown {family!r}{did_you_mean(family, LOSS_FAMILIES)} (choose one of {', '.join(LOSS_FAMILIES)} "
            "or a plug-in 'package.module:builder')")


def loss_param_problem(name: str, value: Any) -> str | None:
    """Why `value` is refused as loss parameter `name` by every built-in family that takes it (so a
    spec refuses it whatever its family: `eta: 7`, `psi: gausian`), as the spec's error says it;
    None when one of them accepts it, `name` is no built-in loss parameter, or the value is a
    plug-in's dotted path."""
    from sweeps.plugins import is_dotted

    if is_dotted(value):
        return None
    problems = []
    for family in LOSS_FAMILIES:
        spec = LOSS_FAMILY_SPECS[family].param_map.get(name)
        if spec is None:
            continue
        try:
            spec.check(value, family)
        except (TypeError, ValueError) as exc:
            problems.append(_without_name(exc, name))
        else:
            return None
    return problems[0] if problems else None


class _LossBase(_Section):
    """The loss family and its parameters; `loss_kwargs()` picks the family's own, defaults filled in.

    Fields are derived from `sl_core.registry.LOSS_FAMILY_SPECS`: `family`, then every parameter of
    any family (unset = the family's default). A parameter of another family is allowed (a search
    space may switch the family) and checked against its own bounds, but only the chosen family's
    parameters reach the loss and MLflow.
    """

    # the engine of the soft-label families (sl_core.backend): results are the same, speed differs
    backend: Literal["auto", "torch", "triton"] = "auto"

    # parameters of a plug-in loss family (`family: pkg.module:builder`), by the names it declares
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _params_fit_family(self) -> _LossBase:
        _resolve_plugins(self)
        family = LOSS_FAMILY_SPECS[self.family]
        builtin = self.family in LOSS_FAMILIES
        if builtin and self.options:
            raise FieldValueError("options", f"only plug-in loss families take options; {self.family!r} "
                                  f"takes {', '.join(family.param_map) or 'no parameters'} as loss fields")
        for key, value in ({} if builtin else self.options).items():
            spec = family.param_map.get(key)
            if spec is None:
                raise FieldValueError("options", f"loss family {self.family!r} does not take {key!r} "
                                      f"(accepts: {', '.join(family.param_map) or 'no parameters'})")
            if value is not None:
                try:
                    spec.check(value, self.family)
                except ValueError as exc:
                    raise FieldValueError(f"options.{key}", str(exc).removeprefix(f"{key} ")) from None
        for name, spec in _LOSS_PARAMS.items():
            value = getattr(self, name)
            if value is None:
                continue
            owner = family.param_map.get(name)
            if owner is None and spec.kind == "choice":
                continue  # e.g. psi on a hard-CE trial: which family's names apply is unknown
            try:
                (owner or spec).check(value, self.family)
            except ValueError as exc:
                raise FieldValueError(name, _without_name(exc, name)) from None
        if family.name == "soft_label" and self.psi_param is not None and self.psi is not None:
            from sl_core.psi import psi_takes_param  # torch-free

            if not psi_takes_param(self.psi):
                raise FieldValueError("psi_param", f"psi shape {self.psi!r} takes no parameter; leave psi_param unset")
        return self

    def _given(self) -> dict[str, Any]:
        """The chosen family's parameters as set (None: unset): loss fields, or `options` for a plug-in."""
        params = LOSS_FAMILY_SPECS[self.family].params
        if self.family in LOSS_FAMILIES:
            return {p.name: getattr(self, p.name) for p in params}
        return {p.name: self.options.get(p.name) for p in params}

    def missing_required(self) -> list[str]:
        """The family's required parameters (eta) that are not set."""
        return [k for k, v in self._given().items() if v is None and LOSS_FAMILY_SPECS[self.family].param_map[k].required]

    def loss_kwargs(self, *, strict: bool = True) -> dict[str, Any]:
        """Keyword arguments for `sl_core.build_loss(self.family, tokens, **kwargs)`, defaults filled in.

        Args:
            strict: raise when a required parameter is unset; False leaves it out (a base config
                whose search space supplies it).

        Raises:
            FieldValueError: a required parameter (eta) is not set (strict only).
        """
        given = self._given()
        if not strict:
            missing = self.missing_required()
            defaults = check_family_params(self.family, {**given, **{m: 0.0 for m in missing}})
            return {k: v for k, v in defaults.items() if k not in missing}
        try:
            return check_family_params(self.family, given)
        except ValueError as exc:
            missing = self.missing_required()
            raise FieldValueError(missing[0] if missing else "family", str(exc)) from None


def _resolve_plugins(loss: Any) -> None:
    """Import and register a plug-in loss family or psi shape named by dotted path (see sweeps.plugins)."""
    from sweeps.plugins import is_dotted, load_object

    if loss.family not in LOSS_FAMILY_SPECS:
        problem = loss_family_problem(loss.family)
        if problem:
            raise FieldValueError("family", problem)
        try:
            builder = load_object(loss.family, what="loss family")  # refuses before torch is imported
            from sl_core.families import register_loss_family

            register_loss_family(builder)
        except ValueError as exc:
            raise FieldValueError("family", str(exc)) from None
    if is_dotted(loss.psi):
        from sl_core.psi import available_psi, register_psi

        if loss.psi not in available_psi():
            try:
                fn = load_object(loss.psi, what="psi shape")
                register_psi(loss.psi, fn, default_param=getattr(fn, "default_param", None),
                             takes_param=getattr(fn, "takes_param", True))
            except ValueError as exc:
                raise FieldValueError("psi", str(exc)) from None


def _param_field(spec: ParamSpec) -> tuple[Any, Any]:
    kind = str if spec.kind == "choice" else float
    return (kind | None, Field(None, description=spec.doc))


LossConfig = create_model(
    "LossConfig",
    __base__=_LossBase,
    __module__=__name__,
    family=(str, Field(..., min_length=1, description="a loss family of sl_core.registry.LOSS_FAMILY_SPECS, "
                       "or a plug-in 'package.module:builder'")),
    **{name: _param_field(spec) for name, spec in _LOSS_PARAMS.items()},
)


class TrialConfig(_Section):
    """Everything one trial needs; `seed` seeds data order, init of new heads and dropout."""

    name: str = "trial"
    task: TaskConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig
    seed: int = Field(0, ge=0, le=MAX_SEED)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> TrialConfig:
        """Load and validate a trial config file, with `key=value` overrides applied before
        validation (`train.steps=20`; see `sweeps.config.overrides`); SpecError naming the file (or the
        override) and the field."""
        from sweeps.config.overrides import (apply_overrides, blame_override, notes_when_valid, overridden_lines,
                                             parse_overrides)

        parsed = parse_overrides(overrides)
        doc = load_yaml(path, what="trial config")
        with notes_when_valid():  # a refused config gets one line: its error
            data = apply_overrides(require_mapping(doc, "trial config"), parsed, source=doc.source)
            if "search_space" in data and "search_space" not in cls.model_fields:  # a sweep spec, not one trial
                raise SpecError(doc.source, "search_space", "this is a sweep spec: `slsweep trial` runs one trial "
                                "config (sweeps/specs/trials/, `slsweep list`); run a sweep spec with `slsweep run`",
                                line=doc.line_of(("search_space",)))
            try:
                return cls.model_validate(data)
            except ValidationError as exc:
                raise blame_override(spec_error_from_validation(
                    exc, file=doc.source, model=cls, line_of=overridden_lines(doc.line_of, parsed)
                ), parsed) from None

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str) -> TrialConfig:
        """Validate a plain mapping; SpecError naming `source` and the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise spec_error_from_validation(exc, file=source, model=cls) from None

    def with_overrides(self, overrides: dict[str, Any], *, source: str = "overrides") -> TrialConfig:
        """A re-validated copy with dotted keys replaced (`{"loss.eta": 0.1, "seed": 3}`).

        Keys inside free-form mappings (`task.params.max_count`, `model.lora.r`) may be new;
        anything else must be an existing field. SpecError (file = `source`) names the bad key.
        """
        data = self.model_dump()
        for key, value in overrides.items():
            parts = key.split(".")
            if not all(parts):
                raise SpecError(source, key, "malformed dotted key")
            node: Any = data
            for depth, part in enumerate(parts[:-1]):
                child = node.get(part) if isinstance(node, dict) else None
                if child is None and isinstance(node, dict) and _free_form(parts[: depth + 1]):
                    child = node[part] = {}
                if not isinstance(child, dict):
                    where = ".".join(parts[: depth + 1])
                    known = isinstance(node, dict) and part in node
                    problem = "not a section with sub-keys" if known else "unknown section"
                    raise SpecError(source, key, f"'{where}': {problem}")
                node = child
            node[parts[-1]] = copy.deepcopy(value)
        try:
            return type(self).model_validate(data)
        except ValidationError as exc:
            raise spec_error_from_validation(exc, file=source, model=type(self)) from None

    def flatten(self) -> dict[str, Any]:
        """Dotted keys -> values, None values omitted (MLflow params). Free-form dicts are expanded."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            elif value is not None:
                out[prefix] = value

        data = self.model_dump()
        # Only the loss parameters this family uses: `loss.eta` on a hard-CE trial would be noise
        # in every table grouped by eta.
        data["loss"] = {"family": self.loss.family, **self.loss.loss_kwargs(strict=False)}
        walk("", data)
        return out

    def training_settings(self) -> dict[str, Any]:
        """What decides a run's training trajectory, as dotted keys (`flatten()` without the
        settings of evaluation, checkpointing and naming, `RESUME_MAY_CHANGE`, and without
        `train.effective_batch_size` unless `train.batch_size` is auto): a checkpoint stores them,
        and a run resumed from it must ask the same."""
        drop = RESUME_MAY_CHANGE | ({"train.effective_batch_size"} if self.train.batch_size != "auto" else set())
        out = {k: v for k, v in self.flatten().items() if k not in drop}
        if self.model.lora == {}:  # LoRA with peft's defaults: flatten() has no key for an empty mapping
            out["model.lora"] = {}
        return out

    def to_yaml(self) -> str:
        """The resolved config as YAML (logged with every trial)."""
        from sweeps.config.yamlio import dump_yaml

        return dump_yaml(self.model_dump(mode="json"))


# Settings a run resumed from a checkpoint may change (`TrialConfig.training_settings`,
# `sweeps.trial.checkpoint`): how it is evaluated, checkpointed, named, or fitted into memory, not
# what it trains; and `train.steps`, to continue a run further (the schedule then follows the new count).
RESUME_MAY_CHANGE: frozenset[str] = frozenset({
    "name", "train.steps", "train.eval_every", "train.max_new_tokens", "train.eval_batch",
    "train.checkpoint_every", "train.keep_final_weights", "train.data_workers", "train.compile",
    "model.gradient_checkpointing",
})

# The free-form mappings of a trial config: keys below them are the task's, the loader's, peft's or
# a plug-in loss family's own, so new ones may be set (`with_overrides`) and searched
# (sweeps.config.space), e.g. `task.params.max_count`, `task.loader.image_column`, `model.lora.r`.
FREE_FORM_SECTIONS: frozenset[tuple[str, str]] = frozenset(
    {("task", "params"), ("task", "loader"), ("model", "lora"), ("loss", "options")})


def is_free_form(parts: Sequence[str]) -> bool:
    """Whether the dotted path `parts` (`["task", "loader", "split"]`) is in a free-form section."""
    return tuple(parts[:2]) in FREE_FORM_SECTIONS


def _free_form(parts: list[str]) -> bool:
    """Whether the section at `parts` is a free-form mapping (new keys allowed)."""
    return is_free_form(parts)
