"""Peak memory of one trial on its device, estimated before anything is loaded.

`estimate_memory` adds up, in bytes (units are bytes throughout; `Estimate.gb` is 1e9 bytes):

    weights     = frozen parameters x bytes(model.dtype) + trainable parameters x 4
                  (the lean step keeps trainable parameters in float32 "master" copies under 16-bit
                  weights, `sweeps.models.loading.keep_trainable_float32`; LoRA: the adapters train)
    optimizer   = trainable x 2 x 4          (AdamW: exp_avg and exp_avg_sq in float32)
    grads       = trainable x 4              (float32, like their parameters)
    autocast    = trainable x 2              (bf16 autocast caches a bf16 copy of each float32 weight
                                              that trains, for the whole forward/backward)
    activations = sum over towers that keep a graph of
                    tokens x (layers x A_layer)                    without checkpointing
                    tokens x (layers x bytes_r x h + A_layer)      with checkpointing
                  (checkpointing keeps each layer's input and recomputes one layer at a time)
    logits      = B x answer_len x V x (2 x bytes_c + 4)
                  (the answer-only logits in the compute dtype, their gradient, and the loss's float32
                  block buffer: the trial computes logits from the first answer position only)
    inputs      = pixel_values x 4

with per-token, per-layer activation bytes A_layer of a pre-norm transformer layer. Korthikanti et al.
2022, "Reducing Activation Recomputation in Large Transformer Models" (arXiv:2205.05198, sec. 4.1),
count s*b*h*(34 + 5*a*s/h) bytes per GPT layer in 16-bit; the same count for the layers these models
use (RMSNorm in float32 as Hugging Face computes it, grouped-query attention through SDPA, which keeps
the log-sum-exp instead of the a*s^2 score matrix, SwiGLU MLP, no dropout) is

    A_layer = 2 x (4h + 2 x bytes_r x h + [bytes_c != bytes_r] x bytes_c x h)   two norms: float32
                                                 input, normalised states cast back, output (x weight),
                                                 compute-dtype cast
            + bytes_c x (a x d + 2 x g x d)                                  q, k, v kept by attention
            + 2 x bytes_c x a x d                                            attention output: SDPA's
                                                                             [B, a, T, d] and o_proj's
                                                                             [B, T, a*d] input copy
            + bytes_c x I x (4 if gated else 2)                               MLP: gate, act(gate), up,
                                                                             product (plain MLP: fc1, act)

(checked tensor by tensor with `torch.autograd.graph.saved_tensors_hooks` on smolvlm-256m, float32,
1145 tokens: 46.8 KB per token per layer by this count, 49.7 KB saved; the rest is RoPE's cos/sin
and per-token norm statistics.)

where h = hidden size, I = intermediate size, a / g = attention / key-value heads, d = head dim,
bytes_r = the residual stream's dtype (the weights'), bytes_c = the compute dtype (2 under bf16
autocast, else bytes_r). A tower keeps a graph when one of its parameters trains (the text decoder
always, under LoRA too; the vision tower when neither frozen nor under LoRA), and also under LoRA with
gradient checkpointing: peft then calls `enable_input_require_grads`, which hooks the input embeddings
of every sub-model, the vision tower's patch embeddings included, so a frozen vision tower keeps a
checkpointed graph and backward runs through it (measured: smolvlm-500m, 1 layer, bf16, micro-batch
2: 1.11 GB estimated without this graph, 1.65 measured). Otherwise a frozen vision tower
still runs once, holding one layer's live tensors for its tokens at a time (`vision_transient`):

    L_layer = bytes_r x h + bytes_c x (h + (a + 2g) x d + a x d + I x (3 if gated else 2))
              (the residual input, the norm's output, q, k, v, the attention output, the MLP's
              intermediates; measured 0.71 GB for smolvlm-256m's SigLIP on 17 tiles, 17,408 patches,
              float32: this count gives 0.70 GB)

The peak is reached either in forward/backward or around the optimizer step, and optimizer states
live across steps. On CUDA the caching allocator hands the blocks backward frees (activations, the
frozen vision tower's transient) to the gradients:

    peak = weights + optimizer + inputs
           + max(activations + logits + autocast + grads x [grad_accum > 1], grads, vision_transient)

(with one micro-batch per step, gradients are allocated while backward frees the activations). On
CPU the resident set does not shrink within a step: glibc keeps the activations' freed chunks in its
heaps (it gives them back at `malloc_trim`), so the gradients land on top of the forward's peak; the
frozen vision tower's transient is made of chunks above glibc's mmap threshold, unmapped when freed:

    peak = weights + optimizer + inputs + max(activations + logits + autocast, vision_transient) + grads

(measured on smolvlm-256m, float32, 1145 tokens, by sampling the resident set through one step: it
grew 2.0 GB in forward and 0.22 GB more in backward, and did not fall before the step ended;
docs/benchmarks.md, "Real sizes"). Sources of each term: PyTorch's AdamW (two float32
states per parameter), torch.autocast's weight cast cache, the lean step in
`sweeps.trial.run.answer_loss`. Not counted: the framework itself (CUDA context, kernels, Python
objects, the processor and tokenizer); `torch.cuda.max_memory_allocated` leaves it out too, the CPU
measure (the growth of the resident set over its value before the model was loaded) does not: a
fixed ~0.1-0.3 GB that matters at reduced depth only (docs/benchmarks.md).

Evaluation generates up to `EVAL_BATCH` (64) examples at once whatever the micro-batch, with no
graph and the gradients freed but AdamW's states alive; `estimate_eval` counts one chunk (weights,
optimizer, its pixel values, and the larger of its images' vision transient and the prefill: KV
cache for prompt + max_new_tokens, image features, one decoder layer's live tensors, the last
position's logits). `plan_trial_memory` picks the largest chunk that fits (`train.eval_batch`), and
the trial's recorded estimate is the larger of its training step and its evaluation chunk
(`trial_estimate`; smolvlm-256m at 1 layer, micro-batch 2, eval_size 4, float32 on CPU: 4.12 GB
estimated, 4.29 measured; the training step alone was estimated at 2.72).

Sequence length comes from the real processor: `batch_shape` encodes sample examples with the
trial's `Batcher` (prompt + image tokens + answer), and counts the vision tower's patches from
`pixel_values`.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from sweeps.errors import SlsweepError

__all__ = ["DEFAULT_HEADROOM", "BatchShape", "Estimate", "MemoryFitError", "MemoryPlan", "ParamCounts",
           "PeakMeter", "Tower", "auto_batch", "batch_shape", "counts_of", "device_memory", "estimate_eval", "estimate_memory",
           "EvalEstimate", "eval_chunk", "trial_estimate",
           "fit_hint", "MEMORY_TARGETS", "MemoryRecord", "param_counts", "plan_on_device", "plan_trial_memory",
           "space_extremes", "towers", "trials_per_device", "worst_case"]

GB = 1e9
# The share of the device's memory a trial's estimate may use: the estimate leaves out the framework
# itself (CUDA context, allocator fragmentation, Python objects) and is within ~15% of measured peaks.
DEFAULT_HEADROOM = 0.85


@dataclass(frozen=True)
class Tower:
    """The shape of one transformer stack (text decoder or vision encoder)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    gated: bool  # SwiGLU / GeGLU MLP (gate and up projections)

    def layer_bytes_per_token(self, bytes_r: int, bytes_c: int) -> int:
        """A_layer of the module docstring: bytes one layer keeps for backward, per token."""
        h, d = self.hidden, self.head_dim
        norms = 2 * (4 * h + 2 * bytes_r * h + (bytes_c * h if bytes_c != bytes_r else 0))
        attention = bytes_c * (self.heads * d + 2 * self.kv_heads * d) + 2 * bytes_c * self.heads * d
        mlp = bytes_c * self.intermediate * (4 if self.gated else 2)
        return norms + attention + mlp

    def live_bytes_per_token(self, bytes_r: int, bytes_c: int) -> int:
        """L_layer of the module docstring: bytes alive while one layer runs without a graph, per token."""
        h, d = self.hidden, self.head_dim
        inner = h + (self.heads + 2 * self.kv_heads) * d + self.heads * d + self.intermediate * (3 if self.gated else 2)
        return bytes_r * h + bytes_c * inner


