"""DIST2Loss, SMMD and DEL (`sl_core.numeric_peers`): dense float64 references (values and gradients) on
digit, marked-digit and value-aware token sets, the authors' own code's values, and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from sl_core import NumericTokens, build_loss, hard_cross_entropy
from sl_core.numeric_peers import del_term, dist2_cross_entropy, dist2_psi_matrix, smmd_kernel, smmd_term
from sl_core.peers import gaussian_soft_cross_entropy
from tests.reference import (
    del_reference, dist2_psi_reference, smmd_kernel_reference, smmd_reference, soft_ce_reference,
)
from tests.test_peers import DIGITS, _value_and_grad

VOCAB = 40
BARE = list(range(10, 20))                      # "0".."9"
MARKED = [[10, 12, 14, 16, 18, 11, 13, 15, 17, 19], list(range(20, 30))]  # "0".."9" and "▁0".."▁9"
MERGED = NumericTokens(                          # value-aware: digits, "Ġ" digits and two-digit tokens
    ids=tuple(range(10, 40)),
    values=tuple(range(10)) * 2 + (10, 12, 20, 25, 42, 43, 50, 77, 90, 99),
    widths=(1,) * 20 + (2,) * 10,
    markers=("",) * 10 + ("Ġ",) * 10 + ("",) * 10,
)
TOKEN_SETS = {"digits": NumericTokens.from_digit_ids(BARE), "marked": NumericTokens.from_digit_ids(MARKED),
              "merged": MERGED}


def case(seed: int, soft_ids: list[int], batch: int = 3, seq: int = 11, p_soft: float = 0.7):
    """float64 logits [batch, seq, 40] and labels drawing soft_ids with probability p_soft, 10% ignored."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, seq, VOCAB, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, 10, (batch, seq), generator=g)  # never a soft id
    pick = torch.tensor(soft_ids)[torch.randint(0, len(soft_ids), (batch, seq), generator=g)]
    labels = torch.where(torch.rand(batch, seq, generator=g) < p_soft, pick, labels)
    return logits, torch.where(torch.rand(batch, seq, generator=g) < 0.1, torch.full_like(labels, -100), labels)


def _close(ours, ref) -> None:
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------------------- DIST2

