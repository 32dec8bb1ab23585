"""What the CLI commands do, as plain functions (the CLI only parses arguments).

run_sweep -> plan (validate everything) -> build the tiny model if the spec needs it -> record the
plan for `resume` -> Ray Tune -> summary (best configuration, ranked trials, where to look).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps import paths
from sweeps.config import TrialConfig
from sweeps.errors import SlsweepError
from sweeps.spec import packaged_spec_dir
from sweeps.tune_runner import SweepOutcome, SweepPlan, execute, plan_sweep, sampled_params

PLANS = "sweeps"  # sub-folder of the run folder holding one JSON record per sweep (for resume)


@dataclass
class RunSummary:
    outcome: SweepOutcome
    table: pd.DataFrame
    failed_all: bool


def ensure_tiny_model(cfg: TrialConfig) -> None:
    """Build the cached tiny model on the driver, once, before trials race to it."""
    if cfg.model.path.startswith("tiny"):
        from sweeps.models import tiny_model_path

        arch = cfg.model.path.split("-", 1)[1] if "-" in cfg.model.path else "llava"
        tiny_model_path(arch)


def _record_plan(plan: SweepPlan, spec_path: str | Path | None) -> None:
    folder = plan.runs_dir / PLANS
    folder.mkdir(parents=True, exist_ok=True)
    record = {"sweep_id": plan.sweep_id, "spec": str(Path(spec_path).resolve()) if spec_path else None,
              "tracking_uri": plan.tracking_uri, "experiment": plan.experiment, "address": plan.address}
    (folder / f"{plan.sweep_id}.json").write_text(json.dumps(record, indent=2))


def ranked_trials(outcome: SweepOutcome) -> pd.DataFrame:
    """One row per trial: its sampled values, seed, status and final metric, best first."""
    spec = outcome.plan.spec
    rows = []
    for result in outcome.results:
        config = result.config or {}
        value = (result.metrics or {}).get(spec.metric.name)
        rows.append({"trial": (result.metrics or {}).get("trial_id", "?"),
                     "status": "error" if result.error else "ok",
                     spec.metric.name: value if isinstance(value, (int, float)) else math.nan,
                     "step": (result.metrics or {}).get("step"),
                     "seed": config.get("__trial_index__", 0),
                     **sampled_params(config)})
    table = pd.DataFrame(rows).dropna(axis=1, how="all")  # peers' params are absent elsewhere
    if not table.empty:
        table = table.sort_values(spec.metric.name, ascending=spec.metric.mode == "min",
                                  na_position="last").reset_index(drop=True)
    return table


def _print_summary(outcome: SweepOutcome, table: pd.DataFrame) -> None:
    plan, spec = outcome.plan, outcome.plan.spec
    print(f"\nSweep {plan.sweep_id}: {len(table)} trials in {outcome.seconds:.0f} s")
    if not table.empty:
        with pd.option_context("display.max_columns", 20, "display.width", 160,
                               "display.float_format", "{:.4g}".format):
            print(table.head(15).to_string(index=False))
        best = table.iloc[0]
        if not (isinstance(best[spec.metric.name], float) and math.isnan(best[spec.metric.name])):
            params = {k: best[k].item() if hasattr(best[k], "item") else best[k] for k in table.columns
                      if k not in ("trial", "status", "step", spec.metric.name) and pd.notna(best[k])}
            print(f"\nBest: {spec.metric.name}={best[spec.metric.name]:.4g} with {params}")
    try:
        from sweeps.report.runs import load_trials
        from sweeps.report.tables import ablation_table_text

        print("\n" + ablation_table_text(load_trials(plan.tracking_uri, sweep_id=plan.sweep_id),
                                         metric=spec.metric.name))
    except Exception as exc:  # the summary table is a courtesy; the sweep itself succeeded
        print(f"(ablation table unavailable: {exc})")
    runs_flag = f" --runs-dir {plan.runs_dir}" if plan.runs_dir != paths.default_runs_dir() else ""
    print(f"\nMLflow:   {plan.tracking_uri} (experiment {plan.experiment!r})")
    print(f"Storage:  {plan.runs_dir}")
    print(f"Next:     slsweep table{runs_flag}   |   slsweep ui{runs_flag}   |   slsweep report -o report.html")


def run_sweep(spec_path: str | Path | None = None, *, address: str | None = None,
              tracking_uri: str | None = None, runs_dir: str | Path | None = None,
              experiment: str | None = None, verbose: int = 1, print_summary: bool = True) -> RunSummary:
    """Validate, run and summarise a sweep."""
    plan = plan_sweep(spec_path, address=address, tracking_uri=tracking_uri, runs_dir=runs_dir,
                      experiment=experiment)
    ensure_tiny_model(plan.resolved.base_trial_config())
    _record_plan(plan, spec_path)
    outcome = execute(plan, verbose=verbose)
    table = ranked_trials(outcome)
    if print_summary:
        _print_summary(outcome, table)
    failed_all = table.empty or bool((table["status"] == "error").all())
    return RunSummary(outcome=outcome, table=table, failed_all=failed_all)


def resume_sweep(sweep_id: str | None = None, *, runs_dir: str | Path | None = None,
                 verbose: int = 1) -> RunSummary:
    """Continue an interrupted sweep from Ray Tune's experiment state."""
    from sweeps.tune_runner import resume as resume_plan

    folder = Path(runs_dir or paths.default_runs_dir()).resolve()
    records = sorted((folder / PLANS).glob("*.json"), key=lambda p: p.stat().st_mtime)
    if sweep_id:
        records = [r for r in records if r.stem == sweep_id]
    if not records:
        raise SlsweepError(f"{folder}: sweep_id: no {'sweep ' + sweep_id if sweep_id else 'sweep'} to resume")
    record = json.loads(records[-1].read_text())
    plan = plan_sweep(record["spec"], address=record["address"], tracking_uri=record["tracking_uri"],
                      runs_dir=folder, experiment=record["experiment"])
    plan.sweep_id = record["sweep_id"]
    outcome = resume_plan(plan, verbose=verbose)
    table = ranked_trials(outcome)
    _print_summary(outcome, table)
    return RunSummary(outcome=outcome, table=table,
                      failed_all=table.empty or bool((table["status"] == "error").all()))


