"""`sweeps.driver.signals.signals_held`: real signals sent to this process during work a stop must
not cut halfway (stopping the local Ray, closing the MLflow runs) reach their handler after it; a
second one reaches it at once."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from sweeps.driver.signals import signals_held


@pytest.fixture(params=[signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def handled(request: pytest.FixtureRequest) -> Iterator[tuple[int, list[str]]]:
    """(a stop signal, the events list its handler appends "handled" to before raising KeyboardInterrupt)."""
    signum, events = request.param, []

    def handler(_got: int, _frame: object) -> None:
        events.append("handled")
        raise KeyboardInterrupt

    saved = signal.signal(signum, handler)
    try:
        yield signum, events
        assert signal.getsignal(signum) is handler  # put back by the block
    finally:
        signal.signal(signum, saved)


def test_a_signal_in_the_block_is_handled_after_it_by_the_same_handler(handled: tuple[int, list[str]]) -> None:
    signum, events = handled
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signum)
            time.sleep(0.2)  # the handler would run here, at the next bytecode
            events.append("done")
    assert events == ["done", "handled"]


def test_a_second_signal_in_the_block_is_handled_at_once(handled: tuple[int, list[str]]) -> None:
    """The way out of a block that hangs: signalled again, it stops at once."""
    signum, events = handled
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            os.kill(os.getpid(), signum)
            time.sleep(0.1)
            events.append("held")
            os.kill(os.getpid(), signum)
            time.sleep(5)  # a hung block
            events.append("never")
    assert events == ["held", "handled"]


def test_no_signal_no_call_and_outside_the_main_thread_a_plain_block() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with signals_held():
        pass
    assert {s: signal.getsignal(s) for s in before} == before
    ran: list[bool] = []

    def work() -> None:
        with signals_held():  # signal.signal would raise ValueError in this thread
            ran.append(True)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert ran == [True]
