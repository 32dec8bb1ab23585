"""The resolved configuration of one trial: task, model, training, loss and seed.

A `TrialConfig` is what a sweep hands to one trial (base sections of the spec plus the sampled
search-space values plus the seed) and what MLflow records (`flatten()`, dotted keys).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweeps.errors import FieldValueError, SpecError, spec_error_from_validation
from sweeps.yamlio import load_yaml, require_mapping

__all__ = [
    "LOSS_FAMILIES",
    "LOSS_FAMILY_PARAMS",
    "PSI_SHAPES",
    "PSI_WITHOUT_PARAM",
    "TASK_METRICS",
    "LossConfig",
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "TrialConfig",
    "known_psi_shapes",
    "psi_takes_param",
]

TaskName = Literal["counting", "grounding", "chart"]
LossFamily = Literal["hard", "label_smoothing", "gaussian", "ntl_was", "ntl_mse", "ntil", "soft_label"]
LOSS_FAMILIES: tuple[str, ...] = LossFamily.__args__  # type: ignore[attr-defined]

# Metrics each task reports at every evaluation (besides `train_loss`), and whether higher is better.
TASK_METRICS: dict[str, dict[str, Literal["max", "min"]]] = {
    "counting": {"exact_match": "max", "mae": "min", "off_by_one": "max", "unparseable": "min"},
    "grounding": {"acc_iou50": "max", "mean_iou": "max", "unparseable": "min"},
    "chart": {"relaxed_accuracy": "max", "exact_match": "max", "unparseable": "min"},
}

# The built-in psi shapes of sl_core.psi (used until sl_core is imported; a test keeps them equal).
PSI_SHAPES: tuple[str, ...] = ("triangular", "binomial", "poisson", "uniform", "gaussian", "laplace")
PSI_WITHOUT_PARAM: frozenset[str] = frozenset({"uniform"})

# The LossConfig fields each family's loss builder takes (`build_loss(family, ids, **kwargs)`).
LOSS_FAMILY_PARAMS: dict[str, tuple[str, ...]] = {
    "hard": (),
    "label_smoothing": ("smoothing",),
    "gaussian": ("sigma",),
    "ntl_was": ("ntl_weight",),
    "ntl_mse": ("ntl_weight",),
    "ntil": ("ntil_weight", "digit_exp"),
    "soft_label": ("eta", "lam", "psi", "psi_param", "place_exponent"),
}


def _psi_registry() -> Any:
    """sl_core.psi if something already imported it, else None.

    Importing sl_core pulls in torch (seconds); validating a spec should not. Without a prior
    import the registry holds exactly the built-ins, which `PSI_SHAPES`/`PSI_WITHOUT_PARAM` mirror
    (a test keeps them equal). Shapes a user registers are seen, since registering imports sl_core.
    """
    return sys.modules.get("sl_core.psi")


def known_psi_shapes() -> tuple[str, ...]:
    """Names of the registered psi shapes (sl_core's registry when loaded, else `PSI_SHAPES`)."""
    registry = _psi_registry()
    available = getattr(registry, "available_psi", None)
    return tuple(available()) if callable(available) else PSI_SHAPES


def psi_takes_param(name: str) -> bool:
    """Whether psi shape `name` accepts `psi_param` (uniform does not)."""
    registry = _psi_registry()
    public = getattr(registry, "psi_takes_param", None)
    if callable(public) and name in known_psi_shapes():
        return bool(public(name))
    shape = getattr(registry, "_REGISTRY", {}).get(name) if registry is not None else None
    if shape is not None and hasattr(shape, "takes_param"):
        return bool(shape.takes_param)
    return name not in PSI_WITHOUT_PARAM


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)


class TaskConfig(_Section):
    """Which task, its generator parameters, and where real-format data lives (None = synthetic)."""

    name: TaskName
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
    image_size: int = Field(48, gt=0)


class ModelConfig(_Section):
    """The model: hub id, local path, or a built-in tiny model (`tiny`, `tiny-llava`, ...)."""

    path: str = Field("tiny", min_length=1)
    freeze_vision: bool = False
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = None
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"


class TrainConfig(_Section):
    """Optimiser and schedule. Steps count optimizer updates (each `grad_accum` micro-batches)."""

    steps: int = Field(1000, gt=0)
    batch_size: int = Field(32, gt=0)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_every: int = Field(100, gt=0)
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    max_new_tokens: int = Field(8, gt=0)
    checkpoint_every: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrainConfig:
        if self.warmup_steps > self.steps:
            raise FieldValueError(
                "warmup_steps", f"must be <= train.steps ({self.steps}), got {self.warmup_steps}"
            )
        return self


class LossConfig(_Section):
    """The loss family and every family's parameters; `loss_kwargs()` picks the family's own."""

    family: LossFamily
    eta: float = Field(0.0, ge=0.0, le=1.0)
    lam: float = Field(1.0, ge=0.0)
    psi: str = "triangular"
    psi_param: float | None = Field(None, gt=0)
    place_exponent: float | None = None
    smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    sigma: float = Field(1.0, gt=0)
    ntl_weight: float = Field(0.3, ge=0)
    ntil_weight: float = Field(0.3, ge=0)
    digit_exp: float = 1.0

    @field_validator("psi")
    @classmethod
    def _known_psi(cls, value: str) -> str:
        shapes = known_psi_shapes()
        if value not in shapes:
            raise ValueError(f"unknown psi shape {value!r}; registered shapes: {', '.join(shapes)}")
        return value

    @model_validator(mode="after")
    def _param_fits_shape(self) -> LossConfig:
        if self.psi_param is not None and not psi_takes_param(self.psi):
            raise FieldValueError("psi_param", f"psi shape {self.psi!r} takes no parameter; leave psi_param unset")
        return self

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `sl_core.build_loss(self.family, digit_ids, **kwargs)`."""
        return {name: getattr(self, name) for name in LOSS_FAMILY_PARAMS[self.family]}


class TrialConfig(_Section):
    """Everything one trial needs; `seed` seeds data order, init of new heads and dropout."""

    name: str = "trial"
    task: TaskConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrialConfig:
        """Load and validate a trial config file; SpecError naming the file and field."""
        doc = load_yaml(path, what="trial config")
        data = require_mapping(doc, "trial config")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise spec_error_from_validation(
                exc, file=doc.source, model=cls, line_of=doc.line_of
            ) from None

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
                    problem = "unknown section" if child is None else "not a section with sub-keys"
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
        data["loss"] = {"family": self.loss.family, **self.loss.loss_kwargs()}
        walk("", data)
        return out

    def to_yaml(self) -> str:
        """The resolved config as YAML (logged with every trial)."""
        from sweeps.yamlio import dump_yaml

        return dump_yaml(self.model_dump(mode="json"))


def _free_form(parts: list[str]) -> bool:
    """Whether the section at `parts` is a free-form mapping (new keys allowed)."""
    return parts[:2] in (["task", "params"], ["task", "loader"], ["model", "lora"])
