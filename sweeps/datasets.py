"""Training and evaluation data for a trial.

Synthetic training data is an endless stream: the batch for (step, micro-batch) is generated from a
seed derived from (trial seed, step, micro), so a trial restored from a checkpoint at step k sees
exactly the batches it would have seen without the restart, with no data state to save. Real-format
data is loaded once and sampled the same way. The evaluation set is fixed per task config and does
not depend on the trial seed, so every trial of a sweep is scored on the same images (paired
comparisons across seeds and losses).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sweeps.config import TaskConfig
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


def _load(task: Task, cfg: TaskConfig, path: str, split: str | None, limit: int | None) -> list[Example]:
    examples = task.load(path, split=split, limit=limit, image_size=cfg.image_size, **loader_options(task, cfg))
    if not examples:
        raise DataError(f"{path}: split {split or '(all)'}: no examples")
    # a plug-in's loader may hand back grey, transparent or EXIF-rotated images: decoded like files
    return [rgb_example(e, f"{path}: example {i}") for i, e in enumerate(examples)]


def _hf_split(task: Task, cfg: TaskConfig) -> tuple[list[Example], list[Example]]:
    """(training pool, held-out set) from a Hugging Face dataset (`cfg.data`)."""
    from sweeps.tasks.hf import load_hf

    data = cfg.data

    def load(split: str, limit: int | None) -> list[Example]:
        return load_hf(data, task, split=split, limit=limit, image_size=cfg.image_size, params=cfg.params)
    if data.eval_split:
        return load(data.split, cfg.train_size), load(data.eval_split, cfg.eval_size)
    pool = load(data.split, None if not data.streaming else cfg.train_size + cfg.eval_size)
    if len(pool) <= cfg.eval_size:
        raise DataError(f"{data.hf}: split {data.split}: task.eval_size: {cfg.eval_size} held-out rows requested "
                        f"but the split has only {len(pool)}; name task.data.eval_split")
    return pool[:-cfg.eval_size][:cfg.train_size], pool[-cfg.eval_size:]


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
        if cfg.data is not None:
            self._pool, self.held_out = _hf_split(task, cfg)
            return
        if not cfg.data_path:
            self.held_out = task.synthetic(cfg.eval_size, seed=_derived_seed(_EVAL_TAG),
                                           **synthetic_params(cfg))
            return
        if cfg.eval_data_path or cfg.eval_split:
            self._pool = _load(task, cfg, cfg.data_path, cfg.train_split, cfg.train_size)
            self.held_out = _load(task, cfg, cfg.eval_data_path or cfg.data_path, cfg.eval_split,
                                  cfg.eval_size)
            return
        # One file, no eval split named: hold out its last eval_size examples.
        pool = _load(task, cfg, cfg.data_path, cfg.train_split, None)
        if len(pool) <= cfg.eval_size:
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
