"""What the CLI commands do, as plain functions (the CLI only parses arguments).

run_sweep -> plan (validate everything) -> build the tiny model if the spec needs it -> record the
plan for `resume` -> Ray Tune -> summary (best configuration, ranked trials, where to look).
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sweeps.store import paths, schema
from sweeps.config.trial_config import TrialConfig
from sweeps.errors import SlsweepError, SpecError
from sweeps.store.paths import PLANS
from sweeps.config.spec import packaged_spec_dir

# pandas, Ray, Optuna, MLflow and torch load only in the functions that need them: `slsweep list`
# and `status` answer in about a second instead of the 7-16 s those imports take.
if TYPE_CHECKING:
    import pandas as pd

    from sweeps.driver.preflight import SweepPlan
    from sweeps.driver.tuner import SweepOutcome


@dataclass
class RunSummary:
    outcome: SweepOutcome
    table: pd.DataFrame
    failed_all: bool
    failure: str | None = None  # one line when every trial failed: what happened, what to do

    @property
    def interrupted(self) -> int | None:
        """The signal that stopped the sweep (it stays resumable), or None."""
        return self.outcome.interrupted


def ensure_tiny_model(cfg: TrialConfig) -> None:
    """Build the cached tiny model on the driver, once, before trials race to it."""
    if cfg.model.path.startswith("tiny"):
        from sweeps.models import TINY_ALIASES, tiny_model_path

        if cfg.model.path in TINY_ALIASES:  # else a folder or hub id: loading says what is wrong
            tiny_model_path(TINY_ALIASES[cfg.model.path])


def _plan_memory_on_worker(plan: SweepPlan, verbose: int) -> None:
    """Joining a cluster without `resources.memory_gb`: the memory plan against a worker's device,
    printed like the preflight's lines (`sweeps.driver.ray_env.plan_memory_on_worker`)."""
    if plan.memory_check is None:  # planned before Ray (a local Ray, or resources.memory_gb given)
        return
    from sweeps.driver.progress import quiet_output
    from sweeps.driver.ray_env import plan_memory_on_worker

    with quiet_output(verbose == 0):
        line = plan_memory_on_worker(plan, quiet=verbose == 0)
    print(f"data {line}", file=sys.stderr)


def _record_path(plan: SweepPlan) -> Path:
    return plan.runs_dir / PLANS / f"{plan.sweep_id}.json"


def _record_plan(plan: SweepPlan, spec_path: str | Path | None) -> None:
    """Write `sweeps/<sweep_id>.json`: what `resume` needs, nothing that pins the run folder.

    The default store (the folder's own `mlflow.db`) is recorded as None, so a moved or copied
    folder resumes into itself. The resolved spec (flattened) and the search space's hash are
    kept to refuse a resume after the spec file was edited. Beside it, `sweeps/<sweep_id>.spec.yaml`
    (the record's `spec_copy`) holds the resolved spec with its search space inline and absolute
    paths: `resume` reads it when the spec file was moved or deleted.
    """
    default_uri = schema.own_store(plan.tracking_uri, plan.runs_dir)
    record = {"sweep_id": plan.sweep_id, "spec": str(plan.resolved.path.resolve()) if spec_path else None,
              "overrides": list(plan.resolved.overrides),
              "tracking_uri": None if default_uri else plan.tracking_uri,
              "experiment": plan.experiment, "address": plan.address,
              "spec_params": _jsonable(plan.resolved.flat_params()),
              "space_hash": plan.resolved.space.hash,
              "spec_copy": _spec_copy_path(plan).name}
    path = _record_path(plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    _spec_copy_path(plan).write_text(_self_contained_spec(plan))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)


def _spec_copy_path(plan: SweepPlan) -> Path:
    return plan.runs_dir / PLANS / f"{plan.sweep_id}.spec.yaml"


def _self_contained_spec(plan: SweepPlan) -> str:
    """The resolved spec as YAML that needs no other file: defaults filled in, paths absolute,
    the search space's content in place of its file name."""
    import yaml

    from sweeps.config.yamlio import dump_yaml

    data = plan.resolved.spec.model_dump(mode="json", exclude_none=True)
    data["search_space"] = yaml.safe_load(plan.resolved.space.to_yaml())
    return (f"# sweep {plan.sweep_id}: the resolved spec of {plan.resolved.path} (for `slsweep resume` "
            "when that file is gone)\n" + dump_yaml(data))


# The fields of a sweep record (`_record_plan`) and the JSON types each may have.
_RECORD_FIELDS = {"sweep_id": (str,), "spec": (str, type(None)), "overrides": (list,),
                  "tracking_uri": (str, type(None)), "experiment": (str,), "address": (str, type(None)),
                  "spec_params": (dict,), "space_hash": (str, type(None)), "spec_copy": (str,)}


