"""backend="triton": the Triton kernels against the dense float64 reference and the torch path.

Without a GPU the kernels run in Triton's interpreter on CPU tensors: TRITON_INTERPRET=1 must be set
before triton is first imported (its own jit helpers are decorated then, and torch may import
triton), so tests/conftest.py sets it at session start on machines without a GPU. With a GPU the
same tests run on CUDA tensors, compiled.
Shapes stay small (the interpreter runs numpy per program), and BLOCK_V / BLOCK_K are shrunk so that
every row spans several blocks and the soft columns several K blocks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    if "triton" in sys.modules:  # its jit helpers (tl.sum, tl.max) were built for compiled kernels
        raise RuntimeError("triton was imported before TRITON_INTERPRET=1 was set; tests/conftest.py sets it "
                           "first on machines without a GPU")
    os.environ["TRITON_INTERPRET"] = "1"

if sys.platform == "linux":
    import triton  # noqa: E402,F401  (in the test extra on Linux: CI must run these, never skip them)
else:
    pytest.importorskip("triton")

import sl_core  # noqa: E402
import sl_core._triton as T  # noqa: E402
from sl_core import (  # noqa: E402
    NumericTokens, fused_linear_soft_label_cross_entropy, psi_matrix, soft_label_cross_entropy,
    value_aware_soft_label_cross_entropy, value_psi_matrix,
)
from sl_core.backend import resolve_backend  # noqa: E402
from tests.reference import soft_ce_reference  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=2e-2, atol=2e-3),
       torch.float16: dict(rtol=5e-3, atol=1e-3)}
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows of a few hundred logits span several BLOCK_V chunks; K soft columns several BLOCK_K chunks."""
    monkeypatch.setattr(T, "BLOCK_V_MAX", 64)
    monkeypatch.setattr(T, "BLOCK_K_MAX", 16)


def make_case(seed: int, batch: int, seq: int, vocab: int, p_digit: float = 0.4, p_ignore: float = 0.2):
    """Logits [batch, seq, vocab] float64, labels with digit targets, runs of digits and ignored positions."""
    g = torch.Generator().manual_seed(seed)
    digits = torch.randperm(vocab, generator=g)[:10].tolist()
    logits = torch.randn(batch, seq, vocab, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, vocab, (batch, seq), generator=g)
    pick = torch.tensor(digits)[torch.randint(0, 10, (batch, seq), generator=g)]
    labels = torch.where(torch.rand(batch, seq, generator=g) < p_digit, pick, labels)
    labels = torch.where(torch.rand(batch, seq, generator=g) < p_ignore, torch.full_like(labels, -100), labels)
    return logits, labels, digits


def check(got, got_grad, ref, ref_grad, dtype) -> None:
    tol = TOL[dtype]
    torch.testing.assert_close(got.detach().double().cpu(), ref.detach(), **tol)
    scale = max(1.0, float(ref_grad.abs().max()))
    torch.testing.assert_close(got_grad.double().cpu(), ref_grad, rtol=tol["rtol"], atol=tol["atol"] * scale)


def run_loss(logits64, labels, digits, dtype, backend, *, strided=False, **kw):
    """Loss and the logits gradient through a non-uniform upstream gradient, on DEVICE."""
    leaf = logits64.to(dtype).to(DEVICE).requires_grad_()
    z, y = (leaf[:, :-1], labels[:, :-1]) if strided else (leaf, labels)
    loss = soft_label_cross_entropy(z, y.to(DEVICE), digits, backend=backend, **kw)
    weights = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=DEVICE).view(loss.shape)
    (loss * weights).sum().backward()
    return loss, leaf.grad, weights


def reference(logits64, labels, digits, dtype, weights, *, strided=False, psi="triangular", psi_param=None, **kw):
    leaf = logits64.to(dtype).to(torch.float64).requires_grad_()
    z, y = (leaf[:, :-1], labels[:, :-1]) if strided else (leaf, labels)
    ref = soft_ce_reference(z, y, digits, psi_matrix(psi, psi_param), **kw)
    (ref * weights.double().cpu()).sum().backward()
    return ref, leaf.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference_and_torch_path(dtype: torch.dtype, reduction: str) -> None:
    logits64, labels, digits = make_case(1, 2, 7, 300)
    kw = dict(eta=0.3, lam=2.0, reduction=reduction, place_exponent=1.0)
    loss, grad, w = run_loss(logits64, labels, digits, dtype, "triton", **kw)
    ref, ref_grad = reference(logits64, labels, digits, dtype, w, **kw)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    check(loss, grad, ref, ref_grad, dtype)
    t_loss, t_grad, _ = run_loss(logits64, labels, digits, dtype, "torch", **kw)
    torch.testing.assert_close(loss, t_loss, **TOL[dtype])
    torch.testing.assert_close(grad.float(), t_grad.float(), rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * 4)


