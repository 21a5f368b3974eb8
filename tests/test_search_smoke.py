"""`ncsearch run search_spaces/smoke.yaml` for real: Ray Tune + Optuna + Ray Train V2 + MLflow SQLite.

One module-scoped search (2 trials); every test reads what it left behind: the MLflow store, the
Optuna study, the run directory and the `ncsearch pareto` command's view of it.
"""

from __future__ import annotations

import math
import time

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest_search import SMOKE, run

OBJECTIVES = ["stereoset/gender/icat", "perplexity/pppl"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    storage = tmp_path_factory.mktemp("smoke-storage")
    start = time.monotonic()
    proc = run("run", str(SMOKE), "--storage", str(storage))
    wall = time.monotonic() - start
    print(f"\nsmoke search wall time: {wall:.0f}s\n{proc.stdout}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = storage / "smoke"
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    return {"proc": proc, "run_dir": run_dir, "client": client, "wall": wall}


def test_prints_the_run_directory_first_and_a_summary(smoke):
    lines = smoke["proc"].stdout.splitlines()
    assert lines[0] == f"run directory: {smoke['run_dir']}"
    assert "Pareto front:" in smoke["proc"].stdout
    assert "2 finished, 0 failed of 2 trials" in smoke["proc"].stdout


def test_one_parent_run_with_pareto_artifacts(smoke):
    client = smoke["client"]
    exp = client.get_experiment_by_name("smoke")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["ncsearch.version"]
    assert math.isfinite(parent.data.metrics["pareto/hypervolume"]) and parent.data.metrics["pareto/hypervolume"] >= 0
    assert parent.data.metrics["trials/finished"] == 2
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")}
    assert names == {"pareto/pareto.csv", "pareto/all_trials.csv", "pareto/pareto.png", "pareto/pareto.html"}
    assert {"search_space.yaml", "spec.yaml"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_one_child_run_per_trial_with_params_and_metrics(smoke):
    client = smoke["client"]
    exp = client.get_experiment_by_name("smoke")
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'parent'")[0]
    children = client.search_runs([exp.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.params["nc3.alpha"] in {"0.0", "10.0"}  # the searched value, resolved
        assert child.data.params["train.steps"] == "4" and child.data.params["model"] == "minilm-l6"
        for metric in OBJECTIVES:
            assert math.isfinite(child.data.metrics[metric])
        assert 0 <= child.data.metrics["stereoset/gender/icat"] <= 100
        assert child.data.metrics["perplexity/pppl"] > 1
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")]
        assert steps == [2, 4]  # report_every 2, steps 4
        assert client.get_metric_history(child.info.run_id, "train/unc3")
        evals = {a.path for a in client.list_artifacts(child.info.run_id, "eval")}
        assert "eval/metrics.json" in evals and "eval/stereoset" in evals


def test_optuna_study_persisted_in_the_run_directory(smoke):
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke['run_dir'] / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    assert all(len(t.values) == 2 for t in complete)


def test_pareto_files_and_command_agree(smoke, tmp_path):
    run_dir = smoke["run_dir"]
    front = pd.read_csv(run_dir / "pareto" / "pareto.csv")
    every = pd.read_csv(run_dir / "pareto" / "all_trials.csv")
    assert len(every) == 2 and 1 <= len(front) <= 2
    out = tmp_path / "front.csv"
    proc = run("pareto", str(run_dir), "--csv", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr
    again = pd.read_csv(out)
    assert sorted(again["trial"]) == sorted(front["trial"])
    for metric in OBJECTIVES:
        assert sorted(again[metric]) == pytest.approx(sorted(front[metric]))
    assert "hypervolume" in proc.stdout
