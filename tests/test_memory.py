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