def sweep_status(*, runs_dir: str | Path | None = None, tracking_uri: str | None = None) -> str:
    """A text table of the sweeps in the store: id, experiment, status, trial counts, best."""
    from mlflow.tracking import MlflowClient

    folder = Path(runs_dir or paths.default_runs_dir()).resolve()
    uri = tracking_uri or paths.default_tracking_uri(folder)
    if uri.startswith("sqlite:") and not (folder / "mlflow.db").exists() and not tracking_uri:
        raise SlsweepError(f"{folder}: --runs-dir: no MLflow store here (run `slsweep run` first)")
    client = MlflowClient(tracking_uri=uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments],
                              filter_string="tags.`slsweep.kind` = 'sweep'",
                              order_by=["attributes.start_time DESC"], max_results=200) if experiments else []
    if not runs:
        return f"no sweeps recorded in {uri}"
    names = {e.experiment_id: e.name for e in experiments}
    rows = []
    for run in runs:
        m = run.data.metrics
        best = {k: v for k, v in m.items() if k.startswith("best_")}
        rows.append({"sweep": run.data.tags.get("slsweep.sweep_id"), "experiment": names.get(run.info.experiment_id),
                     "status": run.info.status, "trials": int(m.get("trials_total", 0)),
                     "finished": int(m.get("trials_finished", 0)), "stopped": int(m.get("trials_stopped", 0)),
                     "failed": int(m.get("trials_failed", 0)),
                     "best": ", ".join(f"{k[5:]}={v:.4g}" for k, v in best.items())})
    return pd.DataFrame(rows).to_string(index=False)


def builtin_listing() -> str:
    """Names of the packaged specs and search spaces."""
    import search_spaces

    specs = sorted(p.name for p in packaged_spec_dir().glob("*.yaml"))
    spaces = sorted(p.name for p in Path(search_spaces.__file__).parent.glob("*.yaml"))
    return "specs:         " + "  ".join(specs) + "\nsearch spaces: " + "  ".join(spaces)


def run_single_trial(config_path: Path, *, checkpoint_dir: Path | None = None,
                     resume_from: Path | None = None):  # -> TrialResult
    """`slsweep trial`: one trial in this process, printing progress."""
    from sweeps.trial import run_trial

    cfg = TrialConfig.from_yaml(config_path)
    ensure_tiny_model(cfg)

    def report(metrics: dict[str, Any], ckpt: Path | None) -> None:
        if checkpoint_dir is not None and ckpt is not None:
            import shutil

            target = checkpoint_dir / f"step_{int(metrics['step']):06d}"
            shutil.copytree(ckpt, target, dirs_exist_ok=True)

    result = run_trial(cfg, report=report, resume_from=resume_from, log=print,
                       checkpoint=checkpoint_dir is not None)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.metrics.items()}))
    return result
