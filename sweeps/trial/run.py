"""One sweep trial: task data + model + sl_core loss -> fine-tune -> greedy evaluation.

`run_trial` is plain Python (no Ray, no MLflow): the Tune runner wraps it, `slsweep trial` calls it
directly, and the overhead benchmark calls it in a loop. After each evaluation it hands the metrics
(and, when asked, a checkpoint folder) to a `report` callback.
"""

from __future__ import annotations

import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

import sl_core
from sweeps.trial import REPLAYED
from sweeps.trial.checkpoint import TrainState, load_checkpoint, resume_problem, save_checkpoint, staging_folder
from sweeps.config.trial_config import TrialConfig
from sweeps.trial.coverage import COVERAGE_METRIC, coverage_warning, loss_tokens, measure_coverage
from sweeps.trial.data import TaskData
from sweeps.trial.batches import StepBatches, TrainBatches
from sweeps.trial.distributed import (Shard, all_sum, eval_share, gather_rows, no_gradient_sync,
                                      unwrap, whole_for_generation, wrap_model)
from sweeps.errors import SlsweepError
from sweeps.models import Batcher, load_model_and_processor
from sweeps.trial.memory import MemoryRecord, PeakMeter, batch_shape, counts_of, plan_on_device, trial_estimate
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
    data_wait_s: float = 0.0  # of which the loop waited for batches (sweeps.trial.batches.TrainBatches.wait_s)
    train_tokens: int = 0  # input tokens of the steps this run trained
    setup_s: float = 0.0  # setup_trial: model load, data, coverage, optimizer, checkpoint restore
    eval_s: float = 0.0  # evaluations (greedy generation on the held-out set)
    report_s: float = 0.0  # handing results over: checkpoint writes and the `report` callback


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    """CUDA when this process can see a GPU (Ray hides GPUs a trial was not given), else CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def bf16_autocast(cfg: TrialConfig, device_type: str) -> bool:
    """Whether compute runs under bf16 autocast: `train.mixed_precision: bf16`, or `auto` on CUDA or
    with bfloat16 weights (their float32 trainable masters and float32 inputs then meet bf16 weights
    in bf16 matmuls)."""
    return cfg.train.mixed_precision == "bf16" or (
        cfg.train.mixed_precision == "auto" and (device_type == "cuda" or cfg.model.dtype == "bfloat16"))


def _autocast(cfg: TrialConfig, device: torch.device):
    """bf16 autocast where `bf16_autocast` says so, else no context."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16_autocast(cfg, device.type) else nullcontext()


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
    # use_cache=False: a returned KV cache would keep every layer's keys and values alive (and defeat
    # gradient checkpointing); labels are not passed, so the model builds no loss of its own.
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits[:, :-1]
    return loss_fn(logits, shifted[:, first:], num_items_in_batch=num_items)


@torch.no_grad()
def evaluate(model: torch.nn.Module, batcher: Batcher, task: Task, examples: list[Example],
             device: torch.device, cfg: TrialConfig, shard: Shard | None = None) -> tuple[dict[str, float], list[str]]:
    """Greedy generation on `examples`; returns the task metrics and the raw predictions.

    With a `shard`, each worker generates its `eval_share` and every worker gets all predictions
    (`gather_rows`, in the examples' order), so all compute the same metrics. Under FSDP the model
    is gathered whole for the evaluation (`whole_for_generation`).
    """
    model.eval()
    predictions: list[str] = []
    mine = eval_share(examples, shard)
    with whole_for_generation(model, shard) as generator:
        size = min(EVAL_BATCH, cfg.train.eval_batch or EVAL_BATCH)  # the memory plan's chunk, if smaller
        for start in range(0, len(mine), size):
            chunk = mine[start:start + size]
            with _autocast(cfg, device):
                predictions.extend(batcher.generate(generator, [e.image for e in chunk], [e.prompt for e in chunk]))
    model.train()
    predictions = gather_rows(predictions, len(examples), shard)
    return task.metrics(predictions, examples), predictions


def _prediction_rows(examples: list[Example], predictions: list[str], task: Task) -> list[dict[str, Any]]:
    rows = []
    for ex, pred in list(zip(examples, predictions))[:SAMPLE_PREDICTIONS]:
        parsed = task.parse(pred)
        rows.append({"prompt": ex.prompt, "answer": ex.answer, "prediction": pred,
                     "parsed": "" if parsed is None else str(parsed)})
    return rows


