"""sl_core: soft-label losses on numerical tokens (Wang et al., "Enhancing Numerical Prediction of MLLMs
with Soft Labeling", ICCV 2025), their peers (`peers`; DIST2Loss, SMMD and DEL in `numeric_peers`), and a
Hugging Face drop-in. Torch only.

Attributes load on first use (PEP 562), so `import sl_core.registry` or `sl_core.psi` (the loss
families and psi shapes as data) costs no torch import; `sl_core.build_loss` and the losses do.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "NumericTokens": "digits", "digit_token_ids": "digits", "digit_token_groups": "digits",
    "MarkedDigitsWarning": "digits",
    "numeric_token_values": "digits", "numeric_token_ids": "digits", "soft_target_coverage": "digits",
    "FAMILY_PARAMS": "families", "FAMILY_DEFAULTS": "families", "LOSS_FAMILIES": "families", "LossFn": "families",
    "build_loss": "families", "family_tokens": "families", "register_loss_family": "families",
    "loss_family": "registry",
    "LOSS_FAMILY_SPECS": "registry", "family_spec": "registry",
    "fused_linear_soft_label_cross_entropy": "fused",
    "make_compute_loss_func": "hf",
    "place_factors": "loss", "soft_label_cross_entropy": "loss",
    "gaussian_soft_cross_entropy": "peers", "hard_cross_entropy": "peers",
    "label_smoothing_cross_entropy": "peers", "ntil_emd": "peers", "ntl_mse": "peers", "ntl_was": "peers",
    "dist2_cross_entropy": "numeric_peers", "smmd_term": "numeric_peers", "del_term": "numeric_peers",
    "available_psi": "psi", "psi_matrix": "psi", "register_psi": "psi",
    "value_aware_soft_label_cross_entropy": "value_aware", "value_psi_matrix": "value_aware",
}
_SUBMODULES = ("families", "peers", "numeric_peers", "psi", "registry", "digits")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"sl_core.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sl_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sl_core.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