def record_problem(record: Any, stem: str) -> str | None:
    """Why a parsed `sweeps/<stem>.json` is not a sweep record (`<root>` or the field), or None.
    Its sweep id must be its file name: the id names the lock file and Ray's folder."""
    if not isinstance(record, dict):
        return f"<root>: a JSON {type(record).__name__}, not an object"
    for key, types in _RECORD_FIELDS.items():
        if key not in record:
            if key in ("overrides", "spec_params", "space_hash", "spec_copy"):  # older records lack these
                continue
            return f"{key}: missing"
        if not isinstance(record[key], types) or (key == "overrides" and not all(isinstance(o, str) for o in record[key])):
            return f"{key}: {type(record[key]).__name__} is not {' or '.join(t.__name__ for t in types)}"
    if record["sweep_id"] != stem:
        return f"sweep_id: {record['sweep_id'][:80]!r} is not the file's name {stem!r}"
    return None


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def spec_changes(record: dict[str, Any], plan: SweepPlan, ignore: tuple[str, ...] = ()) -> list[str]:
    """The spec fields that differ between a sweep's record and `plan`, as `field: old -> new`
    (fields in `ignore` left out)."""
    old = record.get("spec_params") or {}
    new = _jsonable(plan.resolved.flat_params())
    lines = [f"{k}: {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
             for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in ignore]
    if record.get("space_hash") and record["space_hash"] != plan.resolved.space.hash:
        lines.append(f"search space {plan.resolved.space.source}: content changed")
    return lines


def sweep_lock(plan: SweepPlan):  # -> filelock.FileLock, held
    """Take the sweep's driver lock (`sweeps/<sweep_id>.lock`) or refuse with one line.

    One driver per sweep: a second `run`/`resume` of the same sweep while one is alive would share
    its MLflow runs, Optuna study and Ray folder. The lock is an fcntl lock (filelock), released
    when the holder exits, however it exits.
    """
    from filelock import FileLock, Timeout

    path = plan.runs_dir / PLANS / f"{plan.sweep_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise SlsweepError(f"{plan.runs_dir}: sweep_id: sweep {plan.sweep_id} is being run by another "
                           "driver right now; wait for it to end (or stop it), then resume") from None
    return lock


# How a trial that ended below its budget reads in the summary, by its slsweep.stop_reason.
_STOPPED_WORDS = {"early_stopping": "stopped", "interrupted": "interrupted", "driver_error": "interrupted",
                  "sweep_time_limit": "sweep time limit", "driver_lost": "interrupted"}


def _trial_status(error: bool, step: Any, budget: int, reason: str | None) -> str:
    """`ok` (full budget), `error`, or `stopped at step 100` / `interrupted at step 100` / ...
    A trial that ended without an error ended normally: `schema.full_budget` (the one rule) with
    its step says whether that was at full budget."""
    if error:
        return "error"
    if isinstance(step, (int, float)) and schema.full_budget(schema.FINISHED, step, budget):
        return "ok"
    where = f" at step {int(step)}" if isinstance(step, (int, float)) else " before its first evaluation"
    return _STOPPED_WORDS.get(reason or "early_stopping", str(reason).replace("_", " ")) + where


def ranked_trials(outcome: SweepOutcome) -> pd.DataFrame:
    """One row per trial, best first: trial (its MLflow run name's `tNN`; Ray's trial id where it
    has no run), arm (`search` or a baseline arm's label, when the
    spec has baseline arms), status (`ok` at full budget, `stopped at step N`, `error`, ...),
    final metric, step, seed and search-space values (a baseline arm's: what it ran with)."""
    import pandas as pd

    from sweeps.trial.trainable import Resolver, baseline_arm

    plan, spec = outcome.plan, outcome.plan.spec
    # A baseline arm samples nothing: it shows the values it ran with at the searched targets.
    space_values = Resolver(plan.resolved.base_trial_config(), plan.resolved.space,
                            plan.resolved.arm_overrides()).space_values
    budget = plan.resolved.base_trial_config().train.steps
    labels = plan.resolved.arm_labels()
    reasons = getattr(outcome, "stop_reasons", None) or {}
    rows = []
    for result in outcome.results:
        config = result.config or {}
        metrics = result.metrics or {}
        value = metrics.get(spec.metric.name)
        arm = baseline_arm(config)
        rows.append({"trial": _trial_name(outcome, _result_trial_id(outcome, result), short=True),
                     "arm": (labels[arm] if arm is not None else "search") if labels else None,
                     "status": _trial_status(result.error is not None, metrics.get("step"), budget,
                                             reasons.get(metrics.get("trial_id"))),
                     spec.metric.name: value if isinstance(value, (int, float)) else math.nan,
                     "step": metrics.get("step"),
                     "seed": spec.search.first_seed + int(config.get("__trial_index__", 0)),
                     **space_values(config)})
    # Peers' params are absent elsewhere; the metric column stays even when no trial reached an
    # evaluation (every trial failed before its first one).
    table = pd.DataFrame(rows)
    keep = {"trial", "status", spec.metric.name}
    table = table[[c for c in table.columns if c in keep or table[c].notna().any()]]
    if not table.empty:
        table = table.sort_values(spec.metric.name, ascending=spec.metric.mode == "min",
                                  na_position="last").reset_index(drop=True)
    return table


