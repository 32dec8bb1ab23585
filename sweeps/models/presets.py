"""Real-size model presets: published image-text-to-text architectures, random weights, built offline.

Memory, speed and whether the pipeline is correct (image splitting, dynamic resolution, image token
counts, vocabulary size through the loss and the evaluation) do not depend on the weights' values, so
a preset builds the published `config.json` sizes with random weights and the real model's processor
behaviour, and saves a folder that loads with `AutoModelForImageTextToText` / `AutoProcessor` like the
hub model. `layers` scales depth only (text and vision layers): widths, vocabulary and processor stay
real, so tests and quick checks run the real shapes cheaply.

`PRESETS` is the one registry (name -> `Preset`); sizes and their sources are tabulated in
docs/models.md. Tokenizers: the real one where an npm package ships it (`sweeps.models.npm_tokenizers`),
else the project's byte-level BPE with isolated digits (see each preset's `tokenizer_note`); any
tokenizer folder can be given instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from transformers import (
    AutoConfig,
    AutoModelForImageTextToText,
    AutoTokenizer,
    Idefics3Processor,
    LlavaProcessor,
    PaliGemmaProcessor,
    PreTrainedTokenizerBase,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from sweeps.errors import SlsweepError
from sweeps.models import npm_tokenizers
from sweeps.models.tiny import (
    _IDEFICS3_CHAT_TEMPLATE,
    _QWEN2_VL_CHAT_TEMPLATE,
    _SPECIALS,
    Qwen2VLProcessorNoVideo,
    build_tiny_tokenizer,
    greedy_generation_config,
    save_model_folder,
)

__all__ = ["PRESETS", "Preset", "PresetError", "build_preset_model", "build_preset_processor",
           "count_preset_parameters", "get_preset", "preset_config", "preset_image_tokens"]

MARKER_FILE = "slsweep_preset.json"  # written beside config.json: which preset, depth and tokenizer


class PresetError(SlsweepError):
    """An unknown preset, a bad --layers value or a tokenizer folder the preset cannot use."""


@dataclass(frozen=True)
class Preset:
    """One published model's sizes and processor settings.

    Attributes:
        name: the preset's name (`slsweep make-model NAME`).
        hub_id: the published model whose config.json the sizes come from.
        family: the processor family: "idefics3", "qwen2_vl", "llava" or "paligemma".
        config: the published config.json values (model_type, text_config, vision_config, ...);
            token ids are set from the tokenizer when building.
        image: the published preprocessor settings the processor is built with.
        tokenizer: npm tokenizer package name (`sweeps.models.npm_tokenizers.NAMES`) or None for the
            project's byte-level BPE with isolated digits.
        tokenizer_note: how the tokenizer relates to the real model's.
        source: where the sizes were read.
    """

    name: str
    hub_id: str
    family: str
    config: dict[str, Any]
    image: dict[str, Any]
    tokenizer: str | None
    tokenizer_note: str
    source: str


_SIGLIP_B16_512 = dict(model_type="idefics3_vision", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, image_size=512, patch_size=16, layer_norm_eps=1e-6)
_SMOLVLM_TOKENIZER = ("SmolLM2's own tokenizer (49,152 + 128 added = 49,280) ships in no npm package; the preset uses "
                      "the project's byte-level BPE with isolated digits (as SmolLM2 splits digits) and the Idefics3 "
                      "special tokens, with the embedding and lm_head at the published 49,280 rows")


def _smolvlm(name: str, hub_id: str, hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> Preset:
    return Preset(
        name=name, hub_id=hub_id, family="idefics3",
        config=dict(
            model_type="idefics3", scale_factor=4, tie_word_embeddings=False,
            text_config=dict(model_type="llama", hidden_size=hidden, intermediate_size=intermediate,
                             num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                             head_dim=64, vocab_size=49280, max_position_embeddings=8192, rms_norm_eps=1e-5,
                             rope_theta=100000.0, tie_word_embeddings=False),
            vision_config=dict(_SIGLIP_B16_512)),
        # preprocessor_config.json: resize the longest edge to 2048, split into 512 px tiles (+ a global image)
        image=dict(longest_edge=2048, tile=512),
        tokenizer=None, tokenizer_note=_SMOLVLM_TOKENIZER,
        source=f"https://huggingface.co/{hub_id}/blob/main/config.json (and preprocessor_config.json)")


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _smolvlm("smolvlm-256m", "HuggingFaceTB/SmolVLM-256M-Instruct", 576, 1536, 30, 9, 3),
    _smolvlm("smolvlm-500m", "HuggingFaceTB/SmolVLM-500M-Instruct", 960, 2560, 32, 15, 5),
    Preset(
        name="qwen2-vl-2b", hub_id="Qwen/Qwen2-VL-2B-Instruct", family="qwen2_vl",
        config=dict(
            model_type="qwen2_vl", tie_word_embeddings=True,
            text_config=dict(model_type="qwen2_vl_text", hidden_size=1536, intermediate_size=8960,
                             num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                             vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
                             tie_word_embeddings=True,
                             rope_parameters=dict(rope_type="default", rope_theta=1000000.0,
                                                  mrope_section=[16, 24, 24])),
            # vision_config.json lists hidden_size 1536 and patch 14; the rest are Qwen2VLVisionConfig's
            # defaults, which are the released 675M vision tower's (depth 32, embed_dim 1280, 16 heads)
            vision_config=dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4,
                               patch_size=14, spatial_merge_size=2, temporal_patch_size=2)),
        # preprocessor_config.json: min_pixels 56*56, max_pixels 28*28*16384, patch 14, merge 2
        image=dict(min_pixels=3136, max_pixels=12845056, patch_size=14, merge_size=2, temporal_patch_size=2),
        tokenizer="qwen3",
        tokenizer_note="Qwen3's tokenizer (same byte-level BPE family and special tokens as Qwen2's, 151,669 "
                       "tokens; the model keeps the published 151,936 rows)",
        source="https://huggingface.co/Qwen/Qwen2-VL-2B-Instruct/blob/main/config.json (and preprocessor_config.json)"),
    Preset(
        name="llava-1.5-7b", hub_id="llava-hf/llava-1.5-7b-hf", family="llava",
        config=dict(
            model_type="llava", tie_word_embeddings=False, projector_hidden_act="gelu",
            vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=576,
            text_config=dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                             num_attention_heads=32, num_key_value_heads=32, vocab_size=32064,
                             max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False),
            vision_config=dict(model_type="clip_vision_model", hidden_size=1024, intermediate_size=4096,
                               num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
                               projection_dim=768)),
        # CLIP ViT-L/14-336: shortest edge 336, centre crop 336 -> 24 x 24 = 576 patches (CLS dropped)
        image=dict(size=336),
        tokenizer="llama2",
        tokenizer_note="LLaMA-2's tokenizer (32,000), the real one: LLaVA-1.5's Vicuna-1.5 uses it; <image> and "
                       "<pad> are added as llava-hf does (the model keeps the published 32,064 rows)",
        source="https://huggingface.co/llava-hf/llava-1.5-7b-hf/blob/main/config.json"),
    Preset(
        name="paligemma-3b", hub_id="google/paligemma-3b-pt-224", family="paligemma",
        config=dict(
            model_type="paligemma", projection_dim=2048,
            text_config=dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18,
                             num_attention_heads=8, num_key_value_heads=1, head_dim=256, vocab_size=257216),
            vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                               num_hidden_layers=27, num_attention_heads=16, image_size=224, patch_size=14,
                               projection_dim=2048, vision_use_head=False)),
        # SigLIP so400m/14 at 224 px -> 16 x 16 = 256 image tokens
        image=dict(size=224),
        tokenizer="gemma3",
        tokenizer_note="Gemma-3's tokenizer (262,145 tokens + <image>; PaliGemma's own Gemma tokenizer has 257,216 "
                       "rows with its 1,024 <loc> and 128 <seg> tokens): the built model has ~5k more vocabulary rows "
                       "than the published one (~10M parameters more at width 2048)",
        source="https://huggingface.co/google/paligemma-3b-pt-224/blob/main/config.json"),
)}


def get_preset(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        PresetError: unknown name (the message lists the presets).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise PresetError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}") from None


# ------------------------------------------------------------------------------------------ configs
def _depth_keys(preset: Preset) -> tuple[str, str]:
    """(text, vision) config keys holding each tower's number of layers."""
    return "num_hidden_layers", "depth" if preset.family == "qwen2_vl" else "num_hidden_layers"


