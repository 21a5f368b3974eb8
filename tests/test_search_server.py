"""A smoke search logging to a real `mlflow server` on 127.0.0.1 through an authenticating proxy, and
`ncsearch ui` serving a run.

Part of the default suite (about 110 s): each starts real servers; the module's one search serves two
checks.
- The search trains and scores every trial on two Ray Train workers (DDP, sharded evaluation), the
  only whole search in the suite that does: a trial on two workers once failed at evaluation while
  every one-worker test passed (rank 1's scratch model folder was empty).
- It is also the security drill's credentials check (issue 16, drill 8): the tracking URI carries
  `http://user:PASSWORD@host` and the environment a wrong password, the proxy answers 401 to any
  request without the URI's credentials, and everything the search, `pareto` and `report` left behind
  (server store, artifacts, run folder, outputs) is scanned for them (tests/auth_proxy.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from auth_proxy import ENV_PASSWORD, PASSWORD, USER, AuthProxy, leaks
from conftest_search import REPO, SMOKE, env, free_port, kill_group, mlflow_server, ncsearch, run, wait_http


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The smoke search on two workers per trial, logged through the proxy; then `pareto` and
    `report` read it back through the proxy. The server stays up for the module's checks."""
    folder = tmp_path_factory.mktemp("server-search")
    with mlflow_server(folder / "server") as upstream:
        proxy = AuthProxy(upstream)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            host = f"127.0.0.1:{proxy.server_address[1]}"
            uri = f"http://{USER}:{PASSWORD}@{host}"
            # The environment's password is wrong for this server: the URI's must be the one used.
            creds = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": ENV_PASSWORD}
            search = run("run", str(SMOKE), "--storage", str(folder / "runs"), "--tracking-uri", uri,
                         "--set", "search.replicates=1", "--set", "search.control=false",
                         "--set", "resources.workers_per_trial=2", cwd=folder, extra_env=creds)
            assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
            pareto = run("pareto", "smoke", "--tracking-uri", uri, cwd=folder, extra_env=creds, timeout=300)
            assert pareto.returncode == 0, pareto.stderr[-3000:]
            report = run("report", "smoke", "--tracking-uri", uri, "--out", str(folder / "report-out"),
                         "--resamples", "50", cwd=folder, extra_env=creds, timeout=300)
            assert report.returncode == 0, report.stderr[-3000:]
        finally:
            proxy.shutdown()
            proxy.server_close()
        yield {"folder": folder, "upstream": upstream, "host": host, "proxy": proxy,
               "search": search, "pareto": pareto, "report": report}


def test_smoke_search_on_two_workers_per_trial_against_an_mlflow_server(served):
    from ncsearch.training._checkpoint import read_meta

    folder, url = served["folder"], served["upstream"]
    # each trial trained as a two-worker process group, and its final checkpoint was scored
    finals = sorted((folder / "runs" / "smoke" / "trials").glob("*/train/checkpoint_000004"))
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
    dl = folder / "dl"
    assert client.download_artifacts(parent, "report/report.html", str(dl))
    # artifacts went through the server's proxy into its artifact store
    png = client.download_artifacts(parent, "pareto/pareto.png", str(dl))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((folder / "server" / "artifacts").rglob("pareto.png"))
    # nothing was written to a local store in the run directory
    assert not (folder / "runs" / "smoke" / "mlflow.db").exists()
    # the front can be read back from the server alone
    assert "hypervolume" in served["pareto"].stdout and "2 runs, 2 finished" in served["pareto"].stdout


def test_credentials_in_the_tracking_uri_and_environment_are_never_recorded(served):
    folder, host, proxy, search = served["folder"], served["host"], served["proxy"], served["search"]
    # Every request went through authenticated: the URI's credentials reached the server as auth.
    assert proxy.authorized > 20 and proxy.refused == 0, (proxy.authorized, proxy.refused)
    assert host in search.stdout  # the URI is shown, without its user info

    # What the tracking server holds, read through its API: params, tags, metrics, names, artifacts.
    client = MlflowClient(tracking_uri=served["upstream"])
    records, artifacts = [], folder / "downloaded"
    experiments = [e for e in client.search_experiments() if e.name == "smoke"]
    assert experiments
    all_runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(all_runs) >= 3  # the search, its configurations and their seeds
    (search_run_id,) = [r.info.run_id for r in all_runs if r.data.tags.get("ncsearch.role") == "parent"]
    for logged in all_runs:
        records += [logged.info.run_name or "", *logged.data.params, *logged.data.params.values(),
                    *logged.data.tags, *logged.data.tags.values(), *logged.data.metrics]
        if client.list_artifacts(logged.info.run_id):
            client.download_artifacts(logged.info.run_id, "", str(artifacts / logged.info.run_id))
    assert sum(len(r.data.params) for r in all_runs) > 20
    assert not leaks("\n".join(map(str, records)).encode()), "a param, tag, metric or run name"

    # Every file left behind: downloaded artifacts, the server's store and artifact folder (and its
    # log), the run directory (tracking.json, spec.yaml, Tune's state, trials), the report folder.
    scanned = 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            leaked = leaks(path.read_bytes())
            assert not leaked, f"{path} holds {leaked}"
            scanned += 1
    assert scanned > 30 and list(artifacts.rglob("metrics.json"))  # the scan saw the seeds' evaluation
    (report_md,) = [p for p in artifacts.rglob("report.md") if p.parent.parent.name == search_run_id]
    assert host in report_md.read_text()  # ... and the report, which names the tracking URI
    assert host.encode() in (folder / "runs" / "smoke" / "tracking.json").read_bytes()
    for proc in (search, served["pareto"], served["report"]):
        assert not leaks((proc.stdout + proc.stderr).encode()), proc.args


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