def _trial_name(outcome: SweepOutcome, trial_id: str | None, short: bool = False) -> str:
    """A trial's MLflow run name (`short`: its first word, `t03`), else Ray's trial id."""
    name = (getattr(outcome, "run_names", None) or {}).get(trial_id or "")
    if not name:
        return trial_id or "?"
    return name.split(" ", 1)[0] if short else name


def _result_trial_id(outcome: SweepOutcome, result: Any) -> str | None:
    """Ray's trial id of a Result: its metrics', else the one its folder is named after (a trial
    that failed before reporting has no metrics; Tune names the folder `<trainable>_<id>_...`)."""
    found = (result.metrics or {}).get("trial_id")
    folder = f"{Path(str(getattr(result, 'path', '') or '')).name}_"
    return found or next((t for t in (getattr(outcome, "run_names", None) or {}) if f"_{t}_" in folder), None)


def _first_error(outcome: SweepOutcome) -> str:
    for result in outcome.results:
        if result.error is not None:
            lines = [ln for ln in str(result.error).splitlines() if ln.strip()]
            said = " ".join((lines[-1] if lines else type(result.error).__name__).split())[:300]
            return f"{_trial_name(outcome, _result_trial_id(outcome, result))}: {said}"
    return "no trial reported a result"


def _failure_line(outcome: SweepOutcome, table: pd.DataFrame) -> str:
    runs = _store_flags(outcome.plan)
    return (f"all {len(table)} trial(s) of sweep {outcome.plan.sweep_id} failed; last error of the "
            f"first: {_first_error(outcome)}; fix it and run again (each trial's error: "
            f"`slsweep status{runs}`, tag slsweep.error in MLflow)")


def _runs_flag(plan: SweepPlan) -> str:
    return f" --runs-dir {shlex.quote(str(plan.runs_dir))}" if plan.runs_dir != paths.default_runs_dir() else ""


def _resume_command(plan: SweepPlan) -> str:
    """The command that continues this sweep (its id, and its run folder unless the default)."""
    return f"slsweep resume {shlex.quote(plan.sweep_id)}{_runs_flag(plan)}"


def _own_store(plan: SweepPlan) -> bool:
    """Whether the sweep's MLflow store is its run folder's own SQLite file (what the reading
    commands open without `--tracking-uri`)."""
    return schema.own_store(plan.tracking_uri, plan.runs_dir)


def _store_flags(plan: SweepPlan) -> str:
    """The flags a later command needs to read this sweep (`sweeps.store.schema.store_flags`):
    `--runs-dir` unless the default folder, `--tracking-uri` unless the folder's own store."""
    return schema.store_flags(plan.tracking_uri, plan.runs_dir, default_folder=paths.default_runs_dir())


def _summarise(outcome: SweepOutcome, print_summary: bool = True) -> RunSummary:
    table = ranked_trials(outcome)
    if print_summary:
        _print_summary(outcome, table)
    failed_all = not outcome.interrupted and (table.empty or bool((table["status"] == "error").all()))
    return RunSummary(outcome=outcome, table=table, failed_all=failed_all,
                      failure=_failure_line(outcome, table) if failed_all else None)


