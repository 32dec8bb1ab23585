"""A trial's training batches, built ahead of the optimizer step in DataLoader worker processes.

Item k of `StepBatches` is everything optimizer step k consumes: its `grad_accum` micro-batches,
each generated (image rendering or sampling, `sweeps.trial.data.TaskData.batch`) and encoded by the
processor (`Batcher.train_batch`). The batch of step k depends only on (trial seed, k, micro), never
on which process built it or on what was built before, so a trial restored at step k sees the same
batches with or without workers: the loader simply starts its sampler at k.

With `workers = 0` the batches are built inline, as the step needs them. With workers, a
`torch.utils.data.DataLoader` keeps `prefetch` steps per worker in flight (in step order), pins the
tensors on CUDA so the host-to-device copies run asynchronously, and `TrainBatches` records how
long the training loop waited for data (`wait_s`): the data-wait share of a trial is wait_s over
its training time.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from sweeps.trial.data import TaskData
from sweeps.trial.distributed import Shard, shard_rows
from sweeps.models import Batcher

MicroBatches = list[dict[str, torch.Tensor]]

PREFETCH_STEPS = 2
"""Steps each worker builds ahead (DataLoader's prefetch_factor)."""


class StepBatches(Dataset):
    """Map-style dataset over optimizer steps: item k = the encoded micro-batches of step k.

    Args:
        data: the trial's training stream (seeded per step and micro-batch).
        batcher: turns examples into model inputs with labels.
        batch_size: examples per micro-batch.
        grad_accum: micro-batches per step.
        steps: the trial's number of optimizer steps (the dataset's length).
        shard: in a multi-worker trial, this worker: it encodes only its contiguous share of each
            (global) micro-batch of `batch_size` examples (`sweeps.trial.distributed.shard_rows`).
    """

    def __init__(self, data: TaskData, batcher: Batcher, *, batch_size: int, grad_accum: int, steps: int,
                 shard: Shard | None = None) -> None:
        self.data, self.batcher = data, batcher
        self.batch_size, self.grad_accum, self.steps, self.shard = batch_size, grad_accum, steps, shard

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> MicroBatches:
        out = []
        for micro in range(self.grad_accum):
            examples = shard_rows(self.data.batch(step, micro, self.batch_size), self.shard)
            out.append(self.batcher.train_batch([e.image for e in examples], [e.prompt for e in examples],
                                                [e.answer for e in examples]))
        return out


def _identity(item: Any) -> Any:
    return item


def _worker_init(_worker_id: int) -> None:
    """Workers leave Ctrl-C to the trial: a terminal's SIGINT reaches the whole process group, and a
    worker dying of it would turn a graceful stop (the trial saves and reports) into a data error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _context() -> Any:
    """fork where the platform has it: workers start in milliseconds and inherit the dataset (the
    processor, a real-format pool) instead of unpickling it; they never touch CUDA."""
    return multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None


class TrainBatches:
    """The micro-batches of steps [start, len(dataset)), on `device`, in step order.

    Args:
        dataset: the steps' batches.
        start: the first step (a resumed trial's step).
        device: where the tensors go (pinned and copied asynchronously on CUDA).
        workers: DataLoader worker processes; 0 builds each step inline when it is needed.
        prefetch: steps each worker keeps ready.

    Attributes:
        wait_s: seconds `next()` blocked (inline: the whole build; with workers: waiting for the queue)
            plus the host-to-device copy calls.
        tokens: input tokens handed out (sum of input_ids sizes), for throughput figures.
    """

    def __init__(self, dataset: StepBatches, *, start: int, device: torch.device, workers: int,
                 prefetch: int = PREFETCH_STEPS) -> None:
        self.device = device
        self.wait_s = 0.0
        self.tokens = 0
        self._non_blocking = device.type == "cuda"
        steps = range(start, len(dataset))
        if workers <= 0:
            self._it: Iterator[MicroBatches] = (dataset[k] for k in steps)
            return
        # the workers' tokenizers must not use their own thread pools (forked after the parent used them)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        loader = DataLoader(dataset, batch_size=None, sampler=steps, num_workers=workers, collate_fn=_identity,
                            prefetch_factor=prefetch, pin_memory=device.type == "cuda",
                            worker_init_fn=_worker_init, multiprocessing_context=_context())
        self._it = iter(loader)

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> MicroBatches:
        t0 = time.perf_counter()
        micro = next(self._it)
        out = [{k: v.to(self.device, non_blocking=self._non_blocking) if isinstance(v, torch.Tensor) else v
                for k, v in b.items()} for b in micro]
        self.wait_s += time.perf_counter() - t0
        self.tokens += sum(int(b["input_ids"].numel()) for b in out)
        return out

    def close(self) -> None:
        """Stop the workers now (they also stop when the steps run out or this object is collected)."""
        self._it = iter(())
