"""The real-size model presets as data (torch-free): names, published sizes, processor settings,
tokenizers and sources (`PRESETS`, the one registry; tabulated in docs/models.md).

Building a preset (`sweeps.models.presets`) needs torch and transformers; naming, listing and
checking one (`slsweep make-model NAME` with a wrong name) does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweeps.errors import SlsweepError, did_you_mean

__all__ = ["MARKER_FILE", "PRESETS", "Preset", "PresetError", "get_preset"]

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
        raise PresetError(f"unknown model preset {name!r}{did_you_mean(name, list(PRESETS))} "
                          f"(presets: {', '.join(PRESETS)})") from None