def _print_summary(outcome: SweepOutcome, table: pd.DataFrame) -> None:
    import pandas as pd

    plan, spec = outcome.plan, outcome.plan.spec
    print(f"\nSweep {plan.sweep_id}: {len(table)} trials in {outcome.seconds:.0f} s")
    if not table.empty:
        with pd.option_context("display.max_columns", 20, "display.width", 160,
                               "display.float_format", "{:.4g}".format):
            print(table.head(15).to_string(index=False))
        # One budget: the best is taken among trials that reached the last step; a value from a
        # trial ASHA (or an interrupt) stopped early is from another budget.
        budget = plan.resolved.base_trial_config().train.steps
        full = table[table["status"] == "ok"]  # `_trial_status`: the full-budget rule, once
        stopped = len(table) - len(full)
        if stopped:
            print(f"({stopped} trial(s) stopped before step {budget}: their {spec.metric.name} is "
                  "from the step their status names (none before a first evaluation) and is not "
                  "compared with full-budget trials)")
        searched = full[full["arm"] == "search"] if "arm" in full else full  # not a baseline arm
        best = searched.iloc[0] if len(searched) else None
        if best is not None and not (isinstance(best[spec.metric.name], float)
                                     and math.isnan(best[spec.metric.name])):
            params = {k: best[k].item() if hasattr(best[k], "item") else best[k] for k in table.columns
                      if k not in ("trial", "arm", "status", "step", spec.metric.name) and pd.notna(best[k])}
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            tie = _tie_text(searched, spec.metric.name, spec.metric.mode)
            print(f"\nBest at full budget ({budget} steps): {spec.metric.name}="
                  f"{best[spec.metric.name]:.4g}" + (f", {tie}; the first " if tie else " ") + f"with {shown}")
    try:
        from sweeps.report.runs import load_trials
        from sweeps.report.tables import ablation_table_text

        print("\n" + ablation_table_text(load_trials(plan.tracking_uri, sweep_id=plan.sweep_id),
                                         metric=spec.metric.name))
    except Exception as exc:  # the summary table is a courtesy; the sweep itself succeeded
        print(f"(ablation table unavailable: {exc})")
    runs_flag, store = _runs_flag(plan), _store_flags(plan)
    print(f"\nMLflow:   {plan.tracking_uri} (experiment {plan.experiment!r})")
    print(f"Storage:  {plan.runs_dir}")
    if not spec.search.strategy.is_grid:
        print(f"Search:   {spec.search.algorithm} sampler seed {spec.search.seed}"
              f"{' (fresh for this sweep)' if plan.fresh_search_seed else ''}: the same seed "
              f"proposes the same configurations; repeat with --search-seed {spec.search.seed}, "
              "vary with another --search-seed")
    if outcome.interrupted:
        import signal

        print(f"\ninterrupted ({signal.Signals(outcome.interrupted).name}): run "
              f"`{_resume_command(plan)}` to finish the remaining trials")
        return
    # `slsweep ui` serves the run folder's own store only; a server is its own UI.
    ui = f"slsweep ui{runs_flag}" if _own_store(plan) else (
        f"the MLflow UI at {plan.tracking_uri}" if plan.tracking_uri.startswith(("http://", "https://"))
        else f"mlflow ui --backend-store-uri {shlex.quote(plan.tracking_uri)}")
    print(f"Next:     slsweep table{store}   |   {ui}   |   slsweep report{store} -o report.html")
    if spec.search.strategy.selects:
        arms = [_arm_selector(arm) for arm in spec.baselines]
        print(f"Confirm:  {confirm_command(plan, arms[0] if arms else 'loss=hard')}"
              "\n          (a search's best is chosen on the seeds it was measured on: optimistic until "
              "rerun on fresh seeds; this prints the adjusted table)")
        for line in headline(plan, table):
            print(line)


def _tie_text(ranked: pd.DataFrame, metric: str, mode: str) -> str:
    """``"tied by 3 trials (t02, t05, t07)"`` when several rows of `ranked` (best
    first) share the best `metric` value (`sweeps.report.stats.best_positions`: equal within
    rounding noise), else ``""``."""
    from sweeps.report.stats import best_positions

    values = ranked[metric].to_numpy(dtype=float)
    tied = best_positions(values, "max" if mode == "max" else "min")
    if not tied:  # one value, or every value ties (nothing stands out)
        tied = {i for i, v in enumerate(values) if math.isfinite(v)}
    if len(tied) < 2:
        return ""
    names = ", ".join(str(ranked["trial"].iloc[i]) for i in sorted(tied))
    return f"tied by {len(tied)} trials ({names})"
def confirm_command(plan: SweepPlan, baseline: str) -> str:
    """The exact `slsweep confirm` command for this sweep against `baseline` (`loss=hard`)."""
    return (f"slsweep confirm {shlex.quote(plan.sweep_id)} --top 3 --seeds 5 --baseline {shlex.quote(baseline)}"
            f"{_store_flags(plan)}")


def _arm_selector(arm: dict[str, Any]) -> str:
    """A baseline arm as a `--baseline` selector: `{loss.family: hard}` -> `loss=hard`."""
    from sweeps.report.runs import selector_text

    return selector_text(arm.items())


