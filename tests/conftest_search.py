"""Helpers for the search tests: running the `ncsearch` command and an MLflow server for real.

Every process started here gets its own session (process group) and the whole group is stopped at
teardown: `ncsearch run` starts a local Ray cluster and `mlflow server` 3.x starts helper processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE = REPO / "search_spaces" / "smoke.yaml"


def ncsearch(*args: str) -> list[str]:
    return [str(BIN / "ncsearch"), *args]


def env() -> dict[str, str]:
    """The test session's environment (conftest sets the cache, offline mode, short adaptation)."""
    out = dict(os.environ)
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def run(*args: str, timeout: float = 900, extra_env: dict[str, str] | None = None,
        cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run `ncsearch ARGS` in `cwd` to the end in its own process group (with `extra_env` added to the
    environment); stop the group afterwards."""
    proc = subprocess.Popen(ncsearch(*args), cwd=cwd, env={**env(), **(extra_env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Stop everything left in the process group that `proc` leads (Ray/MLflow helpers included)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, *, timeout: float = 180, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """Start a real `mlflow server` on 127.0.0.1:`port` over the SQLite store and artifact folder in
    `folder` (created, or reused: a restart sees what was there), in its own process group; it logs
    to `folder`/server.log. Returns once it answers."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "server.log", "a") as log:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=folder, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
    except BaseException:
        stop_mlflow_server(proc)
        raise
    return proc


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    """Stop a server of `start_mlflow_server`: its whole process group (`mlflow server` 3.x starts helpers)."""
    kill_group(proc, signal.SIGTERM)
    kill_group(proc)


@contextlib.contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (SQLite store, proxied artifacts); yields its URL."""
    port = free_port()
    proc = start_mlflow_server(folder, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(proc)
