"""Search, then confirm: rerun the best configurations of a search sweep on fresh seeds.

A TPE/random sweep picks its best configurations on the very seeds it measured them on, so their
values are optimistic (the winner's curse) and usually rest on one seed. `plan_confirm` takes the
`top` best configurations of a sweep (full-budget observations, mean over seeds), adds a baseline,
and writes a grid spec that runs exactly those configurations (search-space `points`) with `seeds`
new seeds each (``search.first_seed`` after the seeds the search used), full budget, no early
stopping, in the same MLflow experiment. `run_confirm` runs it, links the two sweeps with MLflow
tags (`CONFIRMS_TAG` on the new parent run, `CONFIRMED_BY_TAG` on the searched one) and returns the
adjusted ablation table of the new sweep.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeps.errors import SlsweepError
from sweeps.config.yamlio import dump_yaml, load_yaml
from sweeps.report.hints import SEARCH_ALGORITHMS, confirm_hint  # noqa: F401 - confirm_hint: read from here too
from sweeps.report.runs import SELECTOR_ALIASES, SweepRuns, config_key, selector_column, selector_items
from sweeps.store import schema
from sweeps.store.schema import ARM_COLUMN, CONFIRMED_BY_TAG, CONFIRMS_TAG

FULL_BUDGET = "at full budget"  # the confirm spec's description, unless an override sets train.steps
# Config keys that name where a trial's inputs are: relative values in the original spec text are
# relative to a spec file the confirm spec does not sit beside, so the resolved value is used.
_PATH_KEYS = (("task", "data_path"), ("task", "eval_data_path"), ("model", "path"))


class ConfirmError(SlsweepError):
    """A confirmation cannot be planned from what was asked or what the store holds."""


@dataclass
class Candidate:
    """One configuration to confirm.

    Attributes:
        label: ``top1``, ``top2``, ... or ``baseline``.
        params: dotted resolved-config keys -> values (no seed, no run name).
        mean: mean of the metric over the sweep's full-budget seeds (NaN for a new baseline).
        n: seeds behind `mean`.
    """

    label: str
    params: dict[str, Any]
    mean: float
    n: int


@dataclass
class ConfirmPlan:
    spec: dict[str, Any]
    candidates: list[Candidate]
    first_seed: int
    seeds: int
    source_sweep: str
    baseline: str | None
    fresh_seeds: bool = True
    notes: list[str] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """A YAML/pydantic-friendly scalar: integral floats become ints (MLflow params are text, read
    back as floats), numpy scalars become Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _config_params(row: pd.Series) -> dict[str, Any]:
    out = {}
    for col, value in row.items():
        if not isinstance(col, str) or not col.startswith("params.") or col.startswith("params.space."):
            continue
        key = col.removeprefix("params.")
        if key in ("seed", "name") or value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        out[key] = _plain(value)
    return out


def rank_configurations(runs: SweepRuns, metric: str) -> pd.DataFrame:
    """Configurations of the full-budget observations, best first.

    Returns:
        [C, 5] frame: ``key`` (`config_key` without the seed), ``mean``, ``n`` (seeds), ``row``
        (the index of one observation of that configuration in `runs.trials`) and ``arm``
        (``baseline`` for a spec's baseline arm, tag `slsweep.arm`; else ``search``).
    """
    mcol = runs.resolve_metric(metric)
    df = runs.full[runs.full[mcol].notna()]
    if df.empty:
        raise ConfirmError(f"{runs.label}: no full-budget run has '{metric}': nothing to confirm")
    keys = pd.Series([config_key(r, with_seed=False) for _, r in df.iterrows()], index=df.index)
    grouped = df.groupby(keys, sort=False)
    arm = df[ARM_COLUMN] if ARM_COLUMN in df else pd.Series(schema.ARM_SEARCH, index=df.index)
    table = pd.DataFrame({"mean": grouped[mcol].mean(), "n": grouped[mcol].size(),
                          "row": grouped.apply(lambda g: g.index[0], include_groups=False),
                          "arm": arm.groupby(keys, sort=False).first().fillna(schema.ARM_SEARCH)})
    table = table.rename_axis("key").reset_index()
    ascending = runs.direction(metric) == "min"
    return table.sort_values(["mean", "key"], ascending=[ascending, True], kind="stable").reset_index(drop=True)


