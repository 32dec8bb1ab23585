"""A trial bigger than one process: a Ray Train data-parallel job launched from its Tune trial.

With `resources.workers > 1` the Tune trial (`sweeps.trial.trainable.tune_trainable`) does not
train itself: it starts a `ray.train.torch.TorchTrainer` of `workers` processes (`ScalingConfig`:
`cpu`/`gpu` each), which sets up the process group (gloo on CPU, NCCL on GPU), and waits for it.
Each worker runs `run_trial` with its `Shard` (`sweeps.trial.distributed`). Ray's
`TuneReportCallback` forwards rank 0's reports to the Tune trial, so the driver, ASHA, Optuna
and MLflow see one trial with one set of metrics per evaluation, as for a single-process trial.

Checkpoints are Ray Train's: rank 0 writes the training state at each evaluation into the run's
folder on the sweep's storage (`<storage>/<sweep id>/train/<trial id>-<config hash>`, `num_to_keep=1`).
The run name is the Tune trial id and its configuration (`train_run_name`), so a trial that Tune
restarts (driver killed then `slsweep resume`, a failed trial retried) finds its run's last
checkpoint there and continues from it, and a trial id that a resumed sweep hands to another
configuration (a driver killed before Tune saved the trial it had just created) starts afresh; a killed
worker is replaced by Train itself (`FailureConfig(max_failures)`), which restarts the worker
group from the same checkpoint. Stopping the Tune trial (ASHA, the sweep's time limit, Ctrl-C)
ends the Train controller and its workers with it: they are owned by the trial's process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray import tune

from sweeps.trial.distributed import Shard, Strategy, all_gather

TRAIN_DIR = "train"  # under <storage>/<sweep id>: one Ray Train run folder per multi-worker trial


def train_run_name(trial_id: str, config: dict[str, Any]) -> str:
    """The Ray Train run name of Tune trial `trial_id` with Tune config `config`:
    `<trial id>-<first 10 hex digits of the SHA-1 of the config as sorted JSON>`.

    The same trial restarted keeps its name (and finds its checkpoints). Tune numbers trials by a
    counter saved with its experiment state, so after a driver was killed between creating a trial
    and saving that state, the resumed sweep gives the same id to a different configuration (Optuna's
    next proposal): the config part keeps it from continuing the lost configuration's checkpoint."""
    text = json.dumps(config, sort_keys=True, default=repr)
    return f"{trial_id}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class WorkerPlan:
    """How each trial of a sweep runs as a Train job (from the spec's `resources` and `failure`).

    Attributes:
        workers: worker processes per trial (> 1).
        cpu: CPUs per worker (Ray's logical CPUs; also the worker's torch threads).
        gpu: GPUs per worker.
        strategy: "ddp" or "fsdp".
        storage: the sweep's Tune experiment folder; Train runs go to its `train/` sub-folder.
        max_failures: worker-group restarts Train makes before the trial fails.
    """

    workers: int
    cpu: float
    gpu: float
    strategy: Strategy
    storage: str
    max_failures: int = 0

    def scaling_config(self) -> ray.train.ScalingConfig:
        resources = {"CPU": self.cpu, **({"GPU": self.gpu} if self.gpu else {})}
        return ray.train.ScalingConfig(num_workers=self.workers, use_gpu=self.gpu > 0,
                                       resources_per_worker=resources)


# The Tune trial itself only waits for its Train job: it reserves no CPU or GPU (a placement
# group needs one non-zero resource: 1 MiB of Ray's memory resource).
DRIVER_RESOURCES = {"cpu": 0, "memory": 2**20}


