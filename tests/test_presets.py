"""Real-size model presets (sweeps.models.presets, `slsweep make-model`) and the lean trial step on them.

Presets are built at one layer per tower (`--layers 1`): real widths, real vocabularies (49k to 263k
rows), real processors and tokenizers, random weights. Full-depth sizes are counted on the meta device.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from sweeps.cli import app
from sweeps.trial.coverage import loss_tokens, measure_coverage
from sweeps.models import Batcher, load_model_and_processor
from sweeps.models.loading import count_parameters
from sweeps.models.presets import (
    MARKER_FILE,
    PRESETS,
    build_preset_model,
    build_preset_processor,
    count_preset_parameters,
    preset_config,
)
from sweeps.tasks import get_task

# Published parameter counts (model cards / safetensors totals) the full-depth configs must reproduce.
PUBLISHED = {"smolvlm-256m": 256e6, "smolvlm-500m": 507e6, "qwen2-vl-2b": 2.21e9, "llava-1.5-7b": 7.06e9,
             "paligemma-3b": 2.92e9}
# Image tokens per example for a 48 px task image, as each real processor makes them.
IMAGE_TOKENS_48PX = {
    "smolvlm-256m": 17 * 64,   # upscaled to 2048 px: 4 x 4 tiles of 512 px + the global image, 64 tokens each
    "smolvlm-500m": 17 * 64,
    "qwen2-vl-2b": 4,          # dynamic resolution: 48 px -> 56 x 56 (min_pixels) -> 4 x 4 patches -> 2 x 2 merged
    "llava-1.5-7b": 576,       # CLIP ViT-L/14 at 336 px: 24 x 24 patches, CLS dropped
    "paligemma-3b": 256,       # SigLIP/14 at 224 px: 16 x 16
}
TRIAL_PRESETS = tuple(PUBLISHED)  # every preset of the issue, at one layer: a 2-step trial per loss


def _image_token_id(processor) -> int:
    token = getattr(processor, "image_token", None) or "<image>"
    return processor.tokenizer.convert_tokens_to_ids(token)


def test_registry_names_the_issue_presets() -> None:
    assert set(PUBLISHED) <= set(PRESETS)
    for preset in PRESETS.values():
        assert preset.source.startswith("https://huggingface.co/") and preset.hub_id in preset.source


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_full_depth_parameter_count_matches_the_published_size(name: str) -> None:
    n = count_preset_parameters(name)  # meta device: no memory
    assert n == pytest.approx(PUBLISHED[name], rel=0.01)


def test_layers_scale_depth_only() -> None:
    full = preset_config("qwen2-vl-2b")
    one = preset_config("qwen2-vl-2b", layers=1)
    assert (one.text_config.num_hidden_layers, one.vision_config.depth) == (1, 1)
    for key in ("hidden_size", "intermediate_size", "vocab_size", "num_attention_heads", "num_key_value_heads"):
        assert getattr(one.text_config, key) == getattr(full.text_config, key)
    assert one.vision_config.embed_dim == full.vision_config.embed_dim == 1280


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_processor_tokenizer_evaluation_and_coverage(name: str) -> None:
    """The real processor's image token count; the evaluation's decode -> parse path gives the answer
    back; soft labels reach every numeric answer token (coverage 1.0: single-digit tokenizers)."""
    processor, _line = build_preset_processor(name)
    batcher = Batcher(processor)
    img = Image.new("RGB", (48, 48), "red")
    answers = ["7", "12"]
    enc = batcher.train_batch([img, img], ["How many shapes?", "How many?"], answers)
    image_id = _image_token_id(processor)
    assert int((enc["input_ids"][0] == image_id).sum()) == IMAGE_TOKENS_48PX[name]
    task = get_task("counting")
    for row, answer in enumerate(answers):
        supervised = enc["labels"][row] != -100
        prompt_len = int(enc["attention_mask"][row].sum()) - int(supervised.sum())
        generated = torch.cat([enc["input_ids"][row][:prompt_len], enc["labels"][row][supervised]])[None]
        assert task.parse(batcher.decode(generated, prompt_len)[0]) == int(answer)
    tokens = loss_tokens("soft_label", processor.tokenizer, model=name)
    assert measure_coverage(tokens, processor.tokenizer, [batcher.answer_ids(a) for a in ("7", "12", "305")]) == 1.0


def test_qwen2_vl_dynamic_resolution_within_min_max_pixels() -> None:
    processor, _ = build_preset_processor("qwen2-vl-2b")
    batcher = Batcher(processor)
    counts = []
    for size in ((448, 448), (896, 448)):
        enc = batcher.generation_batch([Image.new("RGB", size)], ["How many?"])
        counts.append(int((enc["input_ids"][0] == _image_token_id(processor)).sum()))
    assert counts == [16 * 16, 32 * 16]  # 28 px per merged token, aspect ratio kept


def test_paligemma_prompt_is_its_prefix_format() -> None:
    processor, line = build_preset_processor("paligemma-3b")
    assert processor.chat_template is None and "257,216" in line
    enc = Batcher(processor).generation_batch([Image.new("RGB", (48, 48))], ["How many?"])
    ids = enc["input_ids"][0].tolist()
    assert ids[256] == processor.tokenizer.bos_token_id and ids[:256] == [_image_token_id(processor)] * 256


def test_make_model_bad_input_exits_2(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["make-model", "gpt-5", str(tmp_path / "m")])
    assert res.exit_code == 2 and "unknown model preset 'gpt-5'" in res.output and "qwen2-vl-2b" in res.output
    res = runner.invoke(app, ["make-model", "smolvlm-256m", str(tmp_path / "m"), "--tokenizer", str(tmp_path)])
    assert res.exit_code == 2 and "--tokenizer" in res.output
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------ built at one layer
@pytest.fixture(scope="module")
def trial_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("presets")
    out = {name: build_preset_model(name, root / name, layers=1) for name in TRIAL_PRESETS}
    yield out
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PUBLISHED))
def test_make_model_builds_saves_and_loads_offline(name: str, tmp_path: Path,
                                                   trial_models: dict[str, Path]) -> None:
    if name in trial_models:
        folder = trial_models[name]
    else:
        res = CliRunner().invoke(app, ["make-model", name, str(tmp_path / name), "--layers", "1"])
        assert res.exit_code == 0, res.output
        assert f"saved {name}" in res.output and "tokenizer:" in res.output
        folder = tmp_path / name
    info = json.loads((folder / MARKER_FILE).read_text())
    assert info["preset"] == name and info["layers"] == 1
    model, processor = load_model_and_processor(str(folder), dtype=torch.bfloat16)  # Auto classes, offline
    published = preset_config(name, layers=1)
    text = model.config.get_text_config()
    assert text.hidden_size == published.text_config.hidden_size and text.num_hidden_layers == 1
    assert model.get_output_embeddings().weight.shape[0] == max(published.text_config.vocab_size, len(processor.tokenizer))
    assert count_parameters(model) == info["parameters"]
    del model
    if name not in trial_models:
        shutil.rmtree(folder)


def _trial_config(tmp_path: Path, model: Path, family: str) -> Path:
    loss = "{family: soft_label, eta: 0.1}" if family == "soft_label" else "{family: hard}"
    path = tmp_path / "trial.yaml"
    path.write_text(f"""name: preset-{family}