def _baseline_params(runs: SweepRuns, selector: str, ranked: pd.DataFrame,
                     metric: str) -> tuple[dict[str, Any], float, int, str]:
    """The baseline configuration: the sweep's best one matching `selector`, else the best
    configuration with the selector's values applied (a new family drops the old family's
    parameters). Returns (params, mean, n, how it was chosen)."""
    from sweeps.report.tables import parse_baseline

    wanted: dict[str, Any] = {}
    try:
        items = selector_items(selector)
    except SlsweepError as exc:
        raise ConfirmError(str(exc)) from None
    for name, value in items:  # the keys `--by` and `table --baseline` accept (`selector_column`)
        try:
            col = selector_column(name, runs.param_keys, runs.trials.columns)
        except SlsweepError:  # a field the sweep did not log (a new value is applied below)
            col = f"params.{name}" if "." in name else ""
        key = col.removeprefix("params.")
        if key.startswith("tags.") and name in SELECTOR_ALIASES:  # a store whose trials lack the param
            key = SELECTOR_ALIASES[name]
        if not key or key.startswith(("tags.", "metrics.")):
            raise ConfirmError(f"--baseline '{name}={value}': '{name}' is not a configuration field")
        wanted[key] = value
    try:
        mask = parse_baseline(runs, selector) & runs.trials["full_budget"].astype(bool)
    except SlsweepError:
        mask = pd.Series(False, index=runs.trials.index)
    if mask.any():
        matching = {config_key(r, with_seed=False) for _, r in runs.trials[mask].iterrows()}
        for _, r in ranked.iterrows():  # best first
            if r["key"] in matching:
                return (_config_params(runs.trials.loc[r["row"]]), float(r["mean"]), int(r["n"]),
                        "the sweep's best configuration matching it")
    best = _config_params(runs.trials.loc[ranked.iloc[0]["row"]])
    params = dict(best)
    family = schema.FAMILY_PARAM
    if family in wanted and str(wanted[family]) != str(best.get(family)):
        params = {k: v for k, v in params.items() if not k.startswith("loss.")}
    for key, value in wanted.items():
        params[key] = value if key == family else _plain(_number_or_text(value))
    return params, math.nan, 0, "the best configuration with it applied (not in the sweep)"


def _seeds_used(runs: SweepRuns) -> int:
    """The first seed no run of the searched sweep used."""
    info = runs.sweep.params
    first = int(float(info.get(schema.FIRST_SEED_PARAM, 0) or 0))
    count = int(float(info.get(schema.SEEDS_PARAM, 1) or 1))
    raw = runs.raw_trials if runs.raw_trials is not None else runs.trials
    seen = pd.to_numeric(raw["seed"], errors="coerce").dropna()
    return max(first + count, int(seen.max()) + 1 if len(seen) else 0)


