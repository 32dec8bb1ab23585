"""The built-in loss families: each is one builder here under `@builtin(...)`, the `loss_family`
declaration plug-ins use (name, parameters with defaults and bounds, tokens, one-line doc), registered
as it is defined. The order below is the order tables, the CLI and `LOSS_FAMILIES` list them.

Adding a built-in family is one decorated builder in this file (plus its test, and its row in
docs/tokenizers.md, which `tests/test_extending.py` asks for). A builder is called as
`builder(digit_ids, **params)` by `sl_core.families.build_loss` with the parameters validated and
defaults filled in, and returns `fn(logits [..., V], labels [...] shifted, *, num_items_in_batch=None)
-> scalar`. This module imports no torch: each builder imports its loss when it is first built, so
`sl_core.registry` (which imports this module) stays cheap for a CLI or a spec validator.
The losses themselves and their sources: `sl_core.loss`, `sl_core.peers`, `sl_core.numeric_peers`,
`sl_core.value_aware`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sl_core.registry import DIST2_DISTANCES, REQUIRED, ParamSpec, loss_family, register_loss_family

if TYPE_CHECKING:
    from sl_core.digits import NumericTokens
    from sl_core.families import LossFn

IGNORE_INDEX = -100

BUILTINS: list[Callable[..., Any]] = []
"""The built-in builders in declaration order (each carries its `family_spec`)."""


def builtin(**declaration: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`loss_family(**declaration)`, then register the builder as a built-in (its name reserved)."""
    declare = loss_family(**declaration)

    def wrap(builder: Callable[..., Any]) -> Callable[..., Any]:
        builder = declare(builder)
        register_loss_family(builder, _builtin=True)
        BUILTINS.append(builder)
        return builder
    return wrap


def _digit_shapes() -> tuple[str, ...]:
    from sl_core.psi import available_psi  # torch-free module; user shapes register there

    return available_psi()


def _value_kernels() -> tuple[str, ...]:
    from sl_core.psi import value_kernels  # the psi shapes declared by a kernel of the distance

    return value_kernels()


def _soft_params(psi: str, choices: Callable[[], tuple[str, ...]], psi_doc: str, shape_param: str,
                 shape_doc: str) -> tuple[ParamSpec, ...]:
    """The paper's knobs: eta, lam, a psi choice, that shape's parameter and the place exponent."""
    return (ParamSpec("eta", REQUIRED, low=0.0, high=1.0, doc="soft mass of the numeric targets"),
            ParamSpec("lam", 1.0, low=0.0, doc="weight of the numeric tokens' loss"),
            ParamSpec("psi", psi, kind="choice", choices=choices, doc=psi_doc),
            ParamSpec(shape_param, None, low=0.0, low_open=True, doc=shape_doc),
            ParamSpec("place_exponent", None, low=0.0,
                      doc="place-aware eta: less soft mass on less significant digits (None: off)"))


def _weight(name: str, default: float = 0.3, doc: str = "weight of the auxiliary term added to CE") -> ParamSpec:
    return ParamSpec(name, default, low=0.0, doc=doc)


def _ce(logits: Any, labels: Any, num_items_in_batch: Any) -> Any:
    from sl_core.peers import hard_cross_entropy

    return hard_cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, num_items_in_batch=num_items_in_batch)


@builtin(name="hard", tokens="none", doc="cross-entropy with one-hot targets")
def hard(digit_ids: None) -> LossFn:
    def hard(logits, labels, *, num_items_in_batch=None):
        return _ce(logits, labels, num_items_in_batch)
    return hard


@builtin(name="label_smoothing", tokens="none", doc="CE with uniform label smoothing over the vocabulary",
         params=(ParamSpec("smoothing", 0.1, low=0.0, high=1.0, high_open=True, doc="uniform mass over the vocabulary"),))
