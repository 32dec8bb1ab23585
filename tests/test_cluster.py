"""A real 2-node Ray cluster and a real `mlflow server`: one sweep across both nodes, logged remotely.

The cluster is two `ray start` processes on this machine (1 CPU each, so concurrent trials must land
on different nodes); the driver is this test process, joining by the GCS address the way
`slsweep run --address HOST:PORT` does. Both servers are stopped by their session, never by name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cluster_utils import MlflowServer, RayCluster, apply_driver_env
from sweeps.cli import app
from sweeps.driver.service import run_sweep
from sweeps.driver.ray_env import runtime_env

ROOT = Path(__file__).resolve().parents[1]
BAD = ROOT / "tests" / "bad_inputs"

SPEC = """
name: c4
task: {name: counting, eval_size: 16, train_size: 64}
model: {path: tiny}
train: {steps: 4, batch_size: 8, lr: 1.0e-3, warmup_steps: 1, eval_every: 2, max_new_tokens: 4}
loss: {family: soft_label, eta: 0.1, lam: 2.0, psi: triangular}
search_space: paper.yaml
search: {algorithm: tpe, num_samples: 4, seeds: 1, max_concurrent: 2, seed: 5}
scheduler: {type: fifo}
resources: {cpu: 1, gpu: 0}
metric: {name: exact_match, mode: max}
"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    """The MLflow server and the 2-node Ray cluster, started side by side (both take a while)."""
    ray.shutdown()  # a local Ray left by an earlier test module must not be mistaken for the cluster
    apply_driver_env()
    mlflow_server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).launch()
    ray_cluster = RayCluster(nodes=2, cpus_per_node=1)
    try:
        ray_cluster.start()
        mlflow_server.start()
        yield ray_cluster, mlflow_server
    finally:
        mlflow_server.stop()
        ray_cluster.stop()


@pytest.fixture(scope="module")
def cluster(servers) -> RayCluster:
    return servers[0]


@pytest.fixture(scope="module")
def server(servers) -> MlflowServer:
    return servers[1]


@pytest.fixture(scope="module")
def cluster_sweep(cluster: RayCluster, server: MlflowServer, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("cluster-sweep")
    spec = tmp / "c4.yaml"
    spec.write_text(SPEC)
    # Ray puts the driver's working directory on the workers' sys.path; run from elsewhere than this
    # checkout, as a driver on another machine would, so workers can only get `sweeps` from the
    # runtime environment (or their own install).
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        summary = run_sweep(spec, address=cluster.address, tracking_uri=server.uri,
                            runs_dir=tmp / "runs", verbose=0, print_summary=False)
    finally:
        os.chdir(cwd)
    try:
        node_ids = {n["NodeID"] for n in ray.nodes() if n["Alive"]}

        @ray.remote(num_cpus=1)
        def where_is_sweeps() -> str:
            import sweeps

            return sweeps.__file__

        shipped = ray.get(where_is_sweeps.remote())
    finally:
        ray.shutdown()
    return summary, tmp / "runs", node_ids, shipped


def _children(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return exp, client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'trial'")


@pytest.mark.slow
def test_trials_spread_over_both_nodes(cluster_sweep, server: MlflowServer) -> None:
    summary, _, node_ids, _ = cluster_sweep
    assert len(node_ids) == 2 and not summary.failed_all
    client = MlflowClient(server.uri)
    _, children = _children(client, "c4")
    assert len(children) == 4
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["node"] for r in children} == node_ids  # both nodes ran trials


@pytest.mark.slow
def test_a_two_worker_trial_spans_both_nodes(cluster_sweep, cluster: RayCluster, server: MlflowServer,
                                             tmp_path: Path) -> None:
    """One trial of 2 Ray Train workers on two 1-CPU nodes: a worker on each, gloo between them,
    one MLflow run on the server naming both nodes."""
    _, _, node_ids, _ = cluster_sweep
    spec = tmp_path / "c2w.yaml"
    spec.write_text(SPEC.replace("name: c4", "name: c2w")
                    .replace("resources: {cpu: 1, gpu: 0}", "resources: {workers: 2, cpus_per_worker: 1}")
                    .replace("search_space: paper.yaml", "search_space: {name: one, params: {eta: {type: float, "
                             "low: 0.0, high: 0.3, values: [0.1]}}}")
                    .replace("algorithm: tpe, num_samples: 4,", "algorithm: grid,"))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        summary = run_sweep(spec, address=cluster.address, tracking_uri=server.uri, runs_dir=tmp_path / "runs",
                            verbose=0, print_summary=False)
    finally:
        os.chdir(cwd)
        ray.shutdown()
    assert not summary.failed_all
    _, children = _children(MlflowClient(server.uri), "c2w")
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    tags = children[0].data.tags
    assert tags["slsweep.workers"] == "2" and set(tags["slsweep.worker_nodes"].split(",")) == node_ids


@pytest.mark.slow
def test_server_holds_parent_children_metrics_and_artifacts(cluster_sweep, server: MlflowServer) -> None:
    summary, runs_dir, _, _ = cluster_sweep
    client = MlflowClient(server.uri)
    exp, children = _children(client, "c4")
    parents = client.search_runs([exp.experiment_id], "tags.`slsweep.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.metrics["trials_total"] == 4 and parent.data.metrics["trials_finished"] == 4
    assert parent.data.tags["ray.address"] == summary.outcome.plan.address
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # uploaded through the server
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"spec.yaml", "search_space.yaml"}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert [m.step for m in client.get_metric_history(child.info.run_id, "exact_match")] == [2, 4]
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {"config.yaml", "predictions.csv"}
    # Nothing went to a local store: the run folder only holds Ray's experiment state.
    assert not (runs_dir / "mlflow.db").exists()


@pytest.mark.slow
def test_workers_run_the_code_shipped_by_the_driver(cluster_sweep, cluster: RayCluster) -> None:
    summary, _, _, shipped = cluster_sweep
    env = runtime_env(summary.outcome.plan)
    assert env is not None and len(env["py_modules"]) == 2
    # The worker imported `sweeps` from Ray's runtime-resources copy, not from this checkout:
    # a worker without slsweep installed gets the same code.
    assert "runtime_resources" in shipped and not shipped.startswith(str(ROOT))


@pytest.mark.slow
def test_bad_input_against_the_server_creates_nothing(cluster: RayCluster, server: MlflowServer,
                                                       tmp_path: Path) -> None:
    client = MlflowClient(server.uri)
    before = {e.name for e in client.search_experiments()}
    res = CliRunner().invoke(app, ["run", str(BAD / "run_data_corrupt_image.yaml"), "--address",
                                   cluster.address, "--tracking-uri", server.uri,
                                   "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert res.exit_code == 2 and "task.data_path" in res.output and "Traceback" not in res.output
    assert {e.name for e in client.search_experiments()} == before
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_trial_with_more_workers_than_the_cluster_holds_is_refused(cluster: RayCluster, server: MlflowServer,
                                                                     tmp_path: Path) -> None:
    """3 one-CPU workers per trial on two one-CPU nodes: one line naming resources.workers, after
    the (here zero) wait for the autoscaler, and no experiment on the server."""
    client = MlflowClient(server.uri)
    before = {e.name for e in client.search_experiments()}
    spec = tmp_path / "c3w.yaml"
    spec.write_text(SPEC.replace("name: c4", "name: c3w").replace("batch_size: 8", "batch_size: 9")
                    .replace("resources: {cpu: 1, gpu: 0}", "resources: {workers: 3, cpus_per_worker: 1}")
                    + "limits: {resources_wait_seconds: 0}\n")
    res = CliRunner().invoke(app, ["run", str(spec), "--address", cluster.address, "--tracking-uri", server.uri,
                                   "--runs-dir", str(tmp_path / "runs"), "-q"])
    ray.shutdown()
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "resources.workers" in res.output and "can hold 2" in res.output
    assert {e.name for e in client.search_experiments()} == before


def test_cluster_example_is_a_valid_ray_up_config() -> None:
    """docs/cluster-example.yaml passes the validation `ray up` runs (Ray's own cluster schema)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((ROOT / "docs" / "cluster-example.yaml").read_text())
    validate_config(prepare_config(config))
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0, "GPU": 0}  # no trials on the head
    assert "/mnt/slsweep" in " ".join(config["docker"]["run_options"])  # shared run folder