def plan_confirm(runs: SweepRuns, *, top: int = 3, seeds: int = 5, baseline: str | None = None,
                 metric: str | None = None, first_seed: int | None = None,
                 spec_text: str | None = None) -> ConfirmPlan:
    """The confirm spec (a mapping) for the `top` best configurations of `runs` plus `baseline`.

    Args:
        runs: the searched sweep (full-budget observations are ranked).
        top: how many configurations to confirm (>= 1).
        seeds: seeds per configuration (>= 2: one seed has no spread to test).
        baseline: ``col=value[,...]`` (``loss=hard``): a configuration every candidate is compared
            with on the same seeds; None = no baseline.
        metric: the metric to rank by (default: the sweep's).
        first_seed: the first new seed (default: after every seed the search used).
        spec_text: the searched sweep's spec YAML (default: its parent run's ``spec.yaml``).

    Raises:
        ConfirmError: bad `top`/`seeds`, no spec artifact, no full-budget runs.
    """
    check_counts(top, seeds)
    metric = metric or runs.default_metric()
    text = spec_text if spec_text is not None else runs.parent_artifact_text("spec.yaml")
    if not text:
        raise ConfirmError(f"{runs.label}: its parent run has no spec.yaml artifact to rerun from")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # load_yaml reads files (line numbers for errors)
        path = Path(tmp) / "spec.yaml"
        path.write_text(text, encoding="utf-8")
        spec = load_yaml(path, what="spec").data
    if not isinstance(spec, dict):
        raise ConfirmError(f"{runs.label}: its spec.yaml artifact is not a mapping")
    ranked = rank_configurations(runs, metric)
    chosen = ranked[ranked["arm"] != schema.ARM_BASELINE].head(top)  # the search's best, not its fixed arms
    if chosen.empty:
        raise ConfirmError(f"{runs.label}: no searched configuration reached the full budget: nothing to confirm")
    candidates = [Candidate(f"top{i + 1}", _config_params(runs.trials.loc[r["row"]]), float(r["mean"]),
                            int(r["n"])) for i, (_, r) in enumerate(chosen.iterrows())]
    notes = []
    if len(chosen) < top:
        notes.append(f"the sweep has only {len(chosen)} full-budget configuration(s); confirming all")
    if baseline:
        params, mean, n, how = _baseline_params(runs, baseline, ranked, metric)
        same = [c.label for c in candidates if c.params == params]
        if same:
            notes.append(f"baseline {baseline} is {same[0]} itself")
        else:
            candidates.append(Candidate("baseline", params, mean, n))
        notes.append(f"baseline {baseline}: {how}")
    used = _seeds_used(runs)
    start = used if first_seed is None else int(first_seed)
    if start < used:
        notes.append(f"seeds from {start} overlap the search's (0..{used - 1}): the values of those "
                     "seeds are the ones the configurations were chosen on (optimistic)")

    # Points name the resolved-config keys that differ between candidates: the searched values,
    # the only ones a run name shows. A loss or train key the candidates share but the spec does
    # not set to that value (a default, a planned batch) is written into the spec instead (so a
    # `train.steps=100` override of the confirm spec still applies, and no run name carries
    # `compile=False data_workers=1`).
    keys = sorted({k for c in candidates for k in c.params})
    varying = [k for k in keys if len({repr(c.params.get(k)) for c in candidates}) > 1]
    if not varying:  # one candidate (--top 1, no baseline): its loss family is the grid's one point
        varying = [k for k in keys if k == "loss.family"] or keys[:1]
    for k in keys:
        value = candidates[0].params.get(k)
        if k not in varying and k.startswith(("loss.", "train.")) and not _spec_sets(spec, k, value):
            _spec_set(spec, k, value)
    params: dict[str, Any] = {}
    for k in varying:
        values = []
        for c in candidates:
            if k in c.params and not any(repr(v) == repr(c.params[k]) for v in values):
                values.append(c.params[k])
        params[k] = {"type": "categorical", "choices": values}
    points = [{k: c.params[k] for k in varying if k in c.params} for c in candidates]

    source = runs.sweep.sweep_id
    spec["name"] = f"{spec.get('name', 'sweep')}-confirm"
    spec["description"] = (f"Confirmation of sweep {source}: {', '.join(c.label for c in candidates)} "
                           f"with seeds {start}..{start + seeds - 1} {FULL_BUDGET}")
    spec["search_space"] = {"name": f"confirm-{source}", "description": spec["description"],
                            "params": params, "points": points}
    search = dict(spec.get("search") or {})
    search.update({"algorithm": "grid", "seeds": seeds, "first_seed": start,
                   "num_samples": len(candidates)})
    search.setdefault("max_concurrent", 1)
    spec["search"] = search
    spec["scheduler"] = {"type": "fifo"}
    spec["metric"] = {"name": metric, "mode": runs.direction(metric)}
    spec["tracking"] = {**(spec.get("tracking") or {}), "experiment": runs.experiment_name}
    spec.pop("storage", None)
    spec.pop("baselines", None)  # the confirm's baseline is --baseline, run as one of its points
    top_params = candidates[0].params
    for section, key in _PATH_KEYS:
        value = top_params.get(f"{section}.{key}")
        if value is not None and isinstance(spec.get(section), dict):
            spec[section][key] = value
    return ConfirmPlan(spec=spec, candidates=candidates, first_seed=start, seeds=seeds,
                       source_sweep=source, baseline=baseline, fresh_seeds=start >= used, notes=notes)


def check_counts(top: int, seeds: int) -> None:
    """ConfirmError for a `--top` below 1 or `--seeds` below 2."""
    if top < 1:
        raise ConfirmError(f"--top {top}: confirm at least 1 configuration")
    if seeds < 2:
        raise ConfirmError(f"--seeds {seeds}: give at least 2 seeds (one seed has no spread to test)")


def check_baseline_early(baseline: str | None) -> None:
    """A `--baseline` that is no selector, or names a loss family no registry knows (`loss=hardd`):
    ConfirmError before the store is read."""
    if not baseline:
        return
    from sweeps.config.trial_config import loss_family_problem

    try:
        items = selector_items(baseline)
    except SlsweepError as exc:
        raise ConfirmError(str(exc)) from None
    for name, value in items:
        if SELECTOR_ALIASES.get(name, name) == schema.FAMILY_PARAM and (problem := loss_family_problem(value)):
            raise ConfirmError(f"--baseline '{baseline}': {name}: {problem}")


