"""Search spaces: a YAML format compiled to an Optuna define-by-run function or a full grid.

Format (one file, or a mapping inline in a spec)::

    name: paper                        # optional, default: the file name without .yaml
    extends: paper                     # optional: start from another space (see below)
    description: ...                   # optional
    params:
      eta:   {type: float, low: 0.0, high: 0.3}                  # linear float
      lam:   {type: float, low: 0.5, high: 5.0, log: true}       # log-uniform
      warm:  {type: int, low: 0, high: 100, step: 10}            # int (log: true allowed, step 1)
      psi:   {type: categorical, choices: [triangular, gaussian]}
      triangular_width: {type: float, low: 1.0, high: 4.0, when: {psi: triangular},
                         target: loss.psi_param}                 # exists only when psi=triangular
      family: {type: fixed, value: soft_label, target: loss.family}
      psi_param: {type: psi_range}     # one float per shape of `psi`, over the range it declares
    grid:                              # optional: grid values for float/int params (algorithm grid)
      eta: [0.0, 0.05, 0.1]
    points:                            # optional: algorithm grid runs exactly these points instead
      - {eta: 0.1, psi: gaussian}      #   of the product (used by `slsweep confirm`)

Per parameter:
- `when: {parent: value}` or `{parent: [v1, v2]}` (several parents = all must hold): the
  parameter exists only when each parent is a categorical parameter taking one of those values.
  Optuna forbids one name with two distributions, so each psi shape gets its own parameter name
  and all of them may share a target.
- `target`: the dotted `TrialConfig` path the value goes to. Default rule: a name containing a
  dot is its own target (`loss.family`, `train.lr`, `task.params.max_count`; keys below the
  free-form sections `trial_config.FREE_FORM_SECTIONS`, e.g. `task.loader.*`, may be new); otherwise the name
  must be a field of exactly one of the sections loss, train, model, task (`eta` -> `loss.eta`,
  `lr` -> `train.lr`). `seed` and `name` cannot be targets (seeds come from `search.seeds`).
- `values: [...]` (float/int): grid values, same as an entry under top-level `grid:`. In grid
  mode a float parameter needs grid values; an int parameter without them uses every integer
  from low to high (by step).

`type: psi_range` (options `psi`: the categorical choosing the shape, default `psi`; `units`:
digits (default, target loss.psi_param) or value (target loss.scale); `names`: `{shape}_NAME` by
default, a template with `{shape}` or a mapping shape -> name; `target`, `when`): one float
parameter per chosen shape that takes one, over `sl_core.psi.psi_search_range(shape, units)`,
active only when that shape is chosen (a shape without a parameter, uniform, gets none).

`extends: NAME`: a built-in space (`search_spaces/NAME.yaml`) or a file relative to this one
(inline in a spec: to the spec file). Its parameters come first, in its order; one of the same name
here replaces it, a new one is added, `NAME: null` removes an inherited one; `grid` entries merge
alike; `points` and `name` are this file's, `description` too unless left out. A problem in the
extended file names that file; a loop of `extends` is an error. The recorded space (`content`,
`to_yaml`) is the resolved one: `extends` merged, `psi_range` expanded.

Steps of `load_space`: `_read_space` -> `_resolve_extends` -> `_expand_psi_ranges` ->
`_validate_params` -> `_build_space`.

TPE/random sample `define_by_run` (only active parameters, parents first); grid mode takes the
product of categorical choices and grid values, expanding conditional parameters only under
their condition, or, when `points:` is given, exactly those points (each maps parameter names to
allowed values; a parameter a point leaves out keeps the spec's base value).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sweeps.config.trial_config import LossConfig, ModelConfig, TaskConfig, TrainConfig, TrialConfig, is_free_form
from sweeps.errors import FieldValueError, SpecError, did_you_mean, dotted, spec_error_from_validation
from sweeps.config.yamlio import YamlDoc, dump_yaml, load_yaml

__all__ = ["MAX_GRID_POINTS", "Param", "SearchSpace", "load_space"]

MAX_GRID_POINTS = 100_000
_SCALAR = (str, int, float, bool, type(None))  # what Optuna accepts as a categorical choice


class SuggestTrial(Protocol):
    """The part of `optuna.Trial` a define-by-run function uses (Ray passes a look-alike)."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


# --------------------------------------------------------------------------- file schema


# What MLflow accepts as a param key (mlflow.utils.validation: alphanumerics, '_', '-', '.', ' ',
# ':', '/'); each parameter is logged as `space.NAME`.
_MLFLOW_KEY = re.compile(r"[\w.\- :/]+")