def headline(plan: SweepPlan, table: pd.DataFrame) -> list[str]:
    """The question the sweep's baseline arms answer, at the honesty its seeds allow: per arm,
    the best searched configuration's metric (mean over its full-budget seeds) against the arm's
    (mean over the same seeds), what that is worth and the command that tests it. Empty when
    the spec has no baseline arms. For example::

        soft_label vs hard CE: best soft_label exact_match 0.46 vs hard CE 0.41 on seed 0 (Δ +0.05, ...)
        1 seed: a lead, not a test. Test it: slsweep confirm ... --baseline loss=hard
    """
    from sweeps.report.runs import own_objective

    spec = plan.spec
    if not spec.baselines or table.empty or "arm" not in table:
        return []
    m, budget = spec.metric.name, plan.resolved.base_trial_config().train.steps
    full = table[(table["step"].fillna(0) >= budget) & table[m].notna()]
    searched = full[full["arm"] == "search"]
    sampled = [c for c in table.columns if c not in ("trial", "arm", "status", m, "step", "seed")]
    family = ", ".join(sorted({str(v) for v in searched.get("loss.family", [])})) or spec.loss.family
    lines = []
    for arm, label in zip(spec.baselines, plan.resolved.arm_labels()):
        shown = "hard CE" if label == "hard" else label
        base = full[full["arm"] == label]
        lines.append(f"\n{family} vs {shown}:")
        if own_objective(m) and str(arm.get("loss.family", family)) != family:
            lines[-1] += (f" no comparison on {m}: each loss family's own objective "
                          "(compare a task metric: slsweep table --baseline " + _arm_selector(arm) + ")")
            continue
        if searched.empty or base.empty:
            lines[-1] += (f" no comparison: {'no searched configuration' if searched.empty else shown + ' never'} "
                          f"reached step {budget} with a value")
            continue
        keys = searched[sampled].apply(lambda r: "|".join(map(str, r)), axis=1) if sampled else searched["trial"]
        means = searched.groupby(keys, sort=False)[m].mean()
        best_key = means.idxmax() if spec.metric.mode == "max" else means.idxmin()
        seeds = sorted(int(s) for s in searched[keys == best_key]["seed"])
        arm_value = base[base["seed"].isin(seeds)][m].mean()
        if math.isnan(arm_value):
            lines[-1] += f" no comparison: {shown} has no full-budget run on seed(s) {seeds}"
            continue
        value = float(means[best_key])
        where = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}..{seeds[-1]} (mean)"
        lines[-1] += (f" best {family} {m} {value:.4g} vs {shown} {arm_value:.4g} on {where} "
                      f"(Δ {value - arm_value:+.4g}; the best of {len(means)} full-budget configurations)")
        worth = ("1 seed: a lead, not a test" if len(seeds) == 1 else
                 f"{len(seeds)} seeds, and the best was chosen on them: a lead, not a test")
        lines.append(f"{worth}. Test it: {confirm_command(plan, _arm_selector(arm))}")
    return lines


def split_spec_args(spec: str | Path | None, overrides: Sequence[str] = ()) -> tuple[str | Path | None, list[str]]:
    """`slsweep run train.steps=50`: a first word that is `key=value` (and no file) is an override
    of the default spec, not a spec file."""
    from sweeps.config.overrides import looks_like_override

    if isinstance(spec, str) and looks_like_override(spec) and not Path(spec).exists():
        return None, [spec, *overrides]
    return spec, list(overrides)


def run_sweep(spec_path: str | Path | None = None, *, address: str | None = None,
              tracking_uri: str | None = None, runs_dir: str | Path | None = None,
              experiment: str | None = None, verbose: int = 1, print_summary: bool = True,
              overrides: Sequence[str] = (), search_seed: int | None = None) -> RunSummary:
    """Validate, run and summarise a sweep.

    Args:
        spec_path: a spec file or a built-in spec's name (None = the built-in default).
        overrides: `key=value` spec overrides (`train.steps=50`), validated like the file.
        search_seed: the sampler's seed (default: the spec's `search.seed`, else a fresh one).
    """
    from sweeps.driver.early_ray import EarlyRay
    from sweeps.driver.preflight import plan_sweep

    spec_path, overrides = split_spec_args(spec_path, overrides)
    early = EarlyRay(quiet=verbose == 0)  # a local Ray starts while the preflight checks the model
    try:
        plan = plan_sweep(spec_path, address=address, tracking_uri=tracking_uri, runs_dir=runs_dir,
                          experiment=experiment, overrides=overrides, search_seed=search_seed,
                          start_ray=early.start)
        from sweeps.driver.progress import quiet_output  # Ray Tune, MLflow, torch: only once the input is good
        from sweeps.driver.tuner import execute

        for line in plan.data_lines:  # per task split: rows, answer range, coverage (as `slsweep data`)
            print(f"data {line}", file=sys.stderr)
        with quiet_output(verbose == 0):
            ensure_tiny_model(plan.resolved.base_trial_config())
        _plan_memory_on_worker(plan, verbose)
        lock = sweep_lock(plan)
    except BaseException:  # refused before the sweep took Ray over: no Ray left behind
        early.cancel()
        raise
    try:
        _record_plan(plan, spec_path)
        try:
            with quiet_output(verbose == 0):  # -q: stores, study and Ray start silently too
                outcome = execute(plan, verbose=verbose)
        except BaseException as exc:
            # Stopped before Tune saved anything (Ray could not start, resources no node has, a
            # Ctrl-C during start-up): leave no record a later `resume` would trip over.
            from ray import tune

            saved = tune.Tuner.can_restore(str(plan.storage_dir / plan.sweep_id))
            if not saved:
                _record_path(plan).unlink(missing_ok=True)
                _spec_copy_path(plan).unlink(missing_ok=True)
            exc.resume_command = _resume_command(plan) if saved else None  # what the CLI tells
            raise
        return _summarise(outcome, print_summary)
    finally:
        lock.release()


