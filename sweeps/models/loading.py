"""Load an image-text-to-text model and its processor from a hub id, a local folder or a tiny alias.

Real and tiny models go through the same `AutoModelForImageTextToText` / `AutoProcessor` path. The
options a fine-tuning user expects (dtype, device, frozen vision tower, gradient checkpointing, LoRA
via `peft`) are applied here so the trial code never needs to know the architecture.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from sweeps.errors import SlsweepError
from sweeps.models.tiny import DEFAULT_TINY_ARCH, TINY_ARCHS, tiny_model_path

TINY_ALIASES: dict[str, str] = {"tiny": DEFAULT_TINY_ARCH, **{f"tiny-{a}": a for a in TINY_ARCHS}}
# Where the vision encoder lives in the HF multimodal models (model.model.<attr> in transformers 5).
_VISION_ATTRS = ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder")
# LoRA on the language model's projections only: any module path mentioning the vision side is skipped.
DEFAULT_LORA_TARGETS = (
    r"^(?!.*(vision|visual|image_encoder|multi_modal_projector|connector|merger)).*"
    r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class ModelLoadError(SlsweepError):
    """The model or processor named by the user cannot be found or loaded."""


def resolve_model_path(name_or_path: str) -> str:
    """Map a tiny alias to its cached folder; check that a local path exists; pass hub ids through.

    Raises:
        ModelLoadError: a path-like name that does not exist or holds no `config.json`.
    """
    name = str(name_or_path).strip()
    if name in TINY_ALIASES:
        return str(tiny_model_path(TINY_ALIASES[name]))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model.path: {path} has no config.json (not a saved transformers model)")
        return str(path)
    looks_local = name.startswith((".", "/", "~")) or path.is_absolute() or name.count("/") > 1
    if looks_local or not _HUB_ID.match(name):
        raise ModelLoadError(
            f"model.path: {name!r} does not exist (a local folder, a hub id such as "
            f"'HuggingFaceTB/SmolVLM-256M-Instruct', or one of {', '.join(TINY_ALIASES)})"
        )
    return name


def load_model_and_processor(
    name_or_path: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    freeze_vision: bool = False,
    gradient_checkpointing: bool = False,
    lora: dict[str, Any] | None = None,
    compile_layers: bool = False,
) -> tuple[Any, Any]:
    """Load `(model, processor)` through `AutoModelForImageTextToText` and `AutoProcessor`.

    Args:
        name_or_path: hub id, local folder, or a name of `TINY_ALIASES` ("tiny", "tiny-<arch>" of `TINY_ARCHS`)
            (built into the cache on first use).
        device: where the model goes.
        dtype: weight dtype; None keeps float32 master weights (use autocast for bf16 compute).
        freeze_vision: stop gradients into the vision encoder.
        gradient_checkpointing: recompute activations in backward (non-reentrant).
        lora: LoRA options for `peft.LoraConfig` (r, lora_alpha, lora_dropout, target_modules, ...);
            default targets are the language model's attention and MLP projections.
        compile_layers: `torch.compile` each decoder layer of the language model (regional
            compilation: one graph reused by every layer, no recompilation when the answer length
            changes the number of logits kept).

    With a 16-bit `dtype`, the parameters that train stay float32 (master copies: AdamW updates of
    bf16 weights lose small steps); frozen ones (the base model under LoRA, a frozen vision tower)
    stay 16-bit. Compute runs under autocast (`sweeps.trial.run`).

    Returns:
        The model (in train mode) and its processor.

    Raises:
        ModelLoadError: unknown path or hub id, or a folder transformers cannot load.
        SlsweepError: `lora` given but `peft` is not installed.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.utils import logging as hf_logging

    # Trials load a model each; per-shard progress bars would flood the sweep's console.
    hf_logging.disable_progress_bar()
    source = resolve_model_path(name_or_path)
    if lora is not None:
        _require_peft()
    try:
        processor = AutoProcessor.from_pretrained(source)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype or torch.float32)
    except (OSError, ValueError, ImportError) as err:  # hub and offline misses are OSErrors
        raise ModelLoadError(f"model.path: cannot load {name_or_path!r}: {_first_line(err)}") from err
    model.to(device)
    contiguous_head_input(model)
    if freeze_vision:
        tower = find_vision_tower(model)
        if tower is None:
            raise ModelLoadError(f"model.freeze_vision: found no vision encoder in {type(model).__name__}")
        tower.requires_grad_(False)
    if gradient_checkpointing:
        enable_checkpointing(model)
    if lora is not None:
        model = apply_lora(model, lora)
    if dtype is not None and dtype != torch.float32:
        keep_trainable_float32(model)
    if compile_layers:
        compile_decoder_layers(model)
    model.train()
    return model, processor


