"""`slsweep confirm` on a real tiny TPE sweep: a linked grid sweep with S fresh seeds per configuration
(the K best plus the baseline), and the adjusted table printed."""

from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from sweeps import paths
from sweeps.confirm import CONFIRMED_BY_TAG, CONFIRMS_TAG
from sweeps.service import run_sweep

pytestmark = pytest.mark.slow

SPEC = """
name: c3
task: {name: counting, eval_size: 16, train_size: 64}
model: {path: tiny}
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
search_space: paper.yaml
search: {algorithm: tpe, num_samples: 3, seeds: 1, max_concurrent: 2, seed: 5}
scheduler: {type: fifo}
resources: {cpu: 1, gpu: 0}
metric: {name: exact_match, mode: max}
"""


def test_confirm_reruns_the_best_configurations_on_fresh_seeds(tmp_path, capsys) -> None:
    from sweeps.cli import app
    from sweeps.service import _print_summary, sweep_status

    spec = tmp_path / "c3.yaml"
    spec.write_text(SPEC)
    runs_dir = tmp_path / "runs"
    searched = run_sweep(spec, runs_dir=runs_dir, verbose=0, print_summary=False)
    ray.shutdown()
    source = searched.outcome.plan.sweep_id
    # The search's summary: the best at full budget, and how to confirm it.
    _print_summary(searched.outcome, searched.table)
    printed = capsys.readouterr().out
    assert "Best at full budget (4 steps): exact_match=" in printed
    assert f"Confirm:  slsweep confirm {source} --top 3 --seeds 5 --baseline loss=hard" in printed
    assert "(3 full-budget trials)" in sweep_status(runs_dir=runs_dir)

    res = CliRunner().invoke(app, ["confirm", source, "--top", "2", "--seeds", "2", "--baseline",
                                   "loss=hard", "--runs-dir", str(runs_dir), "-q"])
    ray.shutdown()
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "p_adj" in out and "seeds 80%" in out and "top1:" in out and "baseline:" in out
    assert "seeds 1..2, none of them used by the search" in out

    client = MlflowClient(paths.default_tracking_uri(runs_dir))
    exp = client.get_experiment_by_name("c3")
    parents = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'sweep'")
    confirm = next(p for p in parents if p.data.tags.get(CONFIRMS_TAG) == source)
    original = next(p for p in parents if p.data.tags["slsweep.sweep_id"] == source)
    new_id = confirm.data.tags["slsweep.sweep_id"]
    assert original.data.tags[CONFIRMED_BY_TAG] == new_id
    assert confirm.data.params["search.algorithm"] == "grid" and confirm.data.params["scheduler.type"] == "fifo"
    trials = client.search_runs([exp.experiment_id], f"tags.`slsweep.kind` = 'trial' and "
                                f"tags.`slsweep.sweep_id` = '{new_id}'")
    assert len(trials) == 3 * 2 and all(t.info.status == "FINISHED" for t in trials)
    configs: dict[tuple, set[int]] = {}
    for t in trials:
        p = t.data.params
        key = (p["loss.family"], p.get("loss.eta"), p.get("loss.lam"), p.get("loss.psi"), p["train.lr"])
        configs.setdefault(key, set()).add(int(p["seed"]))
    assert len(configs) == 3 and all(seeds == {1, 2} for seeds in configs.values())
    assert sum(k[0] == "hard" for k in configs) == 1
    # The two soft-label candidates are configurations the search ran (same eta, lam, psi, lr).
    searched_runs = client.search_runs([exp.experiment_id], f"tags.`slsweep.kind` = 'trial' and "
                                       f"tags.`slsweep.sweep_id` = '{source}'")
    seen = {(p.data.params["loss.eta"], p.data.params["loss.lam"], p.data.params["loss.psi"],
             p.data.params["train.lr"]) for p in searched_runs}
    assert {k[1:] for k in configs if k[0] != "hard"} <= seen