class _ParamBase(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    when: dict[str, Any] | None = None
    target: str | None = Field(None, min_length=1)


class _RangeChecks:
    """Shared checks of float and int ranges (low < high, log > 0, values inside the range)."""

    low: float
    high: float
    log: bool
    values: list[Any] | None

    def _check_range(self) -> None:
        if not self.low < self.high:
            raise FieldValueError("low", f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise FieldValueError("low", f"log: true needs low > 0, got {self.low}")
        if self.values is not None:
            if not self.values:
                raise FieldValueError("values", "empty grid: give at least one value")
            for i, v in enumerate(self.values):
                if not self.low <= v <= self.high:
                    raise FieldValueError(f"values.{i}", f"{v} is outside [{self.low}, {self.high}]")
            if len(set(self.values)) != len(self.values):
                raise FieldValueError("values", "duplicate grid values")


class FloatParam(_ParamBase, _RangeChecks):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)
    values: list[float] | None = None

    @model_validator(mode="after")
    def _valid(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise FieldValueError("low", "low and high must be finite")
        self._check_range()
        if self.log and self.step is not None:
            raise FieldValueError("step", "step cannot be combined with log: true")
        return self


class IntParam(_ParamBase, _RangeChecks):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)
    values: list[int] | None = None

    @model_validator(mode="after")
    def _valid(self) -> IntParam:
        self._check_range()
        if self.log and self.step != 1:
            raise FieldValueError("step", "log: true needs step 1")
        return self


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[Any]

    @model_validator(mode="after")
    def _valid(self) -> CategoricalParam:
        if not self.choices:
            raise FieldValueError("choices", "empty list: give at least one choice")
        for i, c in enumerate(self.choices):
            if not isinstance(c, _SCALAR):
                raise FieldValueError(f"choices.{i}", f"choices must be scalars, got {type(c).__name__}")
        if len({json.dumps(c) for c in self.choices}) != len(self.choices):
            raise FieldValueError("choices", "duplicate choices")
        return self


class FixedParam(_ParamBase):
    type: Literal["fixed"]
    value: Any


Param = FloatParam | IntParam | CategoricalParam | FixedParam
_PARAM_TYPES: dict[str, type[BaseModel]] = {
    "float": FloatParam, "int": IntParam, "categorical": CategoricalParam, "fixed": FixedParam,
}


class _SpaceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(None, min_length=1)
    description: str = ""
    params: dict[str, Any]
    grid: dict[str, list[Any]] | None = None
    points: list[dict[str, Any]] | None = None


# --------------------------------------------------------------------------- target paths

_SECTIONS: dict[str, type[BaseModel]] = {
    "loss": LossConfig, "train": TrainConfig, "model": ModelConfig, "task": TaskConfig,
}


def _target_problem(target: str) -> str | None:
    """Why `target` is not a settable TrialConfig leaf path, or None if it is."""
    parts = target.split(".")
    if target in ("seed", "name"):
        return f"'{target}' cannot be searched ({'use search.seeds' if target == 'seed' else 'fixed'})"
    if len(parts) < 2 or parts[0] not in _SECTIONS:
        return f"'{target}' is not a TrialConfig path (expected loss.*, train.*, model.* or task.*)"
    section = _SECTIONS[parts[0]]
    if parts[1] not in section.model_fields:
        return f"'{target}': {parts[0]} has no field '{parts[1]}'"
    if is_free_form(parts):
        return None if len(parts) >= 3 and all(parts[2:]) else f"'{target}' needs a key below it"
    if len(parts) > 2:
        return f"'{target}': {parts[0]}.{parts[1]} has no sub-keys"
    return None


def _default_target(name: str) -> str | None:
    """The default target of a parameter named `name` (see module docstring), or None."""
    if "." in name:
        return name
    hits = [f"{sec}.{name}" for sec, model in _SECTIONS.items() if name in model.model_fields]
    hits = [h for h in hits if not is_free_form(h.split("."))]
    return hits[0] if len(hits) == 1 else None


def _default_base() -> TrialConfig:
    return TrialConfig(task=TaskConfig(name="counting"), loss=LossConfig(family="soft_label"))


# --------------------------------------------------------------------------- the space


class SearchSpace:
    """A validated search space.

    Attributes:
        name: the space's name.
        description: free text.
        source: file name (for MLflow tags), or `<spec file>#search_space` when inline.
        file: where errors point (the path as given).
        content: the resolved mapping (`extends` merged, `psi_range` expanded; the
            `search_space.yaml` artifact).
        params: parameters in sampling order (parents before children).
        targets: parameter name -> dotted TrialConfig path.
        hash: short sha256 of the normalised parameters (formatting and comments do not count).
    """

    def __init__(self, *, name: str, description: str, source: str, file: str,
                 content: dict[str, Any], params: dict[str, Param], order: list[str],
                 targets: dict[str, str], conditions: dict[str, dict[str, list[Any]]],
                 grid_values: dict[str, list[Any]], lines: YamlDoc | None,
                 prefix: tuple[str | int, ...], points: list[dict[str, Any]] | None = None) -> None:
        self.name = name
        self.description = description
        self.source = source
        self.file = file
        self.content = content
        self._params = params
        self._order = order
        self.targets = targets
        self._conditions = conditions
        self._grid_values = grid_values
        self._doc = lines
        self._prefix = prefix
        self.points = points
        canonical: dict[str, Any] = {
            n: {**params[n].model_dump(exclude_none=True, exclude={"when", "target", "values"}),
                "target": targets[n], "when": conditions[n], "grid": grid_values.get(n)}
            for n in order
        }
        if points is not None:
            canonical["__points__"] = points
        blob = json.dumps(canonical, sort_keys=True, default=str).encode()
        self.hash = hashlib.sha256(blob).hexdigest()[:12]

    def __repr__(self) -> str:
        return f"SearchSpace(name={self.name!r}, params={self._order}, hash={self.hash})"

    @property
    def params(self) -> dict[str, Param]:
        """Parameters by name, in sampling order."""
        return {n: self._params[n] for n in self._order}

    def conditions(self, name: str) -> dict[str, list[Any]]:
        """The direct `when` conditions of parameter `name` (parent -> allowed values)."""
        return {k: list(v) for k, v in self._conditions[name].items()}

    def _error(self, loc: tuple[str | int, ...], message: str) -> SpecError:
        full = self._prefix + loc
        line = self._doc.line_of(full) if self._doc is not None else None
        return SpecError(self.file, dotted(full), message, line=line)

    def _active(self, name: str, assignment: Mapping[str, Any]) -> bool:
        return all(
            parent in assignment and _member(assignment[parent], allowed)
            for parent, allowed in self._conditions[name].items()
        )

    def define_by_run(self, trial: SuggestTrial) -> dict[str, Any]:
        """Sample the active parameters from `trial` (an `optuna.Trial` or Ray's proxy of one).

        Returns:
            {name: value} of every active parameter (sampled ones and fixed ones).
        """
        out: dict[str, Any] = {}
        for name in self._order:
            if not self._active(name, out):
                continue
            p = self._params[name]
            if isinstance(p, FixedParam):
                out[name] = p.value
            elif isinstance(p, FloatParam):
                out[name] = trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)
            elif isinstance(p, IntParam):
                out[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            else:
                out[name] = trial.suggest_categorical(name, p.choices)
        return out

    def _values_for_grid(self, name: str) -> list[Any]:
        p = self._params[name]
        if isinstance(p, FixedParam):
            return [p.value]
        if isinstance(p, CategoricalParam):
            return list(p.choices)
        if name in self._grid_values:
            return list(self._grid_values[name])
        if isinstance(p, IntParam):
            count = (p.high - p.low) // p.step + 1
            if count > 1000:
                raise self._error(("params", name), f"int range has {count} values; give grid values")
            return list(range(p.low, p.high + 1, p.step))
        raise self._error(
            ("params", name),
            "float parameter has no grid values (algorithm grid): add values: [...] to it or "
            f"an entry grid: {{{name}: [...]}}",
        )

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point: {name: value} of the active parameters, in a fixed order (the
        space's explicit `points` when it has them)."""
        if self.points is not None:
            return [dict(p) for p in self.points]
        values = {n: self._values_for_grid(n) for n in self._order}
        points: list[dict[str, Any]] = []

        def expand(i: int, assignment: dict[str, Any]) -> None:
            if len(points) > MAX_GRID_POINTS:
                raise self._error(("params",), f"grid has more than {MAX_GRID_POINTS} points")
            if i == len(self._order):
                points.append(dict(assignment))
                return
            name = self._order[i]
            if not self._active(name, assignment):
                expand(i + 1, assignment)
                return
            for v in values[name]:
                assignment[name] = v
                expand(i + 1, assignment)
            del assignment[name]

        expand(0, {})
        return points

    def to_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Map sampled {name: value} to {target path: value}; keys starting with `__` are skipped."""
        out: dict[str, Any] = {}
        for name, value in params.items():
            if name.startswith("__"):
                continue  # Ray Tune internals such as __trial_index__
            if name not in self.targets:
                raise SpecError(self.source, name, "not a parameter of this search space")
            out[self.targets[name]] = value
        return out

    def to_yaml(self) -> str:
        """The space as YAML (the content as written)."""
        return dump_yaml(self.content)


def _member(value: Any, allowed: list[Any]) -> bool:
    """`value in allowed`, except that booleans only match booleans (in Python True == 1)."""
    return any(
        (value == a) and (isinstance(value, bool) == isinstance(a, bool))
        and (isinstance(value, str) == isinstance(a, str))
        for a in allowed
    )


# --------------------------------------------------------------------------- loading
#
# load_space = _read_space (YAML or mapping) -> _resolve_extends (merge the spaces it extends)
#            -> _expand_psi_ranges -> _validate_params (types, grid values, targets, conditions)
#            -> _build_space (the SearchSpace, checked against the base trial config).


@dataclass(frozen=True)
class _Source:
    """Where a search-space mapping was written: errors name this file and the field in it."""

    file: str                          # the path as given (errors), or the spec file for inline spaces
    doc: YamlDoc | None                # for line numbers
    prefix: tuple[str | int, ...]      # location of the mapping inside `doc`
    folder: Path | None                # where `extends: PATH` is relative to (None: current folder)
    key: str                           # identity for cycle detection (resolved path, or file#prefix)

    def fail(self, loc: tuple[str | int, ...], message: str) -> SpecError:
        full = self.prefix + loc
        return SpecError(self.file, dotted(full), message,
                         line=self.doc.line_of(full) if self.doc is not None else None)


@dataclass
class _RawSpace:
    """Step 1's output: the mapping as written and where it came from."""

    data: dict[str, Any]
    src: _Source
    tag: str                           # MLflow's space source (file name, or `spec.yaml#search_space`)
    default_name: str


@dataclass
class _Resolved:
    """Step 2's output: one mapping with every `extends` merged in, and per parameter (and per
    `grid` entry, `points`) the file it was written in, for errors."""

    data: dict[str, Any]
    origins: dict[tuple[str, str], _Source]
    src: _Source

    def fail(self, loc: tuple[str | int, ...], message: str) -> SpecError:
        where = self.origins.get((str(loc[0]), str(loc[1]))) if len(loc) >= 2 else None
        return (where or self.origins.get((str(loc[0]), "")) or self.src).fail(loc, message)


@dataclass
class _Checked:
    """Step 3's output: validated parameters and what follows from them."""

    params: dict[str, Param]
    grid_values: dict[str, list[Any]]
    targets: dict[str, str]
    conditions: dict[str, dict[str, list[Any]]]
    order: list[str]
    constraints: dict[str, dict[str, list[Any]]]
    points: list[dict[str, Any]] | None


def load_space(path_or_mapping: str | Path | Mapping[str, Any], *, source: str | None = None,
               base: TrialConfig | None = None, doc: YamlDoc | None = None,
               prefix: tuple[str | int, ...] = ()) -> SearchSpace:
    """Load and validate a search space.

    Args:
        path_or_mapping: a YAML file, or the already-parsed mapping (inline in a spec).
        source: file name for errors and MLflow (default: the path; `<inline>` for a mapping); an
            inline space's `extends: PATH` is relative to this file's folder.
        base: the trial config the targets are checked against (default: counting + soft_label).
        doc: the YAML document the mapping came from (for line numbers of inline spaces).
        prefix: location of the mapping inside `doc` (e.g. `("search_space",)`).

    Raises:
        SpecError: naming the file (the extended one, for a problem in its parameters) and the
            dotted field of the first problem.
    """
    raw = _read_space(path_or_mapping, source=source, doc=doc, prefix=prefix)
    resolved = _resolve_extends(raw)
    data = dict(resolved.data, params=_expand_psi_ranges(resolved))
    resolved = _Resolved(data, resolved.origins, resolved.src)
    checked = _validate_params(resolved)
    return _build_space(raw, resolved, checked, base or _default_base())


def _read_space(path_or_mapping: str | Path | Mapping[str, Any], *, source: str | None = None,
                doc: YamlDoc | None = None, prefix: tuple[str | int, ...] = ()) -> _RawSpace:
    """Step 1: the mapping (read from YAML, or given inline) and its `_Source`.

    Raises:
        SpecError: unreadable file, or not a mapping.
    """
    if isinstance(path_or_mapping, Mapping):
        file = source or "<inline>"
        folder = Path(file).expanduser().resolve().parent if source else None
        src = _Source(file, doc, prefix, folder, f"{file}#{dotted(prefix)}")
        tag = f"{Path(file).name}#{dotted(prefix)}" if prefix else file
        return _RawSpace(dict(path_or_mapping), src, tag, "inline")
    path = Path(path_or_mapping)
    doc = load_yaml(path, what="search space file")
    file = source or str(path)
    data = doc.data
    if data is None or not isinstance(data, dict):
        got = "empty" if data is None else f"a {type(data).__name__}"
        raise SpecError(file, "<root>", f"search space must be a mapping with params:, got {got}")
    resolved = path.expanduser().resolve()
    return _RawSpace(data, _Source(file, doc, (), resolved.parent, str(resolved)), path.name, path.stem)


def _packaged_space_dir() -> Path:
    return Path(str(resources.files("search_spaces")))


def _find_extended(ref: str, folder: Path | None) -> Path | None:
    """`extends: REF`: a file relative to `folder` first, then a built-in space (`.yaml` optional)."""
    names = [ref] if ref.endswith((".yaml", ".yml")) else [ref, f"{ref}.yaml"]
    for where in (folder or Path.cwd(), _packaged_space_dir()):
        for n in names:
            candidate = (where / n).expanduser()
            if candidate.is_file():
                return candidate.resolve()
    return None


def _resolve_extends(raw: _RawSpace, chain: tuple[str, ...] = ()) -> _Resolved:
    """Step 2: merge the space `raw` extends (recursively) under its own mapping.

    The extended space's parameters come first, in its order; a parameter of the same name
    replaces it in place, a new one is added after them, and `NAME: null` removes an inherited
    one (with its grid values). `grid` entries merge the same way; `points`, `name` and
    `description` are the extending file's own (description: the extended one's when left out).

    Raises:
        SpecError: `extends` names no file or built-in space, or the chain of `extends` loops.
    """
    data, src = raw.data, raw.src
    own = {("params", str(n)): src for n in (data.get("params") or {})} if isinstance(data.get("params"), dict) else {}
    own.update({("grid", str(n)): src for n in (data.get("grid") or {})} if isinstance(data.get("grid"), dict) else {})
    chain = (*chain, src.key)
    if "extends" not in data:
        return _Resolved(dict(data), own, src)
    ref = data["extends"]
    if not isinstance(ref, str) or not ref.strip():
        raise src.fail(("extends",), "expected the name of a built-in search space or a path relative to this file")
    path = _find_extended(ref, src.folder)
    if path is None:
        builtin = sorted(p.stem for p in _packaged_space_dir().glob("*.yaml"))
        raise src.fail(("extends",), f"no search space '{ref}'{did_you_mean(ref, builtin)} (looked in "
                       f"{src.folder or Path.cwd()} and the built-in spaces: {', '.join(builtin)})")
    if str(path) in chain:
        names = [Path(k.split("#", 1)[0]).name for k in chain[chain.index(str(path)):]] + [path.name]
        raise src.fail(("extends",), f"extends forms a cycle: {' -> '.join(names)}")
    parent = _resolve_extends(_read_space(path), chain)
    return _merge_extended(parent, data, src, own)


def _merge_extended(parent: _Resolved, data: dict[str, Any], src: _Source,
                    own: dict[tuple[str, str], _Source]) -> _Resolved:
    merged = {k: v for k, v in data.items() if k != "extends"}
    origins = dict(parent.origins)
    params = dict(parent.data.get("params") or {})
    grid = dict(parent.data.get("grid") or {})
    child_params = data.get("params") if "params" in data else {}
    if not isinstance(child_params, dict):
        raise src.fail(("params",), "expected a mapping of parameter names to parameters")
    for name, value in child_params.items():
        if value is None:
            if name not in params:
                raise src.fail(("params", name), "null removes an inherited parameter, but the extended space "
                               "has none of this name")
            del params[name]
            grid.pop(name, None)
            origins.pop(("params", str(name)), None)
        else:
            params[name] = value
    child_grid = data.get("grid") or {}
    if isinstance(child_grid, dict):
        grid.update(child_grid)
    origins.update({k: v for k, v in own.items() if k[0] != "params" or child_params.get(k[1]) is not None})
    merged["params"] = params
    if grid:
        merged["grid"] = grid
    if "description" not in data and parent.data.get("description"):
        merged["description"] = parent.data["description"]
    if "points" not in data:
        merged.pop("points", None)
    return _Resolved(merged, origins, src)


_PSI_UNITS = {"digits": "loss.psi_param", "value": "loss.scale"}


def _expand_psi_ranges(resolved: _Resolved) -> Any:
    """Step 2b: each `{type: psi_range}` parameter becomes one float parameter per shape of its
    `psi` parameter that takes one, with the range that shape declares (`sl_core.psi.
    psi_search_range`), active only when that shape is chosen.

    Options: `psi` (the categorical parameter choosing the shape, default `psi`), `units` (`digits`:
    psi_param of soft_label, default; `value`: scale of value_aware), `names` (the generated
    names: a template with `{shape}`, default `{shape}_<this parameter's name>`, or a mapping
    shape -> name), `target` (default loss.psi_param for digits, loss.scale for value), `when`.

    Raises:
        SpecError: a bad option, or a shape that takes a parameter but declares no range.
    """
    params = resolved.data.get("params")
    if not isinstance(params, dict) or not any(isinstance(p, dict) and p.get("type") == "psi_range"
                                               for p in params.values()):
        return params
    from sl_core.psi import psi_search_range, psi_takes_param  # torch-free

    out: dict[str, Any] = {}
    for name, raw in params.items():
        if not (isinstance(raw, dict) and raw.get("type") == "psi_range"):
            out[name] = raw
            continue
        loc = ("params", name)
        unknown = set(raw) - {"type", "psi", "units", "names", "target", "when"}
        if unknown:
            raise resolved.fail((*loc, sorted(unknown)[0]), "unknown option of psi_range (psi, units, names, "
                                "target, when)")
        units = raw.get("units", "digits")
        if units not in _PSI_UNITS:
            raise resolved.fail((*loc, "units"), f"expected digits or value, got {units!r}")
        of = raw.get("psi", "psi")
        shape_param = params.get(of)
        if not (isinstance(shape_param, dict) and shape_param.get("type") == "categorical"
                and isinstance(shape_param.get("choices"), list)):
            raise resolved.fail((*loc, "psi"), f"'{of}' must be a categorical parameter of this space "
                                "choosing the psi shape")
        names = raw.get("names", f"{{shape}}_{name}")
        when = raw.get("when") or {}
        if not isinstance(when, dict):
            raise resolved.fail((*loc, "when"), "expected a mapping parent -> value(s)")
        for shape in shape_param["choices"]:
            try:
                takes, rng = psi_takes_param(str(shape)), psi_search_range(str(shape), units)
            except ValueError as exc:  # an unknown shape
                raise resolved.fail(("params", of, "choices"), str(exc)) from None
            if not takes:
                continue  # uniform: no parameter
            if rng is None:
                raise resolved.fail(loc, f"psi shape '{shape}' declares no search range in {units} units "
                                    "(sl_core.psi.register_psi(search_range=...)); list its parameter explicitly")
            if isinstance(names, dict):
                if shape not in names:
                    raise resolved.fail((*loc, "names"), f"no name for shape '{shape}'")
                gen = names[shape]
            elif isinstance(names, str) and "{shape}" in names:
                gen = names.replace("{shape}", str(shape))
            else:
                raise resolved.fail((*loc, "names"), "expected a template with {shape} or a mapping shape -> name")
            if gen in params or gen in out:
                raise resolved.fail((*loc, "names"), f"'{gen}' is already a parameter of this space")
            out[gen] = {"type": "float", **rng, "when": {**when, of: shape},
                        "target": raw.get("target", _PSI_UNITS[units])}
            resolved.origins.setdefault(("params", gen), resolved.origins.get(loc) or resolved.src)
    return out


def _validate_params(resolved: _Resolved) -> _Checked:
    """Step 3: the file's schema, each parameter's type and range, grid values, targets,
    conditions (parents are categorical, values among their choices), sampling order, explicit
    points.

    Raises:
        SpecError: the first problem, naming the file it is written in and the field.
    """
    data, fail = resolved.data, resolved.fail
    src = resolved.src

    def line_of(loc: tuple[str | int, ...]) -> int | None:
        return src.doc.line_of(loc) if src.doc is not None else None

    try:
        spec = _SpaceFile.model_validate(data)
    except ValidationError as exc:
        raise spec_error_from_validation(exc, file=src.file, prefix=src.prefix, model=_SpaceFile,
                                         line_of=line_of) from None
    if not spec.params:
        raise fail(("params",), "no parameters: give at least one")

    params: dict[str, Param] = {}
    for name, raw in spec.params.items():
        if not isinstance(name, str) or not name or name.startswith("__"):
            raise fail(("params", str(name)), "parameter names must be non-empty and not start with '__'")
        if not _MLFLOW_KEY.fullmatch(name) or len(name) > 200:
            raise fail(("params", name), "parameter names may only use letters, digits, '_', '-', '.', "
                       "' ', ':' and '/' (at most 200): they become MLflow param keys (space.NAME)")
        if not isinstance(raw, dict):
            raise fail(("params", name), "expected a mapping such as {type: float, low: 0.0, high: 1.0}")
        kind = raw.get("type")
        if kind not in _PARAM_TYPES:
            msg = "required field is missing" if kind is None else f"unknown type {kind!r}"
            raise fail(("params", name, "type"), f"{msg}; expected one of {', '.join(_PARAM_TYPES)}, psi_range")
        model = _PARAM_TYPES[kind]
        try:
            params[name] = model.model_validate(raw)  # type: ignore[assignment]
        except ValidationError as exc:
            where = resolved.origins.get(("params", name)) or src
            raise spec_error_from_validation(
                exc, file=where.file, prefix=where.prefix + ("params", name), model=model,
                line_of=(lambda loc, d=where.doc: d.line_of(loc) if d is not None else None)) from None

    grid_values = _grid_values(params, spec.grid, fail)
    targets = _targets(params, fail)
    conditions = _conditions(params, fail)
    order = _topological_order(list(params), conditions, fail)
    constraints = _accumulated_constraints(order, conditions, fail)
    _check_target_conflicts(order, targets, constraints, fail)
    points = _checked_points(spec.points, params, fail) if spec.points is not None else None
    return _Checked(params, grid_values, targets, conditions, order, constraints, points)


def _grid_values(params: dict[str, Param], grid: dict[str, list[Any]] | None, fail: Any) -> dict[str, list[Any]]:
    """Grid values: per-parameter `values:` or top-level `grid:` (not both)."""
    grid_values: dict[str, list[Any]] = {
        n: list(p.values) for n, p in params.items() if isinstance(p, FloatParam | IntParam) and p.values
    }
    for name, values in (grid or {}).items():
        p = params.get(name)
        if p is None:
            raise fail(("grid", name), "not a parameter of this space")
        if not isinstance(p, FloatParam | IntParam):
            raise fail(("grid", name), f"grid values are for float/int parameters, '{name}' is {p.type}")
        if name in grid_values:
            raise fail(("grid", name), f"grid values given twice (also params.{name}.values)")
        merged = {**p.model_dump(exclude={"when", "target"}), "values": values}
        try:
            checked = type(p).model_validate(merged)
        except ValidationError as exc:
            err = spec_error_from_validation(exc, file="", model=type(p), line_of=None)
            raise fail(("grid", name) + _tail_index(err.field), err.message) from None
        grid_values[name] = list(checked.values or [])
    return grid_values


def _targets(params: dict[str, Param], fail: Any) -> dict[str, str]:
    """Parameter name -> the dotted TrialConfig path it sets."""
    targets: dict[str, str] = {}
    for name, p in params.items():
        target = p.target or _default_target(name)
        if target is None:
            raise fail(("params", name), "no default target for this name: give target: <section.field>")
        problem = _target_problem(target)
        if problem:
            raise fail(("params", name, "target") if p.target else ("params", name), problem)
        targets[name] = target
    return targets


def _conditions(params: dict[str, Param], fail: Any) -> dict[str, dict[str, list[Any]]]:
    """Each parameter's `when`: parents are categorical, values are among their choices."""
    conditions: dict[str, dict[str, list[Any]]] = {}
    for name, p in params.items():
        conds: dict[str, list[Any]] = {}
        for parent, allowed in (p.when or {}).items():
            loc = ("params", name, "when", parent)
            if parent == name:
                raise fail(loc, "a parameter cannot depend on itself")
            q = params.get(parent)
            if q is None:
                raise fail(loc, f"unknown parameter '{parent}'")
            if not isinstance(q, CategoricalParam):
                raise fail(loc, f"'{parent}' must be a categorical parameter, it is {q.type}")
            allowed = list(allowed) if isinstance(allowed, list) else [allowed]
            if not allowed:
                raise fail(loc, "empty list of values")
            for v in allowed:
                if not _member(v, q.choices):
                    raise fail(loc, f"{v!r} is not a choice of '{parent}' ({q.choices})")
            conds[parent] = allowed
        conditions[name] = conds
    return conditions


def _build_space(raw: _RawSpace, resolved: _Resolved, checked: _Checked, base: TrialConfig) -> SearchSpace:
    """Step 4: the SearchSpace (its define-by-run function and grid), after probing each
    parameter's extreme values on `base`.

    Raises:
        SpecError: a value the trial config rejects (eta > 1, unknown psi, lr <= 0).
    """
    data, src = resolved.data, raw.src
    space = SearchSpace(
        name=data.get("name") or raw.default_name, description=data.get("description") or "", source=raw.tag,
        file=src.file, content=data, params=checked.params, order=checked.order, targets=checked.targets,
        conditions=checked.conditions, grid_values=checked.grid_values, lines=src.doc, prefix=src.prefix,
        points=checked.points,
    )
    _check_against_base(space, base, checked.constraints, resolved.fail)
    return space


def _checked_points(points: list[dict[str, Any]], params: dict[str, Param],
                    fail: Any) -> list[dict[str, Any]]:
    """Explicit grid points: non-empty mappings of known parameters to values they allow."""
    if not points:
        raise fail(("points",), "empty list: give at least one point or leave points out")
    out = []
    for i, point in enumerate(points):
        if not isinstance(point, dict) or not point:
            raise fail(("points", i), "expected a non-empty mapping of parameter names to values")
        for name, value in point.items():
            p = params.get(name)
            if p is None:
                raise fail(("points", i, name), "not a parameter of this space")
            if isinstance(p, CategoricalParam):
                ok = _member(value, p.choices)
            elif isinstance(p, FixedParam):
                ok = _member(value, [p.value])
            else:
                ok = isinstance(value, int | float) and not isinstance(value, bool) and p.low <= value <= p.high
            if not ok:
                raise fail(("points", i, name), f"{value!r} is not a value '{name}' allows")
        out.append(dict(point))
    return out


def _tail_index(field: str) -> tuple[str | int, ...]:
    # "values[2]" -> (2,) ; "values" -> ()
    if "[" in field:
        return (int(field.rsplit("[", 1)[1].rstrip("]")),)
    return ()


def _topological_order(names: list[str], conditions: dict[str, dict[str, list[Any]]], fail: Any) -> list[str]:
    """Parents before children, otherwise file order; SpecError on a cycle."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = visiting, 2 = done

    def visit(n: str, chain: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = " -> ".join(chain[chain.index(n):] + [n])
            raise fail(("params", n, "when"), f"conditions form a cycle: {cycle}")
        state[n] = 1
        for parent in conditions[n]:
            visit(parent, chain + [n])
        state[n] = 2
        order.append(n)

    for n in names:
        visit(n, [])
    return order


def _accumulated_constraints(order: list[str], conditions: dict[str, dict[str, list[Any]]],
                             fail: Any) -> dict[str, dict[str, list[Any]]]:
    """For each parameter: every ancestor -> values it must take for the parameter to be active."""
    acc: dict[str, dict[str, list[Any]]] = {}
    for n in order:
        merged: dict[str, list[Any]] = {}
        for parent, allowed in conditions[n].items():
            for key, vals in [(parent, allowed), *acc[parent].items()]:
                cur = merged.get(key)
                merged[key] = list(vals) if cur is None else [v for v in cur if _member(v, vals)]
                if not merged[key]:
                    raise fail(("params", n, "when"), f"can never be active (conflicting values for '{key}')")
        acc[n] = merged
    return acc


def _check_target_conflicts(order: list[str], targets: dict[str, str],
                            constraints: dict[str, dict[str, list[Any]]], fail: Any) -> None:
    """Two parameters may share a target only if they can never be active together."""
    for i, a in enumerate(order):
        for b in order[:i]:
            if targets[a] != targets[b]:
                continue
            ca, cb = constraints[a], constraints[b]
            exclusive = any(
                not [v for v in ca[k] if _member(v, cb[k])] for k in ca.keys() & cb.keys()
            )
            if not exclusive:
                raise fail(("params", a, "target"),
                           f"'{targets[a]}' is also set by '{b}' and both can be active together")


def _check_against_base(space: SearchSpace, base: TrialConfig,
                        constraints: dict[str, dict[str, list[Any]]], fail: Any) -> None:
    """Apply each parameter's extreme values (with its conditions met) to `base` and re-validate.

    This catches values the trial config rejects (eta > 1, unknown psi, lr <= 0) at load time. It
    probes one parameter at a time, so a clash that needs two sampled values together is only
    caught when a trial config is built.
    """
    for name, p in space.params.items():
        probes: list[tuple[tuple[str | int, ...], Any]]
        if isinstance(p, FloatParam | IntParam):
            probes = [(("params", name, "low"), p.low), (("params", name, "high"), p.high)]
            where = ("params", name, "values") if p.values else ("grid", name)
            probes += [((*where, i), v) for i, v in enumerate(space._grid_values.get(name, []))]
        elif isinstance(p, CategoricalParam):
            probes = [(("params", name, "choices", i), c) for i, c in enumerate(p.choices)]
        else:
            probes = [(("params", name, "value"), p.value)]
        # Context: parameters that are always set (unconditional fixed ones) and a choice for each
        # ancestor that makes this parameter active.
        context = {space.targets[k]: q.value for k, q in space.params.items()
                   if isinstance(q, FixedParam) and not constraints[k] and k != name}
        context.update({space.targets[k]: vals[0] for k, vals in constraints[name].items()})
        for loc, value in probes:
            try:
                base.with_overrides({**context, space.targets[name]: value}, source=space.file)
            except SpecError as exc:
                raise fail(loc, f"invalid for {exc.field}: {exc.message}") from None