def label_smoothing(digit_ids: None, *, smoothing: float) -> LossFn:
    from sl_core.peers import label_smoothing_cross_entropy

    def label_smoothing(logits, labels, *, num_items_in_batch=None):
        return label_smoothing_cross_entropy(logits, labels, smoothing=smoothing, ignore_index=IGNORE_INDEX,
                                             num_items_in_batch=num_items_in_batch)
    return label_smoothing


@builtin(name="gaussian", doc="Gaussian soft CE on digit tokens (Zausinger et al., ICML 2025)",
         params=(ParamSpec("sigma", 1.0, low=0.0, doc="width in digit units (0: hard CE)"),))
def gaussian(digit_ids: list[list[int]], *, sigma: float) -> LossFn:
    from sl_core.peers import gaussian_soft_cross_entropy

    def gaussian(logits, labels, *, num_items_in_batch=None):
        return gaussian_soft_cross_entropy(logits, labels, digit_ids, sigma=sigma, ignore_index=IGNORE_INDEX,
                                           num_items_in_batch=num_items_in_batch)
    return gaussian


def _plus_term(term_name: str, weight_name: str) -> Callable[..., LossFn]:
    """A builder of CE + w * term(logits, labels, digit_ids, **term_kwargs), term from sl_core.peers / numeric_peers."""
    def build(digit_ids: Any, **p: Any) -> LossFn:
        from sl_core import numeric_peers, peers

        term = getattr(peers, term_name, None) or getattr(numeric_peers, term_name)
        w = p.pop(weight_name)

        def loss(logits, labels, *, num_items_in_batch=None):
            ce = _ce(logits, labels, num_items_in_batch)
            if w == 0:
                return ce
            return ce + w * term(logits, labels, digit_ids, ignore_index=IGNORE_INDEX,
                                 num_items_in_batch=num_items_in_batch, **p)
        loss.__name__ = term_name
        return loss
    build.__name__ = term_name
    return build


ntl_was = builtin(name="ntl_was", doc="CE + w * NTL-WAS (Number Token Loss)",
                  params=(_weight("ntl_weight"),))(_plus_term("ntl_was", "ntl_weight"))

ntl_mse = builtin(name="ntl_mse", doc="CE + w * NTL-MSE (Number Token Loss)",
                  params=(_weight("ntl_weight"),))(_plus_term("ntl_mse", "ntl_weight"))


@builtin(name="ntil", doc="CE + w * NTIL place-weighted EMD (ACL 2025)",
         params=(_weight("ntil_weight"), ParamSpec("digit_exp", 1.2, low=0.0, low_open=True, doc="place weight base")))
def ntil(digit_ids: list[list[int]], *, ntil_weight: float, digit_exp: float) -> LossFn:
    from sl_core.peers import ntil_emd

    def ntil(logits, labels, *, num_items_in_batch=None):
        ce = _ce(logits, labels, num_items_in_batch)
        if ntil_weight == 0:
            return ce
        emd = ntil_emd(logits, labels, digit_ids, digit_exp=digit_exp, ignore_index=IGNORE_INDEX,
                       num_items_in_batch=num_items_in_batch)
        # NTIL rescales the EMD term to the magnitude of CE (stop-gradient ratio), then weights it
        return ce + ntil_weight * (ce / (emd + 1e-10)).detach() * emd
    return ntil


@builtin(name="dist2", tokens="numeric", takes_backend=True,
         doc="DIST2Loss: CE to a target exp(-d(v, t) / tau) over the numeric tokens (ICLR 2026)",
         params=(ParamSpec("dist2_temperature", 1.0, low=0.0, low_open=True,
                           doc="temperature tau of the target exp(-d / tau)"),
                 ParamSpec("dist2_distance", "squared", kind="choice", choices=lambda: DIST2_DISTANCES,
                           doc="d(v, t): squared or absolute value difference")))
