"""tracking.py against a real MLflow SQLite store: the parent/child layout of DESIGN.md §8."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from ncsearch.config import parse_spec
from ncsearch.tracking import SearchTracker, default_tracking_uri, failure_reason, flatten_params

SPEC = {
    "name": "trk",
    "description": "tracking test",
    "nc3": {"alpha": {"loguniform": [0.1, 10.0]}},
    "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
    "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
}


def test_flatten_params_keeps_distributions_whole():
    flat = flatten_params(parse_spec(SPEC).to_dict())
    assert flat["nc3.alpha"] == '{"loguniform": [0.1, 10.0]}'
    assert flat["train.steps"] == "100"
    assert flat["eval.benchmarks"] == '["stereoset", "perplexity"]'


def test_failure_reason_takes_the_last_error_line():
    text = (
        "Failure # 1 (occurred at 2026-01-01)\n"
        "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
        "ray.exceptions.RayTaskError(TrialError): ray::trial_driver()\n"
        "ncsearch.errors.TrialError: non-finite loss at step 3: loss=nan\n"
    )
    assert failure_reason(text) == "TrialError: non-finite loss at step 3: loss=nan"
    assert failure_reason("something odd\n") == "something odd"


@pytest.fixture()
def tracked(tmp_path):
    spec = parse_spec(SPEC)
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text("name: trk\n")
    tracker = SearchTracker(tmp_path / "run", experiment="trk")
    parent = tracker.start_parent(spec, yaml_path=yaml_file, ray_address=None)
    return spec, tracker, parent


def _start(tracker, spec, trial, group, alpha, replicate=0, kind="trial"):
    run = spec.resolve({"nc3.alpha": alpha}).for_replicate(replicate)
    role = "control" if kind == "control" else "configuration"
    tracker.start_group(group, role=role, label=f"alpha={alpha}", values={"nc3.alpha": alpha},
                        params=flatten_params(run.to_dict()), control="ctl" if kind == "trial" else None)
    return tracker.start_trial(trial, group=group, kind=kind, replicate=replicate, seed=run.train.seed,
                               params=flatten_params(run.to_dict()))


def test_search_configuration_seed_layout(tracked, tmp_path):
    spec, tracker, parent = tracked
    assert tracker.tracking_uri == default_tracking_uri(tmp_path / "run")
    ok = _start(tracker, spec, "t1", "c001", 0.5)
    bad = _start(tracker, spec, "t2", "c002", 5.0)
    again = _start(tracker, spec, "t3", "c001", 0.5, replicate=1)
    tracker.log_step("t1", {"train/loss": 3.0, "train/unc3": 0.2}, step=10)
    tracker.log_step("t1", {"train/loss": 2.5, "train/unc3": float("nan")}, step=20)  # NaN is skipped
    details = tmp_path / "eval"
    (details / "stereoset").mkdir(parents=True)
    (details / "stereoset" / "items.json").write_text("[]")
    tracker.finish_trial("t1", {"stereoset/gender/icat": 61.0, "stereoset/gender/icat.ci_low": 50.0,
                                "perplexity/pppl": 25.0}, artifact_dir=details)
    tracker.fail_trial("t2", "TrialError: non-finite loss at step 3", error_text="Traceback...\nTrialError: x")
    tracker.finish_group("c001", {"stereoset/gender/icat": 61.5, "stereoset/gender/icat.seed_sd": 0.7})

    client = MlflowClient(tracker.tracking_uri)
    exp = client.get_experiment_by_name("trk")
    assert exp.artifact_location == (tmp_path / "run" / "mlartifacts").as_uri()
    p = client.get_run(parent)
    assert p.data.tags["ncsearch.role"] == "parent"
    assert len(p.data.tags["ncsearch.git_sha"]) >= 7
    assert p.data.tags["ncsearch.ray_address"] == "local"
    assert json.loads(p.data.tags["ncsearch.objectives"])[1] == {"metric": "perplexity/pppl", "mode": "min"}
    assert {a.path for a in client.list_artifacts(parent)} == {"search_space.yaml", "spec.yaml"}

    group = client.get_run(tracker.group_run_id("c001"))
    assert group.data.tags["ncsearch.role"] == "configuration" and group.data.tags["mlflow.parentRunId"] == parent
    assert group.info.run_name == "alpha=0.5" and json.loads(group.data.tags["ncsearch.values"]) == {"nc3.alpha": 0.5}
    assert group.data.metrics["stereoset/gender/icat.seed_sd"] == 0.7 and group.info.status == "FINISHED"
    assert "train.seed" not in group.data.params
    r1, r2, r3 = client.get_run(ok), client.get_run(bad), client.get_run(again)
    assert r1.data.tags["mlflow.parentRunId"] == r3.data.tags["mlflow.parentRunId"] == group.info.run_id
    assert (r1.info.run_name, r3.info.run_name) == ("seed 0", "seed 1")
    assert r1.data.tags["ncsearch.role"] == "seed" and r3.data.tags["ncsearch.replicate"] == "1"
    assert r1.data.params["train.seed"] == "0" and r3.data.params["train.seed"] == "1"
    assert r1.info.status == "FINISHED" and r2.info.status == "FAILED"
    assert r2.data.tags["ncsearch.failure_reason"] == "TrialError: non-finite loss at step 3"
    assert [(m.step, m.value) for m in client.get_metric_history(ok, "train/loss")] == [(10, 3.0), (20, 2.5)]
    assert len(client.get_metric_history(ok, "train/unc3")) == 1
    assert r1.data.metrics["stereoset/gender/icat"] == 61.0 and r1.data.metrics["stereoset/gender/icat.ci_low"] == 50.0
    assert [a.path for a in client.list_artifacts(ok, "eval/stereoset")] == ["eval/stereoset/items.json"]
    assert "error.txt" in {a.path for a in client.list_artifacts(bad)}

    report = tmp_path / "report"
    report.mkdir()
    (report / "report.md").write_text("# r")
    tracker.finish_parent(metrics={"pareto/hypervolume": 1.5}, artifacts={"report": report}, tags={"ncsearch.verdict": "v"})
    p = client.get_run(parent)
    assert p.info.status == "FINISHED" and p.data.metrics["pareto/hypervolume"] == 1.5
    assert p.data.tags["ncsearch.verdict"] == "v"
    assert {a.path for a in client.list_artifacts(parent, "report")} == {"report/report.md"}


def test_resume_reopens_the_same_runs(tracked, tmp_path):
    spec, tracker, parent = tracked
    child = _start(tracker, spec, "t1", "c001", 0.5)
    # a new driver process: everything comes back from tracking.json
    again = SearchTracker(tmp_path / "run")
    assert again.tracking_uri == tracker.tracking_uri and again.experiment == "trk"
    assert again.start_parent(spec, yaml_path=None, ray_address="auto", resume=True) == parent
    assert _start(again, spec, "t1", "c001", 0.5) == child
    client = MlflowClient(tracker.tracking_uri)
    assert client.get_run(child).data.tags["ncsearch.attempts"] == "2"
    assert client.get_run(parent).data.tags["ncsearch.ray_address"] == "auto"
    assert len(client.search_runs([client.get_experiment_by_name("trk").experiment_id])) == 3
