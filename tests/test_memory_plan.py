"""The memory planner against the sweep as it will run: the search space's worst case is planned
(refused naming the space's parameter, before Ray starts) and the device's memory is divided among
the trials that run on it at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeps.models.presets import build_preset_model
from sweeps.trial.memory import DEFAULT_HEADROOM, trials_per_device


def test_trials_per_device_follows_the_driver() -> None:
    # max_concurrent trials at most, never more than the sweep has, as many as the node's CPUs hold
    assert trials_per_device(max_concurrent=2, trials=8, cpu=1, gpu=0, cpus=2) == 2
    assert trials_per_device(max_concurrent=4, trials=8, cpu=1, gpu=0, cpus=2) == 2
    assert trials_per_device(max_concurrent=4, trials=1, cpu=1, gpu=0, cpus=16) == 1
    assert trials_per_device(max_concurrent=8, trials=8, cpu=0.5, gpu=0, cpus=2) == 4
    assert trials_per_device(max_concurrent=1, trials=8, cpu=4, gpu=0, cpus=2) == 1  # never below one
    # each trial's workers hold a model each: processes, not trials, share the RAM
    assert trials_per_device(max_concurrent=4, trials=8, cpu=1, gpu=0, cpus=8, workers=2) == 8
    # on a GPU only the processes given a fraction of it share it
    assert trials_per_device(max_concurrent=4, trials=8, cpu=1, gpu=1, cpus=16) == 1
    assert trials_per_device(max_concurrent=4, trials=8, cpu=1, gpu=0.5, cpus=16) == 2
    assert trials_per_device(max_concurrent=4, trials=8, cpu=1, gpu=0.25, cpus=16) == 4


@pytest.fixture(scope="module")
def smolvlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_preset_model("smolvlm-256m", tmp_path_factory.mktemp("presets") / "smolvlm", layers=1)


def _spec(tmp_path: Path, folder: Path, *, params: str, **sections: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec = {"name": "memplan", "task": "{name: counting, eval_size: 2, image_size: 48}",
            "model": f"{{path: {folder}, freeze_vision: true}}",
            "train": "{steps: 1, eval_every: 1, batch_size: 1, max_new_tokens: 2}",
            "loss": "{family: soft_label, eta: 0.1}", "search_space": f"{{params: {{{params}}}}}",
            "search": "{algorithm: random, num_samples: 2}", **sections}
    path = tmp_path / "memplan.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in spec.items()))
    return path


def _run(spec: Path, runs: Path, *overrides: str) -> str:
    """`slsweep run`'s output: one line, exit 2, Ray not started, nothing written."""
    import ray

    from sweeps.cli import app

    res = CliRunner().invoke(app, ["run", str(spec), *overrides, "--runs-dir", str(runs)])
    text = res.output.strip()
    assert res.exit_code == 2 and "\n" not in text and "Traceback" not in text, res.output
    assert not ray.is_initialized() and not runs.exists()
    return text


def _base_estimate(tmp_path: Path, folder: Path, **extra: str) -> float:
    """GB the planner gives the base config alone (a space that changes no memory, one trial)."""
    from sweeps.driver.preflight import plan_sweep

    spec = _spec(tmp_path / "base", folder, params="eta: {type: float, low: 0.05, high: 0.2, target: loss.eta}", **extra)
    plan = plan_sweep(spec, overrides=["resources.memory_gb=1000", "search.max_concurrent=1"])
    line = plan.data_lines[-1]
    assert line.startswith("memory: ~") and "search space" not in line, line
    return float(line.removeprefix("memory: ~").split()[0])


def _refused(spec: Path, *overrides: str) -> str:
    """The one-line SpecError `slsweep run` prints (exit 2) before Ray starts or anything is written."""
    import ray

    from sweeps.driver.preflight import plan_sweep
    from sweeps.errors import SpecError

    with pytest.raises(SpecError) as info:
        plan_sweep(spec, overrides=list(overrides))
    text = str(info.value)
    assert "\n" not in text and not ray.is_initialized()
    return text


