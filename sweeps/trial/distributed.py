"""One trial across several worker processes: who this worker is, its share of each batch, the
wrapped model, and the collectives the training loop needs.

A `Shard` is created by each Ray Train worker (`sweeps.trial.train_job`) after Train has set up
the `torch.distributed` process group (gloo on CPU, NCCL on GPU). `run_trial` takes it; without one
(`None`) a trial is the plain single process it always was, and nothing here runs.

The rules that make N workers x batch B/N train like 1 worker x batch B:
- every worker builds the same global micro-batch (seeded by trial seed, step and micro-batch) and
  keeps its contiguous 1/N slice (`shard_rows`), so the global order does not depend on N;
- the loss is normalised by the global number of supervised tokens (`all_sum` of the local counts),
  and the backward pass is scaled by N because DDP and FSDP average gradients over workers
  (sum over workers of the local sums / global count = the single-process loss);
- evaluation is split the same way and the predictions gathered (`gather_rows`), so every worker
  computes the same metrics; rank 0 reports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Sequence, TypeVar

import torch
import torch.distributed as dist

Strategy = Literal["ddp", "fsdp"]
T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This worker's place in a multi-worker trial.

    Attributes:
        rank: this worker's global rank, 0 .. world - 1.
        world: number of workers.
        strategy: "ddp" (replicated model, gradients all-reduced) or "fsdp" (FSDP2
            `fully_shard`: parameters, gradients and optimizer states sharded).
    """

    rank: int
    world: int
    strategy: Strategy = "ddp"

    @property
    def is_main(self) -> bool:
        """Rank 0: the worker that writes checkpoints and whose reports Tune sees."""
        return self.rank == 0

    @classmethod
    def current(cls, strategy: Strategy) -> Shard:
        """The shard of this process from the initialised default process group.

        Raises:
            RuntimeError: no process group (not inside a Ray Train worker).
        """
        if not dist.is_initialized():
            raise RuntimeError("no torch.distributed process group: a Shard exists only in a Train worker")
        return cls(rank=dist.get_rank(), world=dist.get_world_size(), strategy=strategy)


def shard_rows(rows: Sequence[T], shard: Shard | None) -> list[T]:
    """This worker's contiguous share of a global batch of `len(rows)` rows (divisible by
    `shard.world`; `SweepSpec` checks `train.batch_size`)."""
    if shard is None:
        return list(rows)
    per, rest = divmod(len(rows), shard.world)
    if rest:
        raise ValueError(f"a batch of {len(rows)} rows does not split evenly among {shard.world} workers")
    return list(rows[shard.rank * per:(shard.rank + 1) * per])


def eval_share(rows: Sequence[T], shard: Shard | None) -> list[T]:
    """This worker's contiguous share of the evaluation set (ceil(n / world) rows; the last
    worker's may be shorter). `gather_rows` puts the results back in order."""
    if shard is None:
        return list(rows)
    per = -(-len(rows) // shard.world)
    return list(rows[shard.rank * per:(shard.rank + 1) * per])


def gather_rows(mine: list[T], total: int, shard: Shard | None) -> list[T]:
    """Every worker's `eval_share` results in global order, trimmed to `total` rows (collective:
    every worker must call it)."""
    if shard is None:
        return mine
    parts: list[Any] = [None] * shard.world
    dist.all_gather_object(parts, mine)
    return [row for part in parts for row in part][:total]


def all_sum(value: float | int, shard: Shard | None, device: torch.device) -> float:
    """The sum of `value` over workers (float64 on the wire; collective)."""
    if shard is None:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def all_gather(value: T, shard: Shard | None) -> list[T]:
    """Every worker's `value` (any picklable object), by rank (collective)."""
    if shard is None:
        return [value]
    parts: list[Any] = [None] * shard.world
    dist.all_gather_object(parts, value)
    return parts


def wrap_model(model: torch.nn.Module, shard: Shard | None, device: torch.device) -> torch.nn.Module:
    """The model as the shard's strategy trains it.

    ddp: `DistributedDataParallel` (only parameters with requires_grad are synchronised, so a
    frozen vision tower or a LoRA base costs no communication). fsdp: FSDP2 `fully_shard` on each
    transformer block the model declares (`_no_split_modules`), then on the root; the module is
    changed in place and stays the same class family, so `generate` and `save_pretrained` work.
    """
    if shard is None:
        return model
    if shard.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # Multimodal models often hold trainable parameters a text-answer loss never reaches
        # (LLaVA reads the vision tower's second-to-last layer, so its post_layernorm gets no
        # gradient): DDP must look for them each step, as the Hugging Face Trainer does by default,
        # or it fails waiting for their gradients.
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=True)
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in list(model.modules()):
        if type(module).__name__ in blocks and any(p.requires_grad for p in module.parameters()):
            fully_shard(module)
    fully_shard(model)
    return model


@contextmanager
def whole_for_generation(model: torch.nn.Module, shard: Shard | None) -> Iterator[torch.nn.Module]:
    """The model to call `generate` on: under FSDP every sharded module gathered whole for the
    block (Hugging Face's generation calls sub-modules, such as the vision tower or the embeddings,
    outside the root forward that FSDP hooks), and sharded again after; otherwise `unwrap(model)`.
    Each worker then generates its own share of the evaluation set without collectives."""
    if shard is None or shard.strategy != "fsdp":
        yield unwrap(model)
        return
    from torch.distributed.fsdp import FSDPModule

    sharded = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for m in sharded:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield model
    finally:
        for m in sharded:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The Hugging Face model inside a DDP wrapper (FSDP2 wraps in place: the model itself)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def no_gradient_sync(model: torch.nn.Module, shard: Shard | None, last_micro_batch: bool) -> Any:
    """Context for one micro-batch's backward: DDP skips the gradient all-reduce on all but the
    last micro-batch of an accumulated step (the gradients are the same, the traffic 1/grad_accum)."""
    from contextlib import nullcontext

    from torch.nn.parallel import DistributedDataParallel

    if shard is not None and not last_micro_batch and isinstance(model, DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def full_trainable_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                         shard: Shard | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(trainable parameters by name, optimizer state) as whole CPU tensors, for a checkpoint.

    Single process and DDP: the parameters of the unwrapped model and `optimizer.state_dict()`.
    FSDP: gathered from the shards with `torch.distributed.checkpoint.state_dict` (full state
    dict, frozen parameters left out, offloaded to CPU): a collective every worker must call;
    the optimizer state is keyed by parameter name. Only rank 0 needs the result.
    """
    if shard is None or shard.strategy == "ddp":
        inner = unwrap(model)
        return ({n: p.detach().cpu() for n, p in inner.named_parameters() if p.requires_grad},
                optimizer.state_dict())
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=options)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}  # a tied head once, as above
    return ({n: t for n, t in weights.items() if n in trainable},
            get_optimizer_state_dict(model, optimizer, options=options))


def load_trainable_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor],
                         optim_state: dict[str, Any], shard: Shard | None) -> None:
    """Load what `full_trainable_state` returned into this worker's model and optimizer (FSDP: each
    worker keeps its own shard of the full tensors)."""
    if shard is None or shard.strategy == "ddp":
        unwrap(model).load_state_dict(weights, strict=False)
        optimizer.load_state_dict(optim_state)
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
