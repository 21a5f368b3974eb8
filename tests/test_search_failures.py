"""A trial that fails for real is retried `search.max_failures` times, then recorded as failed with
its reason (MLflow FAILED + tag, Optuna FAIL, the summary), and the search goes on.

The failure is a genuine one from the training code: a random vocabulary larger than the eligible
tokens of the tokenizer is refused by ncsearch.vocab inside the Ray Train worker.
Part of the default suite (about 70 s): a crashed trial must never stop a search.
"""

from __future__ import annotations

import optuna
from mlflow import MlflowClient

from conftest_search import SMOKE, run


def test_failed_trial_is_retried_then_recorded_and_the_search_goes_on(tmp_path):
    proc = run("run", str(SMOKE), "--storage", str(tmp_path), "--set", "search.replicates=1",
               "--set", "search.control=false", "--set", "search.max_failures=1",
               "--set", "nc3.alpha={grid: [1.0]}", "--set", "nc3.vocab.source=random",
               "--set", "nc3.vocab.size={grid: [50, 1000000]}")
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]  # one trial finished: a result
    assert "1 runs finished, 1 failed (1 configurations)" in out
    assert out.count("crashed, retrying") == 1 and out.count("FAILED (") == 1
    assert "eligible random tokens" in out  # the reason, in the progress line
    assert "size=1000000: every seed failed" in out

    run_dir = tmp_path / "smoke"
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    children = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'seed'")
    by_size = {c.data.params["nc3.vocab.size"]: c for c in children}
    assert set(by_size) == {"50", "1000000"}
    failed, ok = by_size["1000000"], by_size["50"]
    assert failed.info.status == "FAILED" and ok.info.status == "FINISHED"
    assert "exceeds" in failed.data.tags["ncsearch.failure_reason"]
    assert failed.data.tags["ncsearch.attempts"] == "2"  # the first run plus one retry
    assert "error.txt" in {a.path for a in client.list_artifacts(failed.info.run_id)}
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'parent'")[0]
    assert parent.data.metrics["runs/failed"] == 1 and parent.data.metrics["pareto/front_size"] == 1
    failed_group = [g for g in client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'configuration'")
                    if g.info.status == "FAILED"]
    assert len(failed_group) == 1

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "FAIL"]
