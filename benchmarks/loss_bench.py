"""Speed and peak memory of sl_core's losses against the usual alternatives, forward + backward.

    python benchmarks/loss_bench.py --tokens 2048 --vocab 151936 [--hidden 896] [--json]

Loss group (input: logits [N, V] float32, labels [N] with ~30% digit targets and ~10% ignored):
  hard        F.cross_entropy (the reference)
  soft_label  sl_core.soft_label_cross_entropy (eta 0.1, lam 2, triangular), backend "auto" (on CUDA with
              triton installed: the Triton kernel; else the torch path)
  soft_label_torch  the same with backend="torch" (only where "auto" picks Triton)
  dense_soft  the same soft-label loss with a vocabulary-sized dense target (the common approach)
  ntloss      F.cross_entropy + 0.3 * ntloss.NTLoss (NTL-WAS), when `ntloss` is installed
Fused group (input: hidden [N, H], lm_head weight [V, H]):
  unfused     F.linear + sl_core.soft_label_cross_entropy (the reference)
  fused       sl_core.fused_linear_soft_label_cross_entropy (backend "auto")
  fused_torch the same with backend="torch" (only where "auto" picks Triton)
  torch_lce   torch.nn.functional.linear_cross_entropy, chunked (hard CE), when this torch has it
  liger_flce  Liger-Kernel's fused linear cross-entropy (hard CE, Triton), on CUDA when `liger_kernel` imports

Time: contenders run interleaved in rounds after one warm-up round; the median over rounds is
reported. Memory on CPU: each contender runs once in a fresh subprocess; peak = the process's peak
resident set size during forward + backward (VmHWM, reset through /proc/self/clear_refs after the
inputs exist and a small warm-up ran) minus the resident size just before. On CUDA: the caching
allocator's peak (torch.cuda.max_memory_allocated) above what was allocated before the step. Both
include everything the step allocates, the returned gradients too. Ratios are ours / reference.
Before timing, the script checks on the chosen device that the soft-label loss and the fused path
(each backend that runs there) match a dense float64 autograd reference (value and gradients) at a
small size ("verified").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sl_core  # noqa: E402

DIGITS = list(range(15, 25))  # where Qwen2's tokenizer keeps "0".."9"
ETA, LAM, PSI = 0.1, 2.0, "triangular"
LOSS_GROUP = ("hard", "soft_label", "soft_label_torch", "dense_soft", "ntloss")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
FUSED_GROUP = ("unfused", "fused", "fused_torch", "torch_lce", "liger_flce")


def has_ntloss() -> bool:
    try:
        import ntloss  # noqa: F401
    except ImportError:
        return False
    return True


def has_liger(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss  # noqa: F401
    except Exception:
        return False
    return True


def auto_is_triton(device: str, dtype: torch.dtype) -> bool:
    """Whether backend="auto" runs the Triton kernels here (then the torch path is a separate contender)."""
    from sl_core.backend import resolve_backend

    return resolve_backend("auto", torch.device(device), dtype) == "triton"


def available(names: tuple[str, ...], args: argparse.Namespace) -> list[str]:
    """The contenders of a group that run here."""
    triton_auto = auto_is_triton(args.device, DTYPES[args.dtype])
    runs = {"ntloss": has_ntloss(), "torch_lce": has_torch_lce(), "liger_flce": has_liger(args.device),
            "soft_label_torch": triton_auto, "fused_torch": triton_auto}
    return [n for n in names if runs.get(n, True)]


def has_torch_lce() -> bool:
    return hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions")


def make_labels(n: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (n,), generator=g)
    u = torch.rand(n, generator=g)
    digits = torch.tensor(DIGITS)[torch.randint(0, 10, (n,), generator=g)]
    labels = torch.where(u < 0.3, digits, labels)
    return torch.where(u > 0.9, torch.full_like(labels, -100), labels)


def make_inputs(group: str, n: int, vocab: int, hidden: int, seed: int = 0, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator(device=device).manual_seed(seed)
    labels = make_labels(n, vocab, seed).to(device)
    if group == "loss":
        return {"logits": (torch.randn(n, vocab, generator=g, device=device) * 2).to(dtype), "labels": labels}
    return {"hidden": torch.randn(n, hidden, generator=g, device=device).to(dtype),
            "weight": (torch.randn(vocab, hidden, generator=g, device=device) / hidden ** 0.5).to(dtype),
            "labels": labels}


def dense_soft_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The common implementation: a dense [N, V] target, then -(q * log_softmax(z)).sum(-1)."""
    psi = sl_core.psi_matrix(PSI).to(device=logits.device, dtype=logits.dtype)
    valid = labels != -100
    safe = torch.where(valid, labels, 0)
    digit_ids = torch.tensor(DIGITS, device=logits.device)
    is_digit = torch.isin(safe, digit_ids) & valid
    which = torch.searchsorted(digit_ids, safe).clamp_max(9)
    q = torch.zeros_like(logits)
    q.scatter_(1, safe.unsqueeze(1), torch.where(is_digit, 1 - ETA, 1.0).unsqueeze(1).to(logits.dtype))
    soft = ETA * psi[which] * is_digit.unsqueeze(1)
    q[:, digit_ids] += soft
    weight = torch.where(is_digit, LAM, 1.0).to(logits.dtype) * valid
    per_token = -(q * torch.log_softmax(logits, dim=-1)).sum(-1)
    return (per_token * weight).sum() / valid.sum()


