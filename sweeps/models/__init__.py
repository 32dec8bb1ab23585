"""Models for trials: tiny offline models, loading real ones, and train/generation batching.

The names below are imported on first use (PEP 562), so `sweeps.models.preset_registry` and other
torch-free modules of this room load without torch or transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sweeps import lazy_exports

if TYPE_CHECKING:
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

_WHERE = {
    "IGNORE_INDEX": "batching", "Batcher": "batching",
    "TINY_ALIASES": "loading", "ModelLoadError": "loading", "count_parameters": "loading",
    "find_vision_tower": "loading", "load_model_and_processor": "loading", "resolve_model_path": "loading",
    "TINY_ARCHS": "tiny", "build_tiny_model": "tiny", "build_tiny_tokenizer": "tiny", "tiny_model_path": "tiny",
}

__all__ = sorted(_WHERE)


__getattr__ = lazy_exports(__name__, _WHERE)