def train_worker_setup() -> None:
    """Ray worker set-up hook of multi-worker sweeps (`runtime_env.worker_process_setup_hook`).

    Ray Train's placement-group cleaner (an actor per Train run) frees a stopped trial's workers'
    CPUs and GPUs once it sees, through Ray's state API, that the run's controller is gone. The
    state API client finds its Ray from `RAY_ADDRESS`, else by looking for Ray processes on the
    machine, which fails when the machine runs other Ray instances (other sweeps, tests): then
    the cleaner only warns, every second, and the next trial waits forever for those resources.
    Each worker therefore gets its own Ray's address. On a Ray without its dashboard (a cluster
    started with `--include-dashboard=false`) the cleaner cannot work at all; its warnings are
    silenced, its errors stay."""
    os.environ.setdefault("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def train_job(config: dict[str, Any], resolver: Any, plan: WorkerPlan, name: str,
              callbacks: list[Any] = ()) -> Any:
    """The `TorchTrainer` that runs Tune config `config` (resolved by `resolver`) on `plan.workers`
    workers as Ray Train run `name` under `<plan.storage>/train` (its checkpoints, and where a
    restarted run with the same name continues from)."""
    from ray.train.torch import TorchTrainer

    return TorchTrainer(
        _worker_loop, train_loop_config={"config": config, "resolver": resolver, "plan": plan},
        scaling_config=plan.scaling_config(),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(Path(plan.storage) / TRAIN_DIR),
            failure_config=ray.train.FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            # Train's own lines (worker group started, every report; under load, warnings with
            # tracebacks about its autoscaling requests, which it retries) would reach the
            # driver's console; a trial's failure reaches it as the trial's error.
            logging_config=ray.train.LoggingConfig(log_level="ERROR"),
            callbacks=list(callbacks)))


def run_train_job(config: dict[str, Any], resolver: Any, plan: WorkerPlan) -> None:
    """The Tune trial of a multi-worker sweep: run `config` as a Train job named after the Tune
    trial (`train_run_name`) and wait for it; `TuneReportCallback` hands rank 0's reports to Tune.

    Raises:
        the first failing worker's own exception (by rank), once Train has used up
            `plan.max_failures` restarts (Tune then counts a failed trial, and retries it under the
            sweep's `failure` setting).
    """
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = train_job(config, resolver, plan, name=train_run_name(tune.get_context().get_trial_id(), config),
                        callbacks=[TuneReportCallback()])
    try:
        trainer.fit()
    except ray.train.WorkerGroupError as exc:  # the first failing worker's own error, not Train's digest
        _rank, failure = min(exc.worker_failures.items())
        cause = failure.as_instanceof_cause() if isinstance(failure, ray.exceptions.RayTaskError) else failure
        raise cause from None


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """One Train worker: its shard of the trial (`run_trial` with a `Shard`)."""
    import ray.train.torch
    import torch

    from sweeps.trial.run import run_trial

    plan: WorkerPlan = loop_config["plan"]
    cfg = loop_config["resolver"](loop_config["config"])
    torch.set_num_threads(max(1, int(plan.cpu)))
    # Train configures each worker's root logger at INFO, and some of Train's own lines (every
    # report, with its metrics) go there: a trial's worker says nothing below a warning.
    logging.getLogger().setLevel(logging.WARNING)
    # FSDP2 warns on every forward that the model returns a view (HF slices the logits it keeps),
    # which an in-place op could detach from FSDP's backward hook; the loss makes no in-place
    # change to the logits, and tests/test_distributed.py checks FSDP's gradients against one
    # process step for step.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    shard = Shard.current(plan.strategy)
    where = all_gather({"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}, shard)
    placement = {"pid": os.getpid(), "node": where[0]["node"], "worker_pids": [w["pid"] for w in where],
                 "worker_nodes": [w["node"] for w in where]}

    def report(metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report({**metrics, **placement}, checkpoint=checkpoint)

    checkpoint = ray.train.get_checkpoint()
    device = ray.train.torch.get_device()
    if checkpoint is None:
        run_trial(cfg, report=report, shard=shard, device=device)
    else:
        with checkpoint.as_directory() as folder:
            run_trial(cfg, report=report, resume_from=Path(folder), shard=shard, device=device)
