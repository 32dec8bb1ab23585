"""Ctrl-C and SIGTERM during a sweep: a graceful stop through Ray Tune's own stop signal, then a
forced one.

Ray Tune ends a run gracefully on SIGUSR1 (and SIGINT unless `TUNE_DISABLE_SIGINT_HANDLER=1`):
it finishes the controller step, saves the experiment state one last time, stops the trial actors
and calls the callbacks' `on_experiment_end` (`ray/tune/tune.py`, `_setup_signal_catching`). While
the Tuner runs, `StopSignals` turns the first SIGINT or SIGTERM into that graceful stop and
remembers which signal it was (the sweep then ends as interrupted, exit 128 + signal); a second
signal raises `KeyboardInterrupt` at once (the forced stop). Outside the Tuner a signal raises
`KeyboardInterrupt` (nothing to save yet).

Ray's own processes (GCS, raylet, trial workers) start with SIGINT blocked, so a Ctrl-C sent to
the terminal's process group reaches the driver only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Callable, Iterator

__all__ = ["SweepInterrupted", "StopSignals", "exit_code", "signals_held"]

TUNE_SIGINT_ENV = "TUNE_DISABLE_SIGINT_HANDLER"
_HANDLED = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's exit status for a process ended by `signum`: 130 (SIGINT), 143 (SIGTERM)."""
    return 128 + int(signum)


class SweepInterrupted(Exception):
    """A sweep stopped by a signal; `signum` is the first signal received."""

    def __init__(self, signum: int, forced: bool = False) -> None:
        self.signum, self.forced = int(signum), forced
        super().__init__(f"interrupted by {signal.Signals(signum).name}"
                         f"{' (forced)' if forced else ''}")


class SignalStop(KeyboardInterrupt):
    """Raised by the signal handler to stop at once; `signum` is the first signal of this stop, so
    the exit status says what the user sent (143 for SIGTERM then Ctrl-C), wherever it lands."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


@contextmanager
def signals_held() -> Iterator[None]:
    """The first SIGINT or SIGTERM arriving in the block is handled once the block is done, by the
    handler the block replaced; a second one in the block is handled at once (the way out of a
    block that hangs, e.g. on an MLflow server that stopped answering).

    For work a stop must not cut halfway: stopping the local Ray (cut, it left Ray's agents
    running), closing the MLflow runs as interrupted (cut, runs stayed RUNNING). Blocking the
    signals in the main thread would not do: Ray's threads would take them. Outside the main
    thread (where Python runs no signal handler) the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    saved: dict[int, Any] = {}

    def restore() -> None:
        for s, handler in saved.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        if len(caught) > 1:  # again: no more waiting
            restore()
            handler = saved.get(signum)
            if callable(handler):
                handler(signum, frame)
            else:
                signal.raise_signal(signum)

    try:
        for s in _HANDLED:  # should the replaced handler raise between the two, both are put back
            saved[s] = signal.signal(s, hold)
    except BaseException:
        restore()
        raise
    try:
        yield
    finally:
        restore()
        if len(caught) == 1:
            signal.raise_signal(caught[0])


def _stop_with(first: int) -> Callable[[int, FrameType | None], None]:
    """A signal handler that stops at once with the status of the stop's `first` signal."""
    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise SignalStop(first)
    return handler


class StopSignals:
    """Context manager owning SIGINT and SIGTERM for one driver call (not re-entrant).

    Attributes:
        signum: the first signal received, or None.
        forced: whether a second signal forced the stop.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.forced = False
        self._tuning = False
        self._saved: dict[int, Any] = {}
        self._saved_env: str | None = None

    def __enter__(self) -> StopSignals:
        self._saved = {s: signal.getsignal(s) for s in _HANDLED}
        self._saved_env = os.environ.get(TUNE_SIGINT_ENV)
        os.environ[TUNE_SIGINT_ENV] = "1"  # Tune's SIGINT handler would hide the signal from us
        for s in _HANDLED:
            signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        first = self.signum
        for s, handler in self._saved.items():
            if first is not None:
                # A stop is under way: a late signal (while the summary prints, Ray shuts down) stops
                # at once but exits with the first signal's status (SIGTERM then Ctrl-C: 143).
                signal.signal(s, _stop_with(first))
            else:
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if self._saved_env is None:
            os.environ.pop(TUNE_SIGINT_ENV, None)
        else:
            os.environ[TUNE_SIGINT_ENV] = self._saved_env

    @contextmanager
    def tuning(self) -> Iterator[None]:
        """Mark the span in which Tune runs (a first signal then stops Tune gracefully)."""
        saved = signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # no stale handler of an earlier run
        self._tuning = True
        try:
            yield
        finally:
            self._tuning = False
            signal.signal(signal.SIGUSR1, saved if saved is not None else signal.SIG_DFL)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self.forced = True
            print(f"\n{name} again: stopping now", file=sys.stderr, flush=True)
            raise SignalStop(self.signum)
        self.signum = signum
        tune_handler = signal.getsignal(signal.SIGUSR1)
        if self._tuning and callable(tune_handler):
            print(f"\n{name}: stopping the sweep after saving its state "
                  "(again to stop at once)", file=sys.stderr, flush=True)
            tune_handler(signal.SIGUSR1, frame)  # Tune's graceful stop
            return
        raise SignalStop(signum)