def preset_config(name: str, *, layers: int | None = None, vocab_size: int | None = None,
                  token_ids: dict[str, Any] | None = None):
    """The transformers config of a preset (a `PretrainedConfig`), optionally at reduced depth.

    Args:
        name: the preset.
        layers: text and vision layers each (None: the published depth).
        vocab_size: embedding / lm_head rows (None: the published vocabulary; never fewer).
        token_ids: top-level and text-config token ids to set (image_token_id, pad_token_id, ...).

    Raises:
        PresetError: unknown preset or layers < 1.
    """
    preset = get_preset(name)
    if layers is not None and layers < 1:
        raise PresetError(f"--layers: must be >= 1, got {layers}")
    cfg = json.loads(json.dumps(preset.config))  # deep copy
    text, vision = cfg["text_config"], cfg["vision_config"]
    text_key, vision_key = _depth_keys(preset)
    if layers is not None:
        text[text_key] = layers
        vision[vision_key] = layers
    if vocab_size is not None:
        text["vocab_size"] = max(vocab_size, text["vocab_size"])
    for key, value in (token_ids or {}).items():
        cfg[key] = value
        if key in ("pad_token_id", "eos_token_id", "bos_token_id"):
            text[key] = value
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


def count_preset_parameters(name: str, *, layers: int | None = None, vocab_size: int | None = None) -> int:
    """Parameters of a preset, counted on the meta device (no memory is allocated).

    Tied embeddings count once (`parameters()` yields a shared tensor once).
    """
    config = preset_config(name, layers=layers, vocab_size=vocab_size)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return sum(p.numel() for p in model.parameters())


