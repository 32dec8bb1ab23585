"""What the service costs on top of the work: the same trials as a plain loop and through slsweep.

Runs the same 8 trial configurations (a grid: eta x psi, tiny model, counting) twice in one
process: once as a plain Python loop calling `sweeps.trial.run_trial` (no Ray, no MLflow), once
through the service (`run_sweep`: Ray Tune, the MLflow tracker, the Optuna-free grid path) with one
trial at a time and the same CPU threads. Prints `service_vs_plain` and, separately, Ray start-up
and MLflow logging time.

    python benchmarks/sweep_overhead.py [--steps 150] [--eval-size 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

SPEC = """
name: overhead
task: {{name: counting, eval_size: {eval_size}}}
model: {{path: tiny}}
train: {{steps: {steps}, batch_size: 32, lr: 1.0e-3, warmup_steps: 10, eval_every: {eval_every}, max_new_tokens: 4}}
loss: {{family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}}
search_space:
  name: overhead
  params:
    eta: {{type: float, low: 0.0, high: 0.3}}
    psi: {{type: categorical, choices: [triangular, gaussian]}}
  grid: {{eta: [0.0, 0.05, 0.1, 0.2]}}
search: {{algorithm: grid, seeds: 1, max_concurrent: 1, num_samples: 8}}
scheduler: {{type: fifo}}
resources: {{cpu: {cpus}, gpu: 0}}
metric: {{name: exact_match, mode: max}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per trial (~30 s at 150)")
    ap.add_argument("--eval-size", type=int, default=200)
    ap.add_argument("--cpus", type=int, default=2, help="threads per trial, both ways")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    import torch

    from sweeps.service import ensure_tiny_model, run_sweep
    from sweeps.spec import load_spec
    from sweeps.trial import run_trial
    from sweeps.tune_runner import resolve_trial_config

    work = Path(tempfile.mkdtemp(prefix="slsweep-overhead-"))
    spec_path = work / "overhead.yaml"
    spec_path.write_text(SPEC.format(steps=args.steps, eval_every=max(1, args.steps // 3),
                                     eval_size=args.eval_size, cpus=args.cpus))
    resolved = load_spec(spec_path)
    base = resolved.base_trial_config()
    configs = [resolve_trial_config(base, resolved.space, {"point": p, "__trial_index__": 0})
               for p in resolved.space.grid()]
    ensure_tiny_model(base)

    torch.set_num_threads(args.cpus)
    t0 = time.perf_counter()
    plain_metrics = [run_trial(cfg).metrics["exact_match"] for cfg in configs]
    plain = time.perf_counter() - t0

    t0 = time.perf_counter()
    summary = run_sweep(spec_path, runs_dir=work / "runs", verbose=0, print_summary=False)
    service = time.perf_counter() - t0
    ray.shutdown()
    out = summary.outcome
    result = {
        "trials": len(configs), "steps": args.steps, "cpus_per_trial": args.cpus,
        "plain_s": round(plain, 2), "service_s": round(service, 2),
        "service_vs_plain": round(service / plain, 3),
        "ray_start_s": round(out.ray_init_seconds, 2), "mlflow_logging_s": round(out.logging_seconds, 2),
        "plain_mean_exact_match": round(sum(plain_metrics) / len(plain_metrics), 4),
        "service_mean_exact_match": round(float(summary.table["exact_match"].mean()), 4),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'contender':<28}{'wall s':>10}")
    print(f"{'plain loop (run_trial)':<28}{plain:>10.1f}")
    print(f"{'slsweep service':<28}{service:>10.1f}")
    print(f"  of which Ray start-up     {out.ray_init_seconds:>10.1f}")
    print(f"  of which MLflow logging   {out.logging_seconds:>10.1f}")
    print(f"service_vs_plain = {service / plain:.3f}   (same configs: mean exact_match "
          f"{result['plain_mean_exact_match']} plain vs {result['service_mean_exact_match']} service)")


if __name__ == "__main__":
    main()