def resume_sweep(sweep_id: str | None = None, *, runs_dir: str | Path | None = None,
                 verbose: int = 1, address: str | None = None,
                 tracking_uri: str | None = None) -> RunSummary:
    """Continue an interrupted sweep from Ray Tune's experiment state.

    `address` and `tracking_uri` replace the Ray cluster and MLflow store the sweep was started
    with (a new head node, a moved server); by default the recorded ones are used.
    """
    from sweeps.driver.preflight import plan_sweep

    folder = paths.run_folder(runs_dir)
    if folder.exists() and not folder.is_dir():
        raise SlsweepError(f"{folder}: {paths.runs_dir_source(runs_dir)}: not a folder (a file of that name exists)")
    records = sorted((folder / PLANS).glob("*.json"), key=lambda p: p.stat().st_mtime)
    if sweep_id:
        records = [r for r in records if r.stem == sweep_id]
    if not records:
        raise SlsweepError(f"{folder}: sweep_id: no {'sweep ' + sweep_id if sweep_id else 'sweep'} to resume")
    try:
        record = json.loads(records[-1].read_text())
    except (OSError, ValueError) as exc:
        raise SlsweepError(f"{records[-1]}: <file>: unreadable sweep record ({exc})") from None
    problem = record_problem(record, records[-1].stem)
    if problem:
        raise SlsweepError(f"{records[-1]}: {problem}; not a sweep record slsweep wrote (move it away)")
    _refuse_finished_locally(folder, record, tracking_uri)  # before the spec, data and model are checked
    spec = record["spec"]
    copy = folder / PLANS / str(record.get("spec_copy") or "-")
    from_copy = spec is not None and not Path(spec).is_file() and copy.is_file()
    if from_copy:  # the spec file was moved or deleted: the run folder's own copy
        print(f"{spec}: gone; resuming from the run folder's copy of the resolved spec, {copy}", file=sys.stderr)
        spec = copy
    from sweeps.driver.early_ray import EarlyRay

    early = EarlyRay(quiet=verbose == 0)  # a local Ray starts while the preflight checks the model
    try:
        plan = plan_sweep(spec, address=address or record["address"],
                          tracking_uri=tracking_uri or record["tracking_uri"],
                          runs_dir=folder, experiment=record["experiment"],
                          overrides=[*(record.get("overrides") or ()), *memory_pins(record, spec)],
                          start_ray=early.start)
        plan.sweep_id = record["sweep_id"]
        # Resume runs what was recorded: an edited spec would train one configuration while MLflow
        # records another.
        # (the copy holds the search space itself, not its file's name; its content hash is compared)
        changes = spec_changes(record, plan, ignore=("search_space",) if from_copy else ())
        if changes:
            raise SlsweepError(
                f"{plan.resolved.path}: spec changed since sweep {plan.sweep_id} started ("
                + "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
                + "): restore it to resume, or start a new sweep with `slsweep run`")
        _refuse_finished(plan)
        from sweeps.driver.progress import quiet_output  # Ray Tune, MLflow, torch: only once the input is good
        from sweeps.driver.tuner import resume as resume_plan

        _plan_memory_on_worker(plan, verbose)
        lock = sweep_lock(plan)
    except BaseException:  # refused before the sweep took Ray over: no Ray left behind
        early.cancel()
        raise
    try:
        try:
            with quiet_output(verbose == 0):
                outcome = resume_plan(plan, verbose=verbose)
        except BaseException as exc:
            exc.resume_command = _resume_command(plan)  # what the CLI tells
            raise
        return _summarise(outcome)
    finally:
        lock.release()


def memory_pins(record: dict[str, Any], spec: str | Path | None) -> list[str]:
    """The memory plan's choices a sweep started with, as overrides for its resume: `train.batch_size:
    auto` as resolved (with its grad_accum), and evaluation chunks the plan lowered. Planned again
    against the memory free now they could come out different, and the resume would be refused as
    an edited spec (or train other micro-batches than the record says). Values the spec itself
    gives are not pinned: an edit of them is still refused."""
    from sweeps.config.spec import load_spec

    params = record.get("spec_params") or {}
    given = load_spec(spec, record.get("overrides") or ()).spec.train
    keys = (["train.batch_size", "train.grad_accum"] if given.batch_size == "auto" else []) + \
           (["train.eval_batch"] if given.eval_batch != params.get("train.eval_batch") else [])
    return [f"{key}={params[key]}" for key in keys if isinstance(params.get(key), int)]


