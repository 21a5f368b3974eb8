"""A smoke search logging to a real `mlflow server` on 127.0.0.1, and `ncsearch ui` serving a run.

Part of the default suite (about 105 s): each starts real servers and the first runs a full smoke search.
That search trains and scores every trial on two Ray Train workers (DDP, sharded evaluation), the
only whole search in the suite that does: a trial on two workers once failed at evaluation while every
one-worker test passed (rank 1's scratch model folder was empty).
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest_search import REPO, SMOKE, env, free_port, kill_group, mlflow_server, ncsearch, run, wait_http


def test_smoke_search_on_two_workers_per_trial_against_an_mlflow_server(tmp_path):
    from ncsearch.training._checkpoint import read_meta

    with mlflow_server(tmp_path / "server") as url:
        proc = run("run", str(SMOKE), "--storage", str(tmp_path / "runs"), "--tracking-uri", url,
                   "--set", "search.replicates=1", "--set", "search.control=false",
                   "--set", "resources.workers_per_trial=2")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        # each trial trained as a two-worker process group, and its final checkpoint was scored
        finals = sorted((tmp_path / "runs" / "smoke" / "trials").glob("*/train/checkpoint_000004"))
        assert len(finals) == 2 and all(read_meta(f)["world_size"] == 2 for f in finals), finals
        assert all((f / "eval").is_dir() for f in finals)
        client = MlflowClient(url)
        exp = client.get_experiment_by_name("smoke")
        parents = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'parent'")
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        parent = parents[0].info.run_id
        children = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
        assert len(children) == 2 and {c.data.tags["ncsearch.role"] for c in children} == {"configuration"}
        assert all(c.info.status == "FINISHED" and "perplexity/pppl_sampled" in c.data.metrics for c in children)
        seeds = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'seed'")
        assert len(seeds) == 2  # per-example tables came back from the server for the report:
        assert client.list_artifacts(seeds[0].info.run_id, "eval/stereoset")
        assert client.download_artifacts(parent, "report/report.html", str(tmp_path / "dl"))
        # artifacts went through the server's proxy into its artifact store
        png = client.download_artifacts(parent, "pareto/pareto.png", str(tmp_path / "dl"))
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert list((tmp_path / "server" / "artifacts").rglob("pareto.png"))
        # nothing was written to a local store in the run directory
        assert not (tmp_path / "runs" / "smoke" / "mlflow.db").exists()
        # the front can be read back from the server alone
        shown = run("pareto", "smoke", "--tracking-uri", url, timeout=300)
        assert shown.returncode == 0, shown.stderr
        assert "hypervolume" in shown.stdout and "2 runs, 2 finished" in shown.stdout


def test_ui_serves_the_run_directory_store(tmp_path):
    from ncsearch.config import load_spec
    from ncsearch.tracking import SearchTracker

    spec = load_spec(SMOKE)
    tracker = SearchTracker(tmp_path / "smoke", experiment="smoke")
    tracker.start_parent(spec, yaml_path=SMOKE, ray_address=None)
    port = free_port()
    proc = subprocess.Popen(ncsearch("ui", str(tmp_path / "smoke"), "--port", str(port)), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().startswith("serving sqlite:///")
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc=proc)
        with urllib.request.urlopen(f"{url}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=smoke") as r:
            assert json.load(r)["experiment"]["name"] == "smoke"
        proc.send_signal(signal.SIGTERM)  # ncsearch ui stops the server's whole process group
        proc.wait(timeout=60)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=5)
    finally:
        kill_group(proc)
