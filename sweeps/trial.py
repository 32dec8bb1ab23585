"""One sweep trial: task data + model + sl_core loss -> fine-tune -> greedy evaluation.

`run_trial` is plain Python (no Ray, no MLflow): the Tune runner wraps it, `slsweep trial` calls it
directly, and the overhead benchmark calls it in a loop. After each evaluation it hands the metrics
(and, when asked, a checkpoint folder) to a `report` callback.
"""

from __future__ import annotations

import random
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

import sl_core
from sweeps.checkpoint import TrainState, load_checkpoint, save_checkpoint
from sweeps.config import TrialConfig
from sweeps.coverage import COVERAGE_METRIC, coverage_warning, loss_tokens, measure_coverage
from sweeps.datasets import TaskData
from sweeps.loader import StepBatches, TrainBatches
from sweeps.errors import SlsweepError
from sweeps.models import Batcher, load_model_and_processor
from sweeps.tasks import Example, Task, get_task

EVAL_BATCH = 64
LOSS_LOG_EVERY = 10  # steps per point of the training-loss curve sent with each report
SAMPLE_PREDICTIONS = 50


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss became NaN or infinite."""


class Reporter(Protocol):
    def __call__(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


@dataclass
class TrialResult:
    """What a finished trial produced."""

    metrics: dict[str, float]
    history: list[dict[str, float]]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    restarts: int = 0
    train_s: float = 0.0  # the training loop's time (this run, from its start or resume), evaluations excluded
    data_wait_s: float = 0.0  # of which the loop waited for batches (sweeps.loader.TrainBatches.wait_s)
    train_tokens: int = 0  # input tokens of the steps this run trained


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    """CUDA when this process can see a GPU (Ray hides GPUs a trial was not given), else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _autocast(cfg: TrialConfig, device: torch.device):
    use_bf16 = cfg.train.mixed_precision == "bf16" or (
        cfg.train.mixed_precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()


def _load_dtype(cfg: TrialConfig) -> torch.dtype | None:
    return {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.model.dtype]


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def answer_loss(model: torch.nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                loss_fn: sl_core.families.LossFn, num_items: int) -> torch.Tensor:
    """Loss on the supervised (answer) positions only.

    Logits are computed only from the first position that predicts a supervised token onward
    (`logits_to_keep`), so image and prompt positions never reach the vocabulary projection.

    Args:
        inputs: model inputs without labels; input_ids [B, T].
        labels: [B, T], aligned with input_ids (not shifted), -100 where not supervised.
        num_items: supervised tokens in the whole optimizer step (all micro-batches).
    """
    shifted = labels[:, 1:]
    supervised = shifted != -100
    if not bool(supervised.any()):
        raise SlsweepError("a training batch has no supervised answer tokens (empty answers?)")
    first = int(supervised.float().argmax(dim=1)[supervised.any(dim=1)].min())
    keep = labels.shape[1] - first
    logits = model(**inputs, logits_to_keep=keep).logits[:, :-1]
    return loss_fn(logits, shifted[:, first:], num_items_in_batch=num_items)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batcher: Batcher, task: Task, examples: list[Example],
             device: torch.device, cfg: TrialConfig) -> tuple[dict[str, float], list[str]]:
    """Greedy generation on `examples`; returns the task metrics and the raw predictions."""
    model.eval()
    predictions: list[str] = []
    for start in range(0, len(examples), EVAL_BATCH):
        chunk = examples[start:start + EVAL_BATCH]
        with _autocast(cfg, device):
            predictions.extend(batcher.generate(model, [e.image for e in chunk], [e.prompt for e in chunk]))
    model.train()
    return task.metrics(predictions, examples), predictions


def _prediction_rows(examples: list[Example], predictions: list[str], task: Task) -> list[dict[str, Any]]:
    rows = []
    for ex, pred in list(zip(examples, predictions))[:SAMPLE_PREDICTIONS]:
        parsed = task.parse(pred)
        rows.append({"prompt": ex.prompt, "answer": ex.answer, "prediction": pred,
                     "parsed": "" if parsed is None else str(parsed)})
    return rows