def preset_image_tokens(name: str) -> int:
    """Image tokens per image tile the published model uses (SmolVLM: per 512 px tile; Qwen2-VL: at 448 px)."""
    preset = get_preset(name)
    v = preset.config["vision_config"]
    if preset.family == "idefics3":
        return (v["image_size"] // v["patch_size"]) ** 2 // preset.config["scale_factor"] ** 2
    if preset.family == "qwen2_vl":
        return (448 // (v["patch_size"] * v["spatial_merge_size"])) ** 2
    return (v["image_size"] // v["patch_size"]) ** 2


# --------------------------------------------------------------------------------------- tokenizers
def _load_tokenizer(preset: Preset, folder: str | Path | None) -> tuple[PreTrainedTokenizerBase, str]:
    """The preset's tokenizer with its family's special tokens; and a line saying which one it is."""
    if folder is None and preset.tokenizer is None:
        tok = build_tiny_tokenizer("idefics3")
        return tok, preset.tokenizer_note
    if folder is None:
        try:
            folder = npm_tokenizers.tokenizer_folder(preset.tokenizer)  # type: ignore[arg-type]
        except RuntimeError as exc:
            raise PresetError(f"{preset.name}: its tokenizer ({preset.tokenizer}) is not cached and cannot be fetched "
                              f"({exc}); pass --tokenizer FOLDER") from None
        what = preset.tokenizer_note
    else:
        what = f"tokenizer of {folder} (given with --tokenizer)"
    try:
        tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad folder
        raise PresetError(f"--tokenizer: {folder}: cannot load a tokenizer ({type(exc).__name__}: {exc})") from None
    _add_family_tokens(preset.family, tok)
    if tok.eos_token_id is None:
        raise PresetError(f"--tokenizer: {folder}: the tokenizer has no eos token; answers need one")
    return tok, what


def _add_family_tokens(family: str, tok: PreTrainedTokenizerBase) -> None:
    """Add the special tokens the family's processor and model need (image placeholder, pad, ...)."""
    if family in _SPECIALS:  # idefics3, qwen2_vl: the same tokens as the tiny models of that architecture
        spec = _SPECIALS[family]
        needed = [spec["image"], *spec["extra"], spec["eos"]]
    else:  # llava, paligemma: "<image>" (llava-hf also adds "<pad>")
        needed = ["<image>"] + (["<pad>"] if family == "llava" else [])
    vocab = tok.get_vocab()
    missing = [t for t in needed if t not in vocab or t not in tok.all_special_tokens]
    if missing:
        tok.add_tokens(missing, special_tokens=True)
    if family == "idefics3" and tok.convert_tokens_to_ids("<end_of_utterance>") != tok.eos_token_id:
        tok.eos_token = "<end_of_utterance>"  # SmolVLM's answers end with it
    if family == "llava" and tok.pad_token is None:
        tok.pad_token = "<pad>"
    if family == "paligemma":
        tok.chat_template = None  # PaliGemma has no chat template: "<image><bos>{prompt}\n" by its processor
    if family in ("llava", "paligemma"):
        tok.image_token = "<image>"  # PaliGemmaProcessor and LlavaProcessor read it (Gemma-3's own is another)
        tok.image_token_id = tok.convert_tokens_to_ids("<image>")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"


# --------------------------------------------------------------------------------------- processors
_LLAVA_CHAT_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf: "USER: <image>\n{question} ASSISTANT:"
    "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% endif %}{% endfor %}"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] + ' ' }}{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _idefics3_processor(preset: Preset, tok):
    ip = Idefics3ImageProcessorPil(size={"longest_edge": preset.image["longest_edge"]},
                                   max_image_size={"longest_edge": preset.image["tile"]}, do_image_splitting=True)
    return Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=preset_image_tokens(preset.name),
                             chat_template=_IDEFICS3_CHAT_TEMPLATE)


