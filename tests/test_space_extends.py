"""Search spaces that extend others (`extends:`), psi ranges read from the shapes (`type: psi_range`),
the free-form config sections a space may search, and load_space's steps."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from sl_core.psi import psi_search_range
from sweeps.config import space as S
from sweeps.config.space import FloatParam, load_space
from sweeps.config.spec import load_spec, packaged_space_path
from sweeps.config.trial_config import FREE_FORM_SECTIONS, LossConfig, TaskConfig, TrialConfig
from sweeps.errors import SpecError

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _write(folder: Path, name: str, data: dict | str) -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------- extends

def test_extends_a_builtin_overrides_adds_and_removes(tmp_path: Path) -> None:
    path = _write(tmp_path, "mine.yaml", {
        "extends": "paper",
        "params": {"eta": {"type": "fixed", "value": 0.1},          # replaced in place
                   "psi_param": None, "lr": None,                   # removed
                   "warmup_steps": {"type": "int", "low": 0, "high": 10, "target": "train.warmup_steps"}}})
    space = load_space(path)
    paper = load_space(packaged_space_path("paper"))
    assert list(space.params) == ["loss.family", "eta", "lam", "psi", "warmup_steps"]
    assert space.params["eta"].value == 0.1 and space.params["lam"] == paper.params["lam"]
    assert space.name == "mine" and space.description == paper.description  # own name, inherited text
    assert "extends" not in space.content and "warmup_steps" in space.content["params"]  # the record is resolved
    assert load_space(yaml.safe_load(space.to_yaml())).hash == space.hash  # self-contained


def test_extends_a_path_relative_to_the_file_and_chains(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "base.yaml", {"params": {"eta": {"type": "float", "low": 0.0, "high": 0.2},
                                              "lam": {"type": "fixed", "value": 2.0}}})
    _write(tmp_path / "sub", "mid.yaml", {"extends": "../base.yaml", "params": {"lam": {"type": "fixed", "value": 3.0}}})
    top = _write(tmp_path / "sub", "top.yaml", {"extends": "mid", "grid": {"eta": [0.0, 0.1]}})
    space = load_space(top)
    assert space.params["lam"].value == 3.0 and [p["eta"] for p in space.grid()] == [0.0, 0.1]


def test_inline_space_in_a_spec_extends_relative_to_the_spec(tmp_path: Path) -> None:
    _write(tmp_path, "mine.yaml", {"params": {"eta": {"type": "float", "low": 0.0, "high": 0.2}}})
    spec = _write(tmp_path, "spec.yaml", "name: s\ntask: {name: counting}\nloss: {family: soft_label}\n"
                  "search_space:\n  extends: mine\n  params:\n    lam: {type: fixed, value: 3.0}\n")
    r = load_spec(spec)
    assert list(r.space.params) == ["eta", "lam"]


def test_extends_errors_are_one_line_naming_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_space(_write(tmp_path, "a.yaml", {"extends": "papr", "params": {}}))
    err = info.value
    assert err.field == "extends" and err.file.endswith("a.yaml") and "did you mean 'paper'?" in str(err)
    assert "\n" not in str(err)

    _write(tmp_path, "x.yaml", {"extends": "y", "params": {"eta": {"type": "fixed", "value": 0.1}}})
    _write(tmp_path, "y.yaml", {"extends": "x.yaml", "params": {"lam": {"type": "fixed", "value": 2.0}}})
    with pytest.raises(SpecError, match=r"extends: extends forms a cycle: x.yaml -> y.yaml -> x.yaml") as info:
        load_space(tmp_path / "x.yaml")
    assert info.value.field == "extends" and "\n" not in str(info.value)
    with pytest.raises(SpecError, match="extends forms a cycle: self.yaml -> self.yaml"):
        load_space(_write(tmp_path, "self.yaml", {"extends": "self", "params": {}}))

    with pytest.raises(SpecError, match="has none of this name") as info:
        load_space(_write(tmp_path, "rm.yaml", {"extends": "paper", "params": {"zeta": None}}))
    assert info.value.field == "params.zeta"


def test_a_problem_in_the_extended_file_names_that_file(tmp_path: Path) -> None:
    _write(tmp_path, "parent.yaml", "params:\n  eta: {type: float, low: 0.5, high: 0.1}\n")
    child = _write(tmp_path, "child.yaml", {"extends": "parent", "params": {"lam": {"type": "fixed", "value": 2.0}}})
    with pytest.raises(SpecError) as info:
        load_space(child)
    assert info.value.file.endswith("parent.yaml") and info.value.field.startswith("params.eta")
    assert info.value.line == 2


def test_shipped_spaces_extend_paper_and_keep_their_hash() -> None:
    # paper_value_aware and psi_grid no longer copy paper.yaml's parameters; what they search is
    # unchanged (the hash recorded with earlier sweeps: tests/test_space.py's hash rule)
    va, grid = load_space(packaged_space_path("paper_value_aware")), load_space(packaged_space_path("psi_grid"))
    assert (va.hash, grid.hash) == ("ecac1bbdd955", "210b1ec122a0")
    assert list(va.params) == ["loss.family", "eta", "lam", "psi", "laplace_scale", "gaussian_scale",
                               "triangular_scale", "lr"]
    assert [p["psi"] for p in grid.grid()] == ["triangular", "binomial", "poisson", "uniform", "gaussian", "laplace"]
    assert load_space(packaged_space_path("paper")).hash == "c2d4c2107ec5"


# ------------------------------------------------------------------------------------- psi_range

def test_psi_range_takes_each_shapes_declared_range() -> None:
    space = load_space({"params": {
        "psi": {"type": "categorical", "choices": ["uniform", "gaussian", "laplace"]},
        "psi_param": {"type": "psi_range"}}})
    assert list(space.params) == ["psi", "gaussian_psi_param", "laplace_psi_param"]  # uniform: none
    for shape in ("gaussian", "laplace"):
        p = space.params[f"{shape}_psi_param"]
        assert isinstance(p, FloatParam)
        assert {"low": p.low, "high": p.high, "log": p.log} == psi_search_range(shape)
        assert space.conditions(f"{shape}_psi_param") == {"psi": [shape]}
        assert space.targets[f"{shape}_psi_param"] == "loss.psi_param"
    va = load_space({"params": {"loss.family": {"type": "fixed", "value": "value_aware"},
                                "kernel": {"type": "categorical", "choices": ["gaussian"], "target": "loss.psi"},
                                "s": {"type": "psi_range", "psi": "kernel", "units": "value", "names": "{shape}_scale"}}})
    p = va.params["gaussian_scale"]
    assert ({"low": p.low, "high": p.high, "log": p.log}, va.targets["gaussian_scale"]) == \
        (psi_search_range("gaussian", "value"), "loss.scale")


@pytest.mark.parametrize("param, field, match", [
    ({"type": "psi_range", "units": "bits"}, "params.p.units", "digits or value"),
    ({"type": "psi_range", "psi": "nope"}, "params.p.psi", "must be a categorical parameter"),
    ({"type": "psi_range", "names": "fixed_name"}, "params.p.names", "template with {shape}"),
    ({"type": "psi_range", "names": {"gaussian": "g"}}, "params.p.names", "no name for shape 'laplace'"),
    ({"type": "psi_range", "low": 1.0}, "params.p.low", "unknown option of psi_range"),
])
def test_psi_range_errors(param: dict, field: str, match: str) -> None:
    with pytest.raises(SpecError, match=match) as info:
        load_space({"params": {"psi": {"type": "categorical", "choices": ["gaussian", "laplace"]}, "p": param}})
    assert info.value.field == field


def test_psi_range_binomial_has_no_value_range() -> None:
    with pytest.raises(SpecError, match="'binomial' declares no search range in value units"):
        load_space({"params": {"psi": {"type": "categorical", "choices": ["binomial"]},
                               "p": {"type": "psi_range", "units": "value"}}})


# ------------------------------------------------------------------------------------- free-form sections

def test_free_form_sections_are_one_set_for_overrides_and_spaces() -> None:
    base = TrialConfig(task=TaskConfig(name="counting"), loss=LossConfig(family="soft_label"))
    for section, field in sorted(FREE_FORM_SECTIONS):
        if (section, field) == ("loss", "options"):
            continue  # only plug-in families take options: the target is fine, the value is not
        key = f"{section}.{field}.new_key"
        assert S._target_problem(key) is None, key
        if (section, field) != ("model", "lora"):  # peft's keys are checked
            assert base.with_overrides({key: 3}, source="o").model_dump()[section][field]["new_key"] == 3


def test_task_loader_can_be_searched() -> None:
    space = load_space({"params": {"task.loader.shuffle_seed": {"type": "categorical", "choices": [1, 2]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sample = space.define_by_run(study.ask())
    cfg = TrialConfig(task=TaskConfig(name="counting"), loss=LossConfig(family="hard")).with_overrides(
        space.to_overrides(sample))
    assert cfg.task.loader == {"shuffle_seed": sample["task.loader.shuffle_seed"]}
    with pytest.raises(SpecError, match="needs a key below it"):
        load_space({"params": {"task.loader": {"type": "fixed", "value": 1}}})


# ------------------------------------------------------------------------------------- the steps

def test_load_space_is_its_steps(tmp_path: Path) -> None:
    path = _write(tmp_path, "s.yaml", {"extends": "paper", "params": {"lr": None}})
    raw = S._read_space(path)
    assert raw.data["extends"] == "paper" and raw.default_name == "s"
    resolved = S._resolve_extends(raw)
    assert "extends" not in resolved.data and "psi_param" in resolved.data["params"]
    expanded = S._expand_psi_ranges(resolved)
    assert "psi_param" not in expanded and "gaussian_sigma" in expanded
    resolved = S._Resolved({**resolved.data, "params": expanded}, resolved.origins, resolved.src)
    checked = S._validate_params(resolved)
    assert checked.order[:4] == ["loss.family", "eta", "lam", "psi"] and "lr" not in checked.params
    space = S._build_space(raw, resolved, checked, S._default_base())
    assert space.hash == load_space(path).hash
