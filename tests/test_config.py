"""TrialConfig, SpecError and the YAML loader: valid input loads, bad input names file and field."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sl_core.registry import LOSS_FAMILY_SPECS, REQUIRED, check_family_params
from sweeps.config.trial_config import LOSS_FAMILIES, LossConfig, TaskConfig, TrialConfig
from sweeps.errors import SlsweepError, SpecError, spec_error_from_validation
from sweeps.config.yamlio import load_yaml, parse_yaml

BAD_DIR = Path(__file__).parent / "bad_inputs"
EXPECTED = yaml.safe_load((BAD_DIR / "EXPECTED.yaml").read_text())

TRIAL_YAML = """\
name: t1
task: {name: grounding, params: {max_objects: 3}, eval_size: 200}
model: {path: tiny, freeze_vision: true}
train: {steps: 50, lr: 3e-4, warmup_steps: 5, eval_every: 25, mixed_precision: no}
loss: {family: soft_label, eta: 0.08, lam: 2, psi: gaussian, psi_param: 0.7}
seed: 4
"""


def _base() -> TrialConfig:
    return TrialConfig(task=TaskConfig(name="counting"), loss=LossConfig(family="soft_label"))


def test_from_yaml_valid(tmp_path: Path) -> None:
    path = tmp_path / "trial.yaml"
    path.write_text(TRIAL_YAML)
    cfg = TrialConfig.from_yaml(path)
    assert cfg.name == "t1" and cfg.seed == 4
    assert cfg.task.name == "grounding" and cfg.task.params == {"max_objects": 3}
    assert cfg.task.eval_size == 200 and cfg.task.train_size == 20000 and cfg.task.data_path is None
    assert cfg.model.freeze_vision is True and cfg.model.dtype == "auto"
    # YAML 1.2 scalars: 3e-4 is a float, `no` stays the string "no".
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.mixed_precision == "no"
    assert cfg.train.batch_size == 32 and cfg.train.grad_accum == 1 and cfg.train.checkpoint_every is None
    assert cfg.loss.psi == "gaussian" and cfg.loss.psi_param == 0.7 and cfg.loss.lam == 2.0


@pytest.mark.parametrize(
    ("family", "keys"),
    [
        ("hard", set()),
        ("label_smoothing", {"smoothing"}),
        ("gaussian", {"sigma"}),
        ("ntl_was", {"ntl_weight"}),
        ("ntl_mse", {"ntl_weight"}),
        ("ntil", {"ntil_weight", "digit_exp"}),
        ("dist2", {"dist2_temperature", "dist2_distance"}),
        ("smmd", {"smmd_weight", "smmd_sigma", "smmd_alpha"}),
        ("del", {"del_weight"}),
        ("soft_label", {"eta", "lam", "psi", "psi_param", "place_exponent"}),
        ("value_aware", {"eta", "lam", "psi", "scale", "place_exponent"}),
    ],
)
def test_loss_kwargs_only_family_params(family: str, keys: set[str]) -> None:
    loss = LossConfig(family=family, eta=0.1, smoothing=0.2, sigma=1.5, ntl_weight=0.4, ntil_weight=0.5)
    kwargs = loss.loss_kwargs()
    assert set(kwargs) == keys
    assert all(kwargs[k] == getattr(loss, k) for k in keys if getattr(loss, k) is not None)
    assert family in LOSS_FAMILIES


def test_config_accepts_exactly_sl_core_families_params_and_defaults() -> None:
    """The sweep config is derived from sl_core's registry: same families, parameters, defaults, bounds."""
    import sl_core

    assert LOSS_FAMILIES == sl_core.LOSS_FAMILIES and set(LOSS_FAMILIES) <= set(LOSS_FAMILY_SPECS)
    for family, spec in [(f, LOSS_FAMILY_SPECS[f]) for f in LOSS_FAMILIES]:
        required = {p.name: 0.1 for p in spec.params if p.required}
        kwargs = LossConfig(family=family, **required).loss_kwargs()
        assert kwargs == check_family_params(family, required)
        expected = {k: (required[k] if v is REQUIRED else v) for k, v in sl_core.FAMILY_DEFAULTS[family].items()}
        assert kwargs == expected, family
        for p in spec.params:
            assert p.name in LossConfig.model_fields
            if p.kind == "real" and p.low is not None:  # a value just outside the bound is refused
                bad = p.low if p.low_open else p.low - 1.0
                with pytest.raises(ValidationError, match=p.name):
                    LossConfig(family=family, **{**required, p.name: bad})
            if p.required:
                with pytest.raises(ValueError, match=f"needs parameter '{p.name}'"):
                    LossConfig(family=family).loss_kwargs()
    params = {p.name for f in LOSS_FAMILIES for p in LOSS_FAMILY_SPECS[f].params}
    assert params <= set(LossConfig.model_fields)
    # backend: the engine, not a parameter; options: a plug-in family's parameters
    assert set(LossConfig.model_fields) - params == {"family", "backend", "options"}


