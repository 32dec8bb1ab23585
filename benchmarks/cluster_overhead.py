"""What joining a Ray cluster and logging to an MLflow server cost: the same sweep both ways.

Runs one small spec (a 4-point grid over eta, tiny model, counting, 2 trials at a time, 1 CPU each)
twice in one process:

- local: `slsweep run` semantics with no address: a local Ray (2 CPUs) started by the sweep, the
  SQLite MLflow store and Optuna-free grid in the run folder;
- cluster: a 2-node Ray cluster (two `ray start` processes, 1 CPU each) and an `mlflow server` on
  127.0.0.1, both started beforehand (a cluster is joined, not started, by a sweep), then the sweep
  with `--address HOST:PORT --tracking-uri http://...`: the driver ships its code to the workers
  through the runtime environment and every MLflow call goes over HTTP.

Prints both wall times (from the `run_sweep` call to its return), the ratio cluster/local (target
<= 1.15) and the ratio without Ray start/join, plus the MLflow logging seconds on each path.

    python benchmarks/cluster_overhead.py [--steps 60] [--eval-size 64] [--json]

Both "clusters" share this machine's cores: on 2 cores the cluster path also pays for two raylets
and the MLflow server competing with the trials, which a real cluster does not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# The cluster helpers are the ones the cluster tests use (tests/cluster_utils.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SPEC = """
name: cluster-overhead
task: {{name: counting, eval_size: {eval_size}, train_size: 256}}
model: {{path: tiny}}
train: {{steps: {steps}, batch_size: 16, lr: 1.0e-3, warmup_steps: 5, eval_every: {eval_every}, max_new_tokens: 4}}
loss: {{family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}}
search_space:
  name: overhead
  params:
    eta: {{type: float, low: 0.0, high: 0.3, values: [0.0, 0.05, 0.1, 0.2]}}
search: {{algorithm: grid, seeds: 1, max_concurrent: 2}}
scheduler: {{type: fifo}}
resources: {{cpu: 1, gpu: 0}}
metric: {{name: exact_match, mode: max}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per trial")
    ap.add_argument("--eval-size", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    work = Path(tempfile.mkdtemp(prefix="slsweep-cluster-bench-"))
    try:
        result = _compare(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'path':<44}{'wall s':>10}{'Ray start/join s':>18}{'MLflow s':>10}")
    print(f"{'local Ray + SQLite store':<44}{result['local_s']:>10.1f}{result['local_ray_start_s']:>18.1f}"
          f"{result['local_mlflow_logging_s']:>10.1f}")
    print(f"{'2-node cluster + MLflow server (HTTP)':<44}{result['cluster_s']:>10.1f}"
          f"{result['cluster_ray_join_s']:>18.1f}{result['server_mlflow_logging_s']:>10.1f}")
    print(f"cluster_vs_local = {result['cluster_vs_local']:.3f}  (target <= 1.15); without Ray "
          f"start/join: {result['cluster_vs_local_without_ray_start']:.3f}")
    print(f"same grid both ways: mean exact_match {result['local_mean_exact_match']} local vs "
          f"{result['cluster_mean_exact_match']} cluster; trials finished on the cluster: "
          f"{result['cluster_trials_finished']}/{result['trials']}")


def _compare(work: Path, args: argparse.Namespace) -> dict:
    """Run the sweep locally, then on the 2-node cluster with the MLflow server; the figures."""
    import ray

    from cluster_utils import MlflowServer, RayCluster, apply_driver_env
    from sweeps.driver.service import ensure_tiny_model, run_sweep
    from sweeps.config.spec import load_spec

    spec = work / "spec.yaml"
    spec.write_text(SPEC.format(steps=args.steps, eval_every=max(1, args.steps // 3),
                                eval_size=args.eval_size))
    ensure_tiny_model(load_spec(spec).base_trial_config())
    apply_driver_env()  # the same RAY_AUTH_MODE for the local Ray, the cluster and this driver

    # The local path starts a Ray of its own (a private temp dir: no other cluster's address file).
    os.environ["SLSWEEP_RAY_TMP"] = str(Path(tempfile.mkdtemp(prefix="slb-", dir="/tmp")))
    t0 = time.perf_counter()
    local = run_sweep(spec, runs_dir=work / "local", verbose=0, print_summary=False)
    local_s = time.perf_counter() - t0
    ray.shutdown()
    shutil.rmtree(os.environ.pop("SLSWEEP_RAY_TMP"), ignore_errors=True)

    server = MlflowServer(work / "mlflow").launch()
    with RayCluster(nodes=2, cpus_per_node=1) as cluster:
        server.start()
        try:
            # Ray puts the driver's working directory on workers' sys.path; run from elsewhere so
            # workers get the code the way remote ones would, through the runtime environment.
            cwd = os.getcwd()
            os.chdir(work)
            try:
                t0 = time.perf_counter()
                remote = run_sweep(spec, address=cluster.address, tracking_uri=server.uri,
                                   runs_dir=work / "cluster", verbose=0, print_summary=False)
                cluster_s = time.perf_counter() - t0
            finally:
                os.chdir(cwd)
            ray.shutdown()
        finally:
            server.stop()

    lo, re_ = local.outcome, remote.outcome
    result = {
        "trials": len(local.table), "steps": args.steps, "eval_size": args.eval_size,
        "local_s": round(local_s, 2), "cluster_s": round(cluster_s, 2),
        "cluster_vs_local": round(cluster_s / local_s, 3),
        "local_ray_start_s": round(lo.ray_init_seconds, 2), "cluster_ray_join_s": round(re_.ray_init_seconds, 2),
        "cluster_vs_local_without_ray_start": round((cluster_s - re_.ray_init_seconds)
                                                    / (local_s - lo.ray_init_seconds), 3),
        "local_mlflow_logging_s": round(lo.logging_seconds, 2),
        "server_mlflow_logging_s": round(re_.logging_seconds, 2),
        "local_mean_exact_match": round(float(local.table["exact_match"].mean()), 4),
        "cluster_mean_exact_match": round(float(remote.table["exact_match"].mean()), 4),
        "cluster_trials_finished": int((remote.table["status"] == "ok").sum()),
    }
    return result


if __name__ == "__main__":
    main()
