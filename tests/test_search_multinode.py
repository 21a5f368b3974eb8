"""A real two-node Ray cluster on one machine, and the smoke search run against it with `--address`.

The head and a second node are started with `ray start --block` (1 CPU each), each in its own session;
two trials run at once (smoke: max_concurrent 2) and each trial's one Train worker needs 1 CPU, so the
trials must use both nodes. The test checks that every trial reached MLflow, that the runs'
`ncsearch.node_id` tags name both nodes (each trial's rank-0 Train worker, which trained and scored it),
and that checkpoints and evaluation folders went through a storage URI (`trial_storage`). Part of the default suite (about 90 s on 2 shared cores).

This is what README.md's "Try it on one machine" block does by hand (there with `ray stop`, which
stops every Ray process of the user on the machine, other tests' clusters included: not used here).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_search import BIN, REPO, SMOKE, env, free_port, run
from mlflow import MlflowClient

ICAT, PPPL = "stereoset/gender/icat", "perplexity/pppl_sampled"

# Polls the cluster from a separate driver until both nodes are alive; prints their ids as JSON.
_WAIT_FOR_NODES = """
import json, sys, time
import ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[2])
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= 2 or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps([{"id": n["NodeID"], "ip": n["NodeManagerAddress"], "cpus": n["Resources"].get("CPU")} for n in alive]))
"""


def _session_pids(sid: int) -> list[int]:
    """Every process whose session is `sid`. Raylets start their workers in process groups of their
    own, but those stay in the session of the `ray start` that started the node."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


def _stop_node(proc: subprocess.Popen, *, grace: float = 20) -> None:
    """SIGTERM to `ray start --block` (it stops its node's processes), then SIGKILL whatever is left
    in its session. Only the processes this test started are touched, never other Ray clusters."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    for pid in _session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)


@pytest.fixture()
def two_nodes(tmp_path, monkeypatch) -> Iterator[dict]:
    """A head and a second node, 1 CPU each, on 127.0.0.1; yields {"address", "nodes", "env"}."""
    # Each node gets its own --temp-dir (Ray 2.x accepts one per node). It must be short: Ray puts
    # AF_UNIX sockets under <temp-dir>/session_<date>_<pid>/sockets/ and their paths may not exceed
    # 107 bytes, which pytest's tmp_path (/tmp/pytest-of-<user>/pytest-<n>/<test>0/...) would.
    root = Path(tempfile.mkdtemp(prefix="ncs-ray-"))
    # Token authentication, with a token of this test's own: `ray start --head` turns it on by itself
    # when ~/.ray/auth_token exists (any earlier local `ray.init()` writes one), but a node or a driver
    # that joins by an explicit address does not, and would be refused. So every process is told.
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    for key, value in auth.items():
        monkeypatch.setenv(key, value)  # conftest_search's env() (the ncsearch processes) reads os.environ
    # Trial processes are started by the raylets, so the nodes need Train V2 in their environment;
    # no draining on SIGTERM (Ray's default waits up to 30 s for a node to drain before stopping).
    node_env = {**env(), "RAY_TRAIN_V2_ENABLED": "1", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    port = free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    logs = contextlib.ExitStack()
    try:
        for name, args in (("head", ["--head", "--port", str(port), "--include-dashboard=false"]),
                           ("node", ["--address", address])):
            log = logs.enter_context((tmp_path / f"{name}.log").open("w"))
            procs.append(subprocess.Popen(
                [str(BIN / "ray"), "start", *args, "--temp-dir", str(root / name), *common,
                 # two nodes on one host: their dashboard agents cannot both take the default port
                 "--dashboard-agent-listen-port", str(free_port())],
                cwd=REPO, env=node_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        waited = subprocess.run([str(BIN / "python"), "-c", _WAIT_FOR_NODES, address, "120"], cwd=REPO,
                                env={**env(), **auth}, capture_output=True, text=True, timeout=300, check=False)
        assert waited.returncode == 0, waited.stderr[-3000:]
        nodes = json.loads(waited.stdout.strip().splitlines()[-1])
        logs_text = "".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in ("head", "node"))
        assert len(nodes) == 2 and all(n["cpus"] == 1 for n in nodes), f"{nodes}\n{logs_text}"
        yield {"address": address, "nodes": nodes}
    finally:
        for proc in reversed(procs):  # the second node first, then the head
            _stop_node(proc)
        logs.close()
        shutil.rmtree(root, ignore_errors=True)
        left = [pid for proc in procs for pid in _session_pids(proc.pid)]
        assert not left, f"Ray processes left behind: {left}"


def test_smoke_search_on_a_two_node_cluster(two_nodes, tmp_path):
    start = time.monotonic()
    # Trials keep checkpoints in a storage URI (no shared mount assumed): checkpoints and evaluation
    # folders go through Ray's storage path with pyarrow, and come back to the driver's node by copy.
    store = tmp_path / "bucket"
    proc = run("run", str(SMOKE), "--address", two_nodes["address"], "--storage", str(tmp_path / "runs"),
               "--set", "search.replicates=1", "--set", "search.control=false",
               "--set", f"trial_storage=file://{store}", timeout=600)
    print(f"\ntwo-node smoke search: {time.monotonic() - start:.0f}s; nodes {two_nodes['nodes']}\n{proc.stdout}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 runs finished, 0 failed (2 configurations)" in proc.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'smoke' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    seeds = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'seed'")
    assert len(seeds) == 2
    for seed in seeds:
        assert seed.info.status == "FINISHED", seed.data.tags
        assert {ICAT, PPPL} <= set(seed.data.metrics), seed.data.metrics.keys()
        assert seed.data.tags.get("ncsearch.node_ip"), seed.data.tags
    configurations = client.search_runs([exp.experiment_id], filter_string="tags.`ncsearch.role` = 'configuration'")
    assert len(configurations) == 2 and all(c.info.status == "FINISHED" and PPPL in c.data.metrics
                                            for c in configurations)
    node_ids = {n["id"] for n in two_nodes["nodes"]}
    used = {s.data.tags.get("ncsearch.node_id") for s in seeds}
    ips = {n["ip"] for n in two_nodes["nodes"]}
    assert {s.data.tags["ncsearch.node_ip"] for s in seeds} <= ips
    assert used == node_ids, f"trials ran on {used}, the cluster's nodes are {node_ids}"

    # the workers wrote each evaluation folder into the final checkpoint in the store; the driver's
    # node holds a copy (not a link), which MLflow holds as the run's eval/ artifacts
    for seed in seeds:
        trial_id = seed.data.tags["ncsearch.trial_id"]
        checkpoint = seed.data.tags["ncsearch.checkpoint"]
        assert checkpoint.startswith(f"file://{store}/smoke/trials/{trial_id}/"), checkpoint
        stored = Path(checkpoint.removeprefix("file://"))
        assert (stored / "model" / "config.json").is_file() and (stored / "eval" / "metrics.json").is_file()
        copy = tmp_path / "runs" / "smoke" / "trials" / trial_id / "eval"
        assert not copy.is_symlink() and json.loads((copy / "metrics.json").read_text())[ICAT] == seed.data.metrics[ICAT]
        assert "eval/metrics.json" in {a.path for a in client.list_artifacts(seed.info.run_id, "eval")}
