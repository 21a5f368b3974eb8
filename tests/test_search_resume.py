"""`ncsearch run --resume` after the driver was SIGKILLed mid-search.

The search has 2 configurations and a seed-matched control, one seed each (3 training runs, one at a
time). The first run is killed once its first training run has finished; the resumed run must finish
the search without running that one again and without training a second control.
Part of the default suite (about 150 s).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import optuna
from mlflow import MlflowClient

from conftest_search import REPO, SMOKE, env, kill_group, ncsearch, run


ARGS = ["--set", "search.replicates=1", "--set", "search.max_concurrent=1"]


def test_resume_after_sigkill(tmp_path):
    args = ["run", str(SMOKE), "--storage", str(tmp_path), *ARGS]
    proc = subprocess.Popen(ncsearch(*args), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    first_output = []
    finished_id = None
    try:
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            first_output.append(line)
            match = re.search(r"\(trial (\w+)\) finished \(1/3 runs", line)
            if match:
                finished_id = match.group(1)
                break
            assert time.monotonic() < deadline, "".join(first_output)
        assert finished_id, "".join(first_output)
        time.sleep(5)  # Tune saves its experiment state every second (TUNE_GLOBAL_CHECKPOINT_S=1)
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: as if its machine session died
        proc.wait(timeout=60)
    finally:
        kill_group(proc)  # then the local Ray cluster it had started
    assert proc.returncode == -signal.SIGKILL

    resumed = run(*args, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming the search" in resumed.stdout
    assert f"(trial {finished_id}) started" not in resumed.stdout
    assert "3 runs finished, 0 failed (2 configurations)" in resumed.stdout

    run_dir = tmp_path / "smoke"
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'parent'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    seeds = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'seed'")
    assert len(seeds) == 3 and all(c.info.status == "FINISHED" for c in seeds)
    assert sum(c.data.tags["ncsearch.kind"] == "control" for c in seeds) == 1  # not retrained on --resume
    first = [c for c in seeds if c.data.tags["ncsearch.trial_id"] == finished_id]
    assert len(first) == 1 and first[0].data.tags["ncsearch.attempts"] == "1"
    assert [m.step for m in client.get_metric_history(first[0].info.run_id, "train/loss")] == [2, 4]
    groups = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'configuration'")
    assert len(groups) == 2 and all(f"delta/{'stereoset/gender/icat'}" in g.data.metrics for g in groups)

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 2  # one per configuration
