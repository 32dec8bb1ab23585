"""The memory planner (sweeps.trial.memory): the formula by hand, refusal through the real CLI before
Ray starts, and `train.batch_size: auto` against a measured run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeps.trial.memory import GB, BatchShape, ParamCounts, estimate_memory
from sweeps.models.presets import build_preset_model, preset_config


def test_estimate_matches_a_hand_computation() -> None:
    # smolvlm-256m's config: text h=576, I=1536, 30 layers, 9 heads / 3 KV heads, head_dim 64, V=49280;
    # LoRA-like counts, bf16 weights under bf16 autocast, no checkpointing, frozen vision tower.
    config = preset_config("smolvlm-256m")
    counts = ParamCounts(total=256_000_000, trainable=1_000_000, vision_trains=False)
    shape = BatchShape(tokens=100, answer=3, vision=1024, pixels=3 * 512 * 512)
    est = estimate_memory(config, counts, shape, micro_batch=2, dtype="bfloat16", autocast_bf16=True,
                          device_type="cuda")
    # bytes_r = bytes_c = 2; per token per text layer:
    # norms 2*(4*576 + 2*2*576) = 9216; attention 2*(9*64 + 2*3*64) + 2*2*9*64 = 4224; MLP 2*1536*4 = 12288
    per_layer = 9216 + 4224 + 12288
    text = 2 * 100 * 30 * per_layer + 2 * 100 * (4 + 2) * 576  # + embedding output and final norm
    # vision (frozen, no graph): one layer at a time, h=768, I=3072, 12 heads of 64, plain MLP
    # live tensors of one layer: residual input, norm output, q, k, v, attention output, fc1 and act(fc1)
    vision = 2 * 1024 * (2 * 768 + 2 * (768 + 3 * 12 * 64 + 12 * 64 + 3072 * 2))
    weights = 255_000_000 * 2 + 1_000_000 * 4
    logits = 2 * 3 * 49280 * (2 * 2 + 4)
    step = max(text + logits + 1_000_000 * 2, 1_000_000 * 4, vision)
    assert est.weights == weights and est.optimizer == 8_000_000 and est.grads == 4_000_000
    assert est.activations == text and est.logits == logits and est.parts["vision_transient"] == vision
    assert est.peak == weights + 8_000_000 + 2 * 3 * 512 * 512 * 4 + step
    # on CPU the gradients land on top of the forward's peak (glibc does not reuse the freed activations)
    cpu = estimate_memory(config, counts, shape, micro_batch=2, dtype="bfloat16", autocast_bf16=True,
                          device_type="cpu")
    forward = max(text + logits + 1_000_000 * 2, vision)
    assert cpu.peak == weights + 8_000_000 + 2 * 3 * 512 * 512 * 4 + forward + 4_000_000
    ckpt = estimate_memory(config, counts, shape, micro_batch=2, dtype="bfloat16", autocast_bf16=True,
                           checkpointing=True)
    assert ckpt.activations == 2 * 100 * (30 * 2 * 576 + per_layer) + 2 * 100 * 6 * 576


@pytest.fixture(scope="module")
def smolvlm_one_layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_preset_model("smolvlm-256m", tmp_path_factory.mktemp("presets") / "smolvlm", layers=1)


def _spec(tmp_path: Path, model: Path, **extra: str) -> Path:
    lines = ["name: mem", "task: {name: counting, eval_size: 2, image_size: 48}",
             f"model: {{path: {model}, freeze_vision: true}}",
             "train: {steps: 1, eval_every: 1, batch_size: auto, max_new_tokens: 2}",
             "loss: {family: soft_label, eta: 0.1}", "search_space: {params: {eta: {type: fixed, value: 0.1, target: loss.eta}}}",
             "search: {algorithm: random, num_samples: 1}", *[f"{k}: {v}" for k, v in extra.items()]]
    path = tmp_path / "mem.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_cli_refuses_a_preset_that_cannot_fit_before_ray_starts(tmp_path: Path, smolvlm_one_layer: Path) -> None:
    import ray

    from sweeps.cli import app

    spec = _spec(tmp_path, smolvlm_one_layer, resources="{cpu: 1, memory_gb: 0.5}")
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", str(spec), "--runs-dir", str(runs)])
    assert res.exit_code == 2, res.output
    text = res.output.strip()
    assert "\n" not in text and "Traceback" not in text
    assert "resources.memory_gb" in text and "GB at micro-batch 1" in text
    assert "model.lora" in text and "gradient_checkpointing" in text and "smaller images" in text
    assert not ray.is_initialized() and not (runs / "mlflow.db").exists()


@pytest.mark.slow
def test_auto_batch_fits_a_measured_run(smolvlm_one_layer: Path) -> None:
    from transformers import AutoConfig

    from sweeps.config.trial_config import TrialConfig
    from sweeps.trial.memory import DEFAULT_HEADROOM, batch_shape, param_counts, plan_trial_memory
    from sweeps.driver.preflight import load_batcher
    from sweeps.tasks import get_task
    from sweeps.trial.run import run_trial

    cfg = TrialConfig.model_validate(dict(
        task=dict(name="counting", eval_size=1, image_size=48),
        model=dict(path=str(smolvlm_one_layer), freeze_vision=True),
        train=dict(steps=1, eval_every=1, batch_size="auto", effective_batch_size=4, max_new_tokens=1,
                   data_workers=0), loss=dict(family="soft_label", eta=0.1)))
    model_config = AutoConfig.from_pretrained(smolvlm_one_layer)
    batcher = load_batcher(cfg, "test", str(smolvlm_one_layer))
    examples = get_task("counting").synthetic(4, seed=0, image_size=48)
    counts = param_counts(model_config, lora=None, freeze_vision=True)
    shape = batch_shape(batcher, examples, model_config)

    def est(b: int) -> int:
        return estimate_memory(model_config, counts, shape, micro_batch=b, grad_accum=2).peak

    # a device whose usable share lies between the estimates at micro-batch 2 and 3: auto picks 2,
    # grad_accum 2 keeps the effective batch of 4; micro-batch 3 is predicted not to fit
    memory = (est(2) + est(3)) / 2 / DEFAULT_HEADROOM
    chosen = plan_trial_memory(cfg, model_config=model_config, batcher=batcher, examples=examples,
                               memory=int(memory), source="test")
    assert (chosen.cfg.train.batch_size, chosen.cfg.train.grad_accum) == (2, 2)
    assert est(3) > memory * DEFAULT_HEADROOM
    result = run_trial(chosen.cfg)  # measured: growth of the peak resident set over loading
    peak = result.metrics["memory.peak_gb"] * GB
    assert 0 < peak <= memory, (peak / GB, memory / GB)
    assert result.metrics["memory.estimate_gb"] == pytest.approx(chosen.estimate.gb, rel=0.05)


def test_a_fixed_batch_that_cannot_fit_is_refused_naming_the_batch(tmp_path: Path) -> None:
    """Micro-batch 1 fits, the asked-for micro-batch does not: one line on train.batch_size, before Ray."""
    import ray

    from sweeps.cli import app

    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, ["run", "default", "train.batch_size=100000", "resources.memory_gb=4",
                                   "--runs-dir", str(runs)])
    text = res.output.strip()
    assert res.exit_code == 2 and "\n" not in text and "Traceback" not in text, res.output
    assert ": train.batch_size: " in text and "at micro-batch 100000" in text and "train.batch_size: auto" in text
    assert not ray.is_initialized() and not runs.exists()


@pytest.mark.slow
def test_the_answer_only_projection_gets_a_dense_input_at_micro_batch_one(smolvlm_one_layer: Path) -> None:
    """A [1, k, H] slice of [1, T, H] hidden states passes `is_contiguous()` with batch stride T*H; CPU
    bf16 `linear` then repacked the whole lm_head weight (a second 0.47 GB copy and 1.3 s per step on
    qwen2-vl-2b). The head must see the strides of a fresh tensor."""
    import sl_core
    import torch

    from sweeps.models import Batcher, load_model_and_processor
    from sweeps.tasks import get_task
    from sweeps.trial.coverage import loss_tokens
    from sweeps.trial.run import answer_loss

    model, processor = load_model_and_processor(str(smolvlm_one_layer), device=torch.device("cpu"))
    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    model.get_output_embeddings().register_forward_pre_hook(
        lambda _m, args: seen.append((tuple(args[0].shape), args[0].stride())))
    ex = get_task("counting").synthetic(1, seed=0, image_size=48)[0]
    batch = Batcher(processor, max_new_tokens=2).train_batch([ex.image], [ex.prompt], [ex.answer])
    labels = batch.pop("labels")
    loss_fn = sl_core.build_loss("hard", loss_tokens("hard", processor.tokenizer, model="smolvlm").tokens)
    answer_loss(model, batch, labels, loss_fn, num_items=int((labels != -100).sum())).backward()
    (shape, stride), = seen
    assert shape[0] == 1 and shape[1] < labels.shape[1]  # the answer positions only
    assert stride == (shape[1] * shape[2], shape[2], 1)


def test_eval_estimate_matches_a_hand_computation() -> None:
    from sweeps.trial.memory import estimate_eval

    config = preset_config("smolvlm-256m")
    counts = ParamCounts(total=256_000_000, trainable=1_000_000, vision_trains=False)
    shape = BatchShape(tokens=100, answer=3, vision=1024, pixels=3 * 512 * 512)
    ev = estimate_eval(config, counts, shape, chunk=4, max_new_tokens=8, dtype="bfloat16", autocast_bf16=True)
    # no graph, gradients freed; the optimizer's states stay; chunk x (the vision tower's one-layer transient
    # or the prefill: KV cache of 30 layers x (k, v) x 3 KV heads x 64, image features, one text layer, logits)
    vision = 4 * 1024 * (2 * 768 + 2 * (768 + 3 * 12 * 64 + 12 * 64 + 3072 * 2))
    kv = 4 * (100 + 8) * 30 * 2 * 3 * 64 * 2
    prefill = kv + 4 * 100 * 576 * 2 + 4 * 100 * (2 * 576 + 2 * (576 + 15 * 64 + 9 * 64 + 1536 * 3)) + 4 * 49280 * 4
    fixed = 255_000_000 * 2 + 1_000_000 * 4 + 8_000_000 + 4 * 3 * 512 * 512 * 4
    assert ev.peak == fixed + max(vision, prefill) == sum(ev.terms.values())
    assert ev.chunk == 4 and estimate_eval(config, counts, shape, chunk=8, max_new_tokens=8).peak > ev.peak


def _gb_terms(text: str) -> list[float]:
    """The numbers of a summary's "name 0.12" terms (the phase totals before a colon left out)."""
    import re

    return [float(v) for v in re.findall(r"[a-z] (\d+\.\d+)(?=,|;|$)", text)]


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_every_term_of_the_printed_estimate_adds_up_to_it(device_type: str) -> None:
    from sweeps.trial.memory import estimate_eval

    config = preset_config("smolvlm-256m")
    counts = ParamCounts(total=256_000_000, trainable=256_000_000, vision_trains=False)
    shape = BatchShape(tokens=1145, answer=3, vision=17408, pixels=17 * 3 * 512 * 512)
    for micro in (1, 8):  # the frozen vision tower's transient, then the activations, set the peak
        est = estimate_memory(config, counts, shape, micro_batch=micro, device_type=device_type)
        assert sum(_gb_terms(est.summary())) == pytest.approx(est.gb, abs=0.006 * len(est.terms))
        assert sum(est.terms.values()) == est.peak
        for chunk in (1, 64):  # training, then evaluation, is the larger
            both = est.with_eval(estimate_eval(config, counts, shape, chunk=chunk, max_new_tokens=8))
            train, evaluation = both.summary().split("; evaluating ")
            assert sum(_gb_terms(train)) == pytest.approx(both.train_peak / GB, abs=0.006 * len(est.terms))
            assert sum(_gb_terms(evaluation)) == pytest.approx(both.eval.gb, abs=0.006 * len(both.eval.terms))
            assert both.peak == max(est.peak, both.eval.peak)


