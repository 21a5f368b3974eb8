"""The in-order buffer of a search's MLflow writes (ncsearch/_tracking_buffer.py), against a fake client
whose server can be switched off: no call is dropped or reordered, a run created during an outage
gets its id on replay, reads wait for the buffered writes, and the outage is counted.
The drill with a real `mlflow server` is tests/test_search_tracking_outage.py."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import requests
from mlflow.exceptions import MlflowException

from ncsearch._tracking_buffer import PendingRun, TrackingWriter, is_unreachable


class FakeClient:
    def __init__(self) -> None:
        self.up = True
        self.calls: list[tuple] = []
        self.created = 0
        self.lock = threading.Lock()

    def _server(self, *call: object) -> None:
        if not self.up:
            try:
                raise requests.exceptions.ConnectionError("Connection refused")
            except requests.exceptions.ConnectionError:
                raise MlflowException("API request failed with exception ... Connection refused") from None
        if call and call[1] == "bad":
            raise MlflowException("INVALID_PARAMETER_VALUE: changed param")
        if call:
            with self.lock:
                self.calls.append(call)

    def create_run(self, experiment_id: str, **kwargs: object) -> SimpleNamespace:
        self._server("create_run", experiment_id, kwargs.get("tags"))
        self.created += 1
        return SimpleNamespace(info=SimpleNamespace(run_id=f"run{self.created}"))

    def log_batch(self, run_id: str, **kwargs: object) -> None:
        self._server("log_batch", run_id, kwargs.get("metrics"))

    def get_run(self, run_id: str) -> tuple:
        self._server()
        return tuple(self.calls)


def test_an_outage_buffers_writes_in_order_and_replays_them():
    client = FakeClient()
    echoed: list[str] = []
    writer = TrackingWriter(client, echo=echoed.append, backoff_s=(0.05, 0.2))
    writer.write("log_batch", "run0", metrics=[1])
    client.up = False
    writer.write("log_batch", "run0", metrics=[2])  # fails: the outage starts here
    created: list[str] = []
    pending = writer.create_run("exp", tags={"mlflow.parentRunId": "run0"}, on_created=created.append)
    assert isinstance(pending, PendingRun)
    writer.write("log_batch", pending, metrics=[3])
    writer.write("log_batch", "bad", metrics=[4])  # refused for good on replay: counted as lost
    writer.write("log_batch", "run0", metrics=[5])
    assert writer.outages.down and not writer.flush(0.3)
    assert client.calls == [("log_batch", "run0", [1])]
    time.sleep(0.3)
    client.up = True
    assert writer.flush(5)
    assert client.calls == [("log_batch", "run0", [1]), ("log_batch", "run0", [2]),
                            ("create_run", "exp", {"mlflow.parentRunId": "run0"}),
                            ("log_batch", "run1", [3]), ("log_batch", "run0", [5])]
    assert created == ["run1"] and str(pending) == "run1"
    outages = writer.outages
    assert not outages.down and len(outages.periods) == 1 and outages.seconds >= 0.5
    assert (outages.buffered, outages.replayed) == (5, 4)
    assert len(outages.lost) == 1 and "INVALID_PARAMETER_VALUE" in outages.lost[0]
    assert outages.text().startswith("MLflow tracking server unreachable for ") and ", 1 lost (first: log_batch('bad')" in outages.text()
    assert echoed[0].startswith("MLflow tracking server unreachable (") and "reachable again after" in echoed[1]
    writer.write("log_batch", "run0", metrics=[6])  # the server is back: straight through
    assert client.calls[-1] == ("log_batch", "run0", [6]) and outages.buffered == 5


def test_reads_wait_for_buffered_writes_and_other_errors_still_raise():
    client = FakeClient()
    writer = TrackingWriter(client, echo=lambda _: None, backoff_s=(0.05, 0.1))
    client.up = False
    writer.write("log_batch", "run0", metrics=[1])
    threading.Timer(0.3, lambda: setattr(client, "up", True)).start()
    assert writer.read(lambda: client.get_run("run0"), timeout=10) == (("log_batch", "run0", [1]),)
    with pytest.raises(MlflowException, match="INVALID_PARAMETER_VALUE"):
        writer.write("log_batch", "bad", metrics=[2])  # not an outage: the caller hears of it at once
    client.up = False
    with pytest.raises(MlflowException):
        writer.read(lambda: client.get_run("run0"), timeout=0.2)  # still down after the timeout


def test_unreachable_means_a_connection_problem():
    try:
        try:
            raise requests.exceptions.ReadTimeout("read timed out")
        except requests.exceptions.ReadTimeout:
            raise MlflowException("API request failed") from None
    except MlflowException as err:
        wrapped = err
    assert is_unreachable(wrapped)  # MLflow raises inside `except`: the cause is its __context__
    assert not is_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST"))