@pytest.mark.parametrize("tokens", TOKEN_SETS)
@pytest.mark.parametrize("distance, temperature", [("squared", 1.0), ("squared", 3.0), ("absolute", 0.5)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dist2_matches_dense_reference(tokens: str, distance: str, temperature: float, reduction: str) -> None:
    num = TOKEN_SETS[tokens]
    logits, labels = case(1, list(num.ids))
    psi = dist2_psi_reference(list(num.values), list(num.groups), distance, temperature)
    torch.testing.assert_close(dist2_psi_matrix(num, temperature, distance), psi)
    ours = _value_and_grad(dist2_cross_entropy, logits, labels, num, temperature=temperature, distance=distance,
                           reduction=reduction)
    ref = _value_and_grad(lambda z, y: soft_ce_reference(z, y, list(num.ids), psi, eta=1.0, reduction=reduction),
                          logits, labels)
    _close(ours, ref)


def test_dist2_squared_is_gaussian_soft_ce_on_digits() -> None:
    logits, labels = case(2, BARE)
    for tau in (0.5, 1.0, 4.0):
        torch.testing.assert_close(dist2_cross_entropy(logits, labels, TOKEN_SETS["digits"], temperature=tau),
                                   gaussian_soft_cross_entropy(logits, labels, BARE, sigma=math.sqrt(tau / 2)))


def test_dist2_target_stays_in_its_group() -> None:
    psi = dist2_psi_matrix(MERGED, 100.0, "absolute")
    groups = MERGED.groups
    for i in range(len(MERGED)):
        for j in range(len(MERGED)):
            assert (psi[i, j] > 0) == (groups[i] == groups[j])


# ---------------------------------------------------------------------------------------------------- SMMD

@pytest.mark.parametrize("tokens", TOKEN_SETS)
@pytest.mark.parametrize("sigma, alpha", [(2.0, None), (1.0, None), (2.0, 0.3), (0.7, 0.0)])
def test_smmd_matches_dense_reference(tokens: str, sigma: float, alpha: float | None) -> None:
    num = TOKEN_SETS[tokens]
    kern, alphas = smmd_kernel_reference(list(num.values), list(num.groups), sigma)
    k_ours, a_ours = smmd_kernel(num, sigma)
    torch.testing.assert_close(k_ours, kern)
    torch.testing.assert_close(a_ours, alphas)
    logits, labels = case(3, list(num.ids))
    ours = _value_and_grad(smmd_term, logits, labels, num, sigma=sigma, alpha=alpha)
    ref = _value_and_grad(lambda z, y: smmd_reference(z, y, list(num.ids), list(num.values), list(num.groups),
                                                      sigma=sigma, alpha=alpha), logits, labels)
    _close(ours, ref)


# The authors' code (github.com/Zuozhuo/smmd-loss @ 581fde6a38a07e75a3c7102e126bd702733df299,
# `smmd.SMMDLoss(tokenizer, sigmas=(sigma,), tau_mode=..., tau_fixed=...)`, loss_mode "smmd") run on
# `authors_case(seed)` with labels[0, 0] = -100 and the 30-token tokenizer of tests/test_peers.py
# (digits at DIGITS; its V_num is "0".."9"), float32, torch 2.x CPU:
AUTHORS_SMMD = {  # (seed, sigma, alpha or None for "auto") -> value
    (0, 2.0, None): 1.1607980728149414, (0, 1.0, None): 1.3146675825119019, (0, 2.0, 0.3): 1.9419713020324707,
    (1, 2.0, None): 1.2353014945983887, (1, 1.0, None): 1.3434979915618896, (1, 2.0, 0.3): 1.9686168432235718,
}
# The authors' DEL (github.com/PolyU-VCLab/DEL @ 68c3d4dcc74e7f1918b9e41c4630adac9ffc2f56,
# train-qwen-deepseek.py, the `DEL` function inside `custom_compute_loss`, returning 0.01 * the term)
# on the first sequence of `authors_case(seed)`, logits [12, 30], same tokenizer, float32:
AUTHORS_DEL = {0: 0.006674913223832846, 1: 0.011576542630791664}


def authors_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 12, 30, generator=g) * 2
    labels = torch.randint(3, 30, (2, 12), generator=g)  # never "[UNK]" (0) or "." (2)
    pick = torch.tensor(DIGITS)[torch.randint(0, 10, (2, 12), generator=g)]
    return logits, torch.where(torch.rand(2, 12, generator=g) < 0.6, pick, labels)


@pytest.mark.parametrize("key", AUTHORS_SMMD)
def test_smmd_matches_the_authors_code(key) -> None:
    seed, sigma, alpha = key
    logits, labels = authors_case(seed)
    labels[0, 0] = -100
    ours = smmd_term(logits, labels, NumericTokens.from_digit_ids(DIGITS), sigma=sigma, alpha=alpha)
    assert ours.item() == pytest.approx(AUTHORS_SMMD[key], rel=1e-5)


@pytest.mark.parametrize("seed", AUTHORS_DEL)
def test_del_matches_the_authors_code(seed: int) -> None:
    logits, labels = authors_case(seed)
    ours = 0.01 * del_term(logits[:1], labels[:1], DIGITS)
    assert ours.item() == pytest.approx(AUTHORS_DEL[seed], rel=1e-5)
    # as a family: CE (mean over tokens) + 0.01 * DEL, the authors' total with num_items = tokens
    total = build_loss("del", DIGITS)(logits[:1], labels[:1])
    assert total.item() == pytest.approx(hard_cross_entropy(logits[:1], labels[:1]).item() + AUTHORS_DEL[seed],
                                         rel=1e-5)


# ----------------------------------------------------------------------------------------------------- DEL

@pytest.mark.parametrize("groups", [BARE, MARKED], ids=["digits", "marked"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_del_matches_dense_reference(groups, reduction: str) -> None:
    flat = [c for g in (groups if isinstance(groups[0], list) else [groups]) for c in g]
    logits, labels = case(4, flat, p_soft=0.8)
    ours = _value_and_grad(del_term, logits, labels, groups, reduction=reduction)
    ref_groups = groups if isinstance(groups[0], list) else [groups]
    ref = _value_and_grad(lambda z, y: del_reference(z, y, ref_groups), logits, labels)
    if reduction == "sum":
        n = sum(1 for y in labels.reshape(-1).tolist() if y in flat)
        ref = (ref[0] * n, ref[1] * n)
    _close(ours, ref)


def test_del_place_weight_grows_with_significance() -> None:
    """One row "4 2": the tens digit weighs 4, the units 2 (the authors' integer place weight)."""
    logits = torch.zeros(1, 2, VOCAB, dtype=torch.float64)
    labels = torch.tensor([[BARE[4], BARE[2]]])
    per = del_term(logits, labels, BARE, reduction="none")
    assert per[0, 0].item() == pytest.approx(2 * per[0, 1].item())


# ------------------------------------------------------------------------------------------------- shared

@pytest.mark.parametrize("fn, tokens", [(smmd_term, TOKEN_SETS["marked"]), (del_term, MARKED)],
                         ids=["smmd", "del"])
def test_auxiliary_terms_are_zero_without_numeric_targets_and_scale_with_num_items(fn, tokens) -> None:
    logits, labels = case(5, [0], p_soft=0.0)  # labels in 0..9: no soft ids
    z = logits.clone().requires_grad_()
    value = fn(z, labels, tokens)
    assert value.item() == 0.0
    (g,) = torch.autograd.grad(value + hard_cross_entropy(z, labels), z)
    torch.testing.assert_close(g, torch.autograd.grad(hard_cross_entropy(z, labels), z)[0])
    soft = list(tokens.ids) if isinstance(tokens, NumericTokens) else [c for g in tokens for c in g]
    logits, labels = case(6, soft)
    local = int((labels != -100).sum())
    torch.testing.assert_close(fn(logits, labels, tokens, num_items_in_batch=4 * local), fn(logits, labels, tokens) / 4)


def test_families_compose_as_documented() -> None:
    logits, labels = case(7, BARE)
    ce = hard_cross_entropy(logits, labels)
    digits = TOKEN_SETS["digits"]
    dist2 = build_loss("dist2", BARE, dist2_temperature=2.0, dist2_distance="absolute")
    torch.testing.assert_close(dist2(logits, labels),
                               dist2_cross_entropy(logits, labels, digits, temperature=2.0, distance="absolute"))
    torch.testing.assert_close(build_loss("smmd", BARE, smmd_weight=0.5, smmd_sigma=1.5)(logits, labels),
                               ce + 0.5 * smmd_term(logits, labels, digits, sigma=1.5))
    torch.testing.assert_close(build_loss("del", BARE, del_weight=0.2)(logits, labels),
                               ce + 0.2 * del_term(logits, labels, BARE))
    # numeric families take NumericTokens as well as digit ids; DEL is defined on digits only
    torch.testing.assert_close(build_loss("smmd", MERGED)(logits, labels),
                               ce + smmd_term(logits, labels, MERGED))
    with pytest.raises(ValueError, match="takes digit ids, not NumericTokens"):
        build_loss("del", MERGED)


@pytest.mark.parametrize("call, match", [
    (lambda z, y: dist2_cross_entropy(z, y, MERGED, temperature=0.0), "temperature must be > 0"),
    (lambda z, y: dist2_cross_entropy(z, y, MERGED, distance="cubic"), "distance: unknown 'cubic'"),
    (lambda z, y: dist2_cross_entropy(z, y, "0123456789"), "digit_ids must be a NumericTokens .* or digit token ids"),
    (lambda z, y: dist2_cross_entropy(z, y, BARE[:9]), "digit_ids must hold exactly 10"),
    (lambda z, y: smmd_term(z, y, MERGED, sigma=-1.0), "sigma must be > 0"),
    (lambda z, y: smmd_term(z, y, MERGED, alpha=-0.1), "alpha must be >= 0"),
    (lambda z, y: smmd_term(z[..., :30], y.clamp_max(29), MERGED), r"token ids must lie in \[0, 30\)"),
    (lambda z, y: del_term(z, y, BARE[:9]), "digit_ids must hold exactly 10"),
    (lambda z, y: del_term(z, y, BARE, reduction="max"), "reduction must be one of"),
])
def test_bad_inputs(call, match: str) -> None:
    logits, labels = case(8, BARE)
    with pytest.raises(ValueError, match=match):
        call(logits, labels)


@pytest.mark.parametrize("family, params, match", [
    ("dist2", {"dist2_temperature": 0.0}, "dist2_temperature must be > 0"),
    ("dist2", {"dist2_distance": "cubic"}, "dist2_distance: unknown 'cubic' for loss family 'dist2'"),
    ("smmd", {"smmd_weight": -1.0}, "smmd_weight must be >= 0"),
    ("smmd", {"smmd_sigma": 0.0}, "smmd_sigma must be > 0"),
    ("smmd", {"smmd_alpha": -0.5}, "smmd_alpha must be >= 0"),
    ("del", {"del_weight": float("nan")}, "del_weight must be finite"),
    ("del", {"sigma": 1.0}, "loss family 'del' does not take parameter 'sigma'"),
])
def test_family_params_are_validated(family: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss(family, BARE, **params)


def test_one_name_for_the_token_ids_and_the_old_keyword_still_works() -> None:
    # every loss takes the vocabulary's digit / numeric tokens as `digit_ids`: the numeric losses take digit
    # ids or groups as well as NumericTokens; `numeric=` is a deprecated alias of it
    import warnings

    from sl_core.families import soft_columns
    from sl_core.value_aware import value_aware_soft_label_cross_entropy, value_psi_matrix

    logits, labels = case(9, [c for g in MARKED for c in g])
    marked = TOKEN_SETS["marked"]
    for fn, kw in [(dist2_cross_entropy, {"temperature": 2.0}), (smmd_term, {"sigma": 1.5}),
                   (value_aware_soft_label_cross_entropy, {"eta": 0.3})]:
        expected = fn(logits, labels, marked, **kw)
        torch.testing.assert_close(fn(logits, labels, MARKED, **kw), expected)
        torch.testing.assert_close(fn(logits, labels, digit_ids=marked, **kw), expected)
        with pytest.warns(DeprecationWarning, match=r"\(numeric=\.\.\.\) is deprecated: the argument is now called"):
            torch.testing.assert_close(fn(logits, labels, numeric=marked, **kw), expected)
        with pytest.raises(TypeError, match="got both 'digit_ids' and its deprecated alias 'numeric'"):
            fn(logits, labels, numeric=marked, digit_ids=marked, **kw)
    torch.testing.assert_close(value_psi_matrix(BARE, "gaussian"), value_psi_matrix(TOKEN_SETS["digits"], "gaussian"))
    torch.testing.assert_close(dist2_psi_matrix(BARE), dist2_psi_matrix(TOKEN_SETS["digits"]))
    torch.testing.assert_close(smmd_kernel(BARE)[0], smmd_kernel(TOKEN_SETS["digits"])[0])
    with pytest.warns(DeprecationWarning, match="soft_columns"):
        assert soft_columns(tokens=MERGED) == MERGED.ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert soft_columns(MARKED) == tuple(c for g in MARKED for c in g)
