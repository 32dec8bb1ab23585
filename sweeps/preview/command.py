"""`slsweep data SPEC`: the spec's task data as a trial builds it, before paying for a sweep.

The spec and its overrides are loaded and validated as `slsweep run` does (`load_spec`), the first
records are checked with the run's preflight (`sweeps.driver.preflight.check_data`: same messages), then
the data is built by the trial's own class (`sweeps.trial.data.TaskData`, the trial's seed) and the
answers tokenized by the trial's `Batcher`. Nothing is written to the run folder or MLflow and Ray
is not started (a built-in tiny model is built into the model cache when missing, as `run` does).

Which examples: `train` is the training pool's first rows for real data (index = position in the
pool, file order) and, for synthetic data, the first examples of the training stream (step 0's
micro-batches, then step 1's, ...; index = position in that stream); `eval` is the held-out set
every trial is scored on. Figures cover the whole pool / held-out set; a synthetic training stream
is endless, so its figures cover its first `SYNTHETIC_FIGURES` examples.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeps.errors import SlsweepError, SpecError
from sweeps.preview.examples import ExampleView, view_example
from sweeps.trial.figures import SplitFigures, split_figures, split_line
from sweeps.preview.tokens import TokenMarker

__all__ = ["SCHEMA", "SYNTHETIC_FIGURES", "DataPreview", "build_preview", "preview_command"]

SCHEMA = 1
SYNTHETIC_FIGURES = 256


@dataclass
class DataPreview:
    """What `slsweep data` shows (see docs/data.md, "slsweep data", for the JSON schema)."""

    spec_file: str
    overrides: tuple[str, ...]
    task: str
    data_kind: str  # "synthetic", "files" or "huggingface"
    model: str
    family: str
    splits: list[SplitFigures]
    views: list[ExampleView]
    images: list[Any]  # the PIL images of `views`, for the contact sheet

    def as_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "spec": self.spec_file, "overrides": list(self.overrides), "task": self.task,
                "data": self.data_kind, "model": self.model, "loss_family": self.family,
                "splits": [s.as_json() for s in self.splits], "examples": [v.as_json() for v in self.views]}

    def text(self) -> str:
        head = (f"{self.spec_file}: task {self.task} ({self.data_kind} data), model {self.model}; tokens marked "
                f"for loss family {self.family}: * soft target, ! numeric token without one")
        return "\n\n".join([head + "\n" + "\n".join(split_line(s) for s in self.splits),
                            *(v.text() for v in self.views)])


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _training_stream(data: Any, cfg: Any, count: int) -> list[Any]:
    """The first `count` examples a trial trains on from a generated stream, in step order."""
    out: list[Any] = []
    step = 0
    while len(out) < count:
        auto = cfg.train.batch_size == "auto"  # the planner's micro-batch is not known here: one per step
        for micro in range(1 if auto else cfg.train.grad_accum):
            out += data.batch(step, micro, cfg.train.effective_batch_size if auto else cfg.train.batch_size)
        step += 1
    return out[:count]


def _loss_tokens(families: Sequence[str], batcher: Any, cfg: Any, spec_file: str) -> dict[str, Any]:
    from sweeps.trial.coverage import loss_tokens

    out = {}
    for family in families:
        try:
            out[family] = loss_tokens(family, batcher.tokenizer, model=cfg.model.path)
        except SlsweepError as exc:  # the tokenizer cannot serve the family: as `run` says it
            raise SpecError(spec_file, "model.path", _one_line(exc)) from None
    return out


def build_preview(spec: str | Path | None, overrides: Sequence[str] = (), *, n: int = 8,
                  family: str | None = None) -> DataPreview:
    """Load the spec's data as a trial does and describe the first `n` examples of each split.

    Args:
        spec: a spec file or a built-in spec's name (None: the built-in default).
        overrides: `key=value` spec overrides, validated like the file.
        n: examples shown per split (figures always cover the whole split).
        family: the loss family whose soft-target tokens are marked (default: the spec's
            `loss.family` when the sweep can choose it, else the first family it can choose).

    Raises:
        SlsweepError: a bad spec, override, data file, model or family (one line; exit 2).
    """
    from sl_core.registry import family_spec

    from sweeps.trial.data import TaskData
    from sweeps.driver.preflight import check_data, load_batcher, model_source, reachable_families
    from sweeps.driver.service import split_spec_args
    from sweeps.config.spec import load_spec
    from sweeps.tasks import DataError, get_task

    spec_path, overrides = split_spec_args(spec, overrides)
    resolved = load_spec(spec_path, overrides)
    cfg = resolved.base_trial_config()
    spec_file = str(resolved.path)
    if family is not None:
        try:
            family_spec(family)
        except ValueError as exc:
            raise SlsweepError(f"--family: {_one_line(exc).removeprefix('loss family: ')}") from None
    families = list(reachable_families(resolved))
    chosen = family or (cfg.loss.family if cfg.loss.family in families else families[0])
    families += [chosen] if chosen not in families else []
    check_data(cfg, spec_file)  # the first records, with `run`'s checks and messages
    task = get_task(cfg.task.name)
    try:
        data = TaskData(task, cfg.task, cfg.seed)
    except DataError:
        raise
    except (ValueError, TypeError) as exc:  # the task's params do not fit a later record
        raise SpecError(spec_file, "task.params", _one_line(exc)) from None
    batcher = load_batcher(cfg, spec_file, model_source(cfg, spec_file))
    tokens = _loss_tokens(families, batcher, cfg, spec_file)
    marker = TokenMarker(batcher, tokens[chosen])
    lts = [tokens[f] for f in families]

    pool = data.train_pool
    if pool is None:
        train = _training_stream(data, cfg, max(n, SYNTHETIC_FIGURES))
        train_fig = split_figures("train", train, batcher, lts, rows=None,
                                  note=f"figures over the first {len(train)} generated")
    else:
        train = pool
        train_fig = split_figures("train", train, batcher, lts, rows=len(pool))
    eval_fig = split_figures("eval", data.held_out, batcher, lts, rows=len(data.held_out))
    shown = [("train", i, e) for i, e in enumerate(train[:n])] + \
            [("eval", i, e) for i, e in enumerate(data.held_out[:n])]
    views = [view_example(split, i, e, marker) for split, i, e in shown]
    kind = "huggingface" if cfg.task.data is not None else "files" if cfg.task.data_path else "synthetic"
    return DataPreview(spec_file, tuple(resolved.overrides), task.name, kind, cfg.model.path, chosen,
                       [train_fig, eval_fig], views, [e.image for _, _, e in shown])


def preview_command(spec: str | Path | None, overrides: Sequence[str] = (), *, n: int = 8, as_json: bool = False,
                    sheet: Path | None = None, family: str | None = None) -> str:
    """`slsweep data`: the preview as text (or JSON), after writing the contact sheet when asked.

    Raises:
        SlsweepError: see `build_preview`; `--sheet` with a missing or unwritable folder.
    """
    if sheet is not None:  # before the data loads
        from sweeps.store.paths import path_problem

        problem = path_problem(sheet)
        if problem:
            raise SlsweepError(f"--sheet: {problem}")
        if not Path(sheet).expanduser().parent.is_dir():
            raise SlsweepError(f"--sheet: {sheet}: folder {Path(sheet).expanduser().parent} does not exist")
        if n == 0:
            raise SlsweepError(f"--sheet: {sheet}: no examples to draw (-n 0)")
    preview = build_preview(spec, overrides, n=n, family=family)
    note = ""
    if sheet is not None:
        from sweeps.preview.sheet import write_sheet

        note = f"\n\ncontact sheet: {write_sheet(sheet, preview.views, preview.images)}"
    if as_json:
        return json.dumps(preview.as_json(), indent=1, ensure_ascii=False)
    return preview.text() + note
