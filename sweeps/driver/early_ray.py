"""A sweep's local Ray, started in the background while the driver's preflight still reads the model.

`slsweep run` and `resume` spend about 5 s in the preflight (importing torch and transformers,
loading the tokenizer and processor, planning memory) and, before this, then started Ray (~3 s)
and then waited for the trial worker to import the same libraries (~4-5 s). Here Ray starts in a
thread as soon as the task's data files have been read (the checks users trip over most), and its
trial workers, prestarted warm (`sweeps.driver.ray_env.warm_trial_workers`), import the trial code
meanwhile: the first trial starts about when the preflight ends.

Anything that ends the command before the sweep takes Ray over (a refusal later in the preflight, a
Ctrl-C) stops that Ray again (`EarlyRay.cancel`): a refused sweep leaves no Ray processes behind,
as before.

Nothing heavy is imported here (`tune_internals` imports Ray inside its functions): the hook is
handed to the preflight before the spec is read.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from sweeps.driver import tune_internals

if TYPE_CHECKING:
    from sweeps.driver.preflight import SweepPlan

__all__ = ["EarlyRay"]

PARK_POLL_S = 2.0  # how often the thread that started Ray checks whether that Ray was stopped


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    sys.exit(signum)  # what `ray.init` installs when it runs in the main thread


class EarlyRay:
    """The preflight's `start_ray` hook for one `run`/`resume` call.

    `start(plan)` (called by `sweeps.driver.preflight.preflight` once the data files are read)
    starts a local Ray in a thread and sets `plan.ray_start` to this object, so that
    `sweeps.driver.ray_env.init_ray` waits for it instead of starting another. A sweep that joins a
    cluster starts nothing here (joining may wait for nodes, and says so in order).

    Args:
        quiet: Ray's messages at ERROR only (`-q`), as `init_ray(quiet=True)`.
    """

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._thread: threading.Thread | None = None
        self._seconds = 0.0
        self._error: BaseException | None = None
        self._plan: SweepPlan | None = None
        self._started = threading.Event()
        self._stop = threading.Event()

    def start(self, plan: SweepPlan) -> None:
        if not plan.local_ray or self._thread is not None:
            return
        self._plan = plan
        plan.ray_start = self
        tune_internals.silence_ray_init_thread_warning()
        self._thread = threading.Thread(target=self._run, args=(plan,), name="slsweep-ray-start", daemon=True)
        self._thread.start()

    def _run(self, plan: SweepPlan) -> None:
        t0 = time.perf_counter()
        try:
            from sweeps.driver.ray_env import start_ray

            start_ray(plan, quiet=self.quiet)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by `wait`
            self._error = exc
            return
        finally:
            self._seconds = time.perf_counter() - t0
            self._started.set()
        # Ray starts its processes (GCS, raylet, ...) with a parent-death signal, which Linux sends
        # when the *thread* that started them ends (prctl PR_SET_PDEATHSIG): this thread stays
        # until that Ray is stopped (at exit, `tune_internals.stop_local_ray`; never while that
        # runs), as a daemon.
        while not self._stop.wait(PARK_POLL_S) and not tune_internals.local_ray_stopped():
            pass

    def wait(self) -> float:
        """Wait for the start; returns its seconds (from the thread's start).

        Raises:
            SlsweepError: Ray could not start (as `init_ray` raises it).
        """
        if self._thread is None:
            return 0.0
        self._started.wait()
        self._release()
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._seconds

    def _release(self) -> None:
        """The plan forgets this start (a later `init_ray` of the same plan starts or joins its own)."""
        if self._plan is not None:
            self._plan.ray_start = self._plan.start_ray = None

    def cancel(self) -> None:
        """The command ends before the sweep took Ray over: wait for the start, then stop that Ray."""
        if self._thread is None:
            return
        self._started.wait()
        self._release()
        if self._error is None:
            tune_internals.stop_local_ray()
        self._stop.set()
        self._thread.join()
        self._thread = None