@pytest.mark.parametrize("eta,lam", [(0.0, 1.0), (1.0, 1.0), (0.5, 0.0), (0.0, 0.0), (1.0, 5.0)])
def test_edge_eta_lam(eta: float, lam: float) -> None:
    logits64, labels, digits = make_case(2, 2, 6, 200, p_digit=0.6)
    kw = dict(eta=eta, lam=lam, psi="gaussian", psi_param=1.5)
    loss, grad, w = run_loss(logits64, labels, digits, torch.float32, "triton", **kw)
    ref, ref_grad = reference(logits64, labels, digits, torch.float32, w, **kw)
    check(loss, grad, ref, ref_grad, torch.float32)


def test_eta_zero_lam_one_is_cross_entropy() -> None:
    logits64, labels, digits = make_case(3, 3, 5, 257)
    z = logits64.float().to(DEVICE).requires_grad_()
    zr = logits64.float().to(DEVICE).requires_grad_()
    ours = soft_label_cross_entropy(z, labels.to(DEVICE), digits, eta=0.0, backend="triton")
    hard = torch.nn.functional.cross_entropy(zr.transpose(1, 2), labels.to(DEVICE))
    torch.testing.assert_close(ours, hard)
    ours.backward()
    hard.backward()
    torch.testing.assert_close(z.grad, zr.grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_is_zero_with_zero_grad(reduction: str) -> None:
    z = torch.randn(2, 4, 150, device=DEVICE, requires_grad=True)
    labels = torch.full((2, 4), -100, device=DEVICE)
    loss = soft_label_cross_entropy(z, labels, list(range(10)), eta=0.3, lam=2.0, reduction=reduction,
                                    backend="triton")
    assert torch.count_nonzero(loss) == 0
    loss.sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


@pytest.mark.parametrize("num_items", [7, torch.tensor(7.0)], ids=["int", "tensor"])
def test_num_items_in_batch(num_items) -> None:
    logits64, labels, digits = make_case(4, 2, 6, 180)
    kw = dict(eta=0.2, lam=3.0)
    loss, grad, w = run_loss(logits64, labels, digits, torch.float32, "triton", num_items_in_batch=num_items, **kw)
    ref, ref_grad = reference(logits64, labels, digits, torch.float32, w, num_items=7, **kw)
    check(loss, grad, ref, ref_grad, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_strided_logits_view(dtype: torch.dtype) -> None:
    """logits[:, :-1] (the shifted view a causal LM hands the loss) is read in place, not copied."""
    logits64, labels, digits = make_case(5, 3, 6, 130)
    kw = dict(eta=0.4, lam=1.5)
    loss, grad, w = run_loss(logits64, labels, digits, dtype, "triton", strided=True, **kw)
    ref, ref_grad = reference(logits64, labels, digits, dtype, w, strided=True, **kw)
    check(loss, grad, ref, ref_grad, dtype)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_value_aware(reduction: str) -> None:
    g = torch.Generator().manual_seed(6)
    vocab = 240
    ids = torch.randperm(vocab, generator=g)[:25].tolist()  # 25 numeric columns: two BLOCK_K chunks
    values = list(range(10)) + [10, 25, 42, 57, 99] + [7, 42, 43, 44] + [5, 50, 500, 999, 0, 1]
    groups = [("", 1)] * 10 + [("", 2)] * 5 + [("Ġ", 2)] * 4 + [("Ġ", 3)] * 6
    num = NumericTokens(tuple(ids), tuple(values), tuple(w for _, w in groups), tuple(m for m, _ in groups))
    logits64 = torch.randn(2, 8, vocab, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, vocab, (2, 8), generator=g)
    pick = torch.tensor(ids)[torch.randint(0, len(ids), (2, 8), generator=g)]
    labels = torch.where(torch.rand(2, 8, generator=g) < 0.6, pick, labels)
    labels[0, 0] = -100
    kw = dict(eta=0.35, lam=2.0, psi="laplace", scale=3.0, place_exponent=0.5, reduction=reduction)
    z = logits64.float().to(DEVICE).requires_grad_()
    loss = value_aware_soft_label_cross_entropy(z, labels.to(DEVICE), num, backend="triton", **kw)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    ref_z = logits64.float().double().requires_grad_()
    ref = soft_ce_reference(ref_z, labels, ids, value_psi_matrix(num, "laplace", 3.0), eta=0.35, lam=2.0,
                            place_exponent=0.5, reduction=reduction)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_z)
    check(loss, grad, ref, ref_grad, torch.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_linear_matches_reference(dtype: torch.dtype, reduction: str) -> None:
    """Chunks of 5 tokens: the kernel overwrites each chunk's logits with their gradient in place."""
    g = torch.Generator().manual_seed(7)
    n, h, vocab = 14, 16, 200
    _, labels, digits = make_case(7, 1, n, vocab)
    labels = labels.view(-1)
    hidden64 = torch.randn(n, h, generator=g, dtype=torch.float64)
    weight64 = torch.randn(vocab, h, generator=g, dtype=torch.float64) / h ** 0.5
    bias64 = torch.randn(vocab, generator=g, dtype=torch.float64) * 0.1
    leaves = [t.to(dtype).to(DEVICE).requires_grad_() for t in (hidden64, weight64, bias64)]
    kw = dict(eta=0.3, lam=2.0, reduction=reduction, num_items_in_batch=9 if reduction == "mean" else None)
    loss = fused_linear_soft_label_cross_entropy(leaves[0], leaves[1], labels.to(DEVICE), digits, bias=leaves[2],
                                                 chunk_size=5, backend="triton", **kw)
    w = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype, device=DEVICE).view(loss.shape)
    grads = torch.autograd.grad((loss * w).sum(), leaves)

    refs = [t.to(dtype).double().requires_grad_() for t in (hidden64, weight64, bias64)]
    z = refs[0] @ refs[1].T + refs[2]
    ref = soft_ce_reference(z, labels, digits, psi_matrix("triangular"), eta=0.3, lam=2.0, reduction=reduction,
                            num_items=kw["num_items_in_batch"])
    ref_grads = torch.autograd.grad((ref * w.double().cpu()).sum(), refs)
    tol = TOL[dtype] if dtype == torch.float32 else dict(rtol=4e-2, atol=1e-2)
    torch.testing.assert_close(loss.detach().double().cpu(), ref.detach(), **tol)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double().cpu(), want, rtol=tol["rtol"],
                                   atol=tol["atol"] * max(1.0, float(want.abs().max())))


