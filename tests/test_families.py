"""build_loss: every family builds, composes its parts as documented, and rejects bad configs by name."""

from __future__ import annotations

import pytest
import torch

from sl_core import (
    FAMILY_PARAMS, LOSS_FAMILIES, NumericTokens, build_loss, hard_cross_entropy, label_smoothing_cross_entropy,
    ntil_emd, ntl_mse, ntl_was, soft_label_cross_entropy, value_aware_soft_label_cross_entropy,
)
from sl_core.peers import gaussian_soft_cross_entropy

DIGITS = list(range(20, 30))
PAPER_FAMILIES = ("hard", "label_smoothing", "gaussian", "ntl_was", "ntl_mse", "ntil", "soft_label")


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 9, 40, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 40, (2, 9), generator=g)
    labels[:, 2:6] = torch.tensor(DIGITS)[torch.randint(0, 10, (2, 4), generator=g)]
    labels[0, 0] = -100
    return logits, labels


def test_families_and_params_are_published() -> None:
    assert set(PAPER_FAMILIES) <= set(LOSS_FAMILIES)
    assert FAMILY_PARAMS["hard"] == ()
    assert FAMILY_PARAMS["soft_label"] == ("eta", "lam", "psi", "psi_param", "place_exponent")
    assert FAMILY_PARAMS["ntil"] == ("ntil_weight", "digit_exp")
    assert FAMILY_PARAMS["dist2"] == ("dist2_temperature", "dist2_distance")
    assert FAMILY_PARAMS["smmd"] == ("smmd_weight", "smmd_sigma", "smmd_alpha")
    assert FAMILY_PARAMS["del"] == ("del_weight",)
    assert set(FAMILY_PARAMS) == set(LOSS_FAMILIES)


