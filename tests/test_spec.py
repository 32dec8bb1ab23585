"""Sweep specs: built-in specs load, paths and defaults resolve, bad specs name file and field."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

from sweeps.errors import SpecError
from sweeps.config.spec import load_spec, packaged_spec_path, packaged_specs

BAD_DIR = Path(__file__).parent / "bad_inputs"
EXPECTED = yaml.safe_load((BAD_DIR / "EXPECTED.yaml").read_text())
MINIMAL = "name: mini\ntask: {name: counting}\nloss: {family: soft_label}\n"


def _write(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_builtin_specs_load() -> None:
    assert set(packaged_specs()) == {"default", "counting", "grounding", "chart", "eta_ablation",
                                     "psi_ablation", "lambda_ablation", "baselines", "grounding_baselines",
                                     "baselines_8seeds", "eta_ablation_6seeds"}
    for name in packaged_specs():
        assert load_spec(packaged_spec_path(name)).trial_count > 0
    # Built-in specs named like a built-in space (baselines.yaml) still find the space, not a spec.
    for name in ("baselines", "grounding_baselines"):
        r = load_spec(packaged_spec_path(name))
        assert r.space.source == "baselines.yaml" and r.trial_count == 30
    main_metric = {"counting": "exact_match", "grounding": "acc_iou50", "chart": "relaxed_accuracy"}
    for name in ("counting", "grounding", "chart"):
        r = load_spec(packaged_spec_path(name))
        s = r.spec
        assert s.name == name and s.task.name == name and s.metric.name == main_metric[name]
        assert s.metric.mode == "max" and s.resources.gpu == 1 and not s.model.path.startswith("tiny")
        assert s.task.data_path is None  # synthetic by default
        assert 32 <= s.search.num_samples <= 64 and s.search.algorithm == "tpe"
        assert r.space.source == f"{name}.yaml#search_space" and "psi" in r.space.params
        assert r.base_trial_config().name == name


def test_default_spec() -> None:
    r = load_spec(None)
    s = r.spec
    assert r.path == packaged_spec_path("default")
    assert s.name == "default" and s.task.name == "counting" and s.model.path == "tiny"
    assert (s.search.algorithm, s.search.num_samples, s.search.max_concurrent) == ("tpe", 8, 2)
    assert s.resources.cpu == 1 and s.resources.gpu == 0 and s.scheduler.type == "asha"
    assert (s.train.steps, s.train.eval_every, s.train.batch_size) == (300, 100, 32)
    # 8 searched configurations and the hard-CE arm, on the same seed
    assert r.space.source == "paper.yaml" and r.trial_count == 9
    assert s.baselines == [{"loss.family": "hard"}] and r.arm_labels() == ["hard"]
    assert "name: default" in r.spec_yaml
    base = r.base_trial_config()
    assert base.seed == 0 and base.loss.family == "soft_label"
    flat = r.flat_params()
    assert flat["search_space"] == "paper.yaml" and flat["search.num_samples"] == 8
    assert all(v is not None for v in flat.values()) and "tracking.uri" not in flat


def test_baseline_arm_resolves_to_its_family_defaults_on_the_trial_seed() -> None:
    """An arm that switches the family starts from its defaults: plain hard CE, none of the base's
    soft-label parameters recorded; the seed is the trial's; `baselines=[]` drops the arms."""
    from sweeps.trial.trainable import BASELINE_ARM, TRIAL_INDEX, Resolver, baseline_arm, sampled_params

    r = load_spec(None)
    resolve = Resolver(r.base_trial_config(), r.space, r.arm_overrides())
    config = {BASELINE_ARM: 0, TRIAL_INDEX: 2}
    cfg = resolve(config)
    assert cfg.loss.family == "hard" and cfg.seed == 2 and cfg.train.lr == r.spec.train.lr
    assert {k: v for k, v in cfg.flatten().items() if k.startswith("loss.")} == {"loss.family": "hard"}
    assert baseline_arm(config) == 0 and sampled_params(config) == {}
    assert baseline_arm({"point": {BASELINE_ARM: 0}}) == 0 and sampled_params({"point": {BASELINE_ARM: 0}}) == {}
    assert load_spec(None, ["baselines=[]"]).trial_count == 8
    lr_arm = load_spec(None, ["baselines=[{loss.eta: 0.0}, {loss.family: hard, train.lr: 0.002}]"])
    assert lr_arm.arm_labels() == ["loss.eta=0.0", "loss.family=hard train.lr=0.002"]
    assert lr_arm.arm_overrides() == [{"loss.eta": 0.0}, {"loss": {"family": "hard"}, "train.lr": 0.002}]