@dataclass
class TrialSetup:
    """Everything a trial trains with, built once by `setup_trial` (and restored from a checkpoint)."""

    cfg: TrialConfig
    device: torch.device
    task: Task
    model: torch.nn.Module
    batcher: Batcher
    loss_fn: sl_core.families.LossFn
    data: TaskData
    coverage: float | None          # soft_target_coverage (None: the family needs no soft target)
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: TrainState
    memory: MemoryRecord | None = None  # the planner's estimate and the measured peak (sweeps.trial.memory)
    shard: Shard | None = None  # this worker of a multi-worker trial (sweeps.trial.distributed); None: one process


def setup_trial(cfg: TrialConfig, *, device: torch.device, resume_from: Path | None = None,
                say: Callable[[str], None] = lambda _msg: None, shard: Shard | None = None) -> TrialSetup:
    """Seed, load the model, build the loss and the data, measure soft-target coverage, create the
    optimizer and schedule, and restore a checkpoint when `resume_from` is given. With a `shard`
    the model is wrapped for its strategy (DDP or FSDP2) before the optimizer sees its parameters,
    and the memory estimate is per worker (its share of the micro-batch).

    Raises:
        SlsweepError: the tokenizer cannot serve the loss family, or its soft targets reach no
            numeric answer token (CoverageError); data and model errors as their loaders raise them.
    """
    seed_everything(cfg.seed)
    task = get_task(cfg.task.name)
    meter = PeakMeter(device)  # the resident set before the model is loaded (CPU)
    settings = cfg.training_settings()  # as asked (batch_size auto before its plan): kept in checkpoints
    if cfg.train.batch_size == "auto":  # a config the driver did not plan (slsweep trial): plan here
        cfg = plan_on_device(cfg, device).cfg
        say(f"train.batch_size auto: micro-batch {cfg.train.batch_size} x grad_accum {cfg.train.grad_accum}")
    say(f"loading model {cfg.model.path} on {device} ...")
    t_load = time.perf_counter()
    model, processor = load_model_and_processor(cfg.model.path, device=device, dtype=_load_dtype(cfg),
                                                freeze_vision=cfg.model.freeze_vision,
                                                gradient_checkpointing=cfg.model.gradient_checkpointing,
                                                lora=cfg.model.lora, compile_layers=cfg.train.compile)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model loaded in {time.perf_counter() - t_load:.1f} s ({n_params / 1e6:.2f}M parameters); "
        f"training {cfg.train.steps} steps, evaluating every {cfg.train.eval_every}")
    batcher = Batcher(processor, max_new_tokens=cfg.train.max_new_tokens)
    tokens = loss_tokens(cfg.loss.family, processor.tokenizer, model=cfg.model.path)
    loss_fn = sl_core.build_loss(cfg.loss.family, tokens.tokens, backend=cfg.loss.backend, **cfg.loss.loss_kwargs())

    data = TaskData(task, cfg.task, cfg.seed)
    batcher.prompt_text(data.held_out[0].prompt)  # a chat template that cannot render fails here, not in a worker
    # The loss provably reaches the answers: the share of their numeric tokens with a soft target.
    coverage = measure_coverage(tokens, processor.tokenizer,
                                [batcher.answer_ids(e.answer)
                                 for e in data.held_out + data.batch(0, 0, cfg.train.batch_size)])
    if coverage is not None:
        say(f"{COVERAGE_METRIC}={coverage:.4g} ({cfg.loss.family} on the answers' numeric tokens)")
        if (warning := coverage_warning(tokens, coverage)) is not None:
            say(f"warning: {warning}")
    counts = counts_of(model)
    model = wrap_model(model, shard, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.train.warmup_steps, cfg.train.steps)
    config = unwrap(model).config
    shape = batch_shape(batcher, data.batch(0, 0, cfg.train.batch_size)[:8] + data.held_out[:8], config)
    memory = MemoryRecord(meter, trial_estimate(cfg, config, counts, shape, device_type=device.type,
                                                workers=shard.world if shard else 1).gb)  # max(train, eval)
    state = TrainState(settings=settings)
    if resume_from is not None:
        state = load_checkpoint(resume_from, model, optimizer, scheduler, shard)
        problem = resume_problem(resume_from, state, cfg.train.steps)
        if problem:
            raise ValueError(problem)
        state.settings = settings
        state.restarts += 1
        say(f"resumed from step {state.step} (restart {state.restarts})")
    model.train()
    return TrialSetup(cfg, device, task, model, batcher, loss_fn, data, coverage, params, optimizer, scheduler,
                      state, memory, shard)


