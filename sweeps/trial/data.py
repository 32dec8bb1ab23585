"""Training and evaluation data for a trial.

Synthetic training data is an endless stream: the batch for (step, micro-batch) is generated from a
seed derived from (trial seed, step, micro), so a trial restored from a checkpoint at step k sees
exactly the batches it would have seen without the restart, with no data state to save. Real-format
data is loaded once and sampled the same way. The evaluation set is fixed per task config and does
not depend on the trial seed, so every trial of a sweep is scored on the same images (paired
comparisons across seeds and losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sweeps.config.trial_config import TaskConfig
from sweeps.tasks import DataError, Example, Task
from sweeps.tasks.base import rgb_example

_TRAIN_TAG = 0x7A11
_EVAL_TAG = 0xE7A1


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def synthetic_params(cfg: TaskConfig) -> dict[str, Any]:
    """The keyword arguments of `task.synthetic` for a trial's task config (the driver's
    preflight draws one example with them)."""
    return {"image_size": cfg.image_size, **cfg.params}


def loader_options(task: Task, cfg: TaskConfig) -> dict[str, Any]:
    """The keyword options of `task.load` for a trial's task config: `task.loader`, plus the task
    params that describe real data too (`Task.data_params`, e.g. grounding's box_format).

    Raises:
        ValueError: a data param set in both task.params and task.loader, to different values.
    """
    opts = dict(cfg.loader)
    for name in task.data_params:
        if name not in cfg.params:
            continue
        if name in opts and opts[name] != cfg.params[name]:
            raise ValueError(f"task.params.{name} ({cfg.params[name]!r}) and task.loader.{name} ({opts[name]!r}) "
                             "differ; set it once, in task.params")
        opts[name] = cfg.params[name]
    return opts


@dataclass(frozen=True)
class DataRead:
    """One read of real data a trial makes (`data_reads`).

    Attributes:
        field: the spec field naming its source (task.data_path, task.eval_data_path,
            task.eval_split, task.data.split, task.data.eval_split).
        role: "train", "eval", or "train+eval" (a pool whose last task.eval_size rows are held out).
        path: the data file or folder; None for a Hugging Face dataset (`TaskConfig.data`).
        split: the split read (None: the whole file).
        limit: the most rows read (None: all of them).
    """

    field: str
    role: str
    path: str | None
    split: str | None
    limit: int | None


def data_reads(cfg: TaskConfig) -> list[DataRead]:
    """The reads of real data a trial with task config `cfg` makes, in order: a training read and
    a held-out read, or one pool read whose last `eval_size` rows are held out. Empty for synthetic
    data. `TaskData` loads them; the preflight of `slsweep run` checks every row of them."""
    data = cfg.data
    if data is not None:
        if data.eval_split:
            return [DataRead("task.data.split", "train", None, data.split, cfg.train_size),
                    DataRead("task.data.eval_split", "eval", None, data.eval_split, cfg.eval_size)]
        limit = cfg.train_size + cfg.eval_size if data.streaming else None
        return [DataRead("task.data.split", "train+eval", None, data.split, limit)]
    if not cfg.data_path:
        return []
    if cfg.eval_data_path or cfg.eval_split:
        field = "task.eval_data_path" if cfg.eval_data_path else "task.eval_split"
        return [DataRead("task.data_path", "train", cfg.data_path, cfg.train_split, cfg.train_size),
                DataRead(field, "eval", cfg.eval_data_path or cfg.data_path, cfg.eval_split, cfg.eval_size)]
    return [DataRead("task.data_path", "train+eval", cfg.data_path, cfg.train_split, None)]


def read_examples(task: Task, cfg: TaskConfig, read: DataRead, *, images: bool = True) -> list[Example]:
    """The examples of one `DataRead` (`task.load` or `sweeps.tasks.hf.load_hf`), images decoded
    and resized to `cfg.image_size`; with `images=False` no image is decoded (see `Task.load`;
    only for a loader that takes `images`).

    Raises:
        DataError: naming the file or dataset, the record and the field; or no examples.
    """
    if read.path is None:
        from sweeps.tasks.hf import load_hf

        return load_hf(cfg.data, task, split=read.split, limit=read.limit, image_size=cfg.image_size,
                       params=cfg.params, images=images)
    extra = {} if images else {"images": False}
    examples = task.load(read.path, split=read.split, limit=read.limit, image_size=cfg.image_size,
                         **loader_options(task, cfg), **extra)
    if not examples:
        raise DataError(f"{read.path}: split {read.split or '(all)'}: no examples")
    if not images:
        return examples
    # a plug-in's loader may hand back grey, transparent or EXIF-rotated images: decoded like files
    return [rgb_example(e, f"{read.path}: example {i}") for i, e in enumerate(examples)]


def loads_without_images(task: Task) -> bool:
    """Whether `task.load` takes `images=False` (the built-in loaders do; see `Task.load`)."""
    import inspect

    return "images" in inspect.signature(task.load).parameters


def check_held_out_apart(cfg: TaskConfig) -> None:
    """DataError when the held-out set would be read from the training records (a trial would be
    scored on what it trained on): the same split named twice, or an eval split of a file whose
    training pool reads every split.

    Raises:
        DataError: naming the spec fields and the fix.
    """
    if cfg.data is not None:
        if cfg.data.eval_split is not None and cfg.data.eval_split == cfg.data.split:
            raise DataError(f"{cfg.data.hf}: task.data.eval_split {cfg.data.eval_split!r} is the training split "
                            "(task.data.split): the held-out rows would be training rows; name another split, "
                            "or drop eval_split to hold out the last task.eval_size rows")
        return
    if not cfg.data_path or not (cfg.eval_split or cfg.eval_data_path):
        return
    if (cfg.eval_data_path or cfg.data_path) != cfg.data_path:
        return
    if cfg.eval_split == cfg.train_split:
        raise DataError(f"{cfg.data_path}: the held-out records are the training records (task.eval_split "
                        f"{cfg.eval_split!r} = task.train_split on the same data); name different splits or "
                        "drop eval_data_path/eval_split to hold out the last task.eval_size records")
    if cfg.train_split is None:
        raise DataError(f"{cfg.data_path}: task.eval_split {cfg.eval_split!r} without task.train_split: the "
                        "training pool would read every split, the held-out one too; set task.train_split")


class TaskData:
    """The training stream and the held-out set of one trial.

    Args:
        task: the task (generator and loader).
        cfg: the task section of the trial config.
        seed: the trial seed (orders training batches; never changes the held-out set).
    """

    def __init__(self, task: Task, cfg: TaskConfig, seed: int) -> None:
        self.task, self.cfg, self.seed = task, cfg, seed
        self._pool: list[Example] | None = None
        check_held_out_apart(cfg)
        reads = data_reads(cfg)
        if not reads:
            self.held_out = task.synthetic(cfg.eval_size, seed=_derived_seed(_EVAL_TAG),
                                           **synthetic_params(cfg))
            return
        loaded = [read_examples(task, cfg, r) for r in reads]
        if len(loaded) == 2:
            self._pool, self.held_out = loaded
            return
        # One file or split, no eval split named: hold out its last eval_size examples.
        pool = loaded[0]
        if len(pool) <= cfg.eval_size:
            if cfg.data is not None:
                raise DataError(f"{cfg.data.hf}: split {cfg.data.split}: task.eval_size: {cfg.eval_size} held-out "
                                f"rows requested but the split has only {len(pool)}; name task.data.eval_split")
            raise DataError(f"{cfg.data_path}: task.eval_size: {cfg.eval_size} held-out examples "
                            f"requested but the file has only {len(pool)}; name an eval_split or "
                            "eval_data_path")
        self._pool, self.held_out = pool[:-cfg.eval_size][:cfg.train_size], pool[-cfg.eval_size:]

    @property
    def train_pool(self) -> list[Example] | None:
        """The loaded training examples (real data), or None when training data is generated per step."""
        return self._pool

    def batch(self, step: int, micro: int, size: int) -> list[Example]:
        """Training examples for optimizer step `step`, micro-batch `micro` (length `size`)."""
        seed = _derived_seed(_TRAIN_TAG, self.seed, step, micro)
        if self._pool is None:
            return self.task.synthetic(size, seed=seed, **synthetic_params(self.cfg))
        idx = np.random.default_rng(seed).integers(0, len(self._pool), size=size)
        return [self._pool[i] for i in idx]