def test_the_hint_when_lora_checkpointing_and_bf16_are_all_on_names_what_is_left() -> None:
    from sweeps.trial.memory import fit_hint

    config = preset_config("smolvlm-256m")
    counts = ParamCounts(total=256_000_000, trainable=1_000_000, vision_trains=False, lora=True)
    shape = BatchShape(tokens=1145, answer=3, vision=17408, pixels=17 * 3 * 512 * 512)
    est = estimate_memory(config, counts, shape, micro_batch=1, dtype="bfloat16", autocast_bf16=True,
                          checkpointing=True)
    hint = fit_hint(lambda *_flags: est, est.peak // 2, lora=True, checkpointing=True, bf16=True)
    assert "with ;" not in hint and "already on" in hint, hint
    assert "smaller images" in hint and "resources.workers" in hint and "more memory" in hint


def test_lora_with_checkpointing_keeps_a_graph_through_the_frozen_vision_tower() -> None:
    config = preset_config("smolvlm-256m")
    shape = BatchShape(tokens=1145, answer=3, vision=17408, pixels=17 * 3 * 512 * 512)
    kw = dict(micro_batch=1, dtype="bfloat16", autocast_bf16=True, device_type="cpu")
    lora = ParamCounts(total=256_000_000, trainable=1_000_000, vision_trains=False, lora=True)
    full = ParamCounts(total=256_000_000, trainable=170_000_000, vision_trains=False)
    vision = preset_config("smolvlm-256m").vision_config
    h, layers = vision.hidden_size, vision.num_hidden_layers
    # peft's input-require-grads hook: the frozen tower's checkpointed layer inputs plus one recomputed layer
    with_graph = estimate_memory(config, lora, shape, checkpointing=True, **kw)
    without = estimate_memory(config, lora, shape, checkpointing=False, **kw)
    assert with_graph.parts["vision_transient"] == 0 and without.parts["vision_transient"] > 0
    text = with_graph.parts["text_activations"]
    assert with_graph.activations - text > 17408 * layers * 2 * h
    # no adapters (peft not involved): the frozen tower runs without a graph, checkpointing or not
    assert estimate_memory(config, full, shape, checkpointing=True, **kw).parts["vision_transient"] > 0


def _trial_config(path: Path, **train: object) -> object:
    """A 1-step counting trial of the model at `path`; `eval_size` and `model` (a mapping of model
    options) go to their sections, the rest to `train`."""
    from sweeps.config.trial_config import TrialConfig

    return TrialConfig.model_validate(dict(
        task=dict(name="counting", eval_size=train.pop("eval_size", 8)),
        model=dict(path=str(path), freeze_vision=True, **train.pop("model", {})),
        train={**dict(steps=1, eval_every=1, batch_size=1, max_new_tokens=2, data_workers=0), **train},
        loss=dict(family="soft_label", eta=0.1)))


@pytest.mark.slow
def test_the_evaluation_chunk_is_planned_against_a_measured_run(smolvlm_one_layer: Path) -> None:
    """Evaluation generates up to 64 examples at once whatever the micro-batch: at real image sizes
    (17 tiles per example) its vision tower outgrows the training step, so the plan lowers the chunk."""
    from transformers import AutoConfig

    from sweeps.driver.preflight import load_batcher
    from sweeps.tasks import get_task
    from sweeps.trial.data import TaskData
    from sweeps.trial.memory import (DEFAULT_HEADROOM, batch_shape, estimate_eval, param_counts,
                                     plan_trial_memory)
    from sweeps.trial.run import run_trial

    cfg = _trial_config(smolvlm_one_layer)
    model_config = AutoConfig.from_pretrained(smolvlm_one_layer)
    batcher = load_batcher(cfg, "test", str(smolvlm_one_layer))
    examples = TaskData(get_task("counting"), cfg.task, cfg.seed).held_out
    counts = param_counts(model_config, lora=None, freeze_vision=True)
    shape = batch_shape(batcher, examples, model_config)
    train = estimate_memory(model_config, counts, shape, micro_batch=1).peak

    def ev(n: int) -> int:
        return estimate_eval(model_config, counts, shape, chunk=n, max_new_tokens=2).peak

    assert train < ev(2) < ev(3)  # evaluating two at once already needs more than a training step
    memory = int((ev(2) + ev(3)) / 2 / DEFAULT_HEADROOM)
    plan = plan_trial_memory(cfg, model_config=model_config, batcher=batcher, examples=examples, memory=memory,
                             source="test")
    assert plan.cfg.train.eval_batch == 2 and plan.estimate.peak == ev(2)
    assert "evaluating 2 at once" in plan.line(), plan.line()
    result = run_trial(plan.cfg, checkpoint=False)
    peak = result.metrics["memory.peak_gb"] * GB
    assert 0 < peak <= memory, (peak / GB, memory / GB)
    assert result.metrics["memory.estimate_gb"] == pytest.approx(plan.estimate.gb, rel=0.05)
    # the evaluation's peak, measured: never under by more than 15%, over by up to 30% (on CPU the
    # peak is the resident set's growth in this long-lived test process, whose heap freed by earlier
    # tests a trial reuses unseen: a full-suite run measured 2.08 GB for an estimate of 2.45, as the
    # LoRA test below saw; alone it is within 15%)
    assert 0.85 * peak <= plan.estimate.peak <= 1.3 * peak, (plan.estimate.peak / GB, peak / GB)
    # the chunk is the one thing changed: 64 at once (all 8) would not fit
    assert ev(8) > memory * DEFAULT_HEADROOM


@pytest.mark.slow
def test_an_evaluation_that_cannot_fit_one_example_is_refused(tmp_path: Path, smolvlm_one_layer: Path) -> None:
    from sweeps.driver.preflight import plan_sweep
    from sweeps.errors import SpecError
    from sweeps.trial.memory import DEFAULT_HEADROOM

    spec = _spec(tmp_path, smolvlm_one_layer)
    one = ["train.batch_size=1", "search.max_concurrent=1"]
    roomy = plan_sweep(spec, overrides=["resources.memory_gb=1000", *one]).data_lines[-1]
    train_gb = float(roomy.split("training step ")[1].split(":")[0])
    # a KV cache for 3M new tokens (1536 bytes per token in the one float32 layer: 4.6 GB) outgrows the
    # room that training has twice over
    memory = f"resources.memory_gb={2 * train_gb / DEFAULT_HEADROOM:.4f}"
    plan_sweep(spec, overrides=[memory, *one])  # training fits
    with pytest.raises(SpecError) as info:
        plan_sweep(spec, overrides=[memory, *one, "train.max_new_tokens=3000000"])
    text = str(info.value)
    assert "\n" not in text and "resources.memory_gb" in text and "evaluating one example needs" in text, text
    assert "kv cache" in text and "smaller images" in text


@pytest.mark.slow
def test_lora_checkpointing_bf16_estimate_against_a_measured_run(smolvlm_one_layer: Path) -> None:
    """LoRA + gradient checkpointing: peft's input-require-grads hook makes the frozen vision tower keep
    a graph; the estimate counts it and is within 15% of the measured peak (it was a third under)."""
    from dataclasses import replace

    from transformers import AutoConfig

    from sweeps.driver.preflight import load_batcher
    from sweeps.tasks import get_task
    from sweeps.trial.data import TaskData
    from sweeps.trial.memory import batch_shape, param_counts
    from sweeps.trial.run import run_trial

    cfg = _trial_config(smolvlm_one_layer, eval_size=1, batch_size=2,
                        model=dict(lora={}, dtype="bfloat16", gradient_checkpointing=True))
    result = run_trial(cfg, checkpoint=False)
    peak, estimate = result.metrics["memory.peak_gb"], result.metrics["memory.estimate_gb"]
    # never under by more than 15% (it was a third under); over by up to 30%: on CPU the peak is the
    # resident set's growth in this long-lived test process, whose heap freed by earlier tests a trial
    # reuses unseen (one full-suite run measured 1.21 GB for an estimate of 1.51; the run before it passed within 15%)
    assert 0.85 * peak <= estimate <= 1.3 * peak, (estimate, peak)
    model_config = AutoConfig.from_pretrained(smolvlm_one_layer)
    counts = param_counts(model_config, lora={}, freeze_vision=True)
    assert counts.lora
    examples = TaskData(get_task("counting"), cfg.task, cfg.seed)
    shape = batch_shape(load_batcher(cfg, "test", str(smolvlm_one_layer)),
                        examples.batch(0, 0, 2) + examples.held_out, model_config)
    no_graph = estimate_memory(model_config, replace(counts, lora=False), shape, micro_batch=2, dtype="bfloat16",
                               autocast_bf16=True, checkpointing=True, device_type="cpu")
    assert no_graph.gb < 0.85 * peak, (no_graph.gb, peak)  # without the vision graph: well under