task: {{name: counting, eval_size: 4, train_size: 16}}
model: {{path: {model}, dtype: bfloat16, gradient_checkpointing: true, freeze_vision: true, lora: {{r: 8}}}}
train: {{steps: 2, batch_size: 2, lr: 1.0e-4, eval_every: 2, max_new_tokens: 4, data_workers: 0}}
loss: {loss}
seed: 0
""")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("family", ["soft_label", "hard"])
@pytest.mark.parametrize("name", TRIAL_PRESETS)
def test_two_step_trial_with_lora_bf16_checkpointing(name: str, family: str, tmp_path: Path,
                                                     trial_models: dict[str, Path]) -> None:
    out = tmp_path / "result.json"
    res = CliRunner().invoke(app, ["trial", str(_trial_config(tmp_path, trial_models[name], family)), "-o", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["step"] == 2 and math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0
    # the evaluation ran and scored the four answers (random weights: unparseable is a real share)
    assert 0.0 <= metrics["unparseable"] <= 1.0 and 0.0 <= metrics["exact_match"] <= 1.0
    if family == "soft_label":
        assert metrics["soft_target_coverage"] == 1.0
    else:
        assert "soft_target_coverage" not in metrics


@pytest.mark.slow
def test_lora_bf16_trains_float32_adapters_only(trial_models: dict[str, Path]) -> None:
    from sweeps.config.trial_config import TrialConfig
    from sweeps.trial.run import setup_trial

    cfg = TrialConfig.from_mapping({
        "name": "lean", "task": {"name": "counting", "eval_size": 2, "train_size": 8},
        "model": {"path": str(trial_models["qwen2-vl-2b"]), "dtype": "bfloat16", "gradient_checkpointing": True,
                  "freeze_vision": True, "lora": {"r": 4}},
        "train": {"steps": 1, "batch_size": 2, "eval_every": 1}, "loss": {"family": "hard"}, "seed": 0,
    }, source="<test>")
    s = setup_trial(cfg, device=torch.device("cpu"))
    trainable = {n: p for n, p in s.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    frozen = [p for p in s.model.parameters() if not p.requires_grad]
    assert all(p.dtype == torch.bfloat16 for p in frozen)
    in_optimizer = {id(p) for g in s.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in trainable.values()}
    assert sum(p.numel() for p in trainable.values()) < 0.01 * sum(p.numel() for p in frozen)


@pytest.mark.slow
def test_paligemma_answer_is_a_causal_suffix(trial_models: dict[str, Path]) -> None:
    """PaliGemma's prefix is bidirectional: the answer must be marked as suffix (token_type_ids 1), or the
    prompt positions would see it. Changing the answer must leave every prompt position's logits alone."""
    model, processor = load_model_and_processor(str(trial_models["paligemma-3b"]), dtype=torch.bfloat16)
    model.eval()
    batcher = Batcher(processor)
    img = Image.new("RGB", (48, 48), "blue")
    logits = []
    for answer in ("3", "9"):
        enc = batcher.train_batch([img], ["How many?"], [answer])
        labels = enc.pop("labels")
        assert enc["token_type_ids"][0][labels[0] != -100].eq(1).all()
        with torch.no_grad():
            out = model(**enc, use_cache=False).logits[0]
        prompt_len = int((labels[0] == -100).sum())
        logits.append(out[:prompt_len].float())
    torch.testing.assert_close(logits[0], logits[1])


