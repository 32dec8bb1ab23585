"""`slsweep confirm` on a real tiny TPE sweep (the built-in default spec, shrunk by overrides: 3
searched configurations and its hard-CE arm): a linked grid sweep with S fresh seeds per
configuration (the K best searched plus the baseline), run with a `key=value` override, and the
adjusted table printed."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sweeps.store import paths
from sweeps.driver.confirm import CONFIRMED_BY_TAG, CONFIRMS_TAG
from sweeps.driver.service import run_sweep

pytestmark = pytest.mark.slow

# The default spec (8 TPE trials over paper.yaml + the hard-CE arm, 300 steps), made tiny.
SMALL = ["task.eval_size=16", "task.train_size=64", "train.steps=4", "train.batch_size=8",
         "train.warmup_steps=1", "train.eval_every=2", "train.max_new_tokens=4", "search.num_samples=3",
         "search.seed=5", "scheduler={type: fifo}"]


def test_confirm_reruns_the_best_configurations_on_fresh_seeds(tmp_path, capsys) -> None:
    from sweeps.cli import app
    from sweeps.driver.service import _print_summary, sweep_status

    runs_dir = tmp_path / "runs"
    searched = run_sweep("default", runs_dir=runs_dir, verbose=0, print_summary=False, overrides=SMALL)
    ray.shutdown()
    source = searched.outcome.plan.sweep_id
    flag = f" --runs-dir {runs_dir}"
    # The search's summary: the best at full budget, the headline against the hard-CE arm on the
    # same seed, what one seed is worth and the exact command that tests it.
    _print_summary(searched.outcome, searched.table)
    printed = capsys.readouterr().out
    assert "Best at full budget (4 steps): exact_match=" in printed
    command = f"slsweep confirm {source} --top 3 --seeds 5 --baseline loss=hard{flag}"
    assert f"Confirm:  {command}" in printed
    assert "\nsoft_label vs hard CE: best soft_label exact_match " in printed
    assert " on seed 0 (Δ " in printed and "the best of 3 full-budget configurations" in printed
    assert f"1 seed: a lead, not a test. Test it: {command}\n" in printed
    assert "(best of 4 full-budget trials)" in sweep_status(runs_dir=runs_dir)  # 3 searched + the hard arm

    # One candidate and no baseline: a grid of one point (its family), valid as a spec.
    from sweeps.config.spec import load_spec
    from sweeps.driver.confirm import plan_confirm, write_confirm_spec
    from sweeps.report.runs import load_sweep

    one = plan_confirm(load_sweep(sweep_id=source, runs_dir=runs_dir), top=1, seeds=2)
    assert load_spec(write_confirm_spec(one, tmp_path / "one")).trial_count == 2
    # An override is checked like `slsweep run`'s before anything is written.
    bad = CliRunner().invoke(app, ["confirm", source, "train.steps=-1", "--baseline", "loss=hard",
                                   "--runs-dir", str(runs_dir), "-q"])
    assert bad.exit_code == 2 and "(override train.steps=-1): train.steps:" in bad.output, bad.output
    assert not (runs_dir / "confirm").exists()

    res = CliRunner().invoke(app, ["confirm", source, "train.steps=2", "--top", "2", "--seeds", "2",
                                   "--baseline", "loss=hard", "--runs-dir", str(runs_dir), "-q"])
    ray.shutdown()
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "p_adj" in out and "seeds 80%" in out and "top1:" in out and "baseline:" in out
    assert "seeds 1..2, none of them used by the search" in out
    assert "- overrides: train.steps=2 (recorded with the confirm sweep; it ran 2 steps a trial)" in out

    client = MlflowClient(paths.default_tracking_uri(runs_dir))
    exp = client.get_experiment_by_name("default")
    parents = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'sweep'")
    confirm = next(p for p in parents if p.data.tags.get(CONFIRMS_TAG) == source)
    original = next(p for p in parents if p.data.tags["slsweep.sweep_id"] == source)
    new_id = confirm.data.tags["slsweep.sweep_id"]
    assert original.data.tags[CONFIRMED_BY_TAG] == new_id
    assert confirm.data.params["search.algorithm"] == "grid" and confirm.data.params["scheduler.type"] == "fifo"
    assert confirm.data.params["train.steps"] == "2"  # the override, recorded with the confirm sweep
    assert "baselines" not in (runs_dir / "confirm" / f"{source}-confirm.yaml").read_text()  # --baseline is its arm
    trials = client.search_runs([exp.experiment_id], f"tags.`slsweep.kind` = 'trial' and "
                                f"tags.`slsweep.sweep_id` = '{new_id}'")
    assert len(trials) == 3 * 2 and all(t.info.status == "FINISHED" for t in trials)
    assert all(t.data.params["train.steps"] == "2" for t in trials)
    # Run names name what differs between the candidates, never shared constants.
    assert not any(word in t.info.run_name for t in trials for word in ("compile=", "data_workers=", "steps="))
    spec_text = (runs_dir / "confirm" / f"{source}-confirm.yaml").read_text()
    assert "at 2 steps (override)" in spec_text and "at full budget" not in spec_text
    configs: dict[tuple, set[int]] = {}
    for t in trials:
        p = t.data.params
        key = (p["loss.family"], p.get("loss.eta"), p.get("loss.lam"), p.get("loss.psi"), p["train.lr"])
        configs.setdefault(key, set()).add(int(p["seed"]))
    assert len(configs) == 3 and all(seeds == {1, 2} for seeds in configs.values())
    assert sum(k[0] == "hard" for k in configs) == 1
    # The two soft-label candidates are configurations the search ran (same eta, lam, psi, lr);
    # the baseline is the sweep's own hard-CE arm (same lr).
    searched_runs = client.search_runs([exp.experiment_id], f"tags.`slsweep.kind` = 'trial' and "
                                       f"tags.`slsweep.sweep_id` = '{source}' and tags.`slsweep.arm` = 'search'")
    seen = {(p.data.params["loss.eta"], p.data.params["loss.lam"], p.data.params["loss.psi"],
             p.data.params["train.lr"]) for p in searched_runs}
    assert {k[1:] for k in configs if k[0] != "hard"} <= seen
