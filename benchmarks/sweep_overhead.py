"""What the service costs on top of the work: the same trials as a plain loop and through slsweep.

Runs the same 8 trial configurations (a grid: eta x psi, tiny model, counting) twice in one
process: once as a plain Python loop calling `sweeps.trial.run.run_trial` (no Ray, no MLflow), once
through the service (`run_sweep`: Ray Tune, the MLflow tracker, the grid search path) with one
trial at a time and the same CPU threads. Prints `service_vs_plain` and where the service's extra
wall time goes:

- `start_up`: from calling `run_sweep` until the first trial function starts, made of
  `ray_start` (`ray.init` of the local Ray, with the MLflow/Optuna stores created meanwhile),
  `worker_start` (the trial worker process: `worker_imports` from its creation until the trial
  code is imported, i.e. Python, Ray's worker and torch/transformers, then Tune's set-up) and `driver_other` (planning, importing the Tune
  runner, building the Tuner, scheduling the worker).
- `gaps`: from one trial function's end to the next one's start (Tune's bookkeeping, experiment
  state snapshots, the tracker's run creation, the worker's reset).
- `after_last_trial`: from the last trial's end until `run_sweep` returns (closing the runs, the
  summary table).
- `in_trial`: the trial functions' wall time minus the plain loop's, split into `report`
  (checkpoint writes, Tune's report and checkpoint persist; the plain loop reports nothing) and
  the rest (slower setup, steps and evaluations: other processes taking the trial's cores).
- CPU seconds the driver, Ray's own processes and the trial worker used during the sweep (on a
  2-core machine the driver's and Ray's CPU is taken from a 2-thread trial).
- `mlflow_logging`: the driver's time inside the MLflow tracker's callbacks.

    python benchmarks/sweep_overhead.py [--steps 150] [--cpus 2] [--runs 3] [--json]

With `--runs N` both contenders run N times (alternating, plain first) and the medians and
min-max spreads are printed.

Whole process against whole process (`--processes`): the in-process loop above has torch and
transformers imported before its clock starts, the service's trial worker imports them on its
clock. Here each contender is its own process, timed from start to exit: `slsweep run SPEC -q`
(a fresh run folder each time) against `benchmarks/plain_trials.py`, a plain script that imports
what it needs and runs the same trial configurations (resolved here, as the trial worker resolves
them) with the same torch threads. Alternating, plain first; prints JSON with each run and the
medians (`service_vs_plain` at `--cpus`), the trial workers' distinct process ids (1 = Tune reused
the warm worker for every trial, `ray.reuse_workers`) and both mean exact matches (the same work).

`--long`: the same, for a sweep of 40 very short trials (the 8 configurations x 5 seeds, `--steps`
default 5, one evaluation of `--eval-size` default 32 images each); adds
`service_s_per_trial` = (service - plain) / 40, the service's cost per trial.

    python benchmarks/sweep_overhead.py --processes --steps 150 --cpus 2 --runs 3
    python benchmarks/sweep_overhead.py --long --cpus 2 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

SPEC = """
name: overhead
task: {{name: counting, eval_size: {eval_size}}}
model: {{path: tiny}}
train: {{steps: {steps}, batch_size: 32, lr: 1.0e-3, warmup_steps: {warmup}, eval_every: {eval_every}, max_new_tokens: 4}}
loss: {{family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}}
search_space:
  name: overhead
  params:
    eta: {{type: float, low: 0.0, high: 0.3}}
    psi: {{type: categorical, choices: [triangular, gaussian]}}
  grid: {{eta: [0.0, 0.05, 0.1, 0.2]}}