@pytest.mark.slow
def test_a_batch_size_the_space_can_propose_is_planned_and_refused_by_name(tmp_path: Path, smolvlm: Path) -> None:
    spec = _spec(tmp_path, smolvlm, params="bs: {type: categorical, choices: [1, 512], target: train.batch_size}")
    base = _base_estimate(tmp_path, smolvlm)
    # the base config (micro-batch 1) fits twice over; micro-batch 512 (x 1145 tokens) cannot
    text = _refused(spec, f"resources.memory_gb={2 * base / DEFAULT_HEADROOM:.4f}")
    assert text.startswith(f"{spec}: search_space.params.bs: "), text
    assert "params.bs" in text and "train.batch_size: 512" in text and "at micro-batch 512" in text, text
    assert "narrow params.bs" in text


@pytest.mark.slow
def test_the_largest_lora_rank_is_planned_and_auto_batch_sized_for_it(tmp_path: Path, smolvlm: Path) -> None:
    from sweeps.driver.preflight import plan_sweep

    lora = f"{{path: {smolvlm}, freeze_vision: true, lora: {{r: 4}}}}"
    spec = _spec(tmp_path, smolvlm, params="r: {type: int, low: 4, high: 16384, target: model.lora.r}", model=lora)
    base = _base_estimate(tmp_path, smolvlm, model=lora)
    roomy = plan_sweep(spec, overrides=["resources.memory_gb=1000", "search.max_concurrent=1"])
    assert "with the search space's model.lora.r: 16384" in roomy.data_lines[-1], roomy.data_lines[-1]
    worst = float(roomy.data_lines[-1].removeprefix("memory: ~").split()[0])
    assert worst > base * 2  # rank 16384 on every projection: adapters larger than the one-layer model
    # room for the base rank but not for the largest the space proposes: refused, naming the parameter
    text = _refused(spec, f"resources.memory_gb={(base + worst) / 2 / DEFAULT_HEADROOM:.4f}")
    assert text.startswith(f"{spec}: search_space.params.r: "), text
    assert "model.lora.r: 16384" in text and "narrow params.r" in text
    # with room for the worst rank, train.batch_size: auto is sized for it, not for the base rank
    auto = [f"resources.memory_gb={worst * 1.01 / DEFAULT_HEADROOM:.4f}", "train.batch_size=auto",
            "train.effective_batch_size=8", "search.max_concurrent=1"]
    searched = plan_sweep(spec, overrides=auto).spec.train
    alone = plan_sweep(_spec(tmp_path / "alone", smolvlm, model=lora,
                             params="eta: {type: float, low: 0.05, high: 0.2, target: loss.eta}"), overrides=auto).spec.train
    assert searched.batch_size * searched.grad_accum >= 8 and alone.batch_size * alone.grad_accum >= 8
    assert searched.batch_size < alone.batch_size, (searched, alone, base, worst)


@pytest.mark.slow
def test_concurrent_trials_on_cpu_divide_the_available_ram(tmp_path: Path, smolvlm: Path) -> None:
    from sweeps.driver.preflight import plan_sweep

    lora = f"{{path: {smolvlm}, freeze_vision: true, lora: {{r: 4}}}}"  # (peft's warnings stay off the line)
    # one example evaluated at a time: the evaluation cannot shrink to fit a smaller share
    task = "{name: counting, eval_size: 1, image_size: 48}"
    spec = _spec(tmp_path, smolvlm, params="eta: {type: float, low: 0.05, high: 0.2, target: loss.eta}", model=lora,
                 task=task)
    base = _base_estimate(tmp_path, smolvlm, model=lora, task=task)
    memory_gb = 1.5 * base / DEFAULT_HEADROOM  # one trial fits; two side by side do not
    # resources.cpu 0.5: two trials fit on any machine with one CPU or more
    text = _run(spec, tmp_path / "runs", f"resources.memory_gb={memory_gb:.4f}", "resources.cpu=0.5",
                "search.max_concurrent=2")
    assert "divided among the 2 trial processes that run on it at once" in text, text
    assert "search.max_concurrent 2" in text and f"gives {memory_gb / 2:.3g} GB" in text
    alone = plan_sweep(spec, overrides=[f"resources.memory_gb={memory_gb:.4f}", "resources.cpu=0.5",
                                        "search.max_concurrent=1"])
    assert f"of {memory_gb:.1f} GB" in alone.data_lines[-1] and "divided" not in alone.data_lines[-1]