def test_fused_eval_without_grad_and_all_ignored() -> None:
    hidden = torch.randn(6, 8, device=DEVICE)
    weight = torch.randn(100, 8, device=DEVICE)
    labels = torch.full((6,), -100, device=DEVICE)
    with torch.no_grad():
        loss = fused_linear_soft_label_cross_entropy(hidden, weight, labels, list(range(10)), eta=0.2,
                                                     backend="triton")
    assert float(loss) == 0.0
    labels[:3] = torch.tensor([1, 2, 50])
    with torch.no_grad():
        tri = fused_linear_soft_label_cross_entropy(hidden, weight, labels, list(range(10)), eta=0.2,
                                                    backend="triton")
        ref = fused_linear_soft_label_cross_entropy(hidden, weight, labels, list(range(10)), eta=0.2,
                                                    backend="torch")
    torch.testing.assert_close(tri, ref)


def test_backend_resolution_and_errors() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("torch", cpu, torch.float32) == "torch"
    assert resolve_backend("auto", cpu, torch.float32) == "torch"  # auto never picks the interpreter
    assert resolve_backend("auto", torch.device("cuda"), torch.float64) == "torch"
    assert resolve_backend("triton", torch.device(DEVICE), torch.bfloat16) == "triton"
    z = torch.randn(3, 40, dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    with pytest.raises(ValueError, match="float64"):
        soft_label_cross_entropy(z, y, list(range(10)), eta=0.1, backend="triton")
    with pytest.raises(ValueError, match="backend must be one of auto, torch, triton"):
        soft_label_cross_entropy(z, y, list(range(10)), eta=0.1, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        sl_core.build_loss("soft_label", list(range(10)), eta=0.1, backend="fast")
    fn = sl_core.build_loss("soft_label", list(range(10)), eta=0.1, lam=2.0, backend="triton")
    zf = z.float().to(DEVICE)
    torch.testing.assert_close(fn(zf, y.to(DEVICE)), soft_label_cross_entropy(zf, y.to(DEVICE), list(range(10)),
                                                                              eta=0.1, lam=2.0, backend="torch"))


def test_sl_core_works_without_triton() -> None:
    """With triton unimportable, sl_core imports and computes; backend='triton' names the missing package."""
    code = textwrap.dedent("""
        import sys
        sys.modules["triton"] = None  # `import triton` now raises ImportError
        import torch, sl_core
        z = torch.randn(4, 30, requires_grad=True)
        y = torch.tensor([1, 2, 25, -100])
        for backend in ("auto", "torch"):
            sl_core.soft_label_cross_entropy(z, y, list(range(10)), eta=0.2, backend=backend).backward()
        sl_core.build_loss("soft_label", list(range(10)), eta=0.2)(z, y)
        try:
            sl_core.soft_label_cross_entropy(z, y, list(range(10)), eta=0.2, backend="triton")
        except ValueError as exc:
            print("ERROR:", exc)
        assert "sl_core._triton" not in sys.modules
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ERROR: backend='triton' needs the triton package" in proc.stdout