class NtlossContender:
    """F.cross_entropy + 0.3 * ntloss.NTLoss on a WordLevel tokenizer of the benchmark's vocabulary size."""

    def __init__(self, vocab: int) -> None:
        from ntloss import NTLoss
        from tokenizers import Tokenizer, models
        from transformers import PreTrainedTokenizerFast

        words = {f"w{i}": i for i in range(vocab)}
        for d, idx in enumerate(DIGITS):
            del words[f"w{idx}"]
            words[str(d)] = idx
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="w0")),
                                      unk_token="w0")
        self.ntl = NTLoss(tokenizer=tok)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels) + 0.3 * self.ntl(logits.unsqueeze(0), labels.unsqueeze(0))


def contender(name: str, vocab: int) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """fn(inputs) -> gradients, one forward + backward of the named contender on fresh leaves."""
    if name in LOSS_GROUP:
        if name == "hard":
            loss = lambda z, y: F.cross_entropy(z, y)  # noqa: E731
        elif name in ("soft_label", "soft_label_torch"):
            backend = "torch" if name == "soft_label_torch" else "auto"
            loss = lambda z, y: sl_core.soft_label_cross_entropy(z, y, DIGITS, eta=ETA, lam=LAM, psi=PSI,  # noqa: E731
                                                                 backend=backend)
        elif name == "dense_soft":
            loss = dense_soft_label
        else:
            loss = NtlossContender(vocab)

        def run_loss(inp):
            z = inp["logits"].detach().requires_grad_()
            out = loss(z, inp["labels"])
            out.backward()
            return {"logits": z.grad, "loss": out.detach()}
        return run_loss

    liger = None
    if name == "liger_flce":
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()

    def run_fused(inp):
        h = inp["hidden"].detach().requires_grad_()
        w = inp["weight"].detach().requires_grad_()
        y = inp["labels"]
        if name == "unfused":
            out = sl_core.soft_label_cross_entropy(F.linear(h, w), y, DIGITS, eta=ETA, lam=LAM, psi=PSI)
        elif name in ("fused", "fused_torch"):
            out = sl_core.fused_linear_soft_label_cross_entropy(h, w, y, DIGITS, eta=ETA, lam=LAM, psi=PSI,
                                                                backend="torch" if name == "fused_torch" else "auto")
        elif name == "liger_flce":
            out = liger(w, h, y)
        else:
            out = F.linear_cross_entropy(h, w, y, options=torch.nn.LinearCrossEntropyOptions())
        out.backward()
        return {"hidden": h.grad, "weight": w.grad, "loss": out.detach()}
    return run_fused


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(name: str, args: argparse.Namespace) -> None:
    """Runs in a fresh process: peak resident memory of one forward + backward, printed as JSON."""
    torch.set_num_threads(args.threads)
    group = "loss" if name in LOSS_GROUP else "fused"
    run = contender(name, args.vocab)
    run(make_inputs(group, 16, args.vocab, args.hidden, seed=1, dtype=DTYPES[args.dtype]))  # load kernels, pools
    inputs = make_inputs(group, args.tokens, args.vocab, args.hidden, dtype=DTYPES[args.dtype])
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident size
    base = _status_kib("VmRSS")
    grads = run(inputs)
    peak = _status_kib("VmHWM")
    del grads
    print(json.dumps({"peak_bytes": (peak - base) * 1024}))


