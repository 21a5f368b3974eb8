"""Security defaults (issue 16, drill 8).

- The server ncsearch starts (`ncsearch ui`) listens on 127.0.0.1 only.
- A checkpoint's own Python code (`auto_map`) never runs unless the user asks: `--trust-remote-code`
  on eval/collapse/compare, `trust_remote_code: true` in a search space; every Auto* load in ncsearch
  tells transformers explicitly, so it never prompts either.
- Credentials in a tracking URI or in the environment reach no param, tag, metric, artifact, run-folder
  file or output: a real search logs through an authenticating proxy to a real `mlflow server` with
  `http://user:PASSWORD@host`, and everything it left behind is scanned. That search is the one of
  tests/test_search_server.py (one search serves both checks); the scan itself is checked here.
"""

from __future__ import annotations

import ast
import base64
import os
import signal
import subprocess
import time

import psutil
import pytest

from conftest import SHARED_DATA
from conftest_search import REPO, SMOKE, env, free_port, kill_group, ncsearch, run

from auth_proxy import ENV_PASSWORD, PASSWORD, USER, leaks
from bad_models import REMOTE_MARKER_ENV, build_bad_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_bad_models(tmp_path_factory.mktemp("models"))


# --- servers bind to 127.0.0.1 -------------------------------------------------------------------------


def _listening(pids: set[int], port: int) -> list[str]:
    return [c.laddr.ip for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid in pids]


def _other_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses."""
    import socket

    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def test_ncsearch_ui_listens_on_127_0_0_1_only(tmp_path):
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=store).search_experiments()  # creates the store
    port = free_port()
    proc = subprocess.Popen(ncsearch("ui", "--tracking-uri", store, "--port", str(port)), cwd=tmp_path, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server_groups: set[int] = set()  # `ncsearch ui` starts mlflow in a process group of its own
    try:
        deadline, addresses = time.monotonic() + 180, []
        while not addresses and time.monotonic() < deadline:
            assert proc.poll() is None, f"ncsearch ui exited with {proc.returncode}"
            children = psutil.Process(proc.pid).children(recursive=True)
            server_groups |= {os.getpgid(p.pid) for p in children if p.is_running()} - {proc.pid}
            addresses = _listening({proc.pid, *(p.pid for p in children)}, port)
            time.sleep(0.5)
        assert addresses, f"nothing listened on port {port} within 180 s"
        assert set(addresses) == {"127.0.0.1"}, addresses  # not 0.0.0.0, ::, or the machine's address
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        for address in _other_addresses():  # the port is not reachable from the network
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=5):
                pass
    finally:
        proc.send_signal(signal.SIGTERM)  # ncsearch ui stops the server's whole process group ...
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        kill_group(proc)
        for group in server_groups:  # ... and whatever it left is stopped here
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# --- trust_remote_code ---------------------------------------------------------------------------------


def test_every_auto_class_load_in_ncsearch_says_whether_to_trust_remote_code():
    """transformers prompts on a terminal (or fails after 15 s) when it is not told; `True` would run
    any checkpoint's code. Every Auto*.from_pretrained passes trust_remote_code, never a literal True."""
    calls = []
    for path in (REPO / "ncsearch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id.startswith("Auto")):
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                calls.append(where)
                given = {k.arg: k.value for k in node.keywords}
                assert "trust_remote_code" in given, f"{where}: {node.func.value.id}.from_pretrained without trust_remote_code"
                value = given["trust_remote_code"]
                assert not (isinstance(value, ast.Constant) and value.value is True), f"{where}: trust_remote_code=True"
    assert len(calls) >= 4, calls  # models.py (model, tokenizer, base tokenizer), compare, fisher_lowrank


def test_checkpoint_code_runs_only_with_the_flag(models, tmp_path):
    marker, modules = tmp_path / "marker.txt", tmp_path / "hf-modules"
    extra = {REMOTE_MARKER_ENV: str(marker), "HF_MODULES_CACHE": str(modules)}
    args = ["eval", str(models["remote"]), "--benchmarks", "perplexity", "--limit", "perplexity=2", "--resamples", "0",
            "--no-progress", "--data-dir", str(SHARED_DATA)]
    refused = run(*args, cwd=tmp_path, extra_env=extra)
    assert refused.returncode == 2, refused.stderr[-3000:]
    (line,) = refused.stderr.strip().splitlines()
    assert "ships its own Python code" in line and "--trust-remote-code" in line, line
    assert not marker.exists() and not modules.exists()  # not imported, not even copied
    trusted = run(*args, "--trust-remote-code", cwd=tmp_path, extra_env=extra)
    assert trusted.returncode == 0, trusted.stderr[-3000:]
    assert "perplexity/pppl" in trusted.stdout
    assert marker.read_text().count("remote code ran") >= 1  # the flag reached transformers


def test_the_search_space_key_is_what_lets_a_run_load_checkpoint_code(models, tmp_path):
    """`ncsearch train` checks the model before anything is written: by default it refuses the code;
    with trust_remote_code: true it loads the model (its code runs) and goes on to the next check, here
    a data root without GAP, so nothing trains."""
    no_gap = tmp_path / "data"
    no_gap.mkdir()
    for entry in SHARED_DATA.iterdir():
        if entry.name != "gap":
            (no_gap / entry.name).symlink_to(entry)
    marker = tmp_path / "marker.txt"
    extra = {REMOTE_MARKER_ENV: str(marker), "HF_MODULES_CACHE": str(tmp_path / "hf-modules")}
    args = ["train", str(SMOKE), "--set", "nc3.alpha=1.0", "--set", f"model={models['remote']}", "--data-dir", str(no_gap),
            "--out", str(tmp_path / "out")]
    refused = run(*args, cwd=tmp_path, extra_env=extra)
    assert refused.returncode == 2 and "--trust-remote-code" in refused.stderr, refused.stderr[-3000:]
    assert not marker.exists()
    trusted = run(*args, "--set", "trust_remote_code=true", cwd=tmp_path, extra_env=extra)
    assert trusted.returncode == 2, trusted.stderr[-3000:]
    (line,) = trusted.stderr.strip().splitlines()
    assert "gap/" in line and "--trust-remote-code" not in line, line
    assert marker.is_file()
    assert not (tmp_path / "out").exists()


# --- credentials never recorded (the search itself: tests/test_search_server.py) -------------------


def test_the_leak_scan_finds_a_planted_secret():
    assert leaks(f"x http://{USER}:{PASSWORD}@host y".encode()) == [PASSWORD]
    assert leaks(f"MLFLOW_TRACKING_PASSWORD={ENV_PASSWORD}".encode()) == [ENV_PASSWORD]
    assert leaks(b"Authorization: " + base64.b64encode(f"{USER}:{PASSWORD}".encode())) != []