def test_psi_must_be_registered() -> None:
    with pytest.raises(ValidationError, match="unknown 'cosine' for loss family 'soft_label'"):
        LossConfig(family="soft_label", psi="cosine")
    with pytest.raises(ValidationError, match="unknown 'binomial' for loss family 'value_aware'"):
        LossConfig(family="value_aware", psi="binomial")


def test_psi_param_must_fit_the_shape() -> None:
    with pytest.raises(ValidationError, match="takes no parameter"):
        LossConfig(family="soft_label", psi="uniform", psi_param=1.0)


def test_with_overrides_sets_dotted_paths_and_revalidates() -> None:
    base = _base()
    cfg = base.with_overrides({
        "loss.eta": 0.12, "train.lr": 2e-3, "seed": 7, "task.params.max_count": 5, "model.lora.r": 8,
    })
    assert (cfg.loss.eta, cfg.train.lr, cfg.seed) == (0.12, 2e-3, 7)
    assert cfg.task.params == {"max_count": 5} and cfg.model.lora == {"r": 8}
    # The original is untouched (configs are values).
    assert base.loss.eta is None and base.task.params == {} and base.model.lora is None


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"loss.eta": 2.0}, "loss.eta", "must be in [0, 1]"),
        ({"loss.temperature": 1.0}, "loss.temperature", "unknown key"),
        ({"optim.lr": 1.0}, "optim.lr", "unknown section"),
        ({"loss.eta.x": 1.0}, "loss.eta.x", "not a section"),
        ({"train.steps": 10, "train.warmup_steps": 20}, "train.warmup_steps", "must be <= train.steps"),
        ({"loss..eta": 1.0}, "loss..eta", "malformed"),
    ],
)
def test_with_overrides_errors_name_the_key(overrides: dict, field: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        _base().with_overrides(overrides, source="--set")
    assert info.value.file == "--set" and info.value.field == field
    assert fragment in info.value.message and str(info.value).startswith(f"--set: {field}: ")


def test_flatten_dotted_and_omits_none() -> None:
    cfg = _base().with_overrides({"task.params.max_count": 9, "loss.psi": "laplace"})
    flat = cfg.flatten()
    assert flat["loss.family"] == "soft_label" and flat["loss.psi"] == "laplace" and flat["seed"] == 0
    assert flat["task.params.max_count"] == 9 and flat["task.name"] == "counting"
    assert "loss.psi_param" not in flat and "task.data_path" not in flat and "model.lora" not in flat
    assert all(v is not None for v in flat.values())
    assert cfg.with_overrides({"loss.psi_param": 1.5}).flatten()["loss.psi_param"] == 1.5


def test_spec_error_format_and_pickle() -> None:
    err = SpecError("a.yaml", "search.num_samples", "must be > 0", line=3)
    assert isinstance(err, SlsweepError)
    assert str(err) == "a.yaml: search.num_samples: must be > 0 (line 3)"
    assert str(err) == f"{err.file}: {err.field}: {err.message}"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.line == 3 and again.field == err.field


def test_validation_error_becomes_one_spec_error_with_count() -> None:
    with pytest.raises(ValidationError) as info:
        TrialConfig.model_validate({"task": {"name": "counting", "eval_size": 0}, "loss": {"family": "x"}})
    err = spec_error_from_validation(info.value, file="f.yaml", model=TrialConfig)
    assert err.field == "task.eval_size" and "[and 1 more error]" in err.message


def test_yaml_loader_lines_and_duplicates(tmp_path: Path) -> None:
    doc = parse_yaml("a:\n  b: 1\n  c: [x, y]\nd: 1e-3\ne: on\n", "m.yaml")
    assert doc.data == {"a": {"b": 1, "c": ["x", "y"]}, "d": 0.001, "e": "on"}
    assert doc.line_of(("a", "b")) == 2 and doc.line_of(("a", "c", 1)) == 3 and doc.line_of(("a", "zz")) == 1
    with pytest.raises(SpecError, match=r"m.yaml: a.b: duplicate key \(line 3\)"):
        parse_yaml("a:\n  b: 1\n  b: 2\n", "m.yaml")
    with pytest.raises(SpecError) as info:
        load_yaml(tmp_path / "missing.yaml", what="trial config")
    assert info.value.field == "<file>" and "trial config not found" in info.value.message


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("trial_")))
def test_bad_trial_configs(name: str) -> None:
    want = EXPECTED[name]
    with pytest.raises(SpecError) as info:
        TrialConfig.from_yaml(BAD_DIR / name)
    err = info.value
    assert Path(err.file).name == want.get("file", name)
    assert err.field == want["field"] and want["message"] in err.message
    assert str(err).startswith(f"{err.file}: {want['field']}: ")