def measure_memory(name: str, args: argparse.Namespace) -> int | None:
    if args.device != "cpu":
        return cuda_peak(name, args)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name, "--tokens", str(args.tokens),
           "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--threads", str(args.threads),
           "--dtype", args.dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"memory measurement of {name} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"])


def cuda_peak(name: str, args: argparse.Namespace) -> int:
    """Peak CUDA allocator memory of one forward + backward above what the inputs already hold."""
    group = "loss" if name in LOSS_GROUP else "fused"
    run = contender(name, args.vocab)
    inputs = make_inputs(group, args.tokens, args.vocab, args.hidden, device=args.device, dtype=DTYPES[args.dtype])
    run(inputs)  # warm-up: cuBLAS workspaces and the like are allocated once
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    grads = run(inputs)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del grads, inputs
    torch.cuda.empty_cache()
    return int(peak)


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def time_group(names: list[str], group: str, args: argparse.Namespace, repeats: int) -> dict[str, dict]:
    inputs = make_inputs(group, args.tokens, args.vocab, args.hidden, device=args.device, dtype=DTYPES[args.dtype])
    runs = {n: contender(n, args.vocab) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    losses: dict[str, float] = {}
    for r in range(repeats + 1):  # round 0 is the warm-up
        for n in names:
            _sync(args.device)
            t0 = time.perf_counter()
            out = runs[n](inputs)
            _sync(args.device)
            dt = time.perf_counter() - t0
            losses[n] = float(out["loss"])
            del out
            if r:
                times[n].append(dt)
    return {n: {"time_s": statistics.median(times[n]), "times_s": [round(t, 4) for t in times[n]],
                "loss": losses[n]} for n in names}


def verify(device: str) -> bool:
    """Soft-label loss and fused path on `device` (float32 and bfloat16, every backend that runs there)
    vs a dense float64 CPU reference."""
    ok = True
    n, vocab, hidden = 96, 1000, 32
    cases = [(dtype, tol, backend) for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2))
             for backend in (("torch", "triton") if auto_is_triton(device, dtype) else ("torch",))]
    for dtype, tol, backend in cases:
        inp = make_inputs("fused", n, vocab, hidden, seed=3, device=device, dtype=dtype)
        h = inp["hidden"].detach().requires_grad_()
        w = inp["weight"].detach().requires_grad_()
        y = inp["labels"]
        fused = sl_core.fused_linear_soft_label_cross_entropy(h, w, y, DIGITS, eta=ETA, lam=LAM, psi=PSI,
                                                              chunk_size=40, backend=backend)
        fused.backward()
        z = F.linear(h.detach(), w.detach()).requires_grad_()
        plain = sl_core.soft_label_cross_entropy(z, y, DIGITS, eta=ETA, lam=LAM, psi=PSI, backend=backend)
        plain.backward()
        ref_h = h.detach().double().cpu().requires_grad_()
        ref_w = w.detach().double().cpu().requires_grad_()
        ref_z = F.linear(ref_h, ref_w)
        ref = dense_soft_label(ref_z, y.cpu())
        ref_gz, ref_gh, ref_gw = torch.autograd.grad(ref, (ref_z, ref_h, ref_w))
        pairs = [(fused, ref), (plain, ref), (z.grad, ref_gz), (h.grad, ref_gh), (w.grad, ref_gw)]
        for got, want in pairs:
            got, want = got.detach().double().cpu(), want.detach()
            ok &= bool(torch.allclose(got, want, rtol=tol, atol=tol * max(1.0, float(want.abs().max()))))
        hard = sl_core.soft_label_cross_entropy(z.detach(), y, DIGITS, eta=0.0, backend=backend)
        ok &= bool(torch.allclose(hard.double().cpu(), F.cross_entropy(z.detach().double(), y).cpu(),
                                  rtol=tol, atol=tol))
    return ok


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--hidden", type=int, default=896, help="lm_head width for the fused group (Qwen2-0.5B: 896)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds of the loss group")
    p.add_argument("--fused-repeats", type=int, default=3, help="timed rounds of the fused group")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (torch)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="logits / hidden / weight dtype")
    p.add_argument("--skip-fused", action="store_true")
    p.add_argument("--skip-loss", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args)
        return
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    verified = verify(args.device)
    loss_names = [] if args.skip_loss else available(LOSS_GROUP, args)
    fused_names = [] if args.skip_fused else available(FUSED_GROUP, args)
    results = time_group(loss_names, "loss", args, args.repeats) if loss_names else {}
    if fused_names:
        results.update(time_group(fused_names, "fused", args, args.fused_repeats))
    for n in loss_names + fused_names:
        results[n]["peak_bytes"] = None if args.skip_memory else measure_memory(n, args)
    load_after = os.getloadavg()

    def r(ours: str, ref: str, key: str) -> float | None:
        if ours not in results or ref not in results:
            return None
        return ratio(results[ours][key], results[ref][key])

    device_name = torch.cuda.get_device_name() if args.device != "cpu" else (platform.processor() or platform.machine())
    report = {
        "tokens": args.tokens, "vocab": args.vocab, "hidden": args.hidden, "dtype": args.dtype, "device": device_name,
        "threads": args.threads, "repeats": args.repeats, "fused_repeats": args.fused_repeats,
        "torch": torch.__version__, "verified": verified,
        "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in load_after],
        "contenders": results,
    }
    for ours, ref in (("soft_label", "hard"), ("soft_label_torch", "hard"), ("dense_soft", "hard"),
                      ("ntloss", "hard"), ("fused", "unfused"), ("fused_torch", "unfused"), ("fused", "torch_lce"),
                      ("fused", "liger_flce")):
        name = {"soft_label": "soft", "soft_label_torch": "soft_torch", "dense_soft": "dense"}.get(ours, ours)
        report[f"{name}_vs_{ref}_time"] = r(ours, ref, "time_s")
        report[f"{name}_vs_{ref}_mem"] = r(ours, ref, "peak_bytes")
    if report["fused_vs_unfused_mem"] is not None:
        # the [V, H] weight gradient is an output of every contender of the fused group
        weight_grad = args.vocab * args.hidden * DTYPES[args.dtype].itemsize
        report["fused_vs_unfused_mem_excl_weight_grad"] = ratio(
            results["fused"]["peak_bytes"] - weight_grad, results["unfused"]["peak_bytes"] - weight_grad)
    soft = [results[n]["loss"] for n in ("soft_label", "dense_soft") if n in results]
    rel = 1e-4 if args.dtype == "float32" else 2e-2
    report["soft_label_matches_dense"] = bool(len(soft) == 2 and abs(soft[0] - soft[1]) <= rel * abs(soft[1]))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"N={args.tokens} V={args.vocab} H={args.hidden} {args.dtype} on {device_name}, {args.threads} thread(s), "
          f"torch {torch.__version__}, load avg {load_before[0]:.2f} -> {load_after[0]:.2f}, verified={verified}")
    print(f"{'contender':<12} {'time (s)':>9} {'peak (MiB)':>11}  times")
    for n, res in results.items():
        mem = "-" if res["peak_bytes"] is None else f"{res['peak_bytes'] / 2**20:.0f}"
        print(f"{n:<12} {res['time_s']:>9.3f} {mem:>11}  {res['times_s']}")
    for key in ("soft_vs_hard_time", "soft_vs_hard_mem", "soft_torch_vs_hard_time", "soft_torch_vs_hard_mem",
                "dense_vs_hard_time", "ntloss_vs_hard_time", "fused_vs_unfused_time", "fused_vs_unfused_mem",
                "fused_vs_unfused_mem_excl_weight_grad", "fused_torch_vs_unfused_time", "fused_vs_torch_lce_time",
                "fused_vs_torch_lce_mem", "fused_vs_liger_flce_time", "fused_vs_liger_flce_mem"):
        if report.get(key) is not None:
            print(f"{key:<40} {report[key]:.3f}")


if __name__ == "__main__":
    main()
