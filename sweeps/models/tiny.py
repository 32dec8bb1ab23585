"""Tiny randomly initialised image-text-to-text models, built offline and saved with `save_pretrained`.

Three architectures prove that the trial code is not tied to one processor or chat format:

- `llava` (the default sweep's model): SigLIP-style vision tower + Qwen2-style text model,
  `LlavaProcessor`, no chat template (the batcher uses a plain "Question/Answer" format). Defaults:
  48 px images, patch 12 -> 16 image tokens, vision 128 x 2 layers, text 256 x 2 layers (MLP 768),
  tied embeddings, 2.3M parameters, ~0.09 s per training step at batch 32 on 2 CPU threads.
- `qwen2_vl`: Qwen2-VL (patch merger, M-RoPE), `Qwen2VLProcessor` (less its video processor, see
  `Qwen2VLProcessorNoVideo`) with a Qwen-style chat template.
- `idefics3`: Idefics3 / SmolVLM (pixel shuffle), `Idefics3Processor` with a SmolVLM-style chat template.

All share one tokenizer design: a byte-level BPE (every character is representable, decoding restores
spaces) whose pre-tokenizer isolates every digit, so "0".."9" are single tokens and no merged digit
token exists. The tokenizer has no post-processor: nothing (no eos) is appended behind a prompt.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoProcessor,
    GenerationConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    Idefics3VisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
    SiglipVisionConfig,
)
# The PIL image processors: the default (torchvision) ones need torchvision, which is optional.
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from sweeps.store.paths import cache_dir

TinyArch = str  # a name of TINY_ARCHS
DEFAULT_TINY_ARCH = "llava"  # `model.path: tiny` and `slsweep make-tiny-model` without --arch
# Bump when a default below changes, so a stale cached model is not reused.
TINY_VERSION = "v1"

# Text the BPE merges are learnt from: prompts of the built-in tasks and generic VQA phrasing. Digits
# never merge (see `_byte_level_digit_tokenizer`), so this only shortens word sequences.
_MERGE_CORPUS = """\
Question: How many shapes are in the image? Answer with a single number.
Answer: How many objects are there? How many circles, squares and triangles can you see?
Count the shapes in the picture. How many red, green, blue, yellow, white, black items are shown?
What is the bounding box of the rectangle? Give the box as x1 y1 x2 y2 coordinates of the object.
Give the bounding box of the square in the image. Where is the object located? left top right bottom
What is the value of the bar in the chart? Read the value of the highest bar. What is the largest value?
Which label has the smallest value in the plot? The chart shows a bar plot with labels and values.
Answer the question using a single word or phrase. Describe the image. What color is the shape?
You are a helpful assistant. The user asks a question about the image and the assistant answers it.
User: Assistant: user assistant system
"""


def _byte_level_digit_tokenizer(special_tokens: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE whose digits are isolated before merging, trained on `_MERGE_CORPUS`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so every line passes the trainer's min-frequency filter equally.
    tok.train_from_iterator(_MERGE_CORPUS.splitlines() * 4, trainer)
    return tok


# Per-architecture special tokens (pad, eos, image placeholder, and what the processor requires).
_SPECIALS: dict[str, dict[str, Any]] = {
    "llava": {"pad": "<pad>", "eos": "</s>", "image": "<image>", "extra": []},
    "qwen2_vl": {
        "pad": "<|endoftext|>",
        "eos": "<|im_end|>",
        "image": "<|image_pad|>",
        "extra": ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"],
    },
    "idefics3": {
        "pad": "<pad>",
        "eos": "<end_of_utterance>",
        "image": "<image>",
        "extra": ["<fake_token_around_image>", "<global-img>", "<|im_start|>"]
        + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)],
    },
}

_QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_IDEFICS3_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}{% else %}"
    "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}{% elif line['type'] == 'image' %}<image>{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_tokenizer(arch: TinyArch = "llava", *, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """The offline tokenizer of a tiny model (a `transformers` fast tokenizer).

    Args:
        arch: which architecture's special tokens to include.
        vocab_size: BPE vocabulary size including the 256 byte tokens and the special tokens.
    """
    _check_arch(arch)
    spec = _SPECIALS[arch]
    specials = [spec["pad"], spec["eos"], spec["image"], *spec["extra"]]
    tok = _byte_level_digit_tokenizer(specials, vocab_size)
    kwargs: dict[str, Any] = {"pad_token": spec["pad"], "eos_token": spec["eos"]}
    if arch == "llava":
        # LlavaProcessor reads `tokenizer.image_token` when present.
        kwargs["extra_special_tokens"] = {"image_token": spec["image"]}
    else:
        kwargs["additional_special_tokens"] = [spec["image"], *spec["extra"]]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    fast.padding_side = "right"
    return fast


def build_tiny_model(
    path: str | Path,
    arch: TinyArch = "llava",
    *,
    image_size: int = 48,
    seed: int = 0,
    patch_size: int | None = None,
    vision_hidden: int = 128,
    vision_layers: int = 2,
    text_hidden: int = 256,
    text_layers: int = 2,
    text_intermediate: int = 768,
    num_heads: int = 4,
    vocab_size: int = 512,
    vision_heads: int | None = None,
    kv_heads: int | None = None,
    scale_factor: int = 2,
    model_vocab_size: int | None = None,
) -> Path:
    """Build a tiny randomly initialised image-text-to-text model and its processor into `path`.

    The folder loads back with `AutoProcessor.from_pretrained(path)` and
    `AutoModelForImageTextToText.from_pretrained(path)`, like any hub model.

    Args:
        path: output folder (created; existing files with the same names are overwritten).
        arch: "llava", "qwen2_vl" or "idefics3".
        image_size: side of the square images the processor resizes to.
        seed: torch seed of the random initialisation.
        patch_size: vision patch size; default 12 for llava (16 image tokens at 48 px) and 8 for
            qwen2_vl/idefics3 (their 2x2 merge / pixel shuffle gives 9 image tokens at 48 px).
        vision_hidden, vision_layers: vision tower width and depth.
        text_hidden, text_layers, text_intermediate: text model width, depth and MLP width.
        num_heads: attention heads in both towers (the text model's when vision_heads is given).
        vocab_size: tokenizer vocabulary size (bytes + specials + BPE merges).
        vision_heads: the vision tower's attention heads (default: num_heads).
        kv_heads: the text model's key/value heads (default: num_heads // 2, at least 1).
        scale_factor: idefics3's pixel-shuffle factor (image tokens = patches / scale_factor**2).
        model_vocab_size: rows of the text model's embedding and lm_head, >= the tokenizer's size
            (real models pad their vocabulary; default: the tokenizer's size).

    Returns:
        The folder, as a `Path`.
    """
    _check_arch(arch)
    if patch_size is None:
        patch_size = 12 if arch == "llava" else 8
    if image_size % patch_size:
        raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
    merge = scale_factor if arch == "idefics3" else 2
    if arch != "llava" and (image_size // patch_size) % merge:
        raise ValueError(f"{arch} merges {merge}x{merge} patches: image_size/patch_size must be a multiple of "
                         f"{merge}, got {image_size}/{patch_size}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tiny_tokenizer(arch, vocab_size=vocab_size)
    builder = _BUILDERS[arch]
    sizes = dict(
        image_size=image_size,
        patch_size=patch_size,
        vision_hidden=vision_hidden,
        vision_layers=vision_layers,
        text_hidden=text_hidden,
        text_layers=text_layers,
        text_intermediate=text_intermediate,
        num_heads=num_heads,
        vision_heads=vision_heads or num_heads,
        kv_heads=kv_heads or max(1, num_heads // 2),
        model_vocab_size=max(model_vocab_size or 0, len(tokenizer)),
    )
    if arch == "idefics3":
        sizes["scale_factor"] = scale_factor
    # Seed a forked CPU generator so building does not disturb the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = builder(tokenizer, **sizes)
    model.generation_config = greedy_generation_config(tokenizer)
    save_model_folder(model, processor, path)
    return path


def save_model_folder(model: Any, processor: Any, path: Path) -> None:
    """`save_pretrained` of model and processor into `path`, without transformers' "Writing model
    shards" progress bar (a command's output stays its own lines; an error stays one line)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path)
        processor.save_pretrained(path)
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def greedy_generation_config(tokenizer) -> GenerationConfig:
    """Greedy decoding that stops at the tokenizer's eos and pads with its pad token (no bos forced)."""
    return GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=None, do_sample=False)


def tiny_model_path(arch: str = "llava") -> Path:
    """The cached tiny model folder `cache_dir()/tiny-{arch}-v1`, built with defaults when missing.

    Safe under concurrent callers (e.g. Ray trials): the model is built into a temporary sibling
    folder and renamed into place atomically, so a half-built folder is never visible.
    """
    _check_arch(arch)
    final = cache_dir() / f"tiny-{arch}-{TINY_VERSION}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build_tiny_model(tmp, arch)  # type: ignore[arg-type]
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process won the race (the target exists and is not empty): use its copy.
            if not (final / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


class Qwen2VLProcessorNoVideo(Qwen2VLProcessor):
    """`Qwen2VLProcessor` for images only: no video processor.

    transformers cannot build `Qwen2VLProcessor` without torchvision (its video processor needs it),
    and tiny models never see video. Registered with `AutoProcessor` on import of `sweeps.models`, so
    `AutoProcessor.from_pretrained` loads a tiny qwen2_vl folder once this module is imported.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


# A string key: processor_class_from_name finds registered classes by name, and a string key does not
# remap any real config class to this processor.
AutoProcessor.register("slsweep-tiny-qwen2_vl", Qwen2VLProcessorNoVideo, exist_ok=True)


def _check_arch(arch: str) -> None:
    if arch not in TINY_ARCHS:
        raise ValueError(f"unknown tiny model arch {arch!r}; choose one of {', '.join(TINY_ARCHS)}")


def _text_kwargs(tokenizer, text_hidden: int, text_layers: int, text_intermediate: int, num_heads: int,
                 kv_heads: int, model_vocab_size: int) -> dict:
    return dict(
        vocab_size=model_vocab_size,
        hidden_size=text_hidden,
        intermediate_size=text_intermediate,
        num_hidden_layers=text_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )


def _build_llava(tokenizer, *, image_size, patch_size, vision_hidden, vision_layers, text_hidden, text_layers,
                 text_intermediate, num_heads, vision_heads, kv_heads, model_vocab_size):
    n_image_tokens = (image_size // patch_size) ** 2
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=vision_hidden,
            intermediate_size=4 * vision_hidden,
            num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads,
            image_size=image_size,
            patch_size=patch_size,
            vision_use_head=False,  # the pooling head is unused by Llava (it takes patch features)
        ),
        text_config=Qwen2Config(**_text_kwargs(tokenizer, text_hidden, text_layers, text_intermediate, num_heads, kv_heads, model_vocab_size)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=n_image_tokens,
        # SigLIP has no CLS token: keep every patch, and use the last layer (not -2) so no layer is wasted.
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    model = LlavaForConditionalGeneration(config)
    image_processor = SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=0,
    )
    return model, processor


def _build_qwen2_vl(tokenizer, *, image_size, patch_size, vision_hidden, vision_layers, text_hidden, text_layers,
                 text_intermediate, num_heads, vision_heads, kv_heads, model_vocab_size):
    head_dim = text_hidden // num_heads
    # M-RoPE splits the rotary half-dimension into (temporal, height, width) sections.
    half = head_dim // 2
    mrope = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    text = _text_kwargs(tokenizer, text_hidden, text_layers, text_intermediate, num_heads, kv_heads, model_vocab_size)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=dict(
            depth=vision_layers,
            embed_dim=vision_hidden,
            hidden_size=text_hidden,
            num_heads=vision_heads,
            patch_size=patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    model = Qwen2VLForConditionalGeneration(config)
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels},
        patch_size=patch_size,
        temporal_patch_size=2,
        merge_size=2,
    )
    processor = Qwen2VLProcessorNoVideo(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=_QWEN2_VL_CHAT_TEMPLATE
    )
    return model, processor


def _build_idefics3(tokenizer, *, image_size, patch_size, vision_hidden, vision_layers, text_hidden, text_layers,
                    text_intermediate, num_heads, vision_heads, kv_heads, model_vocab_size, scale_factor):
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    config = Idefics3Config(
        vision_config=Idefics3VisionConfig(
            hidden_size=vision_hidden,
            intermediate_size=4 * vision_hidden,
            num_hidden_layers=vision_layers,
            num_attention_heads=vision_heads,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=LlamaConfig(**_text_kwargs(tokenizer, text_hidden, text_layers, text_intermediate, num_heads, kv_heads, model_vocab_size)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        tie_word_embeddings=True,
    )
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=False,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=_IDEFICS3_CHAT_TEMPLATE,
    )
    return model, processor


# The one registry of tiny architectures (name -> builder; each name also has its `_SPECIALS` row):
# loading's `tiny-<arch>` aliases, `slsweep make-tiny-model --arch` and the tests read TINY_ARCHS.
_BUILDERS: dict[str, Any] = {"llava": _build_llava, "qwen2_vl": _build_qwen2_vl, "idefics3": _build_idefics3}
TINY_ARCHS: tuple[str, ...] = tuple(_BUILDERS)
assert set(_SPECIALS) == set(TINY_ARCHS), "each tiny architecture needs its _SPECIALS row"