search: {{algorithm: grid, seeds: {seeds}, max_concurrent: 1, num_samples: 8}}
scheduler: {{type: fifo}}
resources: {{cpu: {cpus}, gpu: 0}}
metric: {{name: exact_match, mode: max}}
"""


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of this process and every process below it, sampled every
    `interval` s until `stop()`: `samples` holds (epoch seconds, {pid: CPU seconds so far}); a
    process that exits keeps its last sample."""

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.interval = interval
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.created: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self.parents: dict[int, int] = {}
        self._procs: list = []
        self._halt = threading.Event()

    def _sample(self) -> None:
        import psutil

        now: dict[int, float] = dict(self.samples[-1][1]) if self.samples else {}
        if len(self.samples) % 5 == 0:  # listing the process tree reads all of /proc: not every time
            self._procs = [self.me, *self.me.children(recursive=True)]
        for proc in self._procs:
            try:
                cpu = proc.cpu_times()
                now[proc.pid] = cpu.user + cpu.system
                self.created.setdefault(proc.pid, proc.create_time())
                if proc.pid not in self.names:
                    self.names[proc.pid] = " ".join(proc.cmdline())[:80] or proc.name()
                    self.parents[proc.pid] = proc.ppid()
            except psutil.Error:
                pass
        self.samples.append((time.time(), now))

    def run(self) -> None:
        self._sample()
        while not self._halt.wait(self.interval):
            self._sample()

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self._sample()

    def used(self, group: Callable[[int], bool], windows: list[tuple[float, float]] | None = None) -> float:
        """CPU seconds of the processes `group` selects, over the whole sampling or only in the
        sampling intervals whose midpoint lies in one of `windows` ((start, end) epoch seconds)."""
        total = 0.0
        for (t0, a), (t1, b) in zip(self.samples, self.samples[1:]):
            mid = (t0 + t1) / 2
            if windows is None or any(lo <= mid <= hi for lo, hi in windows):
                total += sum(v - a.get(pid, 0.0) for pid, v in b.items() if group(pid))
        return total


def plain_loop(configs: list) -> dict[str, Any]:
    from sweeps.trial.run import run_trial

    t0 = time.perf_counter()
    results = [run_trial(cfg) for cfg in configs]
    return {"wall": time.perf_counter() - t0, "results": results}


def service(spec_path: Path, work: Path) -> dict[str, Any]:
    import ray

    from sweeps.driver.service import run_sweep
    from sweeps.trial.trainable import TRIAL_TIMES_ENV

    times_file = work / "trial_times.jsonl"
    os.environ[TRIAL_TIMES_ENV] = str(times_file)  # inherited by the local Ray's workers
    sampler = CpuSampler()
    sampler.start()
    started = time.time()
    t0 = time.perf_counter()
    summary = run_sweep(spec_path, runs_dir=work / "runs", verbose=0, print_summary=False)
    wall = time.perf_counter() - t0
    ended = time.time()
    ray.shutdown()
    sampler.stop()
    del os.environ[TRIAL_TIMES_ENV]
    trials = sorted((json.loads(line) for line in times_file.read_text().splitlines()), key=lambda r: r["start"])
    return {"wall": wall, "started": started, "ended": ended, "summary": summary, "trials": trials,
            "sampler": sampler}


def breakdown(plain: dict[str, Any], svc: dict[str, Any]) -> dict[str, float]:
    """The service's extra wall time, by where it is spent (seconds), and the CPU seconds of the
    processes involved."""
    out = svc["summary"].outcome
    trials, sampler = svc["trials"], svc["sampler"]
    worker_pids = {t["pid"] for t in trials}
    worker_pids |= {pid for pid, parent in sampler.parents.items() if parent in worker_pids}  # data loaders
    first_worker = min(sampler.created.get(t["pid"], trials[0]["start"]) for t in trials)
    svc_trial = sum(t["end"] - t["start"] for t in trials)
    plain_trial = sum(r.seconds for r in plain["results"])
    report = sum(t["report_s"] for t in trials)
    me = sampler.me.pid
    groups = {"driver": lambda pid: pid == me, "trial_worker": lambda pid: pid in worker_pids,
              "ray_processes": lambda pid: pid != me and pid not in worker_pids}
    windows = [(t["start"] + t["setup_s"], t["end"]) for t in trials]  # steps, evaluations, reports
    cpu = {k: sampler.used(g) for k, g in groups.items()}
    by_process = sorted(((sampler.names.get(pid, "?"), sampler.used(lambda p, q=pid: p == q, windows))
                         for pid in sampler.names if pid not in worker_pids), key=lambda kv: -kv[1])
    during = {k: sampler.used(g, windows) for k, g in groups.items() if k != "trial_worker"}
    start_up = trials[0]["start"] - svc["started"]
    worker_start = trials[0]["start"] - first_worker
    return {
        "start_up_s": start_up,
        "ray_start_s": out.ray_init_seconds,
        "worker_start_s": worker_start,
        "worker_imports_s": trials[0]["imported"] - first_worker,
        "driver_other_s": start_up - out.ray_init_seconds - worker_start,
        "gaps_s": sum(b["start"] - a["end"] for a, b in zip(trials, trials[1:])),
        "after_last_trial_s": svc["ended"] - trials[-1]["end"],
        "in_trial_s": svc_trial - plain_trial,
        "in_trial_report_s": report,
        "in_trial_rest_s": svc_trial - plain_trial - report,
        "mlflow_logging_s": out.logging_seconds,
        **{f"cpu_{k}_s": v for k, v in cpu.items()},
        **{f"cpu_{k}_during_training_s": v for k, v in during.items()},
        "cpu_during_training_by_process": [[name, round(v, 2)] for name, v in by_process[:8]],
    }