def train_step(s: TrialSetup, micro_batches: list[dict[str, torch.Tensor]]) -> float:
    """One optimizer step over `micro_batches` (gradient accumulation); returns the step's loss.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite.
    """
    cfg, shard = s.cfg, s.shard
    # Normalise by the supervised tokens of the whole step (all micro-batches, all workers), as HF
    # does under accumulation; DDP and FSDP average gradients over workers, so each worker's
    # backward is scaled by their number (sweeps.trial.distributed).
    num_items = int(all_sum(int(sum((b["labels"][:, 1:] != -100).sum() for b in micro_batches)), shard, s.device))
    scale = shard.world if shard is not None else 1
    step_loss = 0.0
    for i, enc in enumerate(micro_batches):
        labels = enc.pop("labels")
        with no_gradient_sync(s.model, shard, last_micro_batch=i == len(micro_batches) - 1):
            with _autocast(cfg, s.device):
                loss = answer_loss(s.model, enc, labels, s.loss_fn, num_items)
            if shard is None and not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at step {s.state.step} (lr={cfg.train.lr:g}); training diverged")
            (loss * scale if scale != 1 else loss).backward()
        step_loss += float(loss.detach())
    step_loss = all_sum(step_loss, shard, s.device)  # every worker sees the global loss ...
    if shard is not None and not np.isfinite(step_loss):  # ... and stops together
        raise NonFiniteLossError(
            f"loss became {step_loss} at step {s.state.step} (lr={cfg.train.lr:g}); training diverged")
    torch.nn.utils.clip_grad_norm_(s.params, cfg.train.max_grad_norm)
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.state.step += 1
    return step_loss


def evaluation_metrics(s: TrialSetup, train_losses: list[float], t0: float) -> tuple[dict[str, float], list[str]]:
    """Evaluate on the held-out set; the task's metrics plus coverage, train_loss (mean of
    `train_losses`), step, lr, restarts and elapsed_s (since `t0`), and the raw predictions."""
    metrics, predictions = evaluate(s.model, s.batcher, s.task, s.data.held_out, s.device, s.cfg, s.shard)
    if s.coverage is not None:
        metrics[COVERAGE_METRIC] = s.coverage
    metrics.update(train_loss=float(np.mean(train_losses)), step=s.state.step, lr=s.scheduler.get_last_lr()[0],
                   restarts=s.state.restarts, elapsed_s=time.perf_counter() - t0)
    if s.memory is not None:
        metrics.update(s.memory.metrics())
    s.state.history.append(dict(metrics))
    return metrics, predictions


def report_evaluation(s: TrialSetup, report: Reporter, payload: dict[str, Any], *, checkpoint: bool,
                      final_weights: bool = False) -> None:
    """Hand `payload` to `report`, with a checkpoint folder when one is due (every
    `train.checkpoint_every` steps, default `eval_every`, and at the last step). The last step's
    checkpoint holds the trial's record only, unless `final_weights` or `train.keep_final_weights`:
    a driver lost before it recorded the end finds the trial over on resume, and a sweep does
    not keep every trial's weights (nor pay for writing and copying them)."""
    every = s.cfg.train.checkpoint_every or s.cfg.train.eval_every
    step = s.state.step
    last = step == s.cfg.train.steps
    if checkpoint and (step % every == 0 or last):
        weights = not last or final_weights or s.cfg.train.keep_final_weights
        with staging_folder() as tmp:
            written = save_checkpoint(tmp, s.model, s.optimizer, s.scheduler, s.state, s.shard, weights=weights)
            report(payload, tmp if written is not None else None)  # multi-worker: rank 0 writes
    else:
        report(payload, None)


