"""A tiny llava-style model around a real tokenizer: the pipeline with a real vocabulary, offline.

Researchers ask "does my tokenizer work with soft labels?" before they pay for a GPU sweep. This
builds the project's tiny llava model (`build_tiny_model`), swaps in the given tokenizer (a folder
with `tokenizer.json`, e.g. a real model's), adds an image token when the tokenizer has none,
resizes the embeddings, and keeps the tokenizer's chat template on the processor, as a LLaVA-style
model assembled from a text LLM does. The result loads with `from_pretrained` like any model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, LlavaProcessor

from sweeps.errors import SlsweepError
from sweeps.models.tiny import build_tiny_model, greedy_generation_config, save_model_folder

__all__ = ["build_tiny_model_around", "AROUND_ARCH", "IMAGE_TOKEN"]

AROUND_ARCH = "llava"  # the tiny architecture (sweeps.models.tiny.TINY_ARCHS) this wraps around a tokenizer
IMAGE_TOKEN = "<image>"


def build_tiny_model_around(path: str | Path, tokenizer: str | Path, *, seed: int = 0, text_hidden: int = 64,
                            vision_hidden: int = 64, chat_template: bool = True, **sizes: Any) -> Path:
    """Build a tiny llava model whose vocabulary is `tokenizer`'s, and save it into `path`.

    Args:
        path: output folder.
        tokenizer: a folder loadable with `AutoTokenizer.from_pretrained` (offline).
        seed: random initialisation seed.
        text_hidden, vision_hidden: widths (small by default: a 262k vocabulary x 64 is 17M weights).
        chat_template: keep the tokenizer's chat template on the processor (False: plain prompts).
        **sizes: other `build_tiny_model` sizes (text_layers, image_size, ...).

    Returns:
        The folder, as a `Path`.

    Raises:
        SlsweepError: the tokenizer folder cannot be loaded or has no eos token.
    """
    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad folder
        raise SlsweepError(f"--tokenizer: {tokenizer}: cannot load a tokenizer ({type(exc).__name__}: {exc})") from None
    if tok.eos_token_id is None:
        raise SlsweepError(f"--tokenizer: {tokenizer}: the tokenizer has no eos token; answers need one")
    # Special, so text "<image>" is one token even where the vocabulary holds it as a plain word (Gemma-3).
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="slsweep-tiny-") as tmp:
        build_tiny_model(tmp, AROUND_ARCH, seed=seed, text_hidden=text_hidden, vision_hidden=vision_hidden, **sizes)
        model = AutoModelForImageTextToText.from_pretrained(tmp)
        base = AutoProcessor.from_pretrained(tmp)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.resize_token_embeddings(len(tok), mean_resizing=False)
    model.config.text_config.pad_token_id = tok.pad_token_id
    model.config.text_config.eos_token_id = tok.eos_token_id
    model.generation_config = greedy_generation_config(tok)
    processor = LlavaProcessor(image_processor=base.image_processor, tokenizer=tok, patch_size=base.patch_size,
                               vision_feature_select_strategy=base.vision_feature_select_strategy,
                               num_additional_image_tokens=base.num_additional_image_tokens,
                               image_token=IMAGE_TOKEN,
                               chat_template=tok.chat_template if chat_template else None)
    # LlavaProcessor prefers the tokenizer's own image token (Gemma-3: "<image_soft_token>") over ours.
    model.config.image_token_id = tok.convert_tokens_to_ids(processor.image_token)
    path.mkdir(parents=True, exist_ok=True)
    save_model_folder(model, processor, path)
    return path
