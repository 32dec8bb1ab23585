"""Bring your own data, task and loss: whole sweeps on local Ray with a Hugging Face dataset saved
locally (parquet with an Image column) and with a plug-in package that lives only in this test's
temporary folder (a task, a loss family and a psi shape, loaded by dotted path)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient

from sweeps.store import paths
from sweeps.driver.service import run_sweep
from tests.test_hf_data import COLUMNS, _dataset

pytestmark = pytest.mark.slow

SPEC = """
name: {name}
task: {task}
model: {{path: tiny}}
train: {{steps: 2, batch_size: 4, warmup_steps: 0, eval_every: 2, max_new_tokens: 4}}
loss: {loss}
search_space: {space}
search: {{algorithm: grid, num_samples: {n}, seeds: 1, max_concurrent: 1}}
scheduler: {{type: fifo}}
resources: {{cpu: 1, gpu: 0}}
metric: {{name: {metric}, mode: {mode}}}
"""


def _sweep(tmp: Path, name: str, **fields) -> list:
    spec = tmp / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, **fields))
    try:
        run_sweep(spec, runs_dir=tmp / "runs", verbose=0, print_summary=False)
    finally:
        ray.shutdown()
    client = MlflowClient(paths.default_tracking_uri(tmp / "runs"))
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'")


ONE_POINT = "{name: one, params: {lr: {type: fixed, value: 0.001, target: train.lr}}}"


@pytest.mark.parametrize("task, metric", [
    ("numeric_vqa", "exact_match"),
    ("counting", "exact_match"),
])
def test_sweep_on_a_local_parquet_dataset(tmp_path: Path, task: str, metric: str) -> None:
    _dataset(60).to_parquet(tmp_path / "mine.parquet")
    data = f"{{hf: {tmp_path / 'mine.parquet'}, split: train, columns: {COLUMNS}}}".replace("'", "")
    children = _sweep(tmp_path, f"hf-{task.replace('_', '-')}",
                      task=f"{{name: {task}, data: {data}, eval_size: 10, image_size: 32}}",
                      loss="{family: soft_label, eta: 0.1, lam: 2.0}", space=ONE_POINT, n=1,
                      metric=metric, mode="max")
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED" and run.data.params["task.data.hf"].endswith("mine.parquet")
    assert {metric, "unparseable", "soft_target_coverage"} <= set(run.data.metrics)
    assert run.data.metrics["soft_target_coverage"] == 1.0


PLUGIN = {
    "__init__.py": "",
    "tasks.py": '''
        from sweeps.tasks import CountingTask, Example


        class DoubledCount(CountingTask):
            """Count the shapes and answer twice the count (a task the project does not ship)."""

            name = "doubled_count"

            def example(self, p, seed, index, context=None):
                ex = super().example(p, seed, index, context)
                return Example(ex.image, ex.prompt + " Answer twice the count.", str(2 * ex.target),
                               2 * ex.target, ex.meta)
    ''',
    "losses.py": '''
        import sl_core
        from sl_core.registry import ParamSpec, loss_family


        @loss_family(params=(ParamSpec("eta", 0.2, low=0.0, high=1.0),), tokens="digits")
        def uniform_digits(tokens, eta):
            """Soft labels with a uniform psi (a family the project does not ship)."""
            def loss(logits, labels, *, num_items_in_batch=None):
                return sl_core.soft_label_cross_entropy(logits, labels, tokens, eta=eta, psi="uniform",
                                                        num_items_in_batch=num_items_in_batch)
            return loss
    ''',
    "shapes.py": '''
        def two_point(t, param):
            """Half the soft mass on the target, half on its upper neighbour (9 keeps it all)."""
            w = [0.0] * 10
            w[t] += 0.5
            w[min(t + 1, 9)] += 0.5
            return w
        two_point.takes_param = False
    ''',
}


def test_plugin_task_loss_and_psi_in_one_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLSWEEP_ALLOW_PLUGINS", "1")  # the user allows the plug-ins (--allow-plugins)
    pkg = tmp_path / "byo_plugins"
    pkg.mkdir()
    for name, text in PLUGIN.items():
        (pkg / name).write_text(textwrap.dedent(text))
    space = ("{name: plugins, params: {loss.family: {type: categorical, choices: [soft_label, "
             "'byo_plugins.losses:uniform_digits']}, psi: {type: fixed, value: 'byo_plugins.shapes:two_point', "
             "when: {loss.family: soft_label}}, options.eta: {type: fixed, value: 0.3, target: loss.options.eta, "
             "when: {loss.family: 'byo_plugins.losses:uniform_digits'}}}}")
    children = _sweep(tmp_path, "plugins", task="{name: 'byo_plugins.tasks:DoubledCount', eval_size: 8}",
                      loss="{family: soft_label, eta: 0.1, lam: 2.0}", space=space, n=2,
                      metric="exact_match", mode="max")
    assert len(children) == 2
    families = {r.data.params["loss.family"]: r for r in children}
    assert set(families) == {"soft_label", "byo_plugins.losses:uniform_digits"}
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags.get("slsweep.error")
        assert run.data.params["task.name"] == "byo_plugins.tasks:DoubledCount"
        assert run.data.metrics["soft_target_coverage"] == 1.0
    assert families["soft_label"].data.params["loss.psi"] == "byo_plugins.shapes:two_point"
    assert families["byo_plugins.losses:uniform_digits"].data.params["loss.eta"] == "0.3"


def test_a_plugin_builder_that_fails_is_refused_before_anything_is_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeps.errors import SpecError

    monkeypatch.setenv("SLSWEEP_ALLOW_PLUGINS", "1")
    from sweeps.driver.preflight import plan_sweep

    pkg = tmp_path / "bad_plugins"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text(textwrap.dedent('''
        from sl_core.registry import loss_family

        @loss_family(params={"w": 0.5}, tokens="digits")
        def explodes(tokens, w):
            raise RuntimeError("builder exploded")

        @loss_family(params={"w": 0.5}, tokens="none")
        def returns_none(tokens, w):
            return None
    '''))
    for name, message in (("explodes", "its builder failed: RuntimeError: builder exploded"),
                          ("returns_none", "its builder returned NoneType, not a loss function")):
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(SPEC.format(name=name, task="{name: counting, eval_size: 8}",
                                    loss=f"{{family: 'bad_plugins.losses:{name}'}}", space=ONE_POINT, n=1,
                                    metric="exact_match", mode="max"))
        with pytest.raises(SpecError, match=message):
            plan_sweep(spec, runs_dir=tmp_path / "runs")
        assert not (tmp_path / "runs").exists()