def _qwen2_vl_processor(preset: Preset, tok):
    im = preset.image
    ip = Qwen2VLImageProcessorPil(size={"shortest_edge": im["min_pixels"], "longest_edge": im["max_pixels"]},
                                  patch_size=im["patch_size"], temporal_patch_size=im["temporal_patch_size"],
                                  merge_size=im["merge_size"])
    return Qwen2VLProcessorNoVideo(image_processor=ip, tokenizer=tok, chat_template=_QWEN2_VL_CHAT_TEMPLATE)


def _llava_processor(preset: Preset, tok):
    side = preset.image["size"]
    ip = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    return LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=preset.config["vision_config"]["patch_size"],
                          vision_feature_select_strategy=preset.config["vision_feature_select_strategy"],
                          num_additional_image_tokens=1, image_token="<image>", chat_template=_LLAVA_CHAT_TEMPLATE)


def _paligemma_processor(preset: Preset, tok):
    side = preset.image["size"]
    ip = SiglipImageProcessorPil(size={"height": side, "width": side})
    ip.image_seq_length = preset_image_tokens(preset.name)  # PaliGemmaProcessor reads it (preprocessor_config.json)
    return PaliGemmaProcessor(image_processor=ip, tokenizer=tok)


_PROCESSORS: dict[str, Callable[[Preset, Any], Any]] = {
    "idefics3": _idefics3_processor, "qwen2_vl": _qwen2_vl_processor, "llava": _llava_processor,
    "paligemma": _paligemma_processor,
}


def _token_ids(family: str, tok) -> dict[str, Any]:
    ids: dict[str, Any] = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id,
                           "bos_token_id": tok.bos_token_id}
    if family == "qwen2_vl":
        for key, token in (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                           ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")):
            ids[key] = tok.convert_tokens_to_ids(token)
    else:
        ids["image_token_id"] = tok.convert_tokens_to_ids("<image>")
    return ids


def build_preset_processor(name: str, *, tokenizer: str | Path | None = None) -> tuple[Any, str]:
    """The preset's processor (image processor + tokenizer with the family's special tokens), no model.

    Returns:
        (processor, a line saying which tokenizer it holds and how it relates to the real model's).

    Raises:
        PresetError: unknown preset, or a tokenizer that cannot be loaded or fetched.
    """
    preset = get_preset(name)
    tok, line = _load_tokenizer(preset, tokenizer)
    return _PROCESSORS[preset.family](preset, tok), line  # may add tokens (PaliGemma's <loc>/<seg>)


# ------------------------------------------------------------------------------------------- build
def build_preset_model(name: str, path: str | Path, *, layers: int | None = None, tokenizer: str | Path | None = None,
                       seed: int = 0, dtype: torch.dtype = torch.bfloat16) -> Path:
    """Build a preset with random weights and save model, processor and tokenizer into `path`.

    Nothing is half-written: the folder is assembled beside `path` and its files moved in at the end.

    Args:
        name: a preset of `PRESETS`.
        path: output folder (created; files with the same names are replaced).
        layers: text and vision layers each (None: the published depth; a full-depth 7B model needs
            ~14 GB in bfloat16).
        tokenizer: a tokenizer folder to use instead of the preset's.
        seed: torch seed of the random initialisation.
        dtype: weight dtype of the saved checkpoint (the published ones are 16-bit).

    Returns:
        The folder, as a `Path`.

    Raises:
        PresetError: unknown preset, layers < 1, or a tokenizer that cannot be loaded or fetched.
    """
    preset = get_preset(name)
    processor, tokenizer_line = build_preset_processor(name, tokenizer=tokenizer)
    tok = processor.tokenizer
    config = preset_config(name, layers=layers, vocab_size=len(tok), token_ids=_token_ids(preset.family, tok))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    model.generation_config = greedy_generation_config(tok)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_model_folder(model, processor, tmp)
        marker = {"preset": name, "hub_id": preset.hub_id, "layers": layers, "seed": seed,
                  "parameters": sum(p.numel() for p in model.parameters()), "tokenizer": tokenizer_line,
                  "source": preset.source}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        del model
        path.mkdir(exist_ok=True)
        for item in tmp.iterdir():
            os.replace(item, path / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
