"""Real-size model presets: published image-text-to-text architectures, random weights, built offline.

Memory, speed and whether the pipeline is correct (image splitting, dynamic resolution, image token
counts, vocabulary size through the loss and the evaluation) do not depend on the weights' values, so
a preset builds the published `config.json` sizes with random weights and the real model's processor
behaviour, and saves a folder that loads with `AutoModelForImageTextToText` / `AutoProcessor` like the
hub model. `layers` scales depth only (text and vision layers): widths, vocabulary and processor stay
real, so tests and quick checks run the real shapes cheaply.

`PRESETS` is the one registry (name -> `Preset`, in the torch-free `sweeps.models.preset_registry`);
sizes and their sources are tabulated in docs/models.md. Tokenizers: the real one where an npm
package ships it (`sweeps.models.npm_tokenizers`), else the project's byte-level BPE with isolated
digits (see each preset's `tokenizer_note`); any tokenizer folder can be given instead.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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

from sweeps.models import npm_tokenizers
from sweeps.models.preset_registry import MARKER_FILE, PRESETS, Preset, PresetError, get_preset
from sweeps.models.tiny import (
    _IDEFICS3_CHAT_TEMPLATE,
    _QWEN2_VL_CHAT_TEMPLATE,
    _SPECIALS,
    Qwen2VLProcessorNoVideo,
    build_tiny_tokenizer,
    greedy_generation_config,
    save_model_folder,
)

__all__ = ["MARKER_FILE", "PRESETS", "Preset", "PresetError", "build_preset_model", "build_preset_processor",
           "count_preset_parameters", "get_preset", "preset_config", "preset_image_tokens"]


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