def test_registries_import_without_torch() -> None:
    """The loss families, psi shapes and the sweep config are read without importing torch."""
    import subprocess
    import sys

    code = ("import sys, sl_core.registry, sl_core.psi, sweeps.config.trial_config\n"
            "from sweeps.config.trial_config import LossConfig\n"
            "LossConfig(family='value_aware', eta=0.1, psi='gaussian')\n"
            "assert sorted(sl_core.registry.LOSS_FAMILY_SPECS) == sorted(sweeps.config.trial_config.LOSS_FAMILIES)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]


def test_a_checkpoint_keeps_the_training_settings_a_resume_must_ask(tmp_path: Path) -> None:
    """What a checkpoint stores of its run (`TrialConfig.training_settings`) and what a resumed run
    is held to: the fields that decide training, not evaluation; a checkpoint written before
    settings were kept passes."""
    from sweeps.trial.checkpoint import TrainState, read_state, save_checkpoint, settings_problem
    from tests.trial_helpers import tiny_trial_config

    cfg = tiny_trial_config(steps=6, eval_every=3)
    settings = cfg.training_settings()
    assert {"train.lr", "loss.eta", "seed", "task.train_size"} <= set(settings)
    assert not {"name", "train.steps", "train.eval_every", "train.max_new_tokens"} & set(settings)
    save_checkpoint(tmp_path / "ck", None, None, None, TrainState(step=3, settings=settings), weights=False)
    state = read_state(tmp_path / "ck")
    assert state.settings == json.loads(json.dumps(settings))
    same = cfg.with_overrides({"train.eval_every": 2, "name": "other", "train.steps": 12})  # continued further
    assert settings_problem(tmp_path / "ck", state, same.training_settings()) is None
    problem = settings_problem(tmp_path / "ck", state, cfg.with_overrides({"seed": 4, "loss.eta": 0.2}).training_settings())
    assert problem is not None and "loss.eta=0.1 (this run: 0.2)" in problem and "seed=0 (this run: 4)" in problem
    assert "train.effective_batch_size" not in settings  # a fixed micro-batch: not used
    auto = cfg.with_overrides({"train.batch_size": "auto", "train.effective_batch_size": 8}).training_settings()
    assert auto["train.batch_size"] == "auto" and auto["train.effective_batch_size"] == 8
    problem = settings_problem(tmp_path / "ck", state, auto)
    assert "train.batch_size=8 (this run: 'auto')" in problem and "train.effective_batch_size unset (this run: 8)" in problem
    assert settings_problem(tmp_path / "ck", TrainState(step=3), cfg.with_overrides({"seed": 4}).training_settings()) is None
    # free-form values compare as numbers (an int searched, a float written); LoRA with defaults is a setting
    five = TrainState(step=3, settings=cfg.with_overrides({"task.params.max_count": 5}).training_settings())
    assert settings_problem(tmp_path, five, cfg.with_overrides({"task.params.max_count": 5.0}).training_settings()) is None
    assert "model.lora unset (this run: {})" in settings_problem(
        tmp_path, state, cfg.with_overrides({"model.lora": {}}).training_settings())