def _refuse_finished_locally(folder: Path, record: dict[str, Any], tracking_uri: str | None) -> None:
    """`_refuse_finished` in under a second for a sweep recorded in the run folder's own SQLite
    store (read with sqlite3, as `slsweep status` does; no MLflow import, no planning)."""
    from sweeps.report.status import read_local_store

    db = folder / paths.MLFLOW_DB
    if tracking_uri or record.get("tracking_uri") or not db.is_file():  # None: the folder's own store
        return
    view = read_local_store(db)
    for parent in view.parents if view is not None else ():
        if parent.tags.get(schema.SWEEP_ID_TAG) == record["sweep_id"] and parent.status == schema.FINISHED:
            raise _finished(folder, record["sweep_id"], parent.tags.get(schema.STOP_REASON_TAG))


def _finished(folder: Path, sweep_id: str, reason: str | None) -> SlsweepError:
    return SlsweepError(f"{folder}: sweep_id: sweep {sweep_id} already finished"
                        f"{f' ({reason})' if reason else ''}; nothing to resume")


def _refuse_finished(plan: SweepPlan) -> None:
    """A sweep whose parent run is FINISHED has nothing left to resume (it ran to its end or to
    its time limit); resuming it would re-run what Tune's saved state still lists as running."""
    from mlflow.tracking import MlflowClient

    if plan.local_store:
        paths.relocate_store(plan.runs_dir)
        if not (plan.runs_dir / paths.MLFLOW_DB).exists():
            return
    client = MlflowClient(tracking_uri=plan.tracking_uri)
    exp = client.get_experiment_by_name(plan.experiment)
    if exp is None:
        return
    found = client.search_runs([exp.experiment_id], filter_string=schema.run_filter(schema.KIND_SWEEP, plan.sweep_id),
                               max_results=1)
    if found and found[0].info.status == schema.FINISHED:
        raise _finished(plan.runs_dir, plan.sweep_id, found[0].data.tags.get(schema.STOP_REASON_TAG))