def one_run(args: argparse.Namespace, work: Path, spec_path: Path, configs: list) -> dict[str, Any]:
    plain = plain_loop(configs)
    svc = service(spec_path, work)
    plain_em = [r.metrics["exact_match"] for r in plain["results"]]
    return {
        "plain_s": plain["wall"], "service_s": svc["wall"], "service_vs_plain": svc["wall"] / plain["wall"],
        **breakdown(plain, svc),
        "plain_mean_exact_match": sum(plain_em) / len(plain_em),
        "plain_trial_s": [round(r.seconds, 2) for r in plain["results"]],
        "service_trial_s": [round(t["end"] - t["start"], 2) for t in svc["trials"]],
        "service_report_s": [round(t["report_s"], 3) for t in svc["trials"]],
        "service_mean_exact_match": float(svc["summary"].table["exact_match"].mean()),
    }


ROOT = Path(__file__).resolve().parents[1]
LONG_SEEDS = 5  # --long: 8 configurations x 5 seeds = 40 trials


def _slsweep() -> list[str]:
    """The `slsweep` entry point beside this Python (a virtual environment's), else the module."""
    exe = Path(sys.executable).with_name("slsweep")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from sweeps.cli import main; main()"]


def _timed(cmd: list[str], log: Path, env: dict[str, str]) -> tuple[float, str, float]:
    """Run `cmd` as its own process (stdout and stderr to `log`); its wall time from start to exit
    in seconds, its stdout's last line and its start in epoch seconds (as the trial times file
    records trials).

    Raises:
        RuntimeError: the process failed (naming the log).
    """
    t0 = time.perf_counter()
    started = time.time()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=fh, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    log.write_text(log.read_text() + proc.stdout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: see {log}")
    return wall, (proc.stdout.strip().splitlines() or [""])[-1], started


def _gaps(trials: list[dict[str, Any]]) -> float:
    """Seconds between one trial's end and the next one's start, summed (trials in start order)."""
    ordered = sorted(trials, key=lambda t: t["start"])
    return sum(max(0.0, b["start"] - a["end"]) for a, b in zip(ordered, ordered[1:]))


def process_run(spec_path: Path, configs_path: Path, n_trials: int, cpus: int, work: Path) -> dict[str, Any]:
    """One round of `--processes` / `--long`: the plain script's process, then `slsweep run`'s."""
    from sweeps.report.runs import load_sweep
    from sweeps.trial.trainable import TRIAL_TIMES_ENV

    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(TRIAL_TIMES_ENV, None)
    plain_s, last, _ = _timed([sys.executable, str(ROOT / "benchmarks" / "plain_trials.py"), str(configs_path),
                            "--cpus", str(cpus)], work / "plain.log", env)
    plain = json.loads(last)
    times = work / "trial_times.jsonl"
    service_s, _, started = _timed([*_slsweep(), "run", str(spec_path), "-q", "--runs-dir", str(work / "runs")],
                          work / "service.log", {**env, TRIAL_TIMES_ENV: str(times)})
    trials = [json.loads(line) for line in times.read_text().splitlines()]
    runs = load_sweep(runs_dir=work / "runs")
    if plain["trials"] != n_trials or len(trials) != n_trials or len(runs.trials) != n_trials:
        raise RuntimeError(f"expected {n_trials} trials each way: plain {plain['trials']}, service {len(trials)} "
                           f"recorded, {len(runs.trials)} full-budget runs in {work / 'runs'}")
    return {"plain_s": plain_s, "service_s": service_s, "service_vs_plain": service_s / plain_s,
            "service_s_per_trial": (service_s - plain_s) / n_trials,
            "plain_trials_s": sum(plain["trial_s"]), "service_trials_s": sum(t["end"] - t["start"] for t in trials),
            # where the difference goes: the trials' phases summed both ways (TrialResult), the
            # service's time before its first trial and after its last, and between its trials
            "plain_phases_s": plain.get("phases"),
            "service_phases_s": {k: sum(t[k] for t in trials) for k in ("setup_s", "train_s", "eval_s", "report_s")},
            "plain_outside_trials_s": plain_s - sum(plain["trial_s"]),
            "service_before_first_trial_s": min(t["start"] for t in trials) - started,
            "service_after_last_trial_s": started + service_s - max(t["end"] for t in trials),
            "service_between_trials_s": _gaps(trials),
            "worker_pids": len({t["pid"] for t in trials}),
            "plain_mean_exact_match": plain["mean_exact_match"],
            "service_mean_exact_match": float(runs.trials["metrics.exact_match"].mean())}


def processes_main(args: argparse.Namespace, root: Path, spec_path: Path, configs: list) -> None:
    """`--processes` / `--long`: whole process against whole process, alternating, medians of N."""
    configs_path = root / "configs.json"
    configs_path.write_text(json.dumps([c.model_dump(mode="json") for c in configs]))
    runs = []
    for i in range(args.runs):
        work = root / f"run{i}"
        work.mkdir()
        runs.append(process_run(spec_path, configs_path, len(configs), args.cpus, work))
        print(json.dumps({"run": i + 1, **runs[-1]}), file=sys.stderr, flush=True)
    numbers = [k for k in runs[0] if isinstance(runs[0][k], (int, float))]
    median = {k: statistics.median(r[k] for r in runs) for k in numbers}
    spread = {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in numbers}
    print(json.dumps({"mode": "long" if args.long else "processes", "trials": len(configs), "steps": args.steps,
                      "eval_size": args.eval_size, "cpus_per_trial": args.cpus, "runs": runs,
                      "median": median, "spread": spread, "work": str(root) if args.keep else None}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps per trial (default 150, ~16 s; --long: 5)")
    ap.add_argument("--eval-size", type=int, default=None, help="evaluation images (default 200; --long: 32)")
    ap.add_argument("--cpus", type=int, default=2, help="threads per trial, both ways")
    ap.add_argument("--runs", type=int, default=1, help="repeat both contenders this many times")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="--processes/--long: keep the work folder (run folders, logs; ~1 GB a round)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--processes", action="store_true",
                      help="each contender its own process: slsweep run vs benchmarks/plain_trials.py (JSON out)")
    mode.add_argument("--long", action="store_true",
                      help="--processes for 40 very short trials; adds the service's seconds per trial")
    args = ap.parse_args()
    args.steps = args.steps or (5 if args.long else 150)
    args.eval_size = args.eval_size or (32 if args.long else 200)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from sweeps.driver.service import ensure_tiny_model
    from sweeps.config.spec import load_spec
    from sweeps.trial.trainable import TRIAL_INDEX, resolve_trial_config

    root = Path(tempfile.mkdtemp(prefix="slsweep-overhead-"))
    spec_path = root / "overhead.yaml"
    seeds = LONG_SEEDS if args.long else 1
    spec_path.write_text(SPEC.format(steps=args.steps, eval_every=args.steps if args.long else max(1, args.steps // 3),
                                     eval_size=args.eval_size, cpus=args.cpus, seeds=seeds,
                                     warmup=min(10, args.steps)))
    resolved = load_spec(spec_path)
    base = resolved.base_trial_config()
    configs = [resolve_trial_config(base, resolved.space, {"point": p, TRIAL_INDEX: i})
               for p in resolved.space.grid() for i in range(seeds)]
    ensure_tiny_model(base)
    if args.processes or args.long:
        try:
            processes_main(args, root, spec_path, configs)
        finally:
            if not args.keep:  # each round's run folders hold every trial's checkpoints (~1 GB a round)
                shutil.rmtree(root, ignore_errors=True)
        return
    torch.set_num_threads(args.cpus)

    runs = []
    for i in range(args.runs):
        work = root / f"run{i}"
        work.mkdir()
        runs.append(one_run(args, work, spec_path, configs))
        if not args.json:
            print(f"run {i + 1}: " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in runs[-1].items()), flush=True)
    keys = [k for k, v in runs[0].items() if not isinstance(v, list)]
    median = {k: statistics.median(r[k] for r in runs) for k in keys}
    spread = {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys}
    if args.json:
        print(json.dumps({"trials": len(configs), "steps": args.steps, "cpus_per_trial": args.cpus,
                          "runs": runs, "median": median, "spread": spread}))
        return
    print(f"\n{len(configs)} trials x {args.steps} steps, {args.cpus} CPU threads per trial, "
          f"{args.runs} run(s): median [min - max]")
    for k in keys:
        print(f"  {k:<28}{median[k]:>10.3f}   [{spread[k][0]:.3f} - {spread[k][1]:.3f}]")


if __name__ == "__main__":
    main()
