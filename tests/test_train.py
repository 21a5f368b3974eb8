"""Real Ray Train V2 runs of the training recipe on `minilm-l6` (the short test adaptation).

One local Ray instance (2 CPUs) serves the whole module. Runs are kept to a few steps of 4 sequences
of at most 32 tokens; they check behaviour (metrics, checkpoints, resume, DDP equivalence, failure
reasons), not model quality.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
from collections import Counter
from typing import Any

import pytest

from ncsearch.config import SearchSpec, parse_spec
from ncsearch.errors import TrialError

BASE: dict[str, Any] = {
    "name": "train-test",
    "model": "minilm-l6",
    "baseline": "mlm",
    "train": {
        "steps": 2,
        "batch_size": 4,
        "max_length": 32,
        "report_every": 1,
        "checkpoint_every": 2,
        "max_train_sentences": 16,
        "seed": 3,
    },
    # every position, so the gender words of the short batches give several classes from step 1
    "nc3": {"alpha": 0.0, "positions": "all", "vocab": {"source": "gender", "size": 60}},
    "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
    "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
    "resources": {"workers_per_trial": 1, "cpus_per_worker": 1},
}


def make_spec(**overrides: Any) -> SearchSpec:
    """BASE with dotted overrides, e.g. make_spec(**{"nc3.alpha": 10.0})."""
    data = copy.deepcopy(BASE)
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return parse_spec(data)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(data_root):
    from ncsearch.models import ensure_model

    return ensure_model("minilm-l6", data_root=data_root)


@pytest.fixture()
def fit(ray_session, model_path, data_root, tmp_path):
    """Run fit_trial on a spec; returns (outcome, per-report history)."""
    from ncsearch.train import fit_trial
    from ncsearch.training import metrics_log, read_metrics_log

    def run(spec: SearchSpec, name: str = "run"):
        log = tmp_path / f"{name}.jsonl"
        outcome = fit_trial(
            spec, data_root=data_root, storage_path=tmp_path / "runs", name=name, callbacks=[metrics_log(log)], model_path=model_path
        )
        return outcome, read_metrics_log(log)

    return run


TRAIN_KEYS = ("train/loss", "train/mlm_loss", "train/unc3", "train/nc3", "train/lr", "train/tokens_per_s")


def check_run(outcome, history, spec: SearchSpec) -> None:
    steps = spec.train.steps
    assert [row["step"] for row in history] == list(range(1, steps + 1))
    assert outcome.metrics["step"] == steps
    for row in history:
        for key in TRAIN_KEYS:
            assert math.isfinite(row[key]), (key, row)
        assert row["train/nc3_classes"] >= 2
        assert row["train/tokens_per_s"] > 0
        # one step per window on one worker: the total is the MLM loss plus alpha times UNC3
        assert row["train/loss"] == pytest.approx(row["train/mlm_loss"] + spec.nc3.alpha * row["train/unc3"], rel=1e-5)
    assert history[-1]["checkpoint"] == str(outcome.checkpoint_dir)
    assert outcome.checkpoint_dir.name == f"checkpoint_{steps:06d}"
    for name in ("model/config.json", "model/model.safetensors", "model/tokenizer.json", "state.pt", "meta.json"):
        assert (outcome.checkpoint_dir / name).is_file(), name


@pytest.mark.parametrize(
    ("baseline", "alpha"),
    [
        ("mlm", 0.0),
        ("cda", 10.0),
        ("dropout", 10.0),
        # ("bec", 10.0) runs through the CLI in test_train_cli.py
        pytest.param("cda", 0.0, marks=pytest.mark.slow),
        pytest.param("dropout", 0.0, marks=pytest.mark.slow),
        pytest.param("bec", 0.0, marks=pytest.mark.slow),
    ],
)
def test_each_baseline_trains_with_and_without_nc3(fit, baseline, alpha):
    spec = make_spec(baseline=baseline, **{"nc3.alpha": alpha})
    outcome, history = fit(spec, name=f"{baseline}-{alpha:g}")
    check_run(outcome, history, spec)
    if alpha > 0:
        assert history[0]["train/loss"] > history[0]["train/mlm_loss"]
    if baseline == "dropout":
        import json

        config = json.loads((outcome.model_dir / "config.json").read_text())
        assert (config["hidden_dropout_prob"], config["attention_probs_dropout_prob"]) == (0.20, 0.15)


# ----- the reference run: mlm + NC3, 4 steps, checkpoint after 2 ----------------------------------------

RESUME = {"nc3.alpha": 10.0, "train.steps": 4, "train.checkpoint_every": 2}


@pytest.fixture(scope="module")
def reference(ray_session, model_path, data_root, tmp_path_factory):
    from ncsearch.train import fit_trial
    from ncsearch.training import metrics_log, read_metrics_log

    folder = tmp_path_factory.mktemp("reference")
    spec = make_spec(**RESUME)
    outcome = fit_trial(
        spec, data_root=data_root, storage_path=folder / "runs", name="reference", callbacks=[metrics_log(folder / "log.jsonl")], model_path=model_path
    )
    return spec, outcome, read_metrics_log(folder / "log.jsonl")


def test_mlm_with_nc3_reports_checkpoints_and_a_loadable_model(reference, model_path):
    import torch

    from ncsearch.models import load_mlm

    spec, outcome, history = reference
    check_run(outcome, history, spec)
    assert [row.get("checkpoint", "").rsplit("/", 1)[-1] for row in history] == ["", "checkpoint_000002", "", "checkpoint_000004"]
    # warm-up then linear decay (ceil(0.1 * 4) = 1 warm-up step)
    assert [row["train/lr"] for row in history] == pytest.approx([2.5e-5, 5e-5, 3.3333e-5, 1.6667e-5], rel=1e-3)
    # NC3 statistics are cumulative: the number of observed classes never drops
    classes = [row["train/nc3_classes"] for row in history]
    assert classes == sorted(classes)
    trained, _ = load_mlm(str(outcome.model_dir))
    base, _ = load_mlm(model_path)
    emb_trained = trained.get_input_embeddings().weight
    emb_base = base.get_input_embeddings().weight
    assert emb_trained.shape == emb_base.shape and not torch.equal(emb_trained, emb_base)


def test_a_restarted_run_continues_from_its_last_checkpoint(reference, ray_session, model_path, data_root, tmp_path):
    from ray.train import TrainingFailedError

    from ncsearch.train import build_trainer, fit_trial
    from ncsearch.training import failure_reason, metrics_log, read_metrics_log

    spec, _, ref_history = reference
    log = tmp_path / "log.jsonl"
    common = dict(data_root=data_root, storage_path=tmp_path / "runs", name="resumed")
    trainer = build_trainer(
        spec, model_path=model_path, callbacks=[metrics_log(log)], extra_config={"fail_after_step": 2}, **common
    )
    with pytest.raises(TrainingFailedError) as failed:
        trainer.fit()
    assert "injected failure after step 2" in failure_reason(failed.value)
    assert [row["step"] for row in read_metrics_log(log)] == [1, 2]

    outcome = fit_trial(spec, model_path=model_path, callbacks=[metrics_log(log)], **common)  # same name: resume
    history = read_metrics_log(log)
    assert [row["step"] for row in history] == [1, 2, 3, 4]
    assert [row["train/resumed_from"] for row in history] == [0, 0, 2, 2]
    assert outcome.metrics["step"] == 4
    # the curve continues exactly where the uninterrupted run went (same data, masks, dropout, optimizer)
    for mine, ref in zip(history, ref_history):
        for key in ("train/loss", "train/mlm_loss", "train/unc3", "train/nc3", "train/lr", "train/nc3_classes"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), (mine["step"], key)
    assert history[2]["train/mlm_loss"] != pytest.approx(ref_history[0]["train/mlm_loss"], rel=1e-3)


def test_runs_sharing_a_train_run_equal_their_own_runs_and_resume_where_they_stopped(
        reference, fit, ray_session, model_path, data_root, tmp_path):
    """fit_runs: two specs trained one after another by the same workers. Run 0 is the reference
    run; run 1 (another seed and alpha) fails after its step-2 checkpoint, and the same call again
    skips run 0 and resumes run 1 at step 2. Every train/* value of both runs equals the run trained
    alone, and both final checkpoints are kept (Ray deletes the rest beyond two)."""
    import torch
    from ray.train import TrainingFailedError

    from ncsearch.models import load_mlm
    from ncsearch.train import build_trainer, fit_runs
    from ncsearch.training import metrics_log, read_metrics_log

    spec, ref_outcome, ref_history = reference
    other = make_spec(**{**RESUME, "nc3.alpha": 3.0, "train.seed": 11})
    _, other_history = fit(other, name="other-alone")
    log = tmp_path / "runs.jsonl"
    common = dict(data_root=data_root, storage_path=tmp_path / "runs", name="two-runs")
    trainer = build_trainer(spec, model_path=model_path, callbacks=[metrics_log(log)], **common,
                            runs=[{"spec": spec.to_dict()}, {"spec": other.to_dict(), "fail_after_step": 2}])
    with pytest.raises(TrainingFailedError):
        trainer.fit()
    first = read_metrics_log(log)
    assert [(row["run"], row["step"]) for row in first] == [(0, 1), (0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]
    assert [row.get("checkpoint", "").rsplit("/", 1)[-1] for row in first if row.get("checkpoint")] == [
        "run0_checkpoint_000002", "run0_checkpoint_000004", "run1_checkpoint_000002"]

    outcomes = fit_runs([spec, other], model_path=model_path, callbacks=[metrics_log(log)], **common)
    resumed = read_metrics_log(log)[len(first):]
    assert [(row["run"], row["step"], row["train/resumed_from"]) for row in resumed] == [(1, 3, 2), (1, 4, 2)]
    runs = {0: first[:4], 1: first[4:] + resumed}
    for index, alone in ((0, ref_history), (1, other_history)):
        assert len(runs[index]) == len(alone) == 4
        for mine, ref in zip(runs[index], alone):
            for key in ("train/loss", "train/mlm_loss", "train/unc3", "train/nc3", "train/lr", "train/nc3_classes"):
                assert mine[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), (index, mine["step"], key)
    assert other_history[0]["train/mlm_loss"] != pytest.approx(ref_history[0]["train/mlm_loss"], rel=1e-3)

    assert [o.checkpoint_dir.name for o in outcomes] == ["run0_checkpoint_000004", "run1_checkpoint_000004"]
    assert [o.metrics["step"] for o in outcomes] == [4, 4] and [o.metrics["run"] for o in outcomes] == [0, 1]
    assert outcomes[1].metrics["train/loss"] == pytest.approx(other_history[-1]["train/loss"], rel=1e-5)
    assert sorted(p.name for p in outcomes[0].checkpoint_dir.parent.glob("run*_checkpoint_*")) == [
        "run0_checkpoint_000004", "run1_checkpoint_000002", "run1_checkpoint_000004"]
    trained, _ = load_mlm(str(outcomes[0].model_dir))
    alone, _ = load_mlm(str(ref_outcome.model_dir))
    torch.testing.assert_close(trained.get_input_embeddings().weight, alone.get_input_embeddings().weight,
                               rtol=1e-5, atol=1e-6)


def test_fit_runs_refuses_runs_that_need_different_workers(tmp_path, data_root):
    from ncsearch.errors import ConfigError
    from ncsearch.train import fit_runs

    with pytest.raises(ConfigError, match="same model and resources"):
        fit_runs([make_spec(), make_spec(**{"resources.workers_per_trial": 2})], data_root=data_root,
                 storage_path=tmp_path, name="mixed", model_path="unused")


def test_two_workers_see_the_same_nc3_statistics_as_one(fit):
    # no dropout, so a worker's features do not depend on how the batch is split
    common = {"baseline": "dropout", "baseline_options.dropout": {"hidden_dropout": 0.0, "attention_dropout": 0.0}}
    common.update({"nc3.alpha": 10.0, "train.steps": 1, "train.checkpoint_every": 1})
    _, one = fit(make_spec(**common), name="one-worker")
    _, two = fit(make_spec(**common, **{"resources.workers_per_trial": 2}), name="two-workers")
    for key in ("train/unc3", "train/nc3", "train/nc3_classes", "train/mlm_loss", "train/loss"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-5), key
    assert one[0]["train/nc3_classes"] >= 2


def test_a_non_finite_loss_fails_the_trial_with_its_reason(fit):
    spec = make_spec(**{"nc3.alpha": 1e39})  # alpha * UNC3 overflows float32
    with pytest.raises(TrialError, match=r"^non-finite loss at step 1: loss=inf \(mlm_loss=[0-9.]+, unc3=0\.\d+"):
        fit(spec, name="diverges")


def test_fit_trial_refuses_an_open_spec(tmp_path, data_root):
    from ncsearch.errors import ConfigError
    from ncsearch.train import fit_trial

    spec = make_spec(**{"nc3.alpha": {"loguniform": [0.1, 10.0]}})
    with pytest.raises(ConfigError, match="still searched: nc3.alpha"):
        fit_trial(spec, data_root=data_root, storage_path=tmp_path, name="open")


def test_fit_trial_refuses_a_batch_smaller_than_the_workers(tmp_path, data_root):
    from ncsearch.errors import ConfigError
    from ncsearch.train import fit_trial

    spec = make_spec(**{"train.batch_size": 1, "resources.workers_per_trial": 2})
    with pytest.raises(ConfigError, match=r"train.batch_size 1 is the global batch .* resources.workers_per_trial \(2\)"):
        fit_trial(spec, data_root=data_root, storage_path=tmp_path, name="small", model_path="unused")


def test_bf16_precision_trains_close_to_fp32_but_not_bitwise(reference, fit):
    """train.precision bf16 runs the forward under autocast: the same run to within bf16 rounding,
    and measurably not the fp32 arithmetic (so the option really took effect)."""
    spec, _, fp32_history = reference
    bf16 = spec.model_copy(update={"train": spec.train.model_copy(update={"precision": "bf16"})})
    outcome, history = fit(bf16, name="bf16")
    check_run(outcome, history, bf16)
    fp32_loss = [row["train/mlm_loss"] for row in fp32_history]
    bf16_loss = [row["train/mlm_loss"] for row in history]
    assert bf16_loss == pytest.approx(fp32_loss, rel=0.05)
    assert bf16_loss != fp32_loss
    assert {row["train/bf16"] for row in history} == {1.0} and {row["train/bf16"] for row in fp32_history} == {0.0}


def test_precision_is_auto_fp32_or_bf16():
    from ncsearch.errors import ConfigError

    assert make_spec().train.precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        make_spec(**{"train.precision": "fp8"})


def _actor_classes() -> Counter:
    """How many actors of each class this Ray instance has had (dead ones included)."""
    import ray

    return Counter(actor["ActorClassName"] for actor in ray._private.state.actors().values())


def test_a_trial_starts_no_ray_train_helper_actors_and_no_torch_it_does_not_use(
        ray_session, model_path, data_root, tmp_path, monkeypatch):
    """The lean trainer (training/_lean_trainer.py) and set_train_env: a run on a local Ray instance,
    which has no dashboard, starts its controller, worker and synchronization actor, and not the
    DatasetManager, PlacementGroupCleaner and PreemptionWatcher processes Ray Train V2 adds. On one
    CPU worker its controller never imports torch: it unpickles the backend config and the run's
    callbacks (here `MetricsLog`, from the same package as a search's `TrialReport`) and relays every
    report without it; and the search's callback module itself imports no torch."""
    import subprocess
    import sys

    from ray.train import UserCallback

    from ncsearch.search import set_train_env
    from ncsearch.train import fit_trial
    from ncsearch.training import metrics_log
    from ncsearch.training._lean_trainer import state_api_reachable

    for key in ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"):
        monkeypatch.delenv(key, raising=False)  # restored after the test
    set_train_env("ray://head:10001")  # a cluster may be drained by its autoscaler: watcher stays on
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in os.environ
    set_train_env(None)  # a local instance: off
    assert os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    assert not state_api_reachable()

    seen = tmp_path / "controller_modules.txt"

    class ControllerModules(UserCallback):  # defined here: pickled by value, so it imports nothing itself
        def after_report(self, run_context, metrics, checkpoint) -> None:
            with open(seen, "a", encoding="utf-8") as handle:
                handle.write(f"{'torch' in sys.modules} {'ncsearch.training._callbacks' in sys.modules}\n")

    before = _actor_classes()
    fit_trial(make_spec(), data_root=data_root, storage_path=tmp_path / "runs", name="lean", model_path=model_path,
              callbacks=[metrics_log(tmp_path / "log.jsonl"), ControllerModules()])
    started = _actor_classes() - before
    assert started["TrainController"] == 1 and started["RayTrainWorker"] == 1, started
    assert started["SynchronizationActor"] == 1, started
    for unused in ("DatasetManager", "PlacementGroupCleaner", "PreemptionWatcher"):
        assert started[unused] == 0, started
    lines = seen.read_text().splitlines()
    assert lines and set(lines) == {"False True"}, lines

    probe = ("import os, sys; os.environ['RAY_TRAIN_V2_ENABLED'] = '1'; import ncsearch.training._tune_report; "
             "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"


@pytest.mark.parametrize("workers", [1, 2])
def test_inside_an_actor_the_train_controller_runs_in_the_calling_process(ray_session, model_path, data_root,
                                                                          tmp_path, workers):
    """training/_lean_trainer.py: `fit()` called as a search's trial calls it, inside a Ray actor,
    starts no TrainController actor. Ray's controller runs in the calling process: the run's
    callbacks run there, the workers and their synchronization actor start as usual, and the run
    trains and checkpoints as it does from a driver (two workers: TorchTrainer's process group)."""
    import ray
    from ray.train import UserCallback

    from ncsearch.train import fit_trial
    from ncsearch.training import metrics_log, read_metrics_log

    seen, log = tmp_path / "controller_pids.txt", tmp_path / "log.jsonl"
    spec = make_spec(**{"resources.workers_per_trial": workers})

    class ControllerProcess(UserCallback):  # defined here: pickled by value
        def after_report(self, run_context, metrics, checkpoint) -> None:
            with open(seen, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()}\n")

    @ray.remote(num_cpus=0)
    class Trial:
        def fit(self) -> tuple[int, str]:
            outcome = fit_trial(spec, data_root=data_root, storage_path=tmp_path / "runs", name="in-actor",
                                model_path=model_path, callbacks=[metrics_log(log), ControllerProcess()])
            return os.getpid(), outcome.checkpoint_uri

    before = _actor_classes()
    # as in a search on a local instance (`set_train_env`): no preemption watcher
    trial = Trial.options(runtime_env={"env_vars": {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}}).remote()
    trial_pid, checkpoint = ray.get(trial.fit.remote())
    ray.kill(trial)
    started = {name.rsplit(".", 1)[-1]: count for name, count in (_actor_classes() - before).items()
               if name != "_AutoscalingCoordinatorActor"}  # Ray Train's one per cluster, made by the first run
    assert started == {"Trial": 1, "RayTrainWorker": workers, "SynchronizationActor": 1}, started
    assert checkpoint.endswith("checkpoint_000002"), checkpoint
    pids = seen.read_text().split()
    assert len(pids) == spec.train.steps and set(pids) == {str(trial_pid)}, (pids, trial_pid)
    assert [row["step"] for row in read_metrics_log(log)] == [1, 2]


def test_the_lean_trainer_keeps_the_placement_group_cleaner_where_it_can_work(ray_session, monkeypatch):
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from ncsearch.training import _lean_trainer

    def kinds(trainer_cls: type) -> list[str]:
        trainer = trainer_cls(lambda config: None, scaling_config=ScalingConfig(num_workers=1))
        return sorted(type(callback).__name__ for callback in trainer._create_default_callbacks())

    default = kinds(TorchTrainer)
    assert DatasetsCallback.__name__ in default and PlacementGroupCleanerCallback.__name__ in default
    without_data = [name for name in default if name != DatasetsCallback.__name__]
    for lean in (_lean_trainer.lean_trainer_class(), _lean_trainer.lean_single_worker_trainer_class()):
        monkeypatch.setattr(_lean_trainer, "state_api_reachable", lambda: False)  # a local instance
        assert kinds(lean) == [name for name in without_data if name != PlacementGroupCleanerCallback.__name__]
        monkeypatch.setattr(_lean_trainer, "state_api_reachable", lambda: True)  # a cluster with the dashboard
        assert kinds(lean) == without_data


def test_the_training_package_exports_every_name_it_lists_lazily():
    from ncsearch import training

    assert sorted(training.__all__) == sorted(training._SOURCES)
    for name in training.__all__:
        assert getattr(training, name) is getattr(importlib.import_module(f"ncsearch.training.{training._SOURCES[name]}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        training.no_such_name  # noqa: B018


def test_only_a_run_on_one_cpu_worker_goes_without_the_torch_backend(ray_session):
    """training/_lean_trainer.py: the torch backend (process group, GPU device) stays wherever a run
    has two workers or a GPU."""
    from ray.train import BackendConfig
    from ray.train.torch import TorchConfig

    from ncsearch.train import build_trainer

    def backend(**values) -> BackendConfig:
        spec = make_spec(**values)
        return build_trainer(spec, data_root=".", storage_path="/tmp/unused", name="x", model_path="m").backend_config

    assert type(backend()) is BackendConfig
    two = backend(**{"resources.workers_per_trial": 2})
    assert isinstance(two, TorchConfig) and two.backend == "gloo"
    gpu = backend(**{"resources.gpus_per_worker": 1})
    assert isinstance(gpu, TorchConfig) and gpu.backend == "nccl"
