"""Save and restore a trial's training state (trainable weights, optimizer, schedule, step).

Only trainable parameters are stored: frozen ones (a frozen vision tower, a LoRA base model) are
unchanged since loading. A trial's last checkpoint may hold its record only (`weights=False`: step
and evaluation history, no weights or optimizer): restoring it continues nothing, it ends the trial.
Files load with `torch.load(weights_only=True)`, so a checkpoint cannot run code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sweeps.trial import STATE_FILE
from sweeps.trial.distributed import Shard, full_trainable_state, load_trainable_state, unwrap


@dataclass
class TrainState:
    """Where a trial stands: the optimizer step and the evaluation history so far."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    restarts: int = 0
    # False when restored from a record-only checkpoint: the model was not restored, nothing may train
    weights: bool = True
    # the run's `TrialConfig.training_settings()` (dotted keys); {} in a checkpoint written before they were kept
    settings: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainState, shard: Shard | None = None, *,
                    weights: bool = True) -> Path | None:
    """Write the training state into `directory` (created if needed); returns the file.

    With `weights=False` only the record is written (step, evaluation history, restarts): for the
    last step of a trial, which nothing continues (~1 KB instead of the weights and the optimizer's
    moments, three times the trainable parameters).

    In a multi-worker trial every worker must call it with the same `weights` (FSDP gathers the
    shards collectively); rank 0 writes, the others return None.
    """
    strategy = shard.strategy if shard is not None else "single"
    payload = {"strategy": strategy, "step": state.step, "history": state.history, "restarts": state.restarts,
               "settings": json.dumps(state.settings, sort_keys=True, default=str)}
    if weights:
        trainable, optim_state = full_trainable_state(model, optimizer, shard)
        payload.update(model=trainable, optimizer=optim_state, scheduler=scheduler.state_dict(),
                       torch_rng=torch.get_rng_state())
    if shard is not None and not shard.is_main:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, shard: Shard | None = None) -> TrainState:
    """Restore what `save_checkpoint` wrote; returns the state to continue from (`weights` False
    for a record-only checkpoint: the model, optimizer and schedule are left as they are).

    Raises:
        ValueError: the checkpoint holds parameters the model lacks, or was written by another
            strategy (an FSDP checkpoint keys its optimizer state by name, DDP and a single
            process by position: they do not load into each other).
    """
    payload = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    if "model" not in payload:
        return _record(payload)
    missing = set(payload["model"]) - {n for n, _ in unwrap(model).named_parameters()}
    if missing:
        raise ValueError(f"{directory}: checkpoint has parameters the model lacks: {sorted(missing)[:5]}")
    written = payload.get("strategy", "single")
    wanted = "fsdp" if shard is not None and shard.strategy == "fsdp" else None
    if (written == "fsdp") != (wanted == "fsdp"):
        raise ValueError(f"{directory}: checkpoint written by a {written} trial cannot resume as "
                         f"{shard.strategy if shard is not None else 'a single process'}")
    load_trainable_state(model, optimizer, payload["model"], payload["optimizer"], shard)
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    return _record(payload)


def _record(payload: dict[str, Any]) -> TrainState:
    return TrainState(step=int(payload["step"]), history=list(payload["history"]),
                      restarts=int(payload["restarts"]), weights="model" in payload,
                      settings=json.loads(payload.get("settings", "{}")))


def read_state(directory: Path) -> TrainState:
    """The record of the checkpoint in `directory` (step, history, restarts, whether it holds the
    weights), without restoring anything."""
    return _record(torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True))


def resume_problem(directory: Path, state: TrainState, steps: int) -> str | None:
    """Why a trial of `steps` steps cannot continue from `state` (read from `directory`), or None:
    the checkpoint is past the last step, or it is a record-only last checkpoint and more steps are asked."""
    if state.step > steps:
        return (f"{directory}: the checkpoint is at step {state.step}, past train.steps={steps} "
                "(a checkpoint of a longer trial)")
    if not state.weights and state.step < steps:
        return (f"{directory}: the checkpoint of a trial that ended at step {state.step} holds no weights "
                f"(train.keep_final_weights: false); it cannot continue to train.steps={steps}")
    return None


def settings_problem(directory: Path, state: TrainState, settings: dict[str, Any]) -> str | None:
    """Why a run asking `settings` (`TrialConfig.training_settings()`) cannot continue the checkpoint
    in `directory` (read as `state`), or None: it would train on something else than the run that
    wrote it (another learning rate, eta, batch size, seed, data...), each field named with
    both values (a `train.batch_size: auto` run as asked, before its micro-batch was planned). A
    checkpoint that kept no settings passes."""
    stored = state.settings
    if not stored:
        return None
    keys = sorted(set(stored) | set(settings))
    changed = [k for k in keys if _comparable(stored.get(k)) != _comparable(settings.get(k))]
    if not changed:
        return None

    def was(k: str) -> str:
        return f"{k}={stored[k]!r}" if k in stored else f"{k} unset"

    def now(k: str) -> str:
        return repr(settings[k]) if k in settings else "unset"

    shown = ", ".join(f"{was(k)} (this run: {now(k)})" for k in changed[:4])
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    again = " ".join(f"{k}={json.dumps(stored[k], default=str)}" for k in changed if k in stored)
    return (f"{directory}: the checkpoint was trained with {shown}{more}; a resumed run continues that "
            f"training, so it must ask the same" + (f" (override: {again})" if again else ""))


def _comparable(value: Any) -> Any:
    """`value` as stored (through JSON), numbers as floats: a free-form 5 and 5.0 are the same setting."""
    def numbers(v: Any) -> Any:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, list):
            return [numbers(x) for x in v]
        if isinstance(v, dict):
            return {k: numbers(x) for k, x in v.items()}
        return v
    return numbers(json.loads(json.dumps(value, default=str)))


STAGING_PREFIX = "slsweep-ckpt-"
STALE_AFTER_S = 600.0
"""A staging folder left by a process that is gone is removed once nothing in it changed for this long."""


@contextlib.contextmanager
def staging_folder() -> Iterator[Path]:
    """A temporary folder (in the system's temp dir) for one checkpoint on its way to Tune, removed
    after use; named `slsweep-ckpt-<pid>-...` by this process.

    A trial worker SIGKILLed, or ended by Tune, while it reports leaves its folder behind (the
    weights and optimizer, GBs for a large model). Each new one first removes those whose process
    is gone and in which nothing changed for `STALE_AFTER_S` (a live writer in another PID
    namespace sharing the temp dir is left alone).
    """
    _remove_stale(Path(tempfile.gettempdir()))
    with tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{os.getpid()}-") as tmp:
        yield Path(tmp)


def _remove_stale(base: Path, now: float | None = None) -> list[Path]:
    """Remove the staging folders under `base` of processes that are gone (see `staging_folder`)."""
    now = time.time() if now is None else now
    removed = []
    for folder in base.glob(f"{STAGING_PREFIX}*-*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            changed = max([folder.stat().st_mtime, *(f.stat().st_mtime for f in folder.iterdir())])
        except OSError:  # removed meanwhile, or not ours to read
            continue
        if now - changed >= STALE_AFTER_S:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
