"""Training batches from DataLoader workers: the same batches as inline, also after a resume at step k."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoProcessor

from sweeps.trial.data import TaskData
from sweeps.trial.batches import StepBatches, TrainBatches
from sweeps.models import Batcher, tiny_model_path
from sweeps.tasks import get_task
from sweeps.trial.run import run_trial
from tests.trial_helpers import tiny_trial_config

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def steps() -> StepBatches:
    cfg = tiny_trial_config(steps=5, batch_size=4)
    batcher = Batcher(AutoProcessor.from_pretrained(tiny_model_path("llava")))
    data = TaskData(get_task("counting"), cfg.task, seed=3)
    return StepBatches(data, batcher, batch_size=4, grad_accum=2, steps=5)


def _collect(steps: StepBatches, start: int, workers: int) -> tuple[list, TrainBatches]:
    it = TrainBatches(steps, start=start, device=CPU, workers=workers)
    return list(it), it


def _assert_same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b):
        assert len(step_a) == len(step_b) == 2  # grad_accum micro-batches
        for mb_a, mb_b in zip(step_a, step_b):
            assert mb_a.keys() == mb_b.keys()
            for key in mb_a:
                assert torch.equal(mb_a[key], mb_b[key]), key


def test_workers_give_the_inline_batches_also_from_a_resume_step(steps: StepBatches) -> None:
    inline, it0 = _collect(steps, 0, workers=0)
    assert len(inline) == 5 and it0.wait_s > 0
    assert it0.tokens == sum(b["input_ids"].numel() for step in inline for b in step)
    # different steps differ (the stream is not one batch repeated)
    assert not torch.equal(inline[0][0]["pixel_values"], inline[1][0]["pixel_values"])
    assert not torch.equal(inline[0][0]["pixel_values"], inline[0][1]["pixel_values"])

    with_workers, it2 = _collect(steps, 0, workers=2)
    _assert_same(with_workers, inline)
    assert it2.tokens == it0.tokens

    resumed, _ = _collect(steps, 3, workers=2)  # a trial restored from its step-3 checkpoint
    _assert_same(resumed, inline[3:])
    resumed_inline, _ = _collect(steps, 3, workers=0)
    _assert_same(resumed_inline, inline[3:])


def test_close_stops_early(steps: StepBatches) -> None:
    it = TrainBatches(steps, start=0, device=CPU, workers=1)
    first = next(it)
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    assert len(first) == 2


@pytest.mark.slow
def test_trial_with_workers_trains_like_inline() -> None:
    """Same seed: the same losses and answers whether batches come from workers or are built inline."""
    results = {w: run_trial(tiny_trial_config(steps=4, eval_every=4, eval_size=8,
                                              overrides={"train.data_workers": w}))
               for w in (0, 2)}
    assert results[0].metrics["train_loss"] == pytest.approx(results[2].metrics["train_loss"], rel=1e-6)
    assert results[0].metrics["exact_match"] == results[2].metrics["exact_match"]
    assert results[0].train_tokens == results[2].train_tokens > 0
    for r in results.values():
        assert 0 < r.data_wait_s < r.train_s < r.seconds


def test_workers_ignore_ctrl_c(steps: StepBatches) -> None:
    """A SIGINT to the workers (a terminal sends it to the whole process group) leaves the batches flowing."""
    import os
    import signal
    import time

    it = TrainBatches(steps, start=0, device=CPU, workers=1)
    first = next(it)
    pids = [w.pid for w in it._it._workers]  # the DataLoader iterator's worker processes
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    rest = list(it)
    assert len([first, *rest]) == 5