def run_trial(cfg: TrialConfig, *, report: Reporter | None = None, resume_from: Path | None = None,
              checkpoint: bool = True, final_weights: bool = False, log: Callable[[str], None] | None = None,
              device: torch.device | None = None,
              on_step: Callable[[int, float], None] | None = None, shard: Shard | None = None) -> TrialResult:
    """Fine-tune and evaluate one configuration: `setup_trial`, then `train_step` per optimizer step,
    `evaluation_metrics` every `eval_every` steps and at the end, `report_evaluation` after each.

    Args:
        cfg: the resolved trial config.
        report: called after each evaluation with the metrics (plus `predictions`: sample rows)
            and, when `checkpoint`, a folder holding the training state (deleted after the call);
            at the last step the trial's record only, unless `final_weights` (or the config's
            `train.keep_final_weights`).
        resume_from: a folder written by an earlier report to continue from.
        log: progress lines (None = quiet).
        device: where to train (default: CUDA if visible, else CPU).
        on_step: called after every optimizer step with (step, that step's training loss).
        shard: this worker of a multi-worker trial (`sweeps.trial.train_job`): its share of every
            batch, the wrapped model, global losses and metrics; every worker calls `report`
            (Ray Train's report is collective), only rank 0 with a checkpoint folder.

    Each report also carries `train_loss_curve`: `[[step, mean loss], ...]` every
    `LOSS_LOG_EVERY` steps since the previous report (the driver logs it as the MLflow metric
    `train_loss_10`); the report's own `train_loss` is the mean since the previous evaluation,
    the one value called `train_loss` everywhere (Tune, Optuna, ASHA, MLflow, summaries).
    Returns:
        The final metrics, the evaluation history and sample predictions.
    """
    t0 = time.perf_counter()
    say = log or (lambda _msg: None)
    s = setup_trial(cfg, device=device or pick_device(), resume_from=resume_from, say=say, shard=shard)
    cfg = s.cfg  # train.batch_size: auto resolved
    if shard is not None and report is not None and s.state.restarts and s.state.history:
        # A multi-worker trial's checkpoints are written by its workers, not through the driver,
        # which may have been lost between a checkpoint and recording its evaluation: report the
        # checkpoint's evaluation again, marked REPLAYED, so the record misses none (the driver
        # skips it when it has that step already), with this restart counted: a trial killed after its
        # last checkpoint resumes with nothing left to train, and this is its final record.
        # Every worker calls it: Train's report is collective.
        report({**s.state.history[-1], "restarts": s.state.restarts, REPLAYED: True}, None)
    setup_s = time.perf_counter() - t0
    losses: list[float] = []
    curve: list[list[float]] = []    # [step, mean loss over the window] since the last report
    window: list[float] = []
    predictions: list[str] = []
    steps = StepBatches(s.data, s.batcher, batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum,
                        steps=cfg.train.steps, shard=shard)
    batches = TrainBatches(steps, start=s.state.step, device=s.device, workers=cfg.train.data_workers)
    t_loop, eval_s, report_s = time.perf_counter(), 0.0, 0.0
    if s.memory is not None:
        s.memory.meter.start()  # the measured peak covers training (and evaluation), not loading
    while s.state.step < cfg.train.steps:
        step_loss = train_step(s, next(batches))
        losses.append(step_loss)
        window.append(step_loss)
        if on_step is not None:
            on_step(s.state.step, step_loss)
        evaluating = s.state.step % cfg.train.eval_every == 0 or s.state.step == cfg.train.steps
        if s.state.step % LOSS_LOG_EVERY == 0 or evaluating:
            curve.append([s.state.step, float(np.mean(window))])
            window.clear()
        if evaluating:
            t_eval = time.perf_counter()
            metrics, predictions = evaluation_metrics(s, losses, t0)
            eval_s += time.perf_counter() - t_eval
            losses.clear()
            say(_progress_line(s.task, s.state.step, cfg.train.steps, metrics))
            if report is not None:
                t_report = time.perf_counter()
                payload = {**metrics, "train_loss_curve": list(curve),
                           "predictions": _prediction_rows(s.data.held_out, predictions, s.task)}
                report_evaluation(s, report, payload, checkpoint=checkpoint, final_weights=final_weights)
                report_s += time.perf_counter() - t_report
            curve.clear()

    final = dict(s.state.history[-1]) if s.state.history else {}
    if "restarts" in final:  # a trial resumed from its last checkpoint's record: this run's count
        final["restarts"] = s.state.restarts
    return TrialResult(metrics=final, history=s.state.history,
                       predictions=_prediction_rows(s.data.held_out, predictions, s.task),
                       steps=s.state.step, seconds=time.perf_counter() - t0, restarts=s.state.restarts,
                       train_s=time.perf_counter() - t_loop - eval_s - report_s, data_wait_s=batches.wait_s,
                       train_tokens=batches.tokens, setup_s=setup_s, eval_s=eval_s, report_s=report_s)


def _progress_line(task: Task, step: int, total: int, metrics: dict[str, float]) -> str:
    shown = [task.primary_metric, "train_loss", "unparseable"]
    body = "  ".join(f"{k}={metrics[k]:.4g}" for k in shown if k in metrics)
    return f"step {step:>5}/{total}  {body}"

