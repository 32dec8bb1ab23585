"""Save and restore a trial's training state (trainable weights, optimizer, schedule, step).

Only trainable parameters are stored: frozen ones (a frozen vision tower, a LoRA base model) are
unchanged since loading. Files load with `torch.load(weights_only=True)`, so a checkpoint cannot
run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trial_state.pt"


@dataclass
class TrainState:
    """Where a trial stands: the optimizer step and the evaluation history so far."""

    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    restarts: int = 0


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainState) -> Path:
    """Write the training state into `directory` (created if needed); returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    trainable = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
    payload = {
        "model": trainable,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": state.step,
        "history": state.history,
        "restarts": state.restarts,
        "torch_rng": torch.get_rng_state(),
    }
    path = directory / STATE_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any) -> TrainState:
    """Restore what `save_checkpoint` wrote; returns the state to continue from."""
    payload = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    missing = set(payload["model"]) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ValueError(f"{directory}: checkpoint has parameters the model lacks: {sorted(missing)[:5]}")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    return TrainState(step=int(payload["step"]), history=list(payload["history"]),
                      restarts=int(payload["restarts"]))
