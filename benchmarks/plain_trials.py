"""The plain contender of `sweep_overhead.py --processes` / `--long`: trials as a plain loop.

Runs the trial configurations in CONFIGS (a JSON list of `TrialConfig` dumps, written by
`sweep_overhead.py` with the same resolution the service's trial worker uses) one after the other
through `sweeps.trial.run.run_trial`, in this process, with `--cpus` torch threads: no Ray, no
MLflow, no spec or search space. It is started as its own process and pays its own imports (torch,
transformers, the trial code), so its wall time compares with a whole `slsweep run` process.

    python benchmarks/plain_trials.py CONFIGS.json --cpus 2

Prints one JSON line: trials, each trial's seconds, their phases summed (`TrialResult`'s setup_s,
train_s, eval_s, report_s), the mean exact match (to check both contenders
did the same work) and the process's wall time from its start (as `time.perf_counter` sees it,
imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

STARTED = time.perf_counter()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", type=Path, help="JSON list of TrialConfig dumps")
    ap.add_argument("--cpus", type=int, default=2, help="torch threads (the service gives a trial its CPUs)")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from sweeps.config.trial_config import TrialConfig
    from sweeps.trial.run import run_trial

    torch.set_num_threads(args.cpus)
    configs = [TrialConfig.model_validate(c) for c in json.loads(args.configs.read_text())]
    results = [run_trial(cfg) for cfg in configs]
    em = [r.metrics["exact_match"] for r in results if "exact_match" in r.metrics]
    phases = {k: sum(getattr(r, k) for r in results) for k in ("setup_s", "train_s", "eval_s", "report_s")}
    print(json.dumps({"trials": len(results), "trial_s": [round(r.seconds, 3) for r in results], "phases": phases,
                      "mean_exact_match": sum(em) / len(em) if em else None,
                      "process_s": time.perf_counter() - STARTED}))


if __name__ == "__main__":
    main()
