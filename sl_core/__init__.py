"""sl_core: soft-label losses on numerical tokens (Wang et al., "Enhancing Numerical Prediction of MLLMs
with Soft Labeling", ICCV 2025), their peers, and a Hugging Face drop-in. Torch only."""

from sl_core import families, peers, psi
from sl_core.digits import NumericTokens, digit_token_ids, numeric_token_values
from sl_core.families import FAMILY_PARAMS, LOSS_FAMILIES, LossFn, build_loss
from sl_core.fused import fused_linear_soft_label_cross_entropy
from sl_core.hf import make_compute_loss_func
from sl_core.loss import place_factors, soft_label_cross_entropy
from sl_core.peers import (
    gaussian_soft_cross_entropy, hard_cross_entropy, label_smoothing_cross_entropy, ntil_emd, ntl_mse, ntl_was,
)
from sl_core.psi import available_psi, psi_matrix, register_psi
from sl_core.value_aware import value_aware_soft_label_cross_entropy, value_psi_matrix

__all__ = [
    "FAMILY_PARAMS", "LOSS_FAMILIES", "LossFn", "NumericTokens", "available_psi", "build_loss",
    "digit_token_ids", "families", "fused_linear_soft_label_cross_entropy", "gaussian_soft_cross_entropy",
    "hard_cross_entropy", "label_smoothing_cross_entropy", "make_compute_loss_func", "ntil_emd", "ntl_mse",
    "ntl_was", "numeric_token_values", "peers", "place_factors", "psi", "psi_matrix", "register_psi",
    "soft_label_cross_entropy", "value_aware_soft_label_cross_entropy", "value_psi_matrix",
]