def dist2(digit_ids: NumericTokens, *, dist2_temperature: float, dist2_distance: str, backend: str) -> LossFn:
    from sl_core.numeric_peers import dist2_cross_entropy, dist2_psi_matrix

    tau, distance = dist2_temperature, dist2_distance
    dist2_psi_matrix(digit_ids, tau, distance)  # builds (and caches) the targets now

    def dist2(logits, labels, *, num_items_in_batch=None):
        return dist2_cross_entropy(logits, labels, digit_ids, temperature=tau, distance=distance,
                                   ignore_index=IGNORE_INDEX, num_items_in_batch=num_items_in_batch, backend=backend)
    return dist2


@builtin(name="smmd", tokens="numeric", doc="CE + w * Smooth MMD over the numeric tokens (ICML 2026)",
         params=(_weight("smmd_weight", 1.0, "weight of the SMMD term added to CE"),
                 ParamSpec("smmd_sigma", 2.0, low=0.0, low_open=True,
                           doc="Gaussian kernel bandwidth over (squashed) value distance"),
                 ParamSpec("smmd_alpha", None, low=0.0,
                           doc="weight of the smoothness term (None: 1 / (2 mean kernel degree))")))
def smmd(digit_ids: NumericTokens, *, smmd_weight: float, smmd_sigma: float, smmd_alpha: float | None) -> LossFn:
    from sl_core.numeric_peers import smmd_kernel, smmd_term

    w, sigma, alpha = smmd_weight, smmd_sigma, smmd_alpha
    smmd_kernel(digit_ids, sigma)  # builds (and caches) the kernel now

    def smmd(logits, labels, *, num_items_in_batch=None):
        ce = _ce(logits, labels, num_items_in_batch)
        if w == 0:
            return ce
        return ce + w * smmd_term(logits, labels, digit_ids, sigma=sigma, alpha=alpha, ignore_index=IGNORE_INDEX,
                                  num_items_in_batch=num_items_in_batch)
    return smmd


del_loss = builtin(name="del", doc="CE + w * Digit Entropy Loss (arXiv 2605.20369)",
                   params=(_weight("del_weight", 0.01, "weight of the DEL term added to CE"),))(
    _plus_term("del_term", "del_weight"))


@builtin(name="soft_label", takes_backend=True, doc="soft-label CE on digit tokens (Wang et al., ICCV 2025)",
         params=_soft_params("triangular", _digit_shapes, "psi shape over the digits", "psi_param",
                             "the shape's parameter (None: the shape's default)"))
def soft_label(digit_ids: list[list[int]], *, eta: float, lam: float, psi: str, psi_param: float | None,
               place_exponent: float | None, backend: str) -> LossFn:
    from sl_core.loss import soft_label_cross_entropy
    from sl_core.psi import psi_matrix

    psi_matrix(psi, psi_param)  # validates psi_param against the shape now

    def soft_label(logits, labels, *, num_items_in_batch=None):
        return soft_label_cross_entropy(logits, labels, digit_ids, eta=eta, lam=lam, psi=psi, psi_param=psi_param,
                                        ignore_index=IGNORE_INDEX, num_items_in_batch=num_items_in_batch,
                                        place_exponent=place_exponent, backend=backend)
    return soft_label


@builtin(name="value_aware", tokens="numeric", takes_backend=True,
         doc="value-aware soft-label CE for merged-digit tokenizers",
         params=_soft_params("laplace", _value_kernels, "value kernel over the numeric tokens", "scale",
                             "kernel scale in value units (None: the kernel's default)"))
def value_aware(digit_ids: NumericTokens, *, eta: float, lam: float, psi: str, scale: float | None,
                place_exponent: float | None, backend: str) -> LossFn:
    from sl_core.value_aware import value_aware_soft_label_cross_entropy, value_psi_matrix

    value_psi_matrix(digit_ids, psi, scale)  # validates scale against the kernel now

    def value_aware(logits, labels, *, num_items_in_batch=None):
        return value_aware_soft_label_cross_entropy(logits, labels, digit_ids, eta=eta, lam=lam, psi=psi,
                                                    scale=scale, ignore_index=IGNORE_INDEX,
                                                    num_items_in_batch=num_items_in_batch,
                                                    place_exponent=place_exponent, backend=backend)
    return value_aware