@pytest.mark.parametrize("arm, field, words", [
    ("{}", "baselines.0", "empty arm"),
    ("{loss.family: nope}", "baselines.0.loss.family", "unknown 'nope'"),
    ("{loss.eta: 7}", "baselines.0.loss.eta", "must be in [0, 1]"),
    ("{seed: 1}", "baselines.0.seed", "seeds come from search.seeds"),
])
def test_bad_baseline_arm_names_the_override_and_field(arm: str, field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(None, [f"baselines=[{arm}]"])
    assert f"(override baselines=[{arm}]): {field}: " in str(err.value) and words in str(err.value)


def test_resolved_spec_pickles() -> None:
    """Ray ships the space (define_by_run) and the base config to workers by pickling."""
    r = load_spec(None)
    again = pickle.loads(pickle.dumps(r))
    assert again.space.hash == r.space.hash and again.base_trial_config() == r.base_trial_config()
    assert pickle.loads(pickle.dumps(r.space.define_by_run)).__self__.targets == r.space.targets


def test_trial_config_applies_sample_and_seed() -> None:
    from sweeps.trial.trainable import resolve_trial_config  # what each Tune trial runs

    r = load_spec(None)
    cfg = resolve_trial_config(r.base_trial_config(), r.space,
                               {"loss.family": "soft_label", "eta": 0.05, "lam": 3.0, "psi": "gaussian",
                                "gaussian_sigma": 0.9, "lr": 5e-4, "seed": 2})
    assert (cfg.loss.eta, cfg.loss.lam, cfg.loss.psi, cfg.loss.psi_param) == (0.05, 3.0, "gaussian", 0.9)
    assert cfg.train.lr == 5e-4 and cfg.seed == 2 and cfg.train.steps == 300


def test_defaults_filled_from_train_and_task(tmp_path: Path) -> None:
    r = load_spec(_write(tmp_path, MINIMAL + "search_space: eta_grid\ntrain: {steps: 400, eval_every: 50}\n"
                         "search: {algorithm: grid, seeds: 3}\nmetric: {name: mae}\n"))
    s = r.spec
    assert (s.scheduler.max_t, s.scheduler.grace_period) == (400, 50)
    assert (s.metric.name, s.metric.mode) == ("mae", "min")
    assert r.trial_count == 8 * 3  # 8 eta values x 3 seeds
    fifo = load_spec(_write(tmp_path, MINIMAL + "search_space: psi_grid.yaml\nscheduler: {type: fifo}\n"))
    assert fifo.spec.scheduler.max_t is None and fifo.spec.metric.name == "exact_match"


def test_space_resolution_local_first_then_packaged(tmp_path: Path) -> None:
    local = "name: mine\nparams:\n  eta: {type: float, low: 0.0, high: 0.1}\n"
    _write(tmp_path, local, "paper.yaml")  # shadows the packaged paper.yaml
    r = load_spec(_write(tmp_path, MINIMAL + "search_space: paper.yaml\n"))
    assert r.space.name == "mine" and list(r.space.params) == ["eta"]
    r2 = load_spec(_write(tmp_path, MINIMAL + "search_space: baselines\n", "spec2.yaml"))
    assert r2.space.name == "baselines" and r2.space.source == "baselines.yaml"


def test_relative_paths_resolve_against_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "my-model").mkdir()
    text = MINIMAL.replace("{name: counting}", "{name: counting, data_path: data/train.jsonl}")
    r = load_spec(_write(tmp_path, text + "model: {path: my-model}\nsearch_space: psi_grid\n"))
    assert r.spec.task.data_path == str(tmp_path / "data" / "train.jsonl")
    assert r.spec.model.path == str(tmp_path / "my-model")
    hub = load_spec(_write(tmp_path, MINIMAL + "model: {path: org/some-model}\nsearch_space: psi_grid\n"))
    assert hub.spec.model.path == "org/some-model"  # not a local folder: a hub id, left alone