def _tower(cfg: Any, gated: bool) -> Tower:
    hidden = getattr(cfg, "embed_dim", None) or cfg.hidden_size  # Qwen2-VL's vision: embed_dim
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads")
    inter = getattr(cfg, "intermediate_size", None) or int(hidden * getattr(cfg, "mlp_ratio", 4))
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "depth")
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    return Tower(hidden=hidden, intermediate=inter, layers=layers, heads=heads, kv_heads=kv,
                 head_dim=head_dim, gated=gated)


def towers(config: Any) -> tuple[Tower, Tower | None, int]:
    """(text decoder, vision encoder or None, vocabulary size) of a transformers model config."""
    text_cfg = config.get_text_config()
    vision_cfg = getattr(config, "vision_config", None)
    return (_tower(text_cfg, gated=True), None if vision_cfg is None else _tower(vision_cfg, gated=False),
            int(text_cfg.vocab_size))


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by role: `total` (all, tied weights once), `trainable` (what the optimizer gets)."""

    total: int
    trainable: int
    vision_trains: bool  # whether any vision-tower parameter trains
    text_trains: bool = True
    lora: bool = False  # peft adapters (with checkpointing, peft makes every tower keep a graph)


def param_counts(config: Any, *, lora: dict[str, Any] | None, freeze_vision: bool) -> ParamCounts:
    """Count parameters as the trial will train them, on the meta device (nothing is allocated).

    The model is built from `config` on the meta device and goes through the same freezing and LoRA
    wrapping as `sweeps.models.loading.load_model_and_processor` (so adapter counts are peft's own).
    """
    import torch
    from transformers import AutoModelForImageTextToText

    from sweeps.models.loading import apply_lora, find_vision_tower

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers' deprecated names: not the user's
        model = AutoModelForImageTextToText.from_config(config)
        if freeze_vision and (tower := find_vision_tower(model)) is not None:
            tower.requires_grad_(False)
        if lora is not None:
            model = apply_lora(model, lora)
    return counts_of(model)


def counts_of(model: Any) -> ParamCounts:
    """`ParamCounts` of a built (or loaded) model as it is now."""
    from sweeps.models.loading import find_vision_tower

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tower = find_vision_tower(model)
    vision = tower is not None and any(p.requires_grad for p in tower.parameters())
    return ParamCounts(total=total, trainable=trainable, vision_trains=vision, lora=hasattr(model, "peft_config"))


@dataclass(frozen=True)
class BatchShape:
    """Per example: `tokens` (text + image tokens the decoder sees), `answer` (positions from the
    first answer token to the end, the logits kept), `vision` (vision-tower patches), `pixels`
    (pixel_values elements)."""

    tokens: int
    answer: int
    vision: int
    pixels: int


def batch_shape(batcher: Any, examples: list[Any], config: Any) -> BatchShape:
    """The largest per-example shape among `examples`, each encoded by the trial's `Batcher`.

    Args:
        batcher: `sweeps.models.Batcher` of the model's real processor.
        examples: task examples (image, prompt, answer).
        config: the model config (its vision tower's patch size and temporal patch size turn
            pixel_values elements into patches: elements / (3 x patch^2 x temporal)).
    """
    vision = getattr(config, "vision_config", None)
    p = int(getattr(vision, "patch_size", 0) or 0)
    t = int(getattr(vision, "temporal_patch_size", 1) or 1)
    tokens = answer = vision = pixels = 0
    for ex in examples:
        enc = batcher.train_batch([ex.image], [ex.prompt], [ex.answer])
        labels = enc["labels"][0]
        supervised = (labels[1:] != -100).nonzero()
        first = int(supervised[0]) if len(supervised) else labels.shape[0] - 1
        pv = enc.get("pixel_values")
        n_pix = int(pv.numel()) if pv is not None else 0
        tokens = max(tokens, int(enc["input_ids"].shape[1]))
        answer = max(answer, int(labels.shape[0]) - first)
        pixels = max(pixels, n_pix)
        vision = max(vision, n_pix // (3 * p * p * t) if p else 0)
    return BatchShape(tokens=tokens, answer=answer, vision=vision, pixels=pixels)


@dataclass(frozen=True)
class Estimate:
    """A trial's estimated peak memory, by term (bytes; see the module docstring)."""

    micro_batch: int
    weights: int
    optimizer: int
    grads: int
    autocast: int
    activations: int
    logits: int
    inputs: int
    peak: int
    parts: dict[str, int] = field(default_factory=dict)
    terms: dict[str, int] = field(default_factory=dict)  # the terms that add up to `peak`, by name
    eval: EvalEstimate | None = None  # the evaluation's peak (`with_eval`); `peak` is then the larger

    @property
    def gb(self) -> float:
        return self.peak / GB

    def summary(self) -> str:
        """Every term of the peak in GB, adding up (to rounding): "weights 0.30, optimizer 0.54, ...";
        with an evaluation (`with_eval`) both phases, e.g. "training step 2.72: weights 0.30, ...;
        evaluating 4 at once 4.32: weights 0.30, ..." (the peak is the larger)."""
        if self.eval is None:
            return _terms(self.terms)
        return (f"training step {self.train_peak / GB:.2f}: {_terms(self.terms)}; evaluating {self.eval.chunk} "
                f"at once {self.eval.gb:.2f}: {_terms(self.eval.terms)}")

    @property
    def train_peak(self) -> int:
        """Bytes of the training step alone (`peak` without the evaluation)."""
        return sum(self.terms.values()) if self.terms else self.peak

    def with_eval(self, ev: EvalEstimate) -> Estimate:
        """This estimate with the evaluation's: `peak` = max(training step, evaluation chunk)."""
        from dataclasses import replace

        return replace(self, eval=ev, peak=max(self.train_peak, ev.peak))


@dataclass(frozen=True)
class EvalEstimate:
    """The peak of one evaluation chunk (`estimate_eval`), by term (bytes)."""

    chunk: int
    peak: int
    terms: dict[str, int]

    @property
    def gb(self) -> float:
        return self.peak / GB


def _terms(terms: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v / GB:.2f}" for k, v in terms.items() if v)


def estimate_memory(config: Any, counts: ParamCounts, shape: BatchShape, *, micro_batch: int,
                    dtype: str = "auto", autocast_bf16: bool = False, checkpointing: bool = False,
                    grad_accum: int = 1, device_type: str | None = None) -> Estimate:
    """Estimated peak bytes of one trial (the module docstring's formula).

    Args:
        config: the transformers model config (text and vision sizes, vocabulary).
        counts: parameters (`param_counts`).
        shape: per-example sequence shape (`batch_shape`).
        micro_batch: examples per forward/backward.
        dtype: `model.dtype` ("auto"/"float32": 4-byte weights; "bfloat16": 2).
        autocast_bf16: whether compute runs under bf16 autocast.
        checkpointing: `model.gradient_checkpointing`.
        grad_accum: micro-batches per optimizer step.
        device_type: "cuda" or "cpu" (how the peak adds up, see the module docstring); None: this
            process's default device, the rule `sweeps.trial.run.pick_device` follows (CUDA when visible).
    """
    text, vision, vocab = towers(config)
    bytes_r = 2 if dtype == "bfloat16" else 4
    bytes_c = 2 if autocast_bf16 else bytes_r
    frozen = counts.total - counts.trainable
    weights = frozen * bytes_r + counts.trainable * 4
    optimizer = counts.trainable * 8
    grads = counts.trainable * 4
    cast = counts.trainable * 2 if autocast_bf16 else 0
    b = micro_batch

    def stack(tower: Tower, tokens: int, keeps_graph: bool) -> int:
        per_layer = tower.layer_bytes_per_token(bytes_r, bytes_c)
        if not keeps_graph:  # runs under no graph: one layer's live tensors at a time
            return tokens * tower.live_bytes_per_token(bytes_r, bytes_c)
        if checkpointing:
            return tokens * (tower.layers * bytes_r * tower.hidden + per_layer)
        return tokens * tower.layers * per_layer

    text_act = stack(text, b * shape.tokens, True) + b * shape.tokens * (4 + bytes_r) * text.hidden
    # peft under gradient checkpointing hooks every sub-model's input embeddings to require grad
    # (`enable_input_require_grads`), the vision tower's patch embeddings too: a frozen tower then
    # keeps a (checkpointed) graph and backward runs through it
    vision_graph = counts.vision_trains or (counts.lora and checkpointing)
    vision_act = 0 if vision is None else stack(vision, b * shape.vision, vision_graph)
    if vision is not None and not vision_graph:
        activations, transient = text_act, vision_act
    else:
        activations, transient = text_act + vision_act, 0
    logits = b * shape.answer * vocab * (2 * bytes_c + 4)
    inputs = b * shape.pixels * 4
    if device_type is None:
        import torch

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    terms = {"weights": weights, "optimizer": optimizer, "inputs": inputs}
    graph = {"activations": activations, "logits": logits, "autocast": cast}
    if device_type == "cpu":  # backward's freed activations are not reused for the gradients
        terms.update(graph if sum(graph.values()) >= transient else {"vision_transient": transient})
        terms["grads"] = grads
    else:
        if grad_accum > 1:
            graph["grads"] = grads
        branches = [graph, {"grads": grads}, {"vision_transient": transient}]
        terms.update(max(branches, key=lambda t: sum(t.values())))
    peak = sum(terms.values())
    return Estimate(micro_batch=b, weights=weights, optimizer=optimizer, grads=grads, autocast=cast,
                    activations=activations, logits=logits, inputs=inputs, peak=peak,
                    parts={"vision_transient": transient, "text_activations": text_act}, terms=terms)


def estimate_eval(config: Any, counts: ParamCounts, shape: BatchShape, *, chunk: int, max_new_tokens: int,
                  dtype: str = "auto", autocast_bf16: bool = False) -> EvalEstimate:
    """Estimated peak bytes while the trial evaluates `chunk` examples at once (greedy `generate`,
    no graph, between training steps: the optimizer's states stay, the gradients are freed).

        peak = weights + optimizer + pixel inputs (chunk x pixels x 4)
               + max(vision transient: chunk x patches x L_layer(vision),
                     prefill: image features + KV cache + one decoder layer's live tensors + logits)
        image features = chunk x tokens x h x bytes_c        (the merged input embeddings)
        KV cache       = chunk x (tokens + max_new_tokens) x layers x 2 x g x d x bytes_c
        live           = chunk x tokens x L_layer(text)      (one layer at a time, no graph)
        logits         = chunk x V x 4                       (the last position's, in float32)

    Args: as `estimate_memory`; `chunk`: examples generated at once; `max_new_tokens`: the trial's
    `train.max_new_tokens`. Returns an `EvalEstimate` whose `terms` add up to its `peak`.
    """
    text, vision, vocab = towers(config)
    bytes_r = 2 if dtype == "bfloat16" else 4
    bytes_c = 2 if autocast_bf16 else bytes_r
    frozen = counts.total - counts.trainable
    n, seq = chunk, shape.tokens + max_new_tokens
    terms = {"weights": frozen * bytes_r + counts.trainable * 4, "optimizer": counts.trainable * 8,
             "eval_inputs": n * shape.pixels * 4}
    transient = 0 if vision is None else n * shape.vision * vision.live_bytes_per_token(bytes_r, bytes_c)
    prefill = {"kv_cache": n * seq * text.layers * 2 * text.kv_heads * text.head_dim * bytes_c,
               "eval_features": n * shape.tokens * text.hidden * bytes_c,
               "eval_layer": n * shape.tokens * text.live_bytes_per_token(bytes_r, bytes_c),
               "eval_logits": n * vocab * 4}
    terms.update(prefill if sum(prefill.values()) >= transient else {"eval_vision_transient": transient})
    return EvalEstimate(chunk=chunk, peak=sum(terms.values()), terms=terms)


def trial_estimate(cfg: Any, config: Any, counts: ParamCounts, shape: BatchShape, *, device_type: str,
                   workers: int = 1) -> Estimate:
    """The estimate a trial records (`memory.estimate_gb`): one worker's training step (its
    ceil(micro-batch / workers) examples) and its evaluation chunk (`train.eval_batch`, else
    min(64, its share of `task.eval_size`)), the peak the larger of the two."""
    est = _estimator(config, shape, device_type, workers, counts)
    from sweeps.trial.run import EVAL_BATCH

    chunk = min(EVAL_BATCH, cfg.train.eval_batch or EVAL_BATCH, math.ceil(cfg.task.eval_size / workers))
    return est(cfg, cfg.train.batch_size, cfg.train.grad_accum).with_eval(est.eval(cfg, chunk))


def eval_chunk(estimate_at: Any, budget: int, most: int) -> int:
    """The largest evaluation chunk <= `most` whose `estimate_at(chunk).peak` fits `budget`; 0 when
    even 1 does not. `estimate_at`: `chunk -> EvalEstimate` (the peak grows with the chunk)."""
    lo, hi = 0, most
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate_at(mid).peak <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def auto_batch(estimate_at: Any, budget: int, effective: int) -> tuple[int, int] | None:
    """(micro-batch, grad_accum) for `train.batch_size: auto`: the largest micro-batch <= `effective`
    whose estimate fits `budget`, then grad_accum = ceil(effective / micro-batch) and the micro-batch
    lowered to ceil(effective / grad_accum) (the same accumulation, the effective batch kept or the
    nearest above it). None when micro-batch 1 does not fit.

    Args:
        estimate_at: `micro_batch, grad_accum -> Estimate`.
        budget: bytes a trial may use.
        effective: `train.effective_batch_size`.
    """
    lo, hi = 0, effective
    while lo < hi:  # the estimate grows with the micro-batch: bisect the largest that fits
        mid = (lo + hi + 1) // 2
        accum = math.ceil(effective / mid)
        if estimate_at(mid, accum).peak <= budget:
            lo = mid
        else:
            hi = mid - 1
    if lo == 0:
        return None
    accum = math.ceil(effective / lo)
    return math.ceil(effective / accum), accum


def device_memory(memory_gb: float | None, gpu: float) -> tuple[int, str]:
    """(bytes, where the number came from) of the memory one trial's device has, seen from the driver:
    `resources.memory_gb` when given; else the local GPU's free memory when trials get a GPU and one
    is visible; else the RAM available now (psutil)."""
    if memory_gb is not None:
        return int(memory_gb * GB), "resources.memory_gb"
    if gpu > 0:
        import torch

        if torch.cuda.is_available():
            free, _total = torch.cuda.mem_get_info()
            return int(free), "free memory of the local GPU"
    import psutil

    return int(psutil.virtual_memory().available), "available RAM"


_SMALLER_IMAGES = "smaller images or fewer image tiles (fewer image tokens: the processor's size / max_pixels)"
_LARGER_DEVICE = ("a device with more memory, or a trial split over several GPUs (resources.workers with "
                  "strategy: fsdp, docs/cluster.md)")


def fit_hint(estimate_at: Any, budget: int, *, lora: bool, checkpointing: bool, bf16: bool) -> str:
    """What would make a trial that does not fit at micro-batch 1 fit: each option not in use with its
    estimate, e.g. "model.lora: {} -> 3.1 GB, model.gradient_checkpointing: true -> 7.9 GB".

    Args:
        estimate_at: `(lora, checkpointing, bf16) -> Estimate` at micro-batch 1.
        budget: bytes.
    """
    options = []
    if not lora:
        options.append(("model.lora: {}", (True, checkpointing, bf16)))
    if not checkpointing:
        options.append(("model.gradient_checkpointing: true", (lora, True, bf16)))
    if not bf16:
        options.append(("model.dtype: bfloat16", (lora, checkpointing, True)))
    if len(options) > 1:
        options.append((" + ".join(o for o, _ in options), (True, True, True)))
    images, larger = _SMALLER_IMAGES, _LARGER_DEVICE
    if not options:  # LoRA, checkpointing and bf16 are all on already
        return f"LoRA, gradient checkpointing and bfloat16 are already on: it needs {images}, or {larger}"
    shown = [f"{label} -> {estimate_at(*flags).gb:.3g} GB" for label, flags in options]
    fits = [s for (label, flags), s in zip(options, shown) if estimate_at(*flags).peak <= budget]
    if fits:
        return f"would fit with {'; '.join(fits)}; {images} also help"
    return f"still too large with {'; '.join(shown)}; it needs {images} too, or {larger}"


# --------------------------------------------------------------------------------- measured peaks
class PeakMeter:
    """The measured peak of a training phase: `torch.cuda.max_memory_allocated` on CUDA; on CPU the
    peak resident set (Linux VmHWM, reset at `start` through /proc/self/clear_refs) minus the resident
    set before the model was loaded (`baseline`, taken at construction)."""

    def __init__(self, device: Any) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.baseline = 0 if self.cuda else _rss()

    def start(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            return
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass

    def peak(self) -> int:
        """Bytes (0 when nothing could be measured)."""
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated())
        return max(0, _hwm() - self.baseline)


def _rss() -> int:
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


def _hwm() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


# ------------------------------------------------------------------------------------ trial plans
class MemoryFitError(SlsweepError):
    """A trial cannot fit its device's memory: even at micro-batch 1 (`field` "model.path"), or at
    the fixed `train.batch_size` the config asks for (`field` "train.batch_size")."""

    def __init__(self, message: str, field: str = "model.path") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class MemoryPlan:
    """The planner's verdict for one trial config: `cfg` with `train.batch_size: auto` resolved (else
    unchanged), its `estimate`, the device's memory (bytes) and where that number came from."""

    cfg: Any
    estimate: Estimate
    memory: int
    source: str
    headroom: float = DEFAULT_HEADROOM
    worst: tuple[str, ...] = ()  # the search-space values the estimate was made for ("model.lora.r: 64")

    def line(self) -> str:
        """One line for the console: the estimate, the budget and the auto batch, if any."""
        t = self.cfg.train
        worst = f" with the search space's {', '.join(self.worst)}" if self.worst else ""
        return (f"memory: ~{self.estimate.gb:.2f} GB per trial at micro-batch {t.batch_size} x grad_accum "
                f"{t.grad_accum}{worst} ({self.estimate.summary()} GB) of {self.memory / GB:.1f} GB "
                f"({self.source}, {self.headroom:.0%} usable)")


def plan_trial_memory(cfg: Any, *, model_config: Any, batcher: Any, examples: list[Any], memory: int,
                      source: str, device_type: str = "cpu", headroom: float = DEFAULT_HEADROOM,
                      space_values: dict[str, tuple[str, list[Any]]] | None = None,
                      workers: int = 1) -> MemoryPlan:
    """Estimate a trial's peak memory before anything is loaded; resolve `train.batch_size: auto`.

    Args:
        cfg: the `TrialConfig`.
        model_config: its model's transformers config (`AutoConfig.from_pretrained`).
        batcher: the trial's `Batcher` (the real processor: image tokens, prompt and answer lengths).
        examples: sample task examples (the longest sets the sequence length).
        memory: bytes one trial may have of its device (`device_memory`, divided by `trials_per_device`).
        source: where `memory` came from (named in messages).
        device_type: "cpu" or "cuda" (bf16 autocast is on by default on CUDA).
        headroom: the share of `memory` the estimate may use.
        space_values: the search space's memory parameters (`space_extremes`): the plan is made for
            the worst case the space can propose (each parameter at its most memory-hungry value), so
            that every trial fits; `train.batch_size: auto` is resolved against that worst case.
        workers: processes of one trial (`resources.workers`): the plan is one worker's, which
            trains ceil(micro-batch / workers) examples and evaluates ceil(eval_size / workers).

    Evaluation is planned too (`estimate_eval`): the largest chunk <= `EVAL_BATCH` (64) examples
    generated at once that fits becomes `train.eval_batch` when it is smaller than the trial's
    evaluation share; `plan.estimate.peak` is the larger of the training step's and the chunk's.

    Returns:
        The plan; `plan.cfg` has integer batch_size and grad_accum (and eval_batch when memory is
        short); `plan.estimate` is the worst case's.

    Raises:
        MemoryFitError: micro-batch 1 does not fit (`field` model.path), the fixed batch does not
            (`field` train.batch_size), or the space's worst case does not (`field` "params.NAME", the
            search-space parameter that adds the most); the one-line message gives the estimate and
            what would make it fit.
    """
    shape = batch_shape(batcher, examples, model_config)
    budget = int(memory * headroom)
    at_cfg = _estimator(model_config, shape, device_type, workers)

    def at(micro: int, accum: int, *, lora: bool | None = None, ckpt: bool | None = None,
           bf16: bool | None = None) -> Estimate:
        c = cfg.model_copy(deep=True)
        c.model.gradient_checkpointing = c.model.gradient_checkpointing if ckpt is None else ckpt
        c.model.dtype = c.model.dtype if not bf16 else "bfloat16"
        c.model.lora = c.model.lora if lora is None else {}
        return at_cfg(c, micro, accum)

    def over(est: Estimate, what: str) -> str:
        return (f"a trial needs ~{est.gb:.3g} GB at micro-batch {what} ({est.summary()} GB) but {source} "
                f"gives {memory / GB:.3g} GB ({headroom:.0%} usable: {budget / GB:.3g} GB)")

    train = cfg.train
    auto = train.batch_size == "auto"
    first = at(1, train.effective_batch_size if auto else train.grad_accum)
    if first.peak > budget:
        hint = fit_hint(lambda lora, ckpt, bf16: at(1, 1, lora=lora or None, ckpt=ckpt, bf16=bf16), budget,
                        lora=cfg.model.lora is not None, checkpointing=cfg.model.gradient_checkpointing,
                        bf16=cfg.model.dtype == "bfloat16")
        raise MemoryFitError(f"{cfg.model.path}: {over(first, '1')}; {shape.tokens} tokens per example; {hint}")
    worst, raised = worst_case(cfg, space_values or {}, lambda c: at_cfg(c, *_batch_of(c)).peak)
    if raised:
        est = at_cfg(worst, *_batch_of(worst))
        if est.peak > budget:
            values = " and ".join(f"{t}: {v!r}" for _n, t, v in raised)
            what = "1" if worst.train.batch_size == "auto" else str(worst.train.batch_size)
            raise MemoryFitError(
                f"the search space can propose {values} (the most memory-hungry values of params "
                f"{', '.join(n for n, _t, _v in raised)}): {over(est, what)}; narrow params.{raised[0][0]}, "
                f"or make every trial smaller (model.lora, model.gradient_checkpointing: true, model.dtype: bfloat16, "
                f"smaller images)", f"params.{raised[0][0]}")
    if auto:
        micro, accum = auto_batch(lambda b, a: at_cfg(_with_batch(worst, b, a), b, a), budget,
                                  train.effective_batch_size)  # type: ignore[misc]
        cfg, worst = _with_batch(cfg, micro, accum), _with_batch(worst, micro, accum)
    est = at(cfg.train.batch_size, cfg.train.grad_accum)
    if est.peak > budget:  # a fixed micro-batch that fits only smaller
        raise MemoryFitError(
            f"{cfg.model.path}: {over(est, str(cfg.train.batch_size))}; set train.batch_size: auto (the largest "
            f"micro-batch that fits, with grad_accum keeping train.effective_batch_size), or a smaller "
            f"train.batch_size", "train.batch_size")
    if raised:
        est = at_cfg(worst, *_batch_of(worst))
    from sweeps.trial.run import EVAL_BATCH

    share = math.ceil(cfg.task.eval_size / workers)
    most = min(EVAL_BATCH, share, cfg.train.eval_batch or EVAL_BATCH)
    chunk = eval_chunk(lambda n: at_cfg.eval(worst, n), budget, most)
    if chunk == 0:
        ev = at_cfg.eval(worst, 1)
        raise MemoryFitError(
            f"{cfg.model.path}: evaluating one example needs ~{ev.gb:.3g} GB ({_terms(ev.terms)} GB) but "
            f"{source} gives {memory / GB:.3g} GB ({headroom:.0%} usable: {budget / GB:.3g} GB); "
            f"it needs {_SMALLER_IMAGES}, or {_LARGER_DEVICE}")
    if chunk < min(EVAL_BATCH, share) and chunk != cfg.train.eval_batch:
        cfg = cfg.model_copy(deep=True)
        cfg.train.eval_batch = chunk
    est = est.with_eval(at_cfg.eval(worst, chunk))
    return MemoryPlan(cfg=cfg, estimate=est, memory=memory, source=source, headroom=headroom,
                      worst=tuple(f"{t}: {v!r}" for _n, t, v in raised))


def _batch_of(cfg: Any) -> tuple[int, int]:
    """(micro-batch, grad_accum) a config trains with (`auto`: micro-batch 1 over the effective batch)."""
    if cfg.train.batch_size == "auto":
        return 1, cfg.train.effective_batch_size
    return cfg.train.batch_size, cfg.train.grad_accum


def _with_batch(cfg: Any, micro: int, accum: int) -> Any:
    c = cfg.model_copy(deep=True)
    c.train.batch_size, c.train.grad_accum = micro, accum
    return c


class _estimator:
    """`(cfg, micro_batch, grad_accum) -> Estimate` (one worker's: ceil(micro_batch / workers)) and
    `.eval(cfg, chunk) -> EvalEstimate` for configs of one model; parameter counts are built once per
    (LoRA options, frozen vision) on the meta device."""

    def __init__(self, model_config: Any, shape: BatchShape, device_type: str, workers: int = 1,
                 counts: ParamCounts | None = None) -> None:
        self.model_config, self.shape, self.device_type, self.workers = model_config, shape, device_type, workers
        self.counts: dict[tuple[str, bool], ParamCounts] = {}
        self.fixed = counts  # a built model's own counts

    def _counts(self, c: Any) -> ParamCounts:
        if self.fixed is not None:
            return self.fixed
        import json

        key = (json.dumps(c.model.lora, sort_keys=True, default=str), c.model.freeze_vision)
        if key not in self.counts:
            self.counts[key] = param_counts(self.model_config, lora=c.model.lora, freeze_vision=c.model.freeze_vision)
        return self.counts[key]

    def __call__(self, c: Any, micro: int, accum: int) -> Estimate:
        from sweeps.trial.run import bf16_autocast

        return estimate_memory(self.model_config, self._counts(c), self.shape,
                               micro_batch=math.ceil(micro / self.workers), dtype=c.model.dtype,
                               autocast_bf16=bf16_autocast(c, self.device_type),
                               checkpointing=c.model.gradient_checkpointing, grad_accum=accum,
                               device_type=self.device_type)

    def eval(self, c: Any, chunk: int) -> EvalEstimate:
        from sweeps.trial.run import bf16_autocast

        return estimate_eval(self.model_config, self._counts(c), self.shape, chunk=chunk,
                             max_new_tokens=c.train.max_new_tokens, dtype=c.model.dtype,
                             autocast_bf16=bf16_autocast(c, self.device_type))


# Trial-config fields whose value changes a trial's memory (a search space may vary them).
MEMORY_TARGETS = ("model.", "train.batch_size", "train.grad_accum", "train.mixed_precision",
                  "train.effective_batch_size")


def space_extremes(space: Any) -> dict[str, tuple[str, list[Any]]]:
    """The search space's parameters that change a trial's memory (targets in `MEMORY_TARGETS`), as
    name -> (target, the values that bound its memory): a categorical's choices, a fixed value, a
    range's low and high (every value in between costs no more than one end: the estimate is monotone
    in the batch, the LoRA rank and the accumulation). Conditional parameters count as always active."""
    from sweeps.config.space import CategoricalParam, FixedParam

    out: dict[str, tuple[str, list[Any]]] = {}
    for name, param in space.params.items():
        target = space.targets[name]
        if not target.startswith(MEMORY_TARGETS):
            continue
        if isinstance(param, CategoricalParam):
            values = list(param.choices)
        elif isinstance(param, FixedParam):
            values = [param.value]
        else:
            values = [param.low, param.high]
        out[name] = (target, values)
    return out


def worst_case(cfg: Any, space_values: dict[str, tuple[str, list[Any]]],
               peak_of: Any) -> tuple[Any, list[tuple[str, str, Any]]]:
    """The config with each search-space parameter at its most memory-hungry value, and those
    parameters as (name, target, value), the one adding the most memory first; parameters whose
    every value costs no more than the base config are left out.

    Args:
        cfg: the base `TrialConfig`.
        space_values: `space_extremes`.
        peak_of: `TrialConfig -> bytes` (the estimate at the config's own batch).
    """
    from sweeps.errors import SpecError

    base = peak_of(cfg)
    found: list[tuple[int, str, str, Any]] = []
    for name, (target, values) in space_values.items():
        best: tuple[int, Any] | None = None
        for value in values:
            try:
                peak = peak_of(cfg.with_overrides({target: value}))
            except SpecError:  # a value the config rejects fails the trial elsewhere, not here
                continue
            if best is None or peak > best[0]:
                best = (peak, value)
        if best is not None and best[0] > base:
            found.append((best[0] - base, name, target, best[1]))
    found.sort(key=lambda f: -f[0])
    if not found:
        return cfg, []
    worst = cfg.with_overrides({target: value for _, _, target, value in found})
    return worst, [(name, target, value) for _, name, target, value in found]


def trials_per_device(*, max_concurrent: int, trials: int, cpu: float, gpu: float, cpus: float,
                      workers: int = 1) -> int:
    """How many training processes share one device at once, as the driver starts them: Tune runs at
    most `search.max_concurrent` trials (its ConcurrencyLimiter / grid generator) and never more than
    the sweep's trials; a node holds `cpus // (resources.cpu x workers)` of them, each trial
    `workers` processes with a model of its own. On CPU they all share the node's RAM; on a GPU,
    processes with a fraction `resources.gpu` < 1 share one GPU, `1 // gpu` of them.

    Args:
        cpus: CPUs of the node (`sweeps.driver.tune_internals.local_cpu_count`).
        workers: training processes per trial (`resources.workers`).
    """
    per_trial = cpu * workers
    trials_at_once = max(1, min(max_concurrent, trials, int(cpus // per_trial) if per_trial > 0 else trials))
    if gpu > 0:
        return max(1, min(trials_at_once * workers, int(1 / gpu + 1e-9)))
    return trials_at_once * workers


def plan_on_device(cfg: Any, device: Any) -> MemoryPlan:
    """`plan_trial_memory` in the trial's own process (a config no driver planned, e.g. `slsweep trial`
    with `train.batch_size: auto`): CUDA: `torch.cuda.mem_get_info` of this device; CPU: available RAM.

    Raises:
        MemoryFitError: as `plan_trial_memory`.
    """
    import psutil
    import torch
    from transformers import AutoConfig, AutoProcessor

    from sweeps.trial.data import TaskData
    from sweeps.models import Batcher
    from sweeps.models.loading import resolve_model_path
    from sweeps.tasks import get_task

    source = resolve_model_path(cfg.model.path)
    if getattr(device, "type", str(device)) == "cuda":
        memory, where = int(torch.cuda.mem_get_info(device)[0]), "this GPU's free memory"
    else:
        memory, where = int(psutil.virtual_memory().available), "available RAM"
    batcher = Batcher(AutoProcessor.from_pretrained(source), max_new_tokens=cfg.train.max_new_tokens)
    examples = TaskData(get_task(cfg.task.name), cfg.task, cfg.seed).held_out[:8]
    return plan_trial_memory(cfg, model_config=AutoConfig.from_pretrained(source), batcher=batcher,
                             examples=examples, memory=memory, source=where,
                             device_type=getattr(device, "type", str(device)))


@dataclass
class MemoryRecord:
    """What a trial reports about memory: the planner's estimate for its config (GB) and its meter."""

    meter: PeakMeter
    estimate_gb: float

    def metrics(self) -> dict[str, float]:
        """`memory.estimate_gb` and `memory.peak_gb` (measured since `meter.start()`), for MLflow."""
        return {"memory.estimate_gb": self.estimate_gb, "memory.peak_gb": self.meter.peak() / GB}