def check_overrides_early(overrides: Sequence[str]) -> None:
    """What can be judged of the confirm spec's overrides before the store is read (MLflow takes
    seconds): keys and plain values against the spec's schema (`check_against_schema`), and a loss
    parameter's value that no built-in loss family accepts (`loss.eta=7`: refused whatever family the
    searched sweep used). Raises SpecError naming the override and the field."""
    from sweeps.config.overrides import check_against_schema, parse_overrides
    from sweeps.config.spec import SweepSpec
    from sweeps.config.trial_config import loss_param_problem
    from sweeps.errors import SpecError

    parsed = parse_overrides(overrides)
    check_against_schema(parsed, SweepSpec, source="confirm spec")
    for ov in parsed:
        if len(ov.parts) == 2 and ov.parts[0] == "loss":
            problem = loss_param_problem(ov.parts[1], ov.value)
            if problem:
                raise SpecError(f"confirm spec (override {ov.text})", ov.key, problem)


def _spec_set(spec: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted `key` (``train.compile``) of the spec mapping to `value`."""
    *sections, last = key.split(".")
    node = spec
    for part in sections:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


def _spec_sets(spec: dict[str, Any], key: str, value: Any) -> bool:
    """Whether the spec mapping sets dotted `key` (``train.steps``) to `value` itself."""
    node: Any = spec
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return _same_value(node, value)


def write_confirm_spec(plan: ConfirmPlan, folder: Path) -> Path:
    """Write the confirm spec as ``<folder>/confirm/<source sweep>-confirm.yaml``."""
    out = folder / "confirm" / f"{plan.source_sweep}-confirm.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = "".join(f"# {c.label}: {c.params}\n" for c in plan.candidates)
    out.write_text(f"# slsweep confirm of sweep {plan.source_sweep}\n{header}" + dump_yaml(plan.spec),
                   encoding="utf-8")
    return out


def _number_or_text(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def label_candidates(runs: SweepRuns, plan: ConfirmPlan) -> list[str]:
    """The candidate label of each observation of the confirm sweep (matched on its point's
    values; floats to 1e-9 relative), ``?`` for a run that matches none."""
    points = plan.spec["search_space"]["points"]
    labels = []
    for _, row in runs.trials.iterrows():
        label = "?"
        for cand, point in zip(plan.candidates, points):
            if all(_same_value(row.get(f"params.{k}"), v) for k, v in point.items()):
                label = cand.label
                break
        labels.append(label)
    return labels


def _same_value(got: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(want, str):
        return str(got) == str(want)
    try:
        return bool(np.isclose(float(got), float(want), rtol=1e-9, atol=0.0))
    except (TypeError, ValueError):
        return False


def legend(plan: ConfirmPlan) -> list[str]:
    """One line per candidate: its label, the values that set it apart, its search result."""
    points = plan.spec["search_space"]["points"]
    keys = [k for k in dict.fromkeys(k for p in points for k in p)
            if len({repr(p.get(k)) for p in points}) > 1]
    from sweeps.report.fmt import value_text

    lines = []
    for cand, point in zip(plan.candidates, points):
        values = ", ".join(f"{k}={value_text(point[k])}" for k in keys if k in point)
        found = (f"search: {value_text(cand.mean)} over {cand.n} seed{'s' if cand.n != 1 else ''}"
                 if cand.n else "not in the search")
        lines.append(f"{cand.label}: {values or 'the same configuration'} ({found})")
    return lines


def _as_confirm_spec(err: Any, path: Path, plan: ConfirmPlan) -> Any:
    """SpecError `err` blaming "confirm spec of <sweep>" instead of the file at `path` (a temporary
    one, or one removed after the refusal)."""
    from sweeps.errors import SpecError

    return SpecError(err.file.replace(str(path), f"confirm spec of {plan.source_sweep}"), err.field, err.message)


def check_overrides(plan: ConfirmPlan, overrides: Sequence[str]) -> None:
    """Validate `key=value` overrides on the confirm spec exactly as `slsweep run` does (before
    anything is written), and say in the spec's description what budget the trials get when an
    override changes `train.steps` ("at 30 steps (override)", not "at full budget").
    Without overrides the confirm spec is validated too, before it is written into the run folder
    (a `--baseline` value the sweep cannot run is blamed on `--baseline`).
    Raises SpecError naming the override and the field, or ConfirmError naming `--baseline`."""
    import tempfile

    from sweeps.config.spec import load_spec

    from sweeps.errors import SpecError

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{plan.source_sweep}-confirm.yaml"
        path.write_text(dump_yaml(plan.spec), encoding="utf-8")
        try:
            before = load_spec(path).base_trial_config().train.steps
            after = load_spec(path, overrides).base_trial_config().train.steps if overrides else before
        except SpecError as err:  # blame the confirm spec, not a temporary file that is gone
            if plan.baseline and "(override " not in err.file:
                raise ConfirmError(f"--baseline '{plan.baseline}': the confirm spec cannot run it "
                                   f"({err.field}: {err.message})") from None
            raise _as_confirm_spec(err, path, plan) from None
    if after != before:
        text = plan.spec["description"].replace(FULL_BUDGET, f"at {after} steps (override)")
        plan.spec["description"] = plan.spec["search_space"]["description"] = text


def run_confirm(experiment: str | None = None, *, top: int = 3, seeds: int = 5,
                baseline: str | None = None, metric: str | None = None, first_seed: int | None = None,
                runs_dir: Path | str | None = None, tracking_uri: str | None = None,
                adjust: str = "holm", verbose: int = 1, overrides: Sequence[str] = ()) -> tuple[str, Any]:
    """Plan, run and tabulate a confirmation of a search sweep (`slsweep confirm`).

    `overrides` are `key=value` words applied to the confirm spec like `slsweep run`'s
    (`train.steps=100` for a quick check): validated the same way before anything is written,
    recorded with the confirm sweep (its plan record and `spec.yaml` artifact) and printed.

    Returns:
        ``(text, summary)``: the confirm sweep's adjusted ablation table (Markdown) with the
        candidates' legend, and the `RunSummary` of the confirm sweep.

    Raises:
        ConfirmError / SlsweepError: bad arguments or a store without the sweep.
    """
    from sweeps.store import paths
    from sweeps.report.runs import load_sweep
    from sweeps.driver.service import run_sweep
    from sweeps.errors import SpecError

    # what needs no store is refused before it is read (MLflow takes seconds)
    check_counts(top, seeds)
    check_baseline_early(baseline)
    check_overrides_early(overrides)
    runs = load_sweep(experiment, tracking_uri=tracking_uri, runs_dir=runs_dir)
    plan = plan_confirm(runs, top=top, seeds=seeds, baseline=baseline, metric=metric,
                        first_seed=first_seed)
    overrides = list(overrides)
    check_overrides(plan, overrides)
    folder = paths.run_folder(runs_dir)
    spec_path = write_confirm_spec(plan, folder)
    try:
        summary = run_sweep(spec_path, tracking_uri=tracking_uri, runs_dir=folder, verbose=verbose,
                            print_summary=False, overrides=overrides)
    except SpecError as err:  # refused before anything ran (task data, model, memory): leave nothing
        spec_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            spec_path.parent.rmdir()  # the confirm/ folder, if this left it empty
        raise _as_confirm_spec(err, spec_path, plan) from None
    outcome = summary.outcome
    new_id = outcome.plan.sweep_id
    client = runs.client
    if outcome.parent_run_id:
        client.set_tag(outcome.parent_run_id, CONFIRMS_TAG, plan.source_sweep)
    earlier = runs.sweep.tags.get(CONFIRMED_BY_TAG)
    client.set_tag(runs.sweep.run_id, CONFIRMED_BY_TAG, ",".join(filter(None, [earlier, new_id])))
    if summary.interrupted or summary.failed_all:  # the CLI says why and exits non-zero
        return "", summary
    from sweeps.report.tables import ablation_table, render  # scipy: only once there is a table to make

    confirmed = load_sweep(sweep_id=new_id, tracking_uri=outcome.plan.tracking_uri)
    confirmed.trials["tags.candidate"] = label_candidates(confirmed, plan)
    has_base = any(c.label == "baseline" for c in plan.candidates)
    table = ablation_table(confirmed, ["candidate"], [plan.spec["metric"]["name"]],
                           "candidate=baseline" if has_base else None, adjust=adjust, power=True)
    fresh = "none of them used by the search" if plan.fresh_seeds else "some also used by the search"
    lines = [render(table, "md"),
             f"Candidates (seeds {plan.first_seed}..{plan.first_seed + seeds - 1}, {fresh}):"]
    lines += [f"- {line}" for line in legend(plan)] + [f"- {n}" for n in plan.notes]
    if overrides:
        steps = confirmed.sweep.params.get("train.steps")
        lines.append(f"- overrides: {' '.join(overrides)} (recorded with the confirm sweep; "
                     f"it ran {steps} steps a trial)" if steps else f"- overrides: {' '.join(overrides)}")
    lines.append(f"\nConfirm sweep {new_id} (experiment {confirmed.experiment_name!r}, spec {spec_path}); "
                 f"its parent run is tagged {CONFIRMS_TAG}={plan.source_sweep}.")
    return "\n".join(lines) + "\n", summary
