"""Search algorithms (sweeps.config.search): one registry the spec, the driver and the hints read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from sweeps.config import search
from sweeps.config.search import STRATEGIES, SamplerSettings, SearchStrategy, algorithm_names, selecting_algorithms
from sweeps.config.spec import load_spec
from sweeps.driver.ordered_history import OrderedTPESampler
from sweeps.errors import SpecError

SPEC = ("name: mini\ntask: {name: counting}\nloss: {family: soft_label}\nsearch_space: paper.yaml\n"
        "search: {algorithm: ALGO, num_samples: 6, max_concurrent: 2, seed: 7}\n")


def _spec(tmp_path: Path, algo: str):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("ALGO", algo))
    return load_spec(path)


def _proposals(sampler, n: int = 5) -> list[float]:
    study = optuna.create_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, x)
        out.append(x)
    return out


def test_registry_names_and_kinds() -> None:
    assert algorithm_names() == ["tpe", "random", "grid"]
    assert [n for n, s in STRATEGIES.items() if s.is_grid] == ["grid"]
    assert selecting_algorithms() == ("tpe", "random")  # grid cells are designed, not selected


def test_samplers_from_the_spec(tmp_path: Path) -> None:
    tpe = _spec(tmp_path, "tpe").spec.search
    sampler = tpe.strategy.build_sampler(tpe.sampler_settings())
    assert isinstance(sampler, OrderedTPESampler) and sampler.lag == 2
    assert sampler._n_startup_trials == 2  # min(10, max(2, 6 // 3))
    rnd = _spec(tmp_path, "random").spec.search
    a = rnd.strategy.build_sampler(rnd.sampler_settings())
    b = rnd.strategy.build_sampler(rnd.sampler_settings())
    assert isinstance(a, optuna.samplers.RandomSampler)
    assert _proposals(a) == _proposals(b)  # the seed reaches the sampler
    with pytest.raises(ValueError, match="no sampler"):
        STRATEGIES["grid"].build_sampler(SamplerSettings(seed=1, num_samples=1, max_concurrent=1))


def test_grid_and_sampler_trial_counts(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text("name: g\ntask: {name: counting}\nloss: {family: soft_label}\nsearch_space: psi_grid\n"
                    "search: {algorithm: grid, seeds: 2}\n")
    assert load_spec(path).trial_count == 6 * 2
    assert _spec(tmp_path, "random").trial_count == 6


def test_unknown_algorithm_is_one_line_with_did_you_mean(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        _spec(tmp_path, "rando")
    assert info.value.field == "search.algorithm"
    text = str(info.value)
    assert "\n" not in text and "did you mean 'random'?" in text and "'tpe', 'random' or 'grid'" in text


def test_adding_an_algorithm_is_one_entry(tmp_path: Path) -> None:
    entry = SearchStrategy("qmc", "Optuna's quasi-Monte Carlo sampler", sampler="optuna.samplers:QMCSampler",
                           options=lambda s: {"seed": s.seed, "warn_independent_sampling": False})
    STRATEGIES["qmc"] = entry  # type: ignore[index]
    try:
        resolved = _spec(tmp_path, "qmc")
        s = resolved.spec.search
        assert s.strategy is entry and resolved.trial_count == 6 and "qmc" in selecting_algorithms()
        assert isinstance(s.strategy.build_sampler(s.sampler_settings()), optuna.samplers.QMCSampler)
    finally:
        del STRATEGIES["qmc"]  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match="search.algorithm"):
        _spec(tmp_path, "qmc")


def test_search_module_imports_neither_ray_nor_optuna() -> None:
    code = ("import sys, sweeps.config.search as s; "
            "bad = [m for m in ('ray', 'optuna') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(search.__file__).parents[2])
