"""Tiny offline models, loading through the Auto classes, and train/generation batching."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

import sl_core
from sweeps.errors import SlsweepError
from sweeps.models import (
    IGNORE_INDEX,
    TINY_ARCHS,
    Batcher,
    ModelLoadError,
    build_tiny_model,
    count_parameters,
    find_vision_tower,
    load_model_and_processor,
    tiny_model_path,
)

PROMPTS = ["How many shapes are in the image?", "Count the red circles, please.", "How many?"]
ANSWERS = ["7", "12", "0"]


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: build_tiny_model(root / arch, arch) for arch in TINY_ARCHS}


@pytest.fixture(scope="module", params=TINY_ARCHS)
def loaded(request: pytest.FixtureRequest, tiny_dirs: dict[str, Path]):
    model, processor = load_model_and_processor(str(tiny_dirs[request.param]))
    return request.param, model, processor


def test_auto_classes_load_every_tiny_arch(tiny_dirs: dict[str, Path]) -> None:
    expected = {"llava": "LlavaForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration",
                "idefics3": "Idefics3ForConditionalGeneration"}
    for arch, path in tiny_dirs.items():
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path)
        assert type(model).__name__ == expected[arch]
        assert processor.tokenizer.eos_token is not None and processor.tokenizer.pad_token is not None
        n = count_parameters(model)
        assert 2_000_000 <= n <= 5_000_000, f"{arch}: {n} parameters"
        # Qwen2-VL and Idefics3 prompts come from a chat template; llava uses the plain format.
        assert bool(processor.chat_template) == (arch != "llava")


def test_digits_are_single_tokens_and_never_merged(loaded) -> None:
    arch, _, processor = loaded
    tok = processor.tokenizer
    ids = sl_core.digit_token_ids(tok)
    assert [tok.convert_ids_to_tokens(i) for i in ids] == list("0123456789")
    assert len(tok("2025 13", add_special_tokens=False)["input_ids"]) == 7  # 4 digits, space, 2 digits
    for token in tok.get_vocab():
        if any(c in "0123456789" for c in token):
            assert token in "0123456789" or token.startswith("<"), f"{arch}: merged digit token {token!r}"
    text = "Answer: 12 apples, 3.5 kg!"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_labels_supervise_only_answer_and_eos(loaded) -> None:
    arch, _, processor = loaded
    batcher = Batcher(processor)
    batch = batcher.train_batch(_images(3), PROMPTS, ANSWERS)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    gen = batcher.generation_batch(_images(3), PROMPTS)
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    for row, answer in enumerate(ANSWERS):
        supervised = labels[row] != IGNORE_INDEX
        target = labels[row][supervised]
        assert torch.equal(target, ids[row][supervised])
        assert target[-1].item() == processor.tokenizer.eos_token_id
        assert processor.tokenizer.decode(target[:-1]) == answer
        # Supervised positions are one contiguous run right after the prompt; the rest is padding.
        positions = supervised.nonzero().flatten()
        assert torch.equal(positions, torch.arange(positions[0], positions[-1] + 1))
        assert mask[row, : positions[-1] + 1].all() and not mask[row, positions[-1] + 1:].any()
        assert not supervised[ids[row] == image_id].any()
        # The training prefix is exactly the (left-padded) generation prompt.
        prompt = gen["input_ids"][row][gen["attention_mask"][row].bool()]
        assert torch.equal(ids[row, : positions[0]], prompt)
    assert (gen["attention_mask"][:, -1] == 1).all(), "generation prompts must be left padded"


def test_one_training_step_and_greedy_generation(loaded) -> None:
    arch, model, processor = loaded
    torch.manual_seed(0)
    batcher = Batcher(processor, max_new_tokens=4)
    batch = batcher.train_batch(_images(3), PROMPTS, ANSWERS)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(3):
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{arch}: loss did not decrease: {losses}"
    changed = sum(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    assert changed > 0.9 * len(before), f"{arch}: only {changed}/{len(before)} tensors changed"

    model.eval()
    gen = batcher.generation_batch(_images(3), PROMPTS)
    with torch.no_grad():
        out = model.generate(**gen, max_new_tokens=4, do_sample=False)
    texts = batcher.decode(out, gen["input_ids"].shape[1])
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert out.shape[1] <= gen["input_ids"].shape[1] + 4
    assert batcher.generate(model, _images(2), PROMPTS[:2]) == texts[:2]


def test_decode_keeps_only_new_tokens_without_specials(loaded) -> None:
    _, _, processor = loaded
    batcher = Batcher(processor)
    tok = processor.tokenizer
    prompt = tok("Answer: ", add_special_tokens=False)["input_ids"]
    new = tok("42", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, batcher.pad_id]
    generated = torch.tensor([prompt + new])
    assert batcher.decode(generated, len(prompt)) == ["42"]


def test_freeze_vision_finds_the_tower_of_every_arch(tiny_dirs: dict[str, Path]) -> None:
    for path in tiny_dirs.values():
        model, _ = load_model_and_processor(str(path), freeze_vision=True)
        tower = find_vision_tower(model)
        assert tower is not None
        frozen = {id(p) for p in tower.parameters()}
        assert frozen and all(not p.requires_grad for p in tower.parameters())
        assert all(p.requires_grad for p in model.parameters() if id(p) not in frozen)
        assert count_parameters(model, trainable_only=True) < count_parameters(model)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dirs: dict[str, Path]) -> None:
    plain, processor = load_model_and_processor(str(tiny_dirs["llava"]))
    ckpt, _ = load_model_and_processor(str(tiny_dirs["llava"]), gradient_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in ckpt.modules())
    assert not any(getattr(m, "gradient_checkpointing", False) for m in plain.modules())
    batch = Batcher(processor).train_batch(_images(3), PROMPTS, ANSWERS)
    for model in (plain, ckpt):
        model(**batch).loss.backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        if a.grad is None:
            assert b.grad is None, name
        else:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_lora_wraps_language_model_only(tiny_dirs: dict[str, Path]) -> None:
    pytest.importorskip("peft")
    model, _ = load_model_and_processor(str(tiny_dirs["llava"]), lora={"r": 4})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("vision" in n for n in trainable)


def test_lora_without_peft_is_a_clear_error(tiny_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` raise ImportError
    with pytest.raises(SlsweepError, match="peft"):
        load_model_and_processor(str(tiny_dirs["llava"]), lora={"r": 4})


def test_missing_models_fail_fast_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_and_processor(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model_and_processor(str(tmp_path))
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="slsweep-test/does-not-exist"):
        load_model_and_processor("slsweep-test/does-not-exist")
    assert time.monotonic() - start < 30


def test_tiny_build_is_deterministic(tmp_path: Path, tiny_dirs: dict[str, Path]) -> None:
    again = build_tiny_model(tmp_path / "again", "llava")
    for name in ("tokenizer.json", "model.safetensors"):
        assert (again / name).read_bytes() == (tiny_dirs["llava"] / name).read_bytes(), name


def test_tiny_model_path_builds_once_under_concurrency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLSWEEP_CACHE_DIR", str(tmp_path))
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(tiny_model_path("llava"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] == tmp_path / "tiny-llava-v1"
    assert sorted(os.listdir(tmp_path)) == ["tiny-llava-v1"], "temporary build folders left behind"
    stamp = (results[0] / "model.safetensors").stat().st_mtime_ns
    assert tiny_model_path("llava") == results[0]
    assert (results[0] / "model.safetensors").stat().st_mtime_ns == stamp, "rebuilt a cached model"
    model, _ = load_model_and_processor("tiny")
    assert type(model).__name__ == "LlavaForConditionalGeneration"


def test_unknown_tiny_arch_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny model arch"):
        build_tiny_model(tmp_path, "gpt2")  # type: ignore[arg-type]