def run_trial(cfg: TrialConfig, *, report: Reporter | None = None, resume_from: Path | None = None,
              checkpoint: bool = True, log: Callable[[str], None] | None = None,
              device: torch.device | None = None,
              on_step: Callable[[int, float], None] | None = None) -> TrialResult:
    """Fine-tune and evaluate one configuration.

    Args:
        cfg: the resolved trial config.
        report: called after each evaluation with the metrics (plus `predictions`: sample rows)
            and, when `checkpoint`, a folder holding the training state (deleted after the call).
        resume_from: a folder written by an earlier report to continue from.
        log: progress lines (None = quiet).
        device: where to train (default: CUDA if visible, else CPU).
        on_step: called after every optimizer step with (step, that step's training loss).

    Each report also carries `train_loss_curve`: `[[step, mean loss], ...]` every
    `LOSS_LOG_EVERY` steps since the previous report (the driver logs it as the `train_loss`
    curve; the report's own `train_loss` is the mean since the previous evaluation).
    Returns:
        The final metrics, the evaluation history and sample predictions.
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    device = device or pick_device()
    seed_everything(cfg.seed)
    task = get_task(cfg.task.name)

    say(f"loading model {cfg.model.path} on {device} ...")
    t_load = time.perf_counter()
    model, processor = load_model_and_processor(cfg.model.path, device=device, dtype=_load_dtype(cfg),
                                                freeze_vision=cfg.model.freeze_vision,
                                                gradient_checkpointing=cfg.model.gradient_checkpointing,
                                                lora=cfg.model.lora)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model loaded in {time.perf_counter() - t_load:.1f} s ({n_params / 1e6:.2f}M parameters); "
        f"training {cfg.train.steps} steps, evaluating every {cfg.train.eval_every}")
    batcher = Batcher(processor, max_new_tokens=cfg.train.max_new_tokens)
    tokens = loss_tokens(cfg.loss.family, processor.tokenizer, model=cfg.model.path)
    loss_fn = sl_core.build_loss(cfg.loss.family, tokens.tokens, backend=cfg.loss.backend, **cfg.loss.loss_kwargs())

    data = TaskData(task, cfg.task, cfg.seed)
    held_out = data.held_out
    # The loss provably reaches the answers: the share of their numeric tokens with a soft target.
    coverage = measure_coverage(tokens, processor.tokenizer,
                                [batcher.answer_ids(e.answer) for e in held_out + data.batch(0, 0, cfg.train.batch_size)])
    if coverage is not None:
        say(f"{COVERAGE_METRIC}={coverage:.4g} ({cfg.loss.family} on the answers' numeric tokens)")
        if (warning := coverage_warning(tokens, coverage)) is not None:
            say(f"warning: {warning}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.train.warmup_steps, cfg.train.steps)
    state = TrainState()
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, scheduler)
        state.restarts += 1
        say(f"resumed from step {state.step} (restart {state.restarts})")

    model.train()
    ckpt_every = cfg.train.checkpoint_every or cfg.train.eval_every
    losses: list[float] = []
    curve: list[list[float]] = []    # [step, mean loss over the window] since the last report
    window: list[float] = []
    predictions: list[str] = []
    steps = StepBatches(data, batcher, batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum,
                        steps=cfg.train.steps)
    batches = TrainBatches(steps, start=state.step, device=device, workers=cfg.train.data_workers)
    t_loop, eval_s = time.perf_counter(), 0.0
    while state.step < cfg.train.steps:
        micro_batches = next(batches)
        # Normalise by the supervised tokens of the whole step, as HF does under accumulation.
        num_items = int(sum((b["labels"][:, 1:] != -100).sum() for b in micro_batches))
        step_loss = 0.0
        for enc in micro_batches:
            labels = enc.pop("labels")
            with _autocast(cfg, device):
                loss = answer_loss(model, enc, labels, loss_fn, num_items)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at step {state.step} (lr={cfg.train.lr:g}); "
                    "training diverged")
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        losses.append(step_loss)
        window.append(step_loss)
        if on_step is not None:
            on_step(state.step, step_loss)
        evaluating = state.step % cfg.train.eval_every == 0 or state.step == cfg.train.steps
        if state.step % LOSS_LOG_EVERY == 0 or evaluating:
            curve.append([state.step, float(np.mean(window))])
            window.clear()

        if evaluating:
            t_eval = time.perf_counter()
            metrics, predictions = evaluate(model, batcher, task, held_out, device, cfg)
            eval_s += time.perf_counter() - t_eval
            if coverage is not None:
                metrics[COVERAGE_METRIC] = coverage
            metrics.update(train_loss=float(np.mean(losses)), step=state.step,
                           lr=scheduler.get_last_lr()[0], restarts=state.restarts,
                           elapsed_s=time.perf_counter() - t0)
            losses.clear()
            state.history.append(dict(metrics))
            say(_progress_line(task, state.step, cfg.train.steps, metrics))
            if report is not None:
                payload = {**metrics, "train_loss_curve": list(curve),
                           "predictions": _prediction_rows(held_out, predictions, task)}
                due = checkpoint and (state.step % ckpt_every == 0 or state.step == cfg.train.steps)
                if due:
                    with tempfile.TemporaryDirectory(prefix="slsweep-ckpt-") as tmp:
                        save_checkpoint(Path(tmp), model, optimizer, scheduler, state)
                        report(payload, Path(tmp))
                else:
                    report(payload, None)
            curve.clear()

    final = state.history[-1] if state.history else {}
    return TrialResult(metrics=dict(final), history=state.history,
                       predictions=_prediction_rows(held_out, predictions, task),
                       steps=state.step, seconds=time.perf_counter() - t0, restarts=state.restarts,
                       train_s=time.perf_counter() - t_loop - eval_s, data_wait_s=batches.wait_s,
                       train_tokens=batches.tokens)


def _progress_line(task: Task, step: int, total: int, metrics: dict[str, float]) -> str:
    shown = [task.primary_metric, "train_loss", "unparseable"]
    body = "  ".join(f"{k}={metrics[k]:.4g}" for k in shown if k in metrics)
    return f"step {step:>5}/{total}  {body}"

