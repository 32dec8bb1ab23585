"""Small trial configs shared by the trial, sweep and CLI tests."""

from __future__ import annotations

from typing import Any

from sweeps.config.trial_config import TrialConfig


def tiny_trial_config(task: str = "counting", *, steps: int = 6, eval_every: int = 3,
                      eval_size: int = 16, batch_size: int = 8, family: str = "soft_label",
                      model: str = "tiny", overrides: dict[str, Any] | None = None) -> TrialConfig:
    """A trial that runs in seconds on the tiny model."""
    data = {
        "name": f"test-{task}",
        "task": {"name": task, "eval_size": eval_size, "train_size": 64},
        "model": {"path": model},
        "train": {"steps": steps, "batch_size": batch_size, "lr": 1e-3, "warmup_steps": 1,
                  "eval_every": eval_every, "max_new_tokens": 12 if task != "counting" else 4},
        "loss": {"family": family, **({"eta": 0.1, "lam": 2.0} if family == "soft_label" else {})},
        "seed": 0,
    }
    cfg = TrialConfig.from_mapping(data, source="<test>")
    return cfg.with_overrides(overrides) if overrides else cfg