# ------------------------------------------------------------------------------------ the lean step
def test_lm_head_gets_a_contiguous_input() -> None:
    """logits_to_keep slices the hidden states; the head's input is made contiguous (torch's CPU bf16
    linear on a strided view was ~100x slower), and the logits are unchanged."""
    model, processor = load_model_and_processor("tiny")
    seen = []
    model.get_output_embeddings().register_forward_pre_hook(lambda _m, args: seen.append(args[0].is_contiguous()))
    enc = Batcher(processor).train_batch([Image.new("RGB", (48, 48))], ["How many?"], ["4"])
    enc.pop("labels")
    with torch.no_grad():
        kept = model(**enc, logits_to_keep=3, use_cache=False).logits
        full = model(**enc, use_cache=False).logits
    assert seen == [True, True]
    torch.testing.assert_close(kept, full[:, -3:])


@pytest.mark.slow
def test_compiled_decoder_layers_train_like_eager() -> None:
    from trial_helpers import tiny_trial_config
    from sweeps.trial.run import run_trial

    losses = []
    for compiled in (False, True):
        cfg = tiny_trial_config(steps=2, eval_every=2, eval_size=4, batch_size=4,
                                overrides={"train.compile": compiled, "train.data_workers": 0})
        losses.append(run_trial(cfg, checkpoint=False).history[-1]["train_loss"])
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