@pytest.mark.slow
def test_a_cluster_plan_says_it_used_the_drivers_machine(tmp_path: Path, smolvlm: Path) -> None:
    """The plan is made before Ray is joined: with --address and no resources.memory_gb, the line says
    the memory is this driver machine's and asks for resources.memory_gb; with it, nothing is added."""
    from dataclasses import replace

    from sweeps.driver.preflight import check_memory, load_batcher, plan_sweep
    from sweeps.tasks import get_task

    spec = _spec(tmp_path, smolvlm, params="eta: {type: float, low: 0.05, high: 0.2, target: loss.eta}")
    local = plan_sweep(spec, overrides=["search.max_concurrent=1"])
    assert local.local_ray and "driver machine" not in local.data_lines[-1]
    cfg = local.resolved.base_trial_config()
    batcher = load_batcher(cfg, str(spec), str(smolvlm))
    examples = get_task("counting").synthetic(2, seed=0, image_size=48)
    cluster = replace(local, address="10.0.0.1:6379")  # as `--address` would set it (nothing is joined here)
    line = check_memory(cluster, cfg, str(spec), batcher, examples)
    assert "available RAM of this driver machine, not a worker's" in line and "resources.memory_gb" in line, line
    given = plan_sweep(spec, overrides=["search.max_concurrent=1", "resources.memory_gb=64"])
    line = check_memory(replace(given, address="10.0.0.1:6379"), cfg, str(spec), batcher, examples)
    assert "driver machine" not in line and "of 64.0 GB (resources.memory_gb" in line, line


def test_a_resume_keeps_the_memory_plan_the_sweep_started_with(tmp_path: Path) -> None:
    """`batch_size: auto` and lowered evaluation chunks are planned against the memory free at the
    time: a resume pins what the record holds (re-planned, they could differ and the resume would be
    refused as an edited spec); values the spec gives itself stay the spec's, so editing them is
    still refused."""
    from sweeps.driver.service import memory_pins

    spec = tmp_path / "s.yaml"
    spec.write_text("name: pins\ntask: {name: counting}\nmodel: {path: tiny}\nloss: {family: hard}\nsearch_space: {params: {lr: {type: float, low: 1.0e-4, high: 1.0e-3, target: train.lr}}}\ntrain: {steps: 4, eval_every: 2, batch_size: auto}\n")
    record = {"overrides": [], "spec_params": {"train.batch_size": 4, "train.grad_accum": 8, "train.eval_batch": 16}}
    assert memory_pins(record, spec) == ["train.batch_size=4", "train.grad_accum=8", "train.eval_batch=16"]
    spec.write_text("name: pins\ntask: {name: counting}\nmodel: {path: tiny}\nloss: {family: hard}\nsearch_space: {params: {lr: {type: float, low: 1.0e-4, high: 1.0e-3, target: train.lr}}}\ntrain: {steps: 4, eval_every: 2, batch_size: 8, eval_batch: 16}\n")
    assert memory_pins(record, spec) == []
    # the record's overrides apply first: `train.batch_size=auto` typed on the command line
    assert memory_pins({**record, "overrides": ["train.batch_size=auto"]}, spec)[:2] == \
        ["train.batch_size=4", "train.grad_accum=8"]
