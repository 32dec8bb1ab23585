"""Training throughput of one trial, and how long its loop waits for data: with and without workers.

    python benchmarks/trial_throughput.py [--device cpu|cuda] [--model tiny|smolvlm-256m-shape]
        [--workers 0,1] [--steps 60] [--batch-size 32] [--json] [--out FILE]

Runs `sweeps.trial.run.run_trial` on the default counting configuration (`sweeps/specs/trials/counting.yaml`)
once per `--workers` value (train.data_workers: 0 = batches built inline), with one evaluation at the
end on a small held-out set, and reports for the training loop alone (evaluation excluded):
steps/s, samples/s, tokens/s, the data-wait share (time the loop blocked on the next batch, over the
loop's time; `TrialResult.data_wait_s / train_s`), peak memory (CUDA: the caching allocator's peak;
CPU: the process's peak resident set size during the trial) and, on CUDA, model FLOPs utilisation:
the FLOPs of one training step (forward + backward, counted by `torch.utils.flop_counter` on a
real batch) times steps/s over the GPU's peak (`--peak-tflops`, default 989 = H200 dense bf16).

Models: `tiny` (the default sweep's 2.3M-parameter llava-style model) and `smolvlm-256m-shape`: an
Idefics3 model with SmolVLM-256M's shapes (SigLIP 768 x 12 layers at 512 px, patch 16, pixel
shuffle 4 -> 64 image tokens; Llama text 576 x 30 layers, 9 heads / 3 KV heads, MLP 1536,
vocabulary 49280, tied embeddings: 228M parameters), randomly initialised from a config (no
download), with the tiny byte-level tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BASE_CONFIG = ROOT / "sweeps" / "specs" / "trials" / "counting.yaml"
MODEL_SHAPES: dict[str, dict[str, Any]] = {
    "smolvlm-256m-shape": dict(arch="idefics3", image_size=512, patch_size=16, vision_hidden=768, vision_layers=12,
                               vision_heads=12, text_hidden=576, text_layers=30, text_intermediate=1536,
                               num_heads=9, kv_heads=3, scale_factor=4, model_vocab_size=49280),
}
"""Randomly initialised models with the shapes of real small MLLMs (`build_tiny_model` keyword arguments)."""
MODELS = ("tiny", *MODEL_SHAPES)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current resident size


def _peak_bytes(device: Any) -> int:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated())
    return _status_kib("VmHWM") * 1024


def model_path(name: str, cache: Path) -> str:
    """The model folder for `name` (tiny: the cached tiny model; a shape: built into `cache`)."""
    if name == "tiny":
        return "tiny"
    from sweeps.models import build_tiny_model

    folder = cache / name
    if not (folder / "config.json").is_file():
        kw = dict(MODEL_SHAPES[name])
        build_tiny_model(folder, kw.pop("arch"), **kw)
    return str(folder)


def step_flops(cfg: Any, device: Any) -> int:
    """FLOPs of one optimizer step's forward + backward (all micro-batches), counted on a real batch.

    Counted with eager attention (the same matmuls as SDPA): torch 2.11's flop counter rejects the
    grouped-query shapes transformers passes to SDPA (`enable_gqa`: fewer key/value heads than query
    heads) with "sdpa_flop_count: query/key/value shapes are incompatible"."""
    import sl_core
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from sweeps.trial.data import TaskData
    from sweeps.trial.batches import StepBatches
    from sweeps.models import Batcher, load_model_and_processor
    from sweeps.tasks import get_task
    from sweeps.trial.run import _autocast, _load_dtype, answer_loss

    model, processor = load_model_and_processor(cfg.model.path, device=device, dtype=_load_dtype(cfg))
    model.set_attn_implementation("eager")
    batcher = Batcher(processor, max_new_tokens=cfg.train.max_new_tokens)
    loss_fn = sl_core.build_loss(cfg.loss.family, sl_core.digit_token_ids(processor.tokenizer),
                                 backend=cfg.loss.backend, **cfg.loss.loss_kwargs())
    data = TaskData(get_task(cfg.task.name), cfg.task, cfg.seed)
    micro = StepBatches(data, batcher, batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum,
                        steps=1)[0]
    num_items = int(sum((b["labels"][:, 1:] != -100).sum() for b in micro))
    counter = FlopCounterMode(display=False)
    with counter:
        for b in micro:
            b = {k: v.to(device) for k, v in b.items()}
            labels = b.pop("labels")
            with _autocast(cfg, device):
                loss = answer_loss(model, b, labels, loss_fn, num_items)
            loss.backward()
    del model
    return int(counter.get_total_flops())


def run_one(cfg: Any, device: Any) -> dict[str, Any]:
    from sweeps.trial.run import run_trial

    _reset_peak(device)
    t0 = time.perf_counter()
    res = run_trial(cfg, device=device, checkpoint=False)
    wall = time.perf_counter() - t0
    samples = res.steps * cfg.train.batch_size * cfg.train.grad_accum
    return {
        "workers": cfg.train.data_workers, "steps": res.steps, "train_s": round(res.train_s, 3),
        "trial_wall_s": round(wall, 3), "data_wait_s": round(res.data_wait_s, 3),
        "data_wait_share": res.data_wait_s / res.train_s if res.train_s else None,
        "steps_per_s": res.steps / res.train_s, "samples_per_s": samples / res.train_s,
        "tokens_per_s": res.train_tokens / res.train_s, "peak_bytes": _peak_bytes(device),
        "train_loss": res.metrics.get("train_loss"), "exact_match": res.metrics.get("exact_match"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--model", choices=MODELS, default="tiny")
    p.add_argument("--workers", default=None,
                   help="comma-separated train.data_workers values (default: 0,1 on CPU; 0,min(8, cores-1) on CUDA)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 60; 30 for a shape)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32 (tiny), 16 (a shape on CUDA), 2 (on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--mixed-precision", choices=["auto", "no", "bf16"], default="auto")
    p.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto", help="the loss engine")
    p.add_argument("--family", default=None, help="loss family (default: the counting config's, hard)")
    p.add_argument("--eval-size", type=int, default=16)
    p.add_argument("--rounds", type=int, default=1,
                   help="runs per workers value, interleaved (a shared machine's load then hits all alike)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak, for MFU")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from sweeps.config.trial_config import TrialConfig

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    shaped = args.model != "tiny"
    steps = args.steps or (30 if shaped else 60)
    batch = args.batch_size or (32 if not shaped else 16 if device.type == "cuda" else 2)
    if args.workers is None:
        cores = os.cpu_count() or 2
        workers = [0, 1] if device.type == "cpu" else [0, max(1, min(8, cores - 1))]
    else:
        workers = [int(w) for w in args.workers.split(",")]

    load_before = [round(x, 2) for x in os.getloadavg()]
    cache = Path(tempfile.mkdtemp(prefix="slsweep-throughput-"))
    base = TrialConfig.from_yaml(BASE_CONFIG)
    overrides: dict[str, Any] = {
        "model.path": model_path(args.model, cache), "train.steps": steps, "train.eval_every": steps,
        "train.warmup_steps": 0, "train.batch_size": batch, "train.mixed_precision": args.mixed_precision,
        "task.eval_size": args.eval_size, "loss.backend": args.backend,
    }
    if args.family:
        overrides["loss.family"] = args.family
        if args.family in ("soft_label", "value_aware"):
            overrides.update({"loss.eta": 0.1, "loss.lam": 2.0})
    cfg = base.with_overrides(overrides, source="trial_throughput")

    runs = [run_one(cfg.with_overrides({"train.data_workers": w}), device) | {"round": r}
            for r in range(args.rounds) for w in workers]
    flops = step_flops(cfg, device)
    for r in runs:
        r["tflops_per_s"] = flops * r["steps_per_s"] / 1e12
        r["mfu"] = r["tflops_per_s"] / args.peak_tflops if device.type == "cuda" else None
    summary = {}
    for w in workers:
        mine = [r for r in runs if r["workers"] == w]
        summary[str(w)] = {k: statistics.median(r[k] for r in mine)
                           for k in ("steps_per_s", "samples_per_s", "data_wait_share", "peak_bytes", "tflops_per_s")}
        summary[str(w)]["mfu"] = mine[0]["mfu"] and statistics.median(r["mfu"] for r in mine)
    from transformers import AutoConfig, AutoModelForImageTextToText

    from sweeps.models import resolve_model_path

    with torch.device("meta"):  # shapes only: no memory, no init
        meta = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(resolve_model_path(cfg.model.path)))
    n_params = sum(t.numel() for t in meta.parameters())
    report = {
        "model": args.model, "parameters": n_params, "device": torch.cuda.get_device_name() if device.type == "cuda"
        else (platform.processor() or platform.machine()), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "batch_size": batch, "steps": steps, "loss_family": cfg.loss.family,
        "loss_backend": args.backend, "mixed_precision": args.mixed_precision, "step_flops": flops,
        "peak_tflops": args.peak_tflops if device.type == "cuda" else None, "torch": torch.__version__,
        "load_avg_before": load_before, "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "median_by_workers": summary, "runs": runs,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text)
    if args.json:
        print(text)
        return
    print(f"{args.model} ({n_params or '?'} parameters) on {report['device']}, batch {batch}, {steps} steps, "
          f"{report['torch_threads']} torch threads, load avg {load_before} -> {report['load_avg_after']}, "
          f"{flops / 1e9:.1f} GFLOP per step")
    print(f"{'round':>5} {'workers':>7} {'steps/s':>8} {'samples/s':>10} {'data wait':>10} {'peak MiB':>9} "
          f"{'TFLOP/s':>8} {'MFU':>6}")
    rows = runs + [{**v, "workers": int(w), "round": "median"} for w, v in summary.items()] if args.rounds > 1 else runs
    for r in rows:
        mfu = "-" if r["mfu"] is None else f"{r['mfu']:.3f}"
        print(f"{r['round']:>5} {r['workers']:>7} {r['steps_per_s']:>8.2f} {r['samples_per_s']:>10.1f} "
              f"{r['data_wait_share']:>10.1%} {r['peak_bytes'] / 2**20:>9.0f} {r['tflops_per_s']:>8.3f} {mfu:>6}")


if __name__ == "__main__":
    main()