def contiguous_head_input(model: torch.nn.Module) -> bool:
    """Hand the vocabulary projection (lm_head) a contiguous input; returns whether a head was found.

    With `logits_to_keep` the models slice the hidden states ([B, T, H] -> [B, k, H], a strided view).
    torch 2.13's CPU bf16 `linear` on such a view takes a slow path: a [2, 3, 1536] x [151936, 1536]
    projection measured 7.4 s strided against 0.06 s contiguous (the copy is B x k x H, small).
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Module):
        return False
    head.register_forward_pre_hook(_contiguous_first_arg)
    return True


def _contiguous_first_arg(_module: torch.nn.Module, args: tuple) -> tuple | None:
    # `is_contiguous()` ignores the strides of size-1 dimensions: a [1, k, H] slice of [1, T, H] keeps
    # batch stride T*H and passes it, yet oneDNN then repacks the whole bf16 weight (a second copy of
    # lm_head, 0.47 GB and 1.3 s on qwen2-vl-2b). Compare every stride with a fresh tensor's.
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    if x is None or x.stride() == _dense_strides(x.shape):
        return None
    return (torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x), *args[1:])


def _dense_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def keep_trainable_float32(model: torch.nn.Module) -> int:
    """Cast every trainable parameter to float32 in place (frozen ones keep their dtype); returns how many."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    return n


def compile_decoder_layers(model: torch.nn.Module) -> int:
    """`torch.compile` each layer of the language model's decoder (`nn.Module.compile`, in place).

    Returns:
        The number of layers compiled.

    Raises:
        ModelLoadError: no decoder layer list was found.
    """
    layers = find_decoder_layers(model)
    if layers is None:
        raise ModelLoadError(f"train.compile: found no decoder layers in {type(model).__name__}")
    for layer in layers:
        layer.compile()
    return len(layers)


def find_decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The language model's `layers` ModuleList (the largest ModuleList named `layers` outside the vision side)."""
    best: torch.nn.ModuleList | None = None
    for name, module in model.named_modules():
        if (isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] == "layers"
                and not any(v in name for v in ("vision", "visual", "image_encoder"))
                and (best is None or len(module) > len(best))):
            best = module
    return best


def find_vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    """The vision encoder of an HF multimodal model (model.model.vision_tower / visual / vision_model)."""
    for owner in (getattr(model, "model", None), model, getattr(getattr(model, "base_model", None), "model", None)):
        if owner is None:
            continue
        for attr in _VISION_ATTRS:
            tower = getattr(owner, attr, None)
            if isinstance(tower, torch.nn.Module):
                return tower
    return None


def enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing, non-reentrant; the KV cache is off while training."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False
    model.config.get_text_config().use_cache = False


def apply_lora(model: torch.nn.Module, options: dict[str, Any]) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters (`peft`); only adapter weights stay trainable."""
    peft = _require_peft()
    kwargs = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": DEFAULT_LORA_TARGETS, **options}
    try:
        config = peft.LoraConfig(**kwargs)
    except TypeError as err:
        raise SlsweepError(f"model.lora: {err}") from err
    return peft.get_peft_model(model, config)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters; `parameters()` already yields tied weights once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _require_peft() -> Any:
    try:
        import peft
    except ImportError as err:
        raise SlsweepError("model.lora: LoRA needs the optional package peft (pip install 'slsweep[lora]')") from err
    return peft


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