@pytest.mark.slow
def test_the_memory_plan_is_made_on_a_worker(cluster: RayCluster, server: MlflowServer, tmp_path: Path) -> None:
    """Joining a cluster without resources.memory_gb, the trial's memory is planned against what a
    probe with one worker's resources measured on a node (this machine's RAM says nothing about a
    worker's GPU): `batch_size: auto` is resolved against it, and a trial that cannot fit is one
    line naming that node, exit 2, with nothing written."""
    from sweeps.driver.preflight import plan_sweep
    from sweeps.driver.ray_env import plan_memory_on_worker
    from sweeps.models.presets import build_preset_model

    spec = tmp_path / "cmem.yaml"
    spec.write_text(SPEC.replace("name: c4", "name: cmem").replace("batch_size: 8", "batch_size: auto"))
    plan = plan_sweep(spec, address=cluster.address, tracking_uri=server.uri, runs_dir=tmp_path / "runs")
    assert plan.memory_check is not None and not any(line.startswith("memory") for line in plan.data_lines)
    try:
        line = plan_memory_on_worker(plan, quiet=True)
    finally:
        ray.shutdown()
    probed = re.compile(r"available RAM on Ray node [\d.]+ \(probed with one trial worker's resources\)")
    assert probed.search(line), line
    assert "driver machine" not in line and "train.batch_size auto ->" in line, line
    assert isinstance(plan.spec.train.batch_size, int) and not (tmp_path / "runs").exists()

    # 512 examples of 17 image tiles each at once: far beyond any node's RAM
    smolvlm = build_preset_model("smolvlm-256m", tmp_path / "smolvlm", layers=1)
    client = MlflowClient(server.uri)
    before = {e.name for e in client.search_experiments()}
    big = tmp_path / "cbig.yaml"
    big.write_text(SPEC.replace("name: c4", "name: cbig").replace("model: {path: tiny}", f"model: {{path: {smolvlm}}}")
                   .replace("batch_size: 8", "batch_size: 512").replace("train_size: 64", "train_size: 1024"))
    res = CliRunner().invoke(app, ["run", str(big), "--address", cluster.address, "--tracking-uri", server.uri,
                                   "--runs-dir", str(tmp_path / "runs"), "-q"])
    ray.shutdown()
    # the preflight's data lines, then one error line (the plan is made once the cluster is joined)
    *data, text = res.output.strip().splitlines()
    assert res.exit_code == 2 and text.startswith("error: ") and "Traceback" not in res.output, res.output
    assert all(line.startswith("data ") for line in data), res.output
    assert "train.batch_size" in text and probed.search(text), text
    assert {e.name for e in client.search_experiments()} == before and not (tmp_path / "runs").exists()