@pytest.mark.parametrize("family", LOSS_FAMILIES)
def test_every_family_builds_with_defaults_and_trains(family: str) -> None:
    params = {"eta": 0.1} if "eta" in FAMILY_PARAMS[family] else {}
    fn = build_loss(family, DIGITS, **params)
    logits, labels = _batch()
    loss = fn(logits, labels)
    assert loss.dim() == 0 and torch.isfinite(loss)
    (g,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.count_nonzero(g[0, 0]) == 0  # the ignored position gets no gradient


def test_none_means_default() -> None:
    logits, labels = _batch(1)
    a = build_loss("soft_label", DIGITS, eta=0.2, lam=None, psi=None, psi_param=None, place_exponent=None)
    b = build_loss("soft_label", DIGITS, eta=0.2)
    torch.testing.assert_close(a(logits, labels), b(logits, labels))


def test_families_compose_as_documented() -> None:
    logits, labels = _batch(2)
    ce = hard_cross_entropy(logits, labels)
    cases = {
        ("hard", ()): ce,
        ("label_smoothing", (("smoothing", 0.2),)): label_smoothing_cross_entropy(logits, labels, smoothing=0.2),
        ("gaussian", (("sigma", 0.7),)): gaussian_soft_cross_entropy(logits, labels, DIGITS, sigma=0.7),
        ("ntl_was", (("ntl_weight", 0.5),)): ce + 0.5 * ntl_was(logits, labels, DIGITS),
        ("ntl_mse", (("ntl_weight", 0.5),)): ce + 0.5 * ntl_mse(logits, labels, DIGITS),
        ("ntil", (("ntil_weight", 0.3), ("digit_exp", 1.5))): ce + 0.3 * ce,  # EMD rescaled to CE's size
        ("soft_label", (("eta", 0.3), ("lam", 2.0), ("psi", "binomial"), ("psi_param", 0.5),
                        ("place_exponent", 1.0))):
            soft_label_cross_entropy(logits, labels, DIGITS, eta=0.3, lam=2.0, psi="binomial", psi_param=0.5,
                                     place_exponent=1.0),
        ("value_aware", (("eta", 0.3), ("psi", "gaussian"), ("scale", 2.0))):
            value_aware_soft_label_cross_entropy(logits, labels, NumericTokens.from_digit_ids(DIGITS), eta=0.3,
                                                 psi="gaussian", scale=2.0),
    }
    for (family, params), expected in cases.items():
        torch.testing.assert_close(build_loss(family, DIGITS, **dict(params))(logits, labels), expected)


def test_ntil_gradient_is_ce_plus_rescaled_emd() -> None:
    logits, labels = _batch(3)
    loss = build_loss("ntil", DIGITS, ntil_weight=0.3, digit_exp=1.5)(logits, labels)
    (g,) = torch.autograd.grad(loss, logits)
    z = logits.detach().requires_grad_()
    ce = hard_cross_entropy(z, labels)
    emd = ntil_emd(z, labels, DIGITS, digit_exp=1.5)
    ratio = (ce / emd).detach()
    (g_ref,) = torch.autograd.grad(ce + 0.3 * ratio * emd, z)
    torch.testing.assert_close(g, g_ref)


def test_num_items_in_batch_is_passed_through() -> None:
    logits, labels = _batch(4)
    for family in ("hard", "soft_label", "label_smoothing", "gaussian"):
        params = {"eta": 0.2} if family == "soft_label" else {}
        fn = build_loss(family, DIGITS, **params)
        count = int((labels != -100).sum())
        torch.testing.assert_close(fn(logits, labels, num_items_in_batch=2 * count), fn(logits, labels) / 2)


def test_value_aware_family_takes_numeric_tokens() -> None:
    logits, labels = _batch(5)
    num = NumericTokens(tuple(DIGITS) + (30, 31), tuple(range(10)) + (10, 11), (1,) * 10 + (2, 2), ("",) * 12)
    fn = build_loss("value_aware", num, eta=0.4, scale=3.0)
    expected = value_aware_soft_label_cross_entropy(logits, labels, num, eta=0.4, scale=3.0)
    torch.testing.assert_close(fn(logits, labels), expected)


@pytest.mark.parametrize("family, params, match", [
    ("focal", {}, "loss family: unknown 'focal'"),
    ("hard", {"eta": 0.1}, "loss family 'hard' does not take parameter 'eta'"),
    ("soft_label", {"sigma": 1.0}, "does not take parameter 'sigma'"),
    ("soft_label", {}, "needs parameter 'eta'"),
    ("soft_label", {"eta": 1.2}, "eta must be in"),
    ("soft_label", {"eta": 0.1, "lam": -1}, "lam must be >= 0"),
    ("soft_label", {"eta": 0.1, "psi": "cosine"}, "psi: unknown 'cosine' for loss family 'soft_label'"),
    ("soft_label", {"eta": 0.1, "psi_param": 0.0}, "psi_param"),
    ("soft_label", {"eta": 0.1, "psi": "uniform", "psi_param": 2.0}, "psi_param"),
    ("soft_label", {"eta": 0.1, "place_exponent": -2.0}, "place_exponent must be >= 0"),
    ("soft_label", {"eta": "0.1"}, "eta must be a real number"),
    ("label_smoothing", {"smoothing": -0.1}, "smoothing must be in"),
    ("gaussian", {"sigma": -1.0}, "sigma must be >= 0"),
    ("ntl_was", {"ntl_weight": -0.3}, "ntl_weight must be >= 0"),
    ("ntil", {"digit_exp": 0.0}, "digit_exp must be > 0"),
    ("value_aware", {"eta": 0.1, "psi": "poisson"}, "psi: unknown 'poisson' for loss family 'value_aware'"),
])
def test_bad_configs_name_the_problem(family: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss(family, DIGITS, **params)


def test_bad_digit_ids() -> None:
    with pytest.raises(ValueError, match="digit_ids must hold exactly 10"):
        build_loss("hard", [1, 2, 3])
    with pytest.raises(ValueError, match="digit_ids must hold 10 distinct"):
        build_loss("soft_label", [1] * 10, eta=0.1)


def test_each_builtin_family_is_one_declaration_with_a_lazy_builder() -> None:
    # spec and builder come from one registration (the decorator plug-ins use, on the builder in
    # sl_core.builtin_families); reading the registry imports neither torch nor the losses' modules
    import subprocess
    import sys

    code = ("import sys, sl_core.registry as R\n"
            "assert all(R.family_builder(f).family_spec is s for f, s in R.LOSS_FAMILY_SPECS.items())\n"
            "from sl_core import builtin_families as B\n"
            "assert R.family_builder('gaussian') is B.gaussian and B.BUILTINS == [R.family_builder(f) for f in R.LOSS_FAMILY_SPECS]\n"
            "assert not {'sl_core.families', 'sl_core.peers', 'torch'} & set(sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]
    from sl_core import registry

    assert [f for f, s in registry.LOSS_FAMILY_SPECS.items() if s.takes_backend] == \
        ["dist2", "soft_label", "value_aware"]
    with pytest.raises(ValueError, match="two built-in loss families are named 'hard'"):
        registry.register_loss_family(registry.loss_family(name="hard")("sl_core.builtin_families:hard"),
                                      _builtin=True)
    with pytest.raises(ValueError, match="loss family 'gaussian' is built in"):
        registry.register_loss_family(registry.loss_family(name="gaussian")("sl_core.builtin_families:gaussian"))
    with pytest.raises(ValueError, match="must be 'module:function'"):
        registry.loss_family(name="x")("sl_core.families")


def test_a_plugin_declared_by_path_is_imported_on_its_first_build() -> None:
    from sl_core import registry

    # a builder named by its path, imported on the first build: hard CE through the NTL builder at weight 0
    builder = registry.loss_family(name="test_lazy_ntl", params={"ntl_weight": 0.0})("sl_core.builtin_families:ntl_was")
    try:
        assert registry.register_loss_family(builder) == "test_lazy_ntl"
        assert registry.register_loss_family(builder) == "test_lazy_ntl"  # the same declaration again: fine
        logits, labels = _batch(3)
        torch.testing.assert_close(build_loss("test_lazy_ntl", DIGITS)(logits, labels),
                                   hard_cross_entropy(logits, labels))
        other = registry.loss_family(name="test_lazy_ntl", params={"w": 1.0})("sl_core.builtin_families:ntl_was")
        with pytest.raises(ValueError, match="already registered with other parameters"):
            registry.register_loss_family(other)
    finally:
        registry.LOSS_FAMILY_SPECS.pop("test_lazy_ntl", None)
        registry._BUILDERS.pop("test_lazy_ntl", None)