def sweep_status(*, runs_dir: str | Path | None = None, tracking_uri: str | None = None) -> str:
    """A text table of the sweeps in the store: id, experiment, status, trial counts, best.

    The run folder's own SQLite store is read directly (`sweeps.report.status.read_local_store`,
    milliseconds); a `tracking_uri`, or a store that reader does not know, goes through MLflow.
    """
    from sweeps.report.status import read_local_store, read_mlflow, status_table

    folder = paths.run_folder(runs_dir)
    uri = tracking_uri or paths.default_tracking_uri(folder)
    db = folder / paths.MLFLOW_DB
    if not tracking_uri and not db.exists():  # (the folder's own store: never created by reading it)
        raise SlsweepError(f"{folder}: {paths.runs_dir_source(runs_dir)}: no MLflow store here (run `slsweep run` first)")
    view = None
    if not tracking_uri:
        if not db.is_file():
            raise SlsweepError(f"{db}: {paths.runs_dir_source(runs_dir)}: not an MLflow store (not a file)")
        if db.stat().st_size == 0:  # never let MLflow write its tables into it here
            return f"no sweeps recorded in {uri}"
        paths.relocate_store(folder)
        view = read_local_store(db)
        if view is None:
            try:
                view = read_mlflow(uri)
            except Exception as exc:  # noqa: BLE001 - a store neither reader can open: one line
                raise SlsweepError(f"{db}: {paths.runs_dir_source(runs_dir)}: not a readable MLflow store "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    table = status_table(view if view is not None else read_mlflow(uri))
    return table if table is not None else f"no sweeps recorded in {uri}"


def _builtin_model(spec: Path) -> tuple[str | None, str | None]:
    """(`model.path`, `task.name`) of a built-in spec (None where unset or unreadable; no model
    path is the tiny default)."""
    import yaml

    try:
        data = yaml.safe_load(spec.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None, None
    model, task = (data.get("model"), data.get("task")) if isinstance(data, dict) else (None, None)
    path = model.get("path") if isinstance(model, dict) else None
    name = task.get("name") if isinstance(task, dict) else None
    return (str(path) if path else None), (str(name) if name else None)


def _offline(model: str | None) -> bool:
    """Whether a spec's model is built here (the tiny aliases), not fetched from the Hub."""
    return model is None or model == "tiny" or model.startswith("tiny-")


def builtin_listing() -> str:
    """Names of the packaged specs (those on the tiny model, which run offline on a CPU, apart from
    the GPU specs of a Hub model), search spaces, trials and the built-in loss families."""
    import search_spaces
    from sl_core.registry import LOSS_FAMILY_SPECS  # torch-free

    specs = sorted(packaged_spec_dir().glob("*.yaml"))
    models = {p.name: _builtin_model(p)[0] for p in specs}
    tiny = [n for n, m in models.items() if _offline(m)]
    hub = [f"{n} ({m})" for n, m in models.items() if not _offline(m)]
    spaces = sorted(p.name for p in Path(search_spaces.__file__).parent.glob("*.yaml"))
    trials = sorted(p.name for p in (packaged_spec_dir() / "trials").glob("*.yaml"))
    families = "\n".join(f"  {f.name:<16} {f.doc}" + (f"; parameters: {', '.join(f.param_map)}" if f.params else "")
                         for f in LOSS_FAMILY_SPECS.values())
    return ("specs:         " + "  ".join(tiny) + "   (tiny model: offline, CPU)"
            + "\nGPU specs:     " + "  ".join(hub) + "   (a Hub model, one GPU a trial; for a cluster)"
            + "\nsearch spaces: " + "  ".join(spaces)
            + "\ntrials:        " + "  ".join(trials) + "   (`slsweep trial`; tiny model)"
            + "\nloss families (loss.family):\n" + families
            + "\n(run one by name from anywhere: `slsweep run default`, `slsweep trial counting`; the spec "
              "`counting` is the GPU sweep, the trial `counting` one tiny trial)")


def builtin_spec_note(err: SlsweepError) -> SlsweepError:
    """`err` with a sentence saying what a built-in GPU spec is and its offline stand-in, when the
    error is about that spec's model or resources (`slsweep run counting` on a laptop: the name
    is the built-in spec sweeps/specs/counting.yaml, SmolVLM-256M from the Hub with 4 CPUs and a
    GPU a trial, while `slsweep trial counting` is a tiny trial); any other error unchanged."""
    if not isinstance(err, SpecError) or not err.field.startswith(("model.", "resources.")):
        return err
    fields = {p: _builtin_model(p) for p in sorted(packaged_spec_dir().glob("*.yaml"))}
    spec = next((p for p in fields if err.file == str(p) or err.file.startswith(f"{p} (override ")), None)
    if spec is None or _offline(fields[spec][0]):
        return err
    model, task = fields[spec]
    offline = sorted((p.stem for p, (m, k) in fields.items() if _offline(m) and k == task),
                     key=lambda name: name != "default")
    instead = (f"`slsweep run {offline[0]}` sweeps the {task} task on the tiny model" if offline
               else "`slsweep list` names the specs on the tiny model")
    note = f"; '{spec.stem}' names the built-in GPU spec ({model} from the Hugging Face Hub); offline, {instead}"
    return SpecError(err.file, err.field, err.message + note)


def run_single_trial(config_path: str | Path, *, checkpoint_dir: Path | None = None,
                     resume_from: Path | None = None, overrides: Sequence[str] = ()):  # -> TrialResult
    """`slsweep trial`: one trial in this process, with a progress bar.

    Args:
        config_path: a trial config file or a built-in trial's name (`slsweep list`).
        overrides: `key=value` config overrides (`train.steps=20`), validated like the file.
    """
    from sweeps.config.spec import find_trial_config

    path = find_trial_config(config_path)
    cfg = TrialConfig.from_yaml(path, overrides=overrides)
    missing = cfg.loss.missing_required()  # a sweep's search space may supply them; one trial cannot
    if missing:
        raise SpecError(str(path), f"loss.{missing[0]}", f"loss family {cfg.loss.family!r} needs {missing[0]}: set "
                        f"loss.{missing[0]} in the file or as an override (loss.{missing[0]}=...)")
    from sweeps.driver.progress import TrialProgress  # Ray Tune, torch: only once the input is good
    from sweeps.trial.run import run_trial

    if resume_from is not None:  # refused before the model loads, in one line
        from sweeps.trial.checkpoint import read_state, resume_problem, settings_problem

        state = read_state(resume_from)
        problem = (resume_problem(resume_from, state, cfg.train.steps)
                   or settings_problem(resume_from, state, cfg.training_settings()))
        if problem:
            raise SlsweepError(f"--resume-from: {problem}")
    ensure_tiny_model(cfg)
    progress = TrialProgress(cfg.train.steps)

    def report(metrics: dict[str, Any], ckpt: Path | None) -> None:
        if checkpoint_dir is not None and ckpt is not None:
            import shutil

            target = checkpoint_dir / f"step_{int(metrics['step']):06d}"
            shutil.copytree(ckpt, target, dirs_exist_ok=True)

    try:
        result = run_trial(cfg, report=report, resume_from=resume_from, log=progress.write,
                           checkpoint=checkpoint_dir is not None, final_weights=True, on_step=progress.step)
    finally:
        progress.close()
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}))
    return result
