"""A local sweep starts Ray and its trial workers while the driver still plans.

`sweeps.driver.early_ray.EarlyRay` starts the local Ray in a thread once the preflight has read the
task's data; the raylet prestarts the trial workers the sweep runs at once, which import the trial
code meanwhile (`sweeps.driver.ray_env.warm_trial_workers`). Real Ray, real trials: the worker that
ran the trials had imported the trial code before the driver began executing the sweep, and a
refusal that comes after Ray started leaves no Ray process and no run folder behind.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray

from sweeps.driver import ray_env, tune_internals
from sweeps.driver.preflight import plan_sweep
from sweeps.errors import SpecError

SPEC = """
name: warm
task: {name: counting, eval_size: 8, train_size: 32}
model: {path: tiny}
train: {steps: 2, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
search_space: {name: eta-only, params: {eta: {type: float, low: 0.0, high: 0.3}}}
search: {algorithm: random, num_samples: 3, seeds: 1, max_concurrent: 1, seed: 3}
scheduler: {type: fifo}
resources: {cpu: 1, gpu: 0}
metric: {name: exact_match, mode: max}
"""


def _spec(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "warm.yaml"
    path.write_text(SPEC + extra)
    return path


def _ray_processes() -> list[psutil.Process]:
    """Ray's processes started from this test process (GCS, raylet and what it started)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name() in ("gcs_server", "raylet") or proc.cmdline()[:1] and "ray::" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            continue
    return out


@pytest.mark.parametrize(("overrides", "address", "expected"), [
    (["search.max_concurrent=1"], None, 1),
    (["search.max_concurrent=8", "search.num_samples=1"], None, 1),   # never more than the trials
    (["search.max_concurrent=1"], "127.0.0.1:6379", 0),               # a cluster's nodes start their own
    (["resources.workers=2", "train.batch_size=8"], None, 0),         # Ray Train's workers, per trial
    (["ray.runtime_env={env_vars: {A: '1'}}"], None, 0),               # prestarted workers have no runtime env
])
def test_warm_trial_workers_are_the_trials_that_run_at_once(tmp_path: Path, overrides: list[str],
                                                            address: str | None, expected: int) -> None:
    plan = plan_sweep(_spec(tmp_path), overrides=overrides, address=address, runs_dir=tmp_path / "runs", check=False)
    assert ray_env.warm_trial_workers(plan) == expected


def test_many_trials_at_once_warm_as_many_workers_as_the_cpus_hold(tmp_path: Path) -> None:
    plan = plan_sweep(_spec(tmp_path), overrides=["search.max_concurrent=64", "search.num_samples=64"],
                      runs_dir=tmp_path / "runs", check=False)
    assert ray_env.warm_trial_workers(plan) == max(1, min(64, int(tune_internals.local_cpu_count())))


def test_local_workers_run_the_drivers_code_and_warm_ones_stay_quiet() -> None:
    import sweeps

    for warm in (True, False):
        env = ray_env.local_worker_env(quiet=True, warm=warm)
        root = env["PYTHONPATH"].split(os.pathsep)[0]  # this checkout first, not another installed copy
        assert Path(root) / "sweeps" == Path(sweeps.__file__).resolve().parent
    assert ray_env.local_worker_env(quiet=True, warm=True).items() >= ray_env.QUIET_WORKER_ENV.items()
    assert not ray_env.QUIET_WORKER_ENV.keys() & ray_env.local_worker_env(quiet=False, warm=True).keys()
    assert set(ray_env.local_worker_env(quiet=True, warm=False)) == {"PYTHONPATH"}  # the runtime env has the rest


@pytest.mark.slow
def test_the_trial_worker_was_started_before_tune_asked_for_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one trial worker (reused for the 3 trials) was started before `Tuner.fit` was called:
    the local Ray prestarted it (importing the trial code) while the driver planned. Without the
    warm start Tune creates it once the Tuner runs."""
    from ray import tune

    from sweeps.driver.service import run_sweep

    ray.shutdown()  # a Ray an earlier test left would be joined, not started
    times = tmp_path / "times.jsonl"
    monkeypatch.setenv("SLSWEEP_TRIAL_TIMES", str(times))
    before_fit: list[set[int]] = []  # the processes under this one when the Tuner was asked to run
    fit = tune.Tuner.fit

    def watched_fit(self):
        before_fit.append({p.pid for p in psutil.Process().children(recursive=True)})
        return fit(self)

    monkeypatch.setattr(tune.Tuner, "fit", watched_fit)
    try:
        summary = run_sweep(_spec(tmp_path), runs_dir=tmp_path / "runs", verbose=0, print_summary=False)
    finally:
        ray.shutdown()
    assert not summary.failed_all
    rows = [json.loads(line) for line in times.read_text().splitlines()]
    assert len(rows) == 3 and len({r["pid"] for r in rows}) == 1, rows
    assert rows[0]["pid"] in before_fit[0], (rows, before_fit)


@pytest.mark.slow
def test_a_refusal_after_ray_started_leaves_no_ray_and_no_run_folder(tmp_path: Path) -> None:
    """The memory plan refuses after the data files were read (Ray was starting by then): one
    SpecError, Ray stopped, no process of it left, nothing written in the run folder."""
    from sweeps.driver.service import run_sweep

    ray.shutdown()
    before = {p.pid for p in _ray_processes()}
    with pytest.raises(SpecError, match="resources.memory_gb"):
        run_sweep(_spec(tmp_path), runs_dir=tmp_path / "runs", verbose=0, print_summary=False,
                  overrides=["resources.memory_gb=0.001"])
    assert not ray.is_initialized()
    deadline = time.time() + 10
    while {p.pid for p in _ray_processes()} - before and time.time() < deadline:
        time.sleep(0.2)
    assert not {p.pid for p in _ray_processes()} - before
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_slow_disconnect_still_stops_every_process_of_the_early_ray(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread that started the local Ray outlives `stop_local_ray` even when the disconnect
    takes longer than the thread's poll (as on a loaded machine after a forced Ctrl-C). Had it
    ended mid-stop, its parent-death signal would kill the raylet and orphan the raylet's agents
    (`ray::DashboardAgent`, `ray::RuntimeEnvAgent`), which then lived on for minutes."""
    from sweeps.driver.early_ray import PARK_POLL_S, EarlyRay

    ray.shutdown()
    before = {p.pid for p in _ray_processes()}
    early = EarlyRay(quiet=True)
    plan_sweep(_spec(tmp_path), runs_dir=tmp_path / "runs", start_ray=early.start)
    early.wait()
    started = {p.pid for p in _ray_processes()} - before
    assert any(psutil.Process(p).name() == "raylet" for p in started)
    starter = next(t for t in threading.enumerate() if t.name == "slsweep-ray-start")
    shutdown = ray.shutdown
    alive_mid_stop: list[bool] = []

    def slow_shutdown(*args: Any, **kwargs: Any) -> None:
        shutdown(*args, **kwargs)
        time.sleep(2.5 * PARK_POLL_S)  # Ray reads as stopped well before the stop is done
        alive_mid_stop.append(starter.is_alive())

    monkeypatch.setattr(ray, "shutdown", slow_shutdown)
    try:
        tune_internals.stop_local_ray()
        assert alive_mid_stop == [True]  # it waited for the stop instead of ending in its middle
    finally:
        early.cancel()
    assert not starter.is_alive()

    def left() -> list[str]:  # by pid: an orphan is no child of ours any more
        out = []
        for pid in started:
            try:
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(f"{pid} {proc.name()}")
            except psutil.Error:
                continue
        return out

    deadline = time.time() + 10
    while left() and time.time() < deadline:
        time.sleep(0.2)
    assert not left()
