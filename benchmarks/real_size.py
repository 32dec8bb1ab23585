"""The slsweep trial step against a plain Hugging Face loop at real model sizes, and the memory planner.

    python benchmarks/real_size.py --preset smolvlm-256m [--layers N] [--lora] [--dtype bfloat16]
        [--checkpointing] [--freeze-vision] [--micro-batch 1] [--steps 2] [--out FILE]

Builds the preset with random weights (`sweeps.models.presets.build_preset_model`, cached under
/tmp/slsweep-presets), loads it once through the trial's own setup (`sweeps.trial.run.setup_trial`: the
same model options, optimizer (AdamW), clipping and batch), and on one fixed micro-batch of the
counting task alternates, step by step:

- slsweep: `sweeps.trial.run.train_step` (soft_label, eta 0.1; answer-only logits, fused loss);
- hf: `model(**inputs, labels=labels).loss.backward()` (the model's built-in cross-entropy over all
  positions), then the same clipping and optimizer step, under the same autocast.

One warm-up step of each first (AdamW creates its states there); then `--steps` timed steps of each,
interleaved (slsweep, hf, slsweep, hf, ...). Peak memory per step: CPU: the process's peak resident
set (VmHWM, reset before each step after `malloc_trim`) minus its resident set before the model was
loaded; CUDA: `torch.cuda.max_memory_allocated` reset before each step. The planner's estimate
(`sweeps.trial.memory`) for the same configuration is printed beside the slsweep step's measured
peak. Prints one JSON object: medians, ratios (slsweep / hf) and the conditions (load average, CPU
count, torch version).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CACHE = Path(os.environ.get("SLSWEEP_PRESET_CACHE", "/tmp/slsweep-presets"))


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smolvlm-256m")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--lora", action="store_true")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--freeze-vision", action="store_true")
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from sweeps.config.trial_config import TrialConfig
    from sweeps.trial.memory import PeakMeter, batch_shape, counts_of, estimate_memory
    from sweeps.models.presets import build_preset_model
    from sweeps.trial.run import _autocast, bf16_autocast, pick_device, setup_trial, train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = CACHE / f"{args.preset}-L{args.layers or 'full'}"
    if not (folder / "config.json").is_file():
        build_preset_model(args.preset, folder, layers=args.layers)
    device = pick_device()
    cfg = TrialConfig.model_validate(dict(
        task=dict(name="counting", eval_size=4),
        model=dict(path=str(folder), lora={} if args.lora else None, dtype=args.dtype,
                   gradient_checkpointing=args.checkpointing, freeze_vision=args.freeze_vision),
        train=dict(steps=10, batch_size=args.micro_batch, eval_every=10, lr=1e-5, data_workers=0),
        loss=dict(family="soft_label", eta=0.1)))
    meter = PeakMeter(device)
    s = setup_trial(cfg, device=device)
    examples = s.data.batch(0, 0, args.micro_batch)
    batch = s.batcher.train_batch([e.image for e in examples], [e.prompt for e in examples],
                                  [e.answer for e in examples])
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def slsweep_step() -> None:
        train_step(s, [dict(batch)])

    def hf_step() -> None:
        enc = dict(batch)
        labels = enc.pop("labels")
        with _autocast(cfg, device):
            loss = s.model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(s.params, cfg.train.max_grad_norm)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)

    def run(fn) -> tuple[float, float]:
        _trim()
        meter.start()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, meter.peak() / 1e9

    times: dict[str, list[float]] = {"slsweep": [], "hf": []}
    peaks: dict[str, list[float]] = {"slsweep": [], "hf": []}
    steps = {"slsweep": slsweep_step, "hf": hf_step}
    for name in steps:  # warm-up: AdamW's states are created here
        run(steps[name])
    for _ in range(args.steps):
        for name in steps:
            dt, peak = run(steps[name])
            times[name].append(dt)
            peaks[name].append(peak)
    shape = batch_shape(s.batcher, examples, s.model.config)
    est = estimate_memory(s.model.config, counts_of(s.model), shape, micro_batch=args.micro_batch,
                          dtype=args.dtype, autocast_bf16=bf16_autocast(cfg, device.type),
                          checkpointing=args.checkpointing, device_type=device.type)
    med = {k: statistics.median(v) for k, v in times.items()}
    peak = {k: max(v) for k, v in peaks.items()}
    out = {
        "preset": args.preset, "layers": args.layers or "full", "lora": args.lora, "dtype": args.dtype,
        "checkpointing": args.checkpointing, "freeze_vision": args.freeze_vision,
        "micro_batch": args.micro_batch, "tokens": shape.tokens, "answer_positions": shape.answer,
        "vision_patches": shape.vision, "parameters": counts_of(s.model).total,
        "trainable": counts_of(s.model).trainable,
        "step_s": med, "peak_gb": peak, "time_ratio": med["slsweep"] / med["hf"],
        "memory_ratio": peak["slsweep"] / peak["hf"] if peak["hf"] else None,
        "planner": {"estimate_gb": est.gb, "measured_gb": peak["slsweep"],
                    "error": est.gb / peak["slsweep"] - 1 if peak["slsweep"] else None,
                    "terms_gb": {k: getattr(est, k) / 1e9 for k in
                                 ("weights", "optimizer", "grads", "autocast", "activations", "logits", "inputs")},
                    "vision_transient_gb": est.parts["vision_transient"] / 1e9},
        "conditions": {"device": str(device), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
                       "loadavg_1m": os.getloadavg()[0], "torch": torch.__version__,
                       "python": platform.python_version(), "steps_timed": args.steps},
        "all_step_s": times, "all_peak_gb": peaks,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return out


if __name__ == "__main__":
    main()
