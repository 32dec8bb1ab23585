"""Models for trials: tiny offline models, loading real ones, and train/generation batching."""

from sweeps.models.batching import IGNORE_INDEX, Batcher
from sweeps.models.loading import (
    TINY_ALIASES,
    ModelLoadError,
    count_parameters,
    find_vision_tower,
    load_model_and_processor,
    resolve_model_path,
)
from sweeps.models.tiny import TINY_ARCHS, build_tiny_model, build_tiny_tokenizer, tiny_model_path

__all__ = [
    "IGNORE_INDEX",
    "TINY_ALIASES",
    "TINY_ARCHS",
    "Batcher",
    "ModelLoadError",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "count_parameters",
    "find_vision_tower",
    "load_model_and_processor",
    "resolve_model_path",
    "tiny_model_path",
]
