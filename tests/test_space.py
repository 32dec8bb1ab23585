"""Search spaces: packaged files load, Optuna samples respect bounds and conditions, grids are exact."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
import pytest
import yaml

from sweeps.config.trial_config import LOSS_FAMILIES, LossConfig, TaskConfig, TrialConfig
from sweeps.errors import SpecError
from sweeps.config.space import CategoricalParam, FixedParam, FloatParam, IntParam, SearchSpace, load_space
from sweeps.config.spec import packaged_space_path, packaged_spaces

optuna.logging.set_verbosity(optuna.logging.WARNING)
BAD_DIR = Path(__file__).parent / "bad_inputs"
EXPECTED = yaml.safe_load((BAD_DIR / "EXPECTED.yaml").read_text())
SHAPE_PARAM = {"triangular": "triangular_width", "binomial": "binomial_temperature",
               "poisson": "poisson_temperature", "gaussian": "gaussian_sigma", "laplace": "laplace_scale"}
PSI_SHAPES = ["triangular", "binomial", "poisson", "uniform", "gaussian", "laplace"]


def _base() -> TrialConfig:
    return TrialConfig(task=TaskConfig(name="counting"), loss=LossConfig(family="hard"))


def _in_bounds(space: SearchSpace, sample: dict) -> None:
    for name, value in sample.items():
        p = space.params[name]
        if isinstance(p, FloatParam | IntParam):
            assert p.low <= value <= p.high, (name, value)
        elif isinstance(p, CategoricalParam):
            assert value in p.choices
        else:
            assert isinstance(p, FixedParam) and value == p.value


def _check_paper_sample(space: SearchSpace, sample: dict) -> None:
    _in_bounds(space, sample)
    psi = sample["psi"]
    present = {n for n in SHAPE_PARAM.values() if n in sample}
    assert present == ({SHAPE_PARAM[psi]} if psi in SHAPE_PARAM else set()), sample
    cfg = _base().with_overrides(space.to_overrides(sample))
    assert cfg.loss.family == "soft_label" and cfg.loss.psi == psi
    assert cfg.loss.eta == sample["eta"] and cfg.loss.lam == sample["lam"] and cfg.train.lr == sample["lr"]
    assert cfg.loss.psi_param == (sample[SHAPE_PARAM[psi]] if psi in SHAPE_PARAM else None)


def test_packaged_spaces_load() -> None:
    assert set(packaged_spaces()) == {"paper", "eta_grid", "psi_grid", "lambda_grid", "baselines", "paper_value_aware"}
    for name in packaged_spaces():
        space = load_space(packaged_space_path(name))
        assert space.name == name and space.source == f"{name}.yaml" and len(space.hash) == 12
        assert space.description


def test_paper_space_shape() -> None:
    space = load_space(packaged_space_path("paper"))
    p = space.params
    assert (p["eta"].low, p["eta"].high, p["eta"].log) == (0.0, 0.3, False)
    assert (p["lam"].low, p["lam"].high, p["lam"].log) == (0.5, 5.0, True)
    assert p["psi"].choices == PSI_SHAPES and p["lr"].log is True
    assert space.conditions("triangular_width") == {"psi": ["triangular"]}
    assert space.targets == {
        "loss.family": "loss.family", "eta": "loss.eta", "lam": "loss.lam", "psi": "loss.psi",
        **{name: "loss.psi_param" for name in SHAPE_PARAM.values()}, "lr": "train.lr",
    }


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_define_by_run_with_optuna_study(sampler: str) -> None:
    space = load_space(packaged_space_path("paper"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        algo = (optuna.samplers.TPESampler(seed=0, n_startup_trials=5, multivariate=True, group=True)
                if sampler == "tpe" else optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(direction="maximize", sampler=algo)
    shapes = set()
    for _ in range(40):
        trial = study.ask()
        sample = space.define_by_run(trial)
        # Optuna saw exactly the sampled parameters; the fixed one is added by us.
        assert trial.params == {k: v for k, v in sample.items() if k != "loss.family"}
        _check_paper_sample(space, sample)
        shapes.add(sample["psi"])
        study.tell(trial, -abs(sample["eta"] - 0.08) - 0.01 * abs(math.log(sample["lam"] / 2)))
    assert len(shapes) >= 4  # the categorical really varies
    assert study.best_params["eta"] <= 0.3


def test_define_by_run_through_ray_optuna_search() -> None:
    """What Ray Tune calls: OptunaSearch(space=define_by_run) suggests through its own trial proxy."""
    from ray.tune.search.optuna import OptunaSearch

    space = load_space(packaged_space_path("paper"))
    searcher = OptunaSearch(space=space.define_by_run, metric="exact_match", mode="max",
                            sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=3))
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        _check_paper_sample(space, config)
        searcher.on_trial_complete(f"t{i}", {"exact_match": 1 - config["eta"]})


def test_random_baselines_family_params_only_under_their_family() -> None:
    space = load_space(packaged_space_path("baselines"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    own = {"label_smoothing": {"smoothing"}, "gaussian": {"sigma"}, "ntl_was": {"ntl_weight"},
           "ntl_mse": {"ntl_weight"}, "ntil": {"ntil_weight", "digit_exp"},
           "dist2": {"dist2_temperature", "dist2_distance"}, "smmd": {"smmd_weight", "smmd_sigma"},
           "del": {"del_weight"},
           "soft_label": {"eta", "lam", "psi"}, "hard": set()}
    for _ in range(30):
        trial = study.ask()
        sample = space.define_by_run(trial)
        family = sample["loss.family"]
        assert set(sample) - {"loss.family"} == own[family]
        study.tell(trial, 0.0)


def test_grid_packaged_counts_and_content() -> None:
    eta = load_space(packaged_space_path("eta_grid")).grid()
    assert [p["eta"] for p in eta] == [0.0, 0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3]
    assert all(p == {"loss.family": "soft_label", "eta": p["eta"], "lam": 2.0, "psi": "triangular"} for p in eta)
    psi = load_space(packaged_space_path("psi_grid")).grid()
    assert [p["psi"] for p in psi] == PSI_SHAPES and all(p["eta"] == 0.08 for p in psi)
    lam = load_space(packaged_space_path("lambda_grid")).grid()
    assert [p["lam"] for p in lam] == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    base = load_space(packaged_space_path("baselines")).grid()
    # every family that runs on a digit tokenizer (value_aware equals soft_label with psi laplace there)
    assert [p["loss.family"] for p in base] == [f for f in LOSS_FAMILIES if f != "value_aware"]
    assert {"loss.family": "ntl_mse", "ntl_weight": 0.3} in base
    assert {"loss.family": "soft_label", "eta": 0.08, "lam": 2.0, "psi": "triangular"} in base
    assert {"loss.family": "hard"} in base
    # Every grid point is a valid trial config.
    for point in base:
        _base().with_overrides(load_space(packaged_space_path("baselines")).to_overrides(point))


def test_grid_conditional_expansion_exact() -> None:
    space = load_space({
        "params": {
            "psi": {"type": "categorical", "choices": ["triangular", "gaussian", "uniform"]},
            "triangular_width": {"type": "float", "low": 1.0, "high": 4.0, "values": [1.0, 2.0],
                                 "when": {"psi": "triangular"}, "target": "loss.psi_param"},
            "gaussian_sigma": {"type": "float", "low": 0.3, "high": 2.0, "when": {"psi": ["gaussian"]},
                               "target": "loss.psi_param"},
            "eta": {"type": "float", "low": 0.0, "high": 0.3},
            "warmup_steps": {"type": "int", "low": 0, "high": 20, "step": 10},
        },
        "grid": {"gaussian_sigma": [0.5], "eta": [0.0, 0.1]},
    }, source="inline-test")
    points = space.grid()
    expected = [
        {"psi": psi, **shape, "eta": eta, "warmup_steps": w}
        for psi, shapes in [("triangular", [{"triangular_width": 1.0}, {"triangular_width": 2.0}]),
                            ("gaussian", [{"gaussian_sigma": 0.5}]), ("uniform", [{}])]
        for shape in shapes for eta in (0.0, 0.1) for w in (0, 10, 20)
    ]
    assert len(points) == 4 * 2 * 3 == 24
    assert points == expected


def test_to_overrides_and_default_targets() -> None:
    space = load_space({"params": {
        "eta": {"type": "float", "low": 0.0, "high": 0.2},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "freeze_vision": {"type": "categorical", "choices": [True, False]},
        "task.params.max_count": {"type": "int", "low": 5, "high": 9},
        "batch": {"type": "fixed", "value": 16, "target": "train.batch_size"},
    }}, source="x")
    assert space.targets == {"eta": "loss.eta", "lr": "train.lr", "freeze_vision": "model.freeze_vision",
                             "task.params.max_count": "task.params.max_count", "batch": "train.batch_size"}
    sample = {"eta": 0.1, "lr": 1e-3, "freeze_vision": True, "task.params.max_count": 7, "batch": 16,
              "__trial_index__": 2}
    over = space.to_overrides(sample)
    assert over == {"loss.eta": 0.1, "train.lr": 1e-3, "model.freeze_vision": True,
                    "task.params.max_count": 7, "train.batch_size": 16}
    with pytest.raises(SpecError, match="not a parameter"):
        space.to_overrides({"zeta": 1})


def test_hash_ignores_formatting_but_not_content(tmp_path: Path) -> None:
    original = load_space(packaged_space_path("paper"))
    data = yaml.safe_load(packaged_space_path("paper").read_text())
    data["description"] = "reworded"
    reformatted = tmp_path / "p.yaml"
    reformatted.write_text(yaml.safe_dump(data, default_flow_style=False))
    assert load_space(reformatted).hash == original.hash
    data["params"]["eta"]["high"] = 0.25
    assert load_space(data, source="changed").hash != original.hash
    assert yaml.safe_load(original.to_yaml())["params"]["psi"]["choices"] == PSI_SHAPES


def test_inline_space_errors_point_into_the_spec_file() -> None:
    from sweeps.config.yamlio import parse_yaml

    doc = parse_yaml("search_space:\n  params:\n    eta: {type: float, low: 0.5, high: 0.1}\n", "s.yaml")
    with pytest.raises(SpecError) as info:
        load_space(doc.data["search_space"], source="s.yaml", doc=doc, prefix=("search_space",))
    assert str(info.value) == "s.yaml: search_space.params.eta.low: low (0.5) must be < high (0.1) (line 3)"


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("space_")))
def test_bad_spaces(name: str) -> None:
    want = EXPECTED[name]
    with pytest.raises(SpecError) as info:
        load_space(BAD_DIR / name)
    err = info.value
    assert Path(err.file).name == want.get("file", name)
    assert err.field == want["field"] and want["message"] in err.message, str(err)
    assert str(err).startswith(f"{err.file}: {want['field']}: ")
