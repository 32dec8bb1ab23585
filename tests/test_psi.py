"""psi registry: every shape gives valid rows over its whole parameter range; bad shapes are rejected."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sl_core import psi as P

BUILTIN = ("triangular", "binomial", "poisson", "uniform", "gaussian", "laplace")
PARAMETRIC = tuple(n for n in BUILTIN if n != "uniform")


def _assert_valid(m: torch.Tensor) -> None:
    assert m.shape == (10, 10)
    assert m.dtype == torch.float64
    assert torch.isfinite(m).all()
    assert (m >= 0).all()
    torch.testing.assert_close(m.sum(1), torch.ones(10, dtype=torch.float64), atol=1e-9, rtol=0)


def test_builtins_registered_and_valid_at_default() -> None:
    assert set(BUILTIN) <= set(P.available_psi())
    for name in BUILTIN:
        _assert_valid(P.psi_matrix(name))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(PARAMETRIC), log_param=st.floats(-6.0, 6.0))
def test_rows_valid_over_parameter_range(name: str, log_param: float) -> None:
    m = P.psi_matrix(name, 10.0 ** log_param)
    _assert_valid(m)
    # every built-in shape peaks at the target digit (ties allowed when the shape is flat)
    for t in range(10):
        assert m[t, t] >= m[t].max() - 1e-12


@pytest.mark.parametrize("name", PARAMETRIC)
def test_extreme_parameters_reach_their_limits(name: str) -> None:
    # a tiny parameter concentrates all mass on the target; a huge one flattens the rows
    sharp = P.psi_matrix(name, 1e-300)
    torch.testing.assert_close(sharp, torch.eye(10, dtype=torch.float64))
    flat = P.psi_matrix(name, 1e300)
    torch.testing.assert_close(flat, torch.full((10, 10), 0.1, dtype=torch.float64), atol=1e-6, rtol=0)


def test_documented_definitions() -> None:
    tri = P.psi_matrix("triangular")  # h = 2: weights (1, 2, 1) around t
    torch.testing.assert_close(tri[4, 3:6], torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    assert tri[4, :3].sum() == 0 and tri[4, 6:].sum() == 0
    torch.testing.assert_close(tri[0, :2], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(P.psi_matrix("uniform"), torch.full((10, 10), 0.1, dtype=torch.float64))
    g = P.psi_matrix("gaussian", 2.0)
    w = torch.tensor([math.exp(-((k - 3) ** 2) / 8) for k in range(10)], dtype=torch.float64)
    torch.testing.assert_close(g[3], w / w.sum())
    lap = P.psi_matrix("laplace", 0.5)
    w = torch.tensor([math.exp(-abs(k - 7) / 0.5) for k in range(10)], dtype=torch.float64)
    torch.testing.assert_close(lap[7], w / w.sum())
    b = P.psi_matrix("binomial")
    w = torch.tensor([math.comb(9, k) * 0.55 ** k * 0.45 ** (9 - k) for k in range(10)], dtype=torch.float64)
    torch.testing.assert_close(b[5], w / w.sum())
    po = P.psi_matrix("poisson")
    w = torch.tensor([2.5 ** k * math.exp(-2.5) / math.factorial(k) for k in range(10)], dtype=torch.float64)
    torch.testing.assert_close(po[2], w / w.sum())


def test_result_is_a_copy() -> None:
    m = P.psi_matrix("gaussian")
    m.zero_()
    _assert_valid(P.psi_matrix("gaussian"))


def test_register_custom_shape_and_use_it() -> None:
    def two_point(t: int, p: float | None) -> list[float]:
        w = [0.0] * 10
        w[t] = 1.0 - p
        w[(t + 1) % 10] = p
        return w

    P.register_psi("test_two_point", two_point, default_param=0.25)
    try:
        m = P.psi_matrix("test_two_point")
        _assert_valid(m)
        assert m[9, 0] == 0.25
        assert "test_two_point" in P.available_psi()
        with pytest.raises(ValueError, match="already registered"):
            P.register_psi("test_two_point", two_point)
    finally:
        P._REGISTRY.pop("test_two_point", None)
        P._cached_matrix.cache_clear()


@pytest.mark.parametrize("fn, match", [
    (lambda t, p: [0.2] * 10, "sums to"),
    (lambda t, p: [-0.1] + [1.1 / 9] * 9, "negative"),
    (lambda t, p: [float("nan")] * 10, "non-finite"),
    (lambda t, p: [0.5, 0.5], "expected 10"),
])
def test_invalid_custom_shape_rejected(fn, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        P.register_psi("test_bad_shape", fn, default_param=1.0)
    assert "test_bad_shape" not in P.available_psi()


def test_bad_arguments_name_themselves() -> None:
    with pytest.raises(ValueError, match="psi: unknown shape 'cosine'"):
        P.psi_matrix("cosine")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="psi_param"):
            P.psi_matrix("gaussian", bad)
    with pytest.raises(ValueError, match="psi_param: shape 'uniform' takes no parameter"):
        P.psi_matrix("uniform", 1.0)
    with pytest.raises(ValueError, match="default_param"):
        P.register_psi("test_neg_default", lambda t, p: [0.1] * 10, default_param=-2.0)



SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


@pytest.mark.parametrize("space, units, target", [("paper.yaml", "digits", "loss.psi_param"),
                                                  ("paper_value_aware.yaml", "value", "loss.scale")])
def test_search_ranges_are_those_of_the_search_spaces(space: str, units: str, target: str) -> None:
    # each shape owns its range; the shipped spaces read it (type: psi_range), one parameter per shape
    from sweeps.config.space import load_space

    loaded = load_space(SPACES / space)
    params = loaded.params
    for name in params["psi"].choices:
        ranges = [{"low": p.low, "high": p.high, "log": p.log} for n, p in params.items()
                  if loaded.targets[n] == target and loaded.conditions(n) == {"psi": [name]}]
        assert P.psi_search_range(name, units) == (ranges[0] if ranges else None), name
    assert P.psi_search_range("uniform") is None and P.psi_search_range("uniform", "value") is None
    assert P.psi_search_range("binomial", "value") is None  # not a kernel of the distance: digit-only


def test_search_range_is_a_copy_and_bad_arguments_name_themselves() -> None:
    P.psi_search_range("gaussian")["low"] = 99.0
    assert P.psi_search_range("gaussian") == {"low": 0.3, "high": 2.0, "log": False}
    with pytest.raises(ValueError, match="psi: unknown shape 'cosine'"):
        P.psi_search_range("cosine")
    with pytest.raises(ValueError, match="units must be 'digits' or 'value'"):
        P.psi_search_range("gaussian", "bits")
    for bad, match in [({"low": 2.0, "high": 1.0}, "low must be < high"), ({"low": 0.0, "high": 1.0}, "must be > 0"),
                       ({"high": 1.0}, "keys low, high"), ({"low": 0.1, "high": 1.0, "log": "yes"}, "log must be")]:
        with pytest.raises(ValueError, match=match):
            P.register_psi("test_bad_range", lambda t, p: [0.1] * 10, search_range=bad)
    with pytest.raises(ValueError, match="only a kernel shape"):
        P.register_psi("test_bad_range", lambda t, p: [0.1] * 10, value_search_range={"low": 1.0, "high": 2.0})
    with pytest.raises(ValueError, match="exactly one of fn and kernel"):
        P.register_psi("test_bad_range")
    assert "test_bad_range" not in P.available_psi()


def test_search_range_is_read_without_torch() -> None:
    code = ("import sys, sl_core.psi as P\n"
            "assert P.psi_search_range('binomial') == {'low': 0.5, 'high': 2.0, 'log': True}\n"
            "assert P.value_kernels() == ('triangular', 'uniform', 'gaussian', 'laplace')\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1500:]


@pytest.mark.parametrize("name, param", [("triangular", 2.5), ("gaussian", 0.7), ("laplace", 1.3), ("uniform", None)])
def test_kernel_shapes_rows_are_softmax_of_their_kernel(name: str, param: float | None) -> None:
    # the one formula: digit row t = softmax_k kernel(|k - t|), as written in the module docstring's table
    kernel = P.psi_kernel(name)
    d = (torch.arange(10, dtype=torch.float64) - 6).abs()
    w = {"triangular": lambda: (param - d).clamp(min=0), "gaussian": lambda: torch.exp(-d * d / (2 * param ** 2)),
         "laplace": lambda: torch.exp(-d / param), "uniform": lambda: torch.ones(10, dtype=torch.float64)}[name]()
    torch.testing.assert_close(torch.softmax(kernel(d, param), 0), w / w.sum())
    torch.testing.assert_close(P.psi_matrix(name, param)[6], w / w.sum())
    with pytest.raises(ValueError, match="'poisson' is not a kernel of the distance; kernels: triangular"):
        P.psi_kernel("poisson")


def test_registered_kernel_shape_serves_digits_and_value_aware_mode() -> None:
    from sl_core.digits import NumericTokens
    from sl_core.value_aware import value_psi_matrix

    def cauchy(d: torch.Tensor, gamma: float) -> torch.Tensor:  # log of 1 / (1 + (d / gamma)^2)
        return -torch.log1p((d / gamma) ** 2)

    P.register_psi("test_cauchy", kernel=cauchy, default_param=1.5, value_search_range={"low": 1.0, "high": 9.0})
    try:
        assert "test_cauchy" in P.value_kernels()
        assert P.psi_search_range("test_cauchy") is None
        assert P.psi_search_range("test_cauchy", "value") == {"low": 1.0, "high": 9.0, "log": False}
        num = NumericTokens(ids=(5, 6, 7), values=(10, 20, 50), widths=(2, 2, 2), markers=("", "", ""))
        m = value_psi_matrix(num, "test_cauchy", 10.0)
        w = 1.0 / (1.0 + (torch.tensor([0.0, 10.0, 40.0], dtype=torch.float64) / 10.0) ** 2)
        torch.testing.assert_close(m[0], w / w.sum())
        _assert_valid(P.psi_matrix("test_cauchy"))
    finally:
        P._REGISTRY.pop("test_cauchy", None)
        P._cached_matrix.cache_clear()
