"""build_tiny_model's shape knobs (what benchmarks/trial_throughput.py uses for the SmolVLM-256M shape)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from sweeps.models import Batcher, build_tiny_model, load_model_and_processor


@pytest.mark.slow
def test_idefics3_shape_knobs_build_a_model_that_trains(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m", "idefics3", image_size=64, patch_size=8, vision_hidden=64,
                            vision_layers=1, vision_heads=2, text_hidden=48, text_layers=1, text_intermediate=96,
                            num_heads=3, kv_heads=1, scale_factor=4, model_vocab_size=1000)
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.scale_factor == 4
    assert cfg.vision_config.num_attention_heads == 2
    assert (cfg.text_config.num_attention_heads, cfg.text_config.num_key_value_heads) == (3, 1)
    assert cfg.text_config.vocab_size == 1000  # padded beyond the tokenizer, like real vocabularies
    model, processor = load_model_and_processor(str(path))
    assert processor.image_seq_len == (64 // 8) ** 2 // 4**2
    batcher = Batcher(processor)
    from PIL import Image

    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue")]
    batch = batcher.train_batch(images, ["How many?", "How many?"], ["3", "12"])
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_merge_factor_must_divide_the_patch_grid(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        build_tiny_model(tmp_path / "m", "idefics3", image_size=48, patch_size=8, scale_factor=4)
