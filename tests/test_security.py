"""Security defaults (issue 16, drill 8).

- The server ncsearch starts (`ncsearch ui`) listens on 127.0.0.1 only.
- A checkpoint's own Python code (`auto_map`) never runs unless the user asks: `--trust-remote-code`
  on eval/collapse/compare, `trust_remote_code: true` in a search space; every Auto* load in ncsearch
  tells transformers explicitly, so it never prompts either.
- Credentials in a tracking URI or in the environment reach no param, tag, metric, artifact, run-folder
  file or output: a real search logs through an authenticating proxy to a real `mlflow server` with
  `http://user:PASSWORD@host`, and everything it left behind is scanned.
"""

from __future__ import annotations

import ast
import base64
import http.client
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from conftest import SHARED_DATA
from conftest_search import REPO, SMOKE, env, free_port, kill_group, mlflow_server, ncsearch, run

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


# --- credentials never recorded ------------------------------------------------------------------------

USER, PASSWORD, ENV_PASSWORD = "ncuser", "s3cret-uri-PW", "s3cret-env-PW2"


class _AuthProxy(ThreadingHTTPServer):
    """An HTTP proxy in front of `upstream` that answers 401 unless a request carries Basic auth
    USER:PASSWORD, the way a tracking server behind authentication does; it counts both."""

    daemon_threads = True

    def __init__(self, upstream: str):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.authorized = self.refused = 0
        super().__init__(("127.0.0.1", 0), _ProxyHandler)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _AuthProxy

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if not size:
                    return b"".join(chunks)
                chunks.append(chunk)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _relay(self) -> None:
        body = self._body()
        if self.headers.get("Authorization") != self.server.expected:
            self.server.refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.authorized += 1
        skip = {"host", "authorization", "connection", "transfer-encoding", "content-length"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=300)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _relay

    def log_message(self, *args: object) -> None:
        pass


def _secrets() -> list[bytes]:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode())
    return [PASSWORD.encode(), ENV_PASSWORD.encode(), basic, base64.b64encode(f"{USER}:{ENV_PASSWORD}".encode())]


def _leaks(blob: bytes) -> list[str]:
    return [s.decode() for s in _secrets() if s in blob]


def test_the_leak_scan_finds_a_planted_secret():
    assert _leaks(f"x http://{USER}:{PASSWORD}@host y".encode()) == [PASSWORD]
    assert _leaks(f"MLFLOW_TRACKING_PASSWORD={ENV_PASSWORD}".encode()) == [ENV_PASSWORD]
    assert _leaks(b"Authorization: " + base64.b64encode(f"{USER}:{PASSWORD}".encode())) != []


def test_credentials_in_the_tracking_uri_and_environment_are_never_recorded(tmp_path, models):
    from mlflow import MlflowClient

    with mlflow_server(tmp_path / "server") as upstream:
        proxy = _AuthProxy(upstream)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        try:
            host = f"127.0.0.1:{proxy.server_address[1]}"
            uri = f"http://{USER}:{PASSWORD}@{host}"
            # The environment's password is wrong for this server: the URI's must be the one used.
            extra = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": ENV_PASSWORD}
            runs = tmp_path / "runs"
            search = run("run", str(SMOKE), "--storage", str(runs), "--tracking-uri", uri,
                         "--set", f"model={models['mlm']}", "--set", "nc3.alpha={grid: [1.0]}",
                         "--set", "search.replicates=1", "--set", "search.control=false",
                         cwd=tmp_path, extra_env=extra, timeout=900)
            assert search.returncode == 0, search.stdout[-3000:] + search.stderr[-3000:]
            pareto = run("pareto", "smoke", "--tracking-uri", uri, cwd=tmp_path, extra_env=extra)
            assert pareto.returncode == 0 and "hypervolume" in pareto.stdout, pareto.stderr[-3000:]
            report = run("report", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "report-out"),
                         "--resamples", "50", cwd=tmp_path, extra_env=extra)
            assert report.returncode == 0, report.stderr[-3000:]
        finally:
            proxy.shutdown()
            proxy.server_close()
        # Every request went through authenticated: the URI's credentials reached the server as auth.
        assert proxy.authorized > 20 and proxy.refused == 0, (proxy.authorized, proxy.refused)
        assert host in search.stdout  # the URI is shown, without its user info

        # What the tracking server holds, read through its API: params, tags, metrics, names, artifacts.
        client = MlflowClient(tracking_uri=upstream)
        records, artifacts = [], tmp_path / "downloaded"
        experiments = [e for e in client.search_experiments() if e.name == "smoke"]
        assert experiments
        all_runs = client.search_runs([e.experiment_id for e in experiments])
        assert len(all_runs) >= 3  # the search, its configuration and one seed
        (search_run_id,) = [r.info.run_id for r in all_runs if r.data.tags.get("ncsearch.role") == "parent"]
        for logged in all_runs:
            records += [logged.info.run_name or "", *logged.data.params, *logged.data.params.values(),
                        *logged.data.tags, *logged.data.tags.values(), *logged.data.metrics]
            if client.list_artifacts(logged.info.run_id):
                client.download_artifacts(logged.info.run_id, "", str(artifacts / logged.info.run_id))
        assert sum(len(r.data.params) for r in all_runs) > 20
        assert not _leaks("\n".join(map(str, records)).encode()), "a param, tag, metric or run name"

    # Every file left behind: downloaded artifacts, the server's store and artifact folder (and its
    # log), the run directory (tracking.json, spec.yaml, Tune's state, trials), the report folder.
    scanned = 0
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.is_symlink():
            leaked = _leaks(path.read_bytes())
            assert not leaked, f"{path} holds {leaked}"
            scanned += 1
    assert scanned > 30 and list(artifacts.rglob("metrics.json"))  # the scan saw the seed's evaluation
    (report_md,) = [p for p in artifacts.rglob("report.md") if p.parent.parent.name == search_run_id]
    assert host in report_md.read_text()  # ... and the report, which names the tracking URI
    assert host.encode() in (runs / "smoke" / "tracking.json").read_bytes()
    for proc in (search, pareto, report):
        assert not _leaks((proc.stdout + proc.stderr).encode()), proc.args