def test_unknown_builtin_spec_lists_the_builtins() -> None:
    with pytest.raises(SpecError, match="built-in: baselines, baselines_8seeds, chart, counting, default, eta_ablation, "
                       "eta_ablation_6seeds, grounding"):
        packaged_spec_path("nope")


def test_bad_inputs_index_is_complete() -> None:
    files = {p.name for p in BAD_DIR.glob("*.yaml")} - {"EXPECTED.yaml"}
    assert files == set(EXPECTED)
    assert len(files) >= 30


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if n.startswith("spec_")))
def test_bad_specs(name: str) -> None:
    want = EXPECTED[name]
    with pytest.raises(SpecError) as info:
        load_spec(BAD_DIR / name)
    err = info.value
    assert Path(err.file).name == want.get("file", name)
    assert err.field == want["field"] and want["message"] in err.message, str(err)
    assert str(err).startswith(f"{err.file}: {want['field']}: ")


def test_error_carries_line_number() -> None:
    with pytest.raises(SpecError) as info:
        load_spec(BAD_DIR / "spec_steps_negative.yaml")
    assert info.value.line == 5 and str(info.value).endswith("(line 5)")


@pytest.mark.parametrize(("address", "setting", "expected"), [
    (None, None, True), ("local", None, True), ("127.0.0.1:6379", None, False), ("auto", None, False),
    ("127.0.0.1:6379", True, True), (None, False, False)])
def test_worker_reuse_defaults_to_local_ray_only(tmp_path: Path, address: str | None,
                                                  setting: bool | None, expected: bool) -> None:
    """Reused trial workers skip re-importing torch, but on a cluster they would pin every later
    trial to the first trials' nodes, so reuse is on for local Ray only unless the spec says."""
    from sweeps.driver.preflight import plan_sweep
    from sweeps.driver.ray_env import reuse_workers

    ray_line = "" if setting is None else f"ray: {{reuse_workers: {str(setting).lower()}}}\n"
    plan = plan_sweep(_write(tmp_path, MINIMAL + "search_space: paper.yaml\n" + ray_line), address=address,
                      runs_dir=tmp_path / "runs", check=False)
    assert reuse_workers(plan) is expected


def test_a_rule_between_fields_broken_by_an_override_names_it() -> None:
    """`resources.workers=3` makes the file's `train.batch_size: 32` wrong: the error is the batch
    size's, and it names the override that broke it (not only the file's line)."""
    with pytest.raises(SpecError) as err:
        load_spec(None, ["resources.workers=3"])
    text = str(err.value)
    assert "(override resources.workers=3): train.batch_size: 32 is the global micro-batch" in text, text
    with pytest.raises(SpecError) as err:  # the override of the field itself still comes first
        load_spec(None, ["resources.workers=3", "train.batch_size=10"])
    assert "(override train.batch_size=10): train.batch_size: 10 " in str(err.value), str(err.value)


def test_cpus_per_worker_is_cpu_spelled_out(tmp_path: Path) -> None:
    """One field, two spellings: an override of either replaces the file's other one; both in one
    file is one error; an error names the spelling used; the unknown-key hint lists both."""
    spec = _write(tmp_path, MINIMAL + "search_space: paper.yaml\nresources: {workers: 2, cpus_per_worker: 2}\n")
    assert load_spec(spec, ["resources.cpu=1"]).spec.resources.cpu == 1
    assert load_spec(spec).spec.resources.cpu == 2
    both = _write(tmp_path, MINIMAL + "search_space: paper.yaml\nresources: {cpu: 1, cpus_per_worker: 2}\n")
    with pytest.raises(SpecError, match="resources.cpus_per_worker: cpu and cpus_per_worker are the same field"):
        load_spec(both)
    with pytest.raises(SpecError, match=r"\(override resources.cpus_per_worker=0\): resources.cpus_per_worker: "):
        load_spec(None, ["resources.cpus_per_worker=0"])
    with pytest.raises(SpecError, match=r"allowed: cpu, cpus_per_worker, gpu, gpus_per_worker, memory_gb"):
        load_spec(None, ["resources.worker=2"])
