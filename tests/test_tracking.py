"""tracking.py against a real MLflow SQLite store: the parent/child layout of DESIGN.md §8."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from ncsearch.config import parse_spec
from ncsearch.pareto import pareto_info, write_pareto_artifacts
from ncsearch.tracking import (
    SearchTracker,
    default_tracking_uri,
    failure_reason,
    flatten_params,
    load_trials,
    searched_keys,
)

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
    assert searched_keys(flat) == ["nc3.alpha"]


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


def test_parent_and_children_layout(tracked, tmp_path):
    spec, tracker, parent = tracked
    assert tracker.tracking_uri == default_tracking_uri(tmp_path / "run")
    ok = tracker.start_trial("t1", params=flatten_params(spec.resolve({"nc3.alpha": 0.5}).to_dict()))
    bad = tracker.start_trial("t2", params=flatten_params(spec.resolve({"nc3.alpha": 5.0}).to_dict()))
    tracker.log_step("t1", {"train/loss": 3.0, "train/unc3": 0.2}, step=10)
    tracker.log_step("t1", {"train/loss": 2.5, "train/unc3": float("nan")}, step=20)  # NaN is skipped
    details = tmp_path / "eval"
    (details / "stereoset").mkdir(parents=True)
    (details / "stereoset" / "items.json").write_text("[]")
    tracker.finish_trial("t1", {"stereoset/gender/icat": 61.0, "perplexity/pppl": 25.0}, artifact_dir=details)
    tracker.fail_trial("t2", "TrialError: non-finite loss at step 3", error_text="Traceback...\nTrialError: x")

    client = MlflowClient(tracker.tracking_uri)
    exp = client.get_experiment_by_name("trk")
    assert exp.artifact_location == (tmp_path / "run" / "mlartifacts").as_uri()
    p = client.get_run(parent)
    assert p.data.tags["ncsearch.role"] == "parent"
    assert len(p.data.tags["ncsearch.git_sha"]) >= 7
    assert p.data.tags["ncsearch.ray_address"] == "local"
    assert json.loads(p.data.tags["ncsearch.objectives"])[1] == {"metric": "perplexity/pppl", "mode": "min"}
    assert {a.path for a in client.list_artifacts(parent)} == {"search_space.yaml", "spec.yaml"}

    r1, r2 = client.get_run(ok), client.get_run(bad)
    assert r1.data.tags["mlflow.parentRunId"] == parent and r2.data.tags["mlflow.parentRunId"] == parent
    assert r1.info.status == "FINISHED" and r2.info.status == "FAILED"
    assert r2.data.tags["ncsearch.failure_reason"] == "TrialError: non-finite loss at step 3"
    assert r1.data.params["nc3.alpha"] == "0.5" and r2.data.params["nc3.alpha"] == "5.0"
    assert [(m.step, m.value) for m in client.get_metric_history(ok, "train/loss")] == [(10, 3.0), (20, 2.5)]
    assert len(client.get_metric_history(ok, "train/unc3")) == 1
    assert r1.data.metrics["stereoset/gender/icat"] == 61.0
    assert [a.path for a in client.list_artifacts(ok, "eval/stereoset")] == ["eval/stereoset/items.json"]
    assert "error.txt" in {a.path for a in client.list_artifacts(bad)}

    # the parent gets the Pareto artifacts and the hypervolume
    trials, objectives, parent_run = load_trials("trk", tracking_uri=tracker.tracking_uri)
    assert parent_run.info.run_id == parent
    assert objectives == [("stereoset/gender/icat", "max"), ("perplexity/pppl", "min")]
    assert sorted(trials["status"]) == ["FAILED", "FINISHED"]
    assert list(trials.loc[trials["trial"] == "t1", "param.nc3.alpha"]) == ["0.5"]
    assert list(trials.loc[trials["trial"] == "t2", "error"]) == ["TrialError: non-finite loss at step 3"]
    info = pareto_info(trials, objectives)
    out = write_pareto_artifacts(info, tmp_path / "pareto")
    tracker.finish_parent(info, tmp_path / "pareto", counts={"trials/finished": 1})
    p = client.get_run(parent)
    assert p.info.status == "FINISHED"
    assert p.data.metrics["pareto/front_size"] == 1.0
    assert "pareto/hypervolume" in p.data.metrics
    assert {a.path for a in client.list_artifacts(parent, "pareto")} == {f"pareto/{name}" for name in out}


def test_resume_reopens_the_same_runs(tracked, tmp_path):
    spec, tracker, parent = tracked
    child = tracker.start_trial("t1", params={"nc3.alpha": "0.5"})
    # a new driver process: everything comes back from tracking.json
    again = SearchTracker(tmp_path / "run")
    assert again.tracking_uri == tracker.tracking_uri and again.experiment == "trk"
    assert again.start_parent(spec, yaml_path=None, ray_address="auto", resume=True) == parent
    assert again.start_trial("t1", params={"nc3.alpha": "0.5"}) == child
    client = MlflowClient(tracker.tracking_uri)
    assert client.get_run(child).data.tags["ncsearch.attempts"] == "2"
    assert client.get_run(parent).data.tags["ncsearch.ray_address"] == "auto"
    assert len(client.search_runs([client.get_experiment_by_name("trk").experiment_id])) == 2
