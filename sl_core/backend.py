"""Which engine computes the soft-label losses: the torch path (`sl_core._kernel`) or Triton kernels.

`backend="auto"` picks the Triton kernels (`sl_core._triton`) for float32 / bfloat16 / float16
logits on a CUDA device when the `triton` package imports, and the torch path otherwise (CPU, float64,
no triton). `"torch"` and `"triton"` force one. Triton is optional (`pip install "slsweep[gpu]"`) and is
imported only when a Triton backend is actually used, so sl_core works without it. On CPU tensors the
Triton kernels run only under Triton's interpreter (`TRITON_INTERPRET=1` set before triton is imported):
slow, meant for tests.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, Literal

import torch

__all__ = ["BACKENDS", "Backend", "check_backend", "resolve_backend", "triton_available", "triton_interpreting"]

Backend = Literal["auto", "torch", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Logit dtypes the Triton kernels take (they accumulate in float32; float64 stays on the torch path)."""


def check_backend(backend: Any) -> str:
    """One of BACKENDS; ValueError naming `backend` otherwise."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether `import triton` succeeds (checked once per process)."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # a broken install (missing driver libraries, ...) counts as absent
        return False
    return True


def triton_interpreting() -> bool:
    """Whether Triton kernels run in Triton's interpreter (TRITON_INTERPRET=1), which takes CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> Literal["torch", "triton"]:
    """The engine for logits of `dtype` on `device` under the requested `backend`.

    Raises:
        ValueError: backend="triton" with float64 logits, without the triton package, or on a
            non-CUDA device outside Triton's interpreter.
    """
    check_backend(backend)
    if backend == "torch":
        return "torch"
    on_device = device.type == "cuda" or triton_interpreting()
    if backend == "auto":
        usable = device.type == "cuda" and dtype in TRITON_DTYPES and triton_available()
        return "triton" if usable else "torch"
    if dtype not in TRITON_DTYPES:
        raise ValueError(f"backend='triton' takes float32, bfloat16 or float16 inputs, got {dtype} "
                         "(use backend='torch')")
    if not triton_available():
        raise ValueError("backend='triton' needs the triton package: pip install 'slsweep[gpu]' "
                         "(or use backend='torch')")
    if not on_device:
        raise ValueError(f"backend='triton' runs on CUDA tensors, got a {device.type} tensor (on CPU only "
                         "under Triton's interpreter, TRITON_INTERPRET=1); use backend='torch' or 'auto'")
    return "triton"


def rows_engine(name: Literal["torch", "triton"], target: Any) -> Any:
    """The per-row engine (`_kernel.TorchRows` or `_triton.TritonRows`) of a resolved backend for a
    `_kernel.SparseTarget`; imports triton only for "triton"."""
    if name == "triton":
        from sl_core._triton import TritonRows

        return TritonRows(target)
    from sl_core._kernel import TorchRows

    return TorchRows(target)
