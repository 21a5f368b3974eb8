"""A search's MLflow writes, buffered while the tracking server is unreachable, replayed in order.

A search logs to MLflow from its driver (`ncsearch.tracking`). When a write fails because the server
cannot be reached (connection refused or reset, a timeout, retries of 5xx answers exhausted), the
search does not stop and nothing is dropped: that call and every later write wait in one in-order
queue while a background thread retries the oldest with exponential backoff (1 s doubling to 8 s).
When the server answers again, the queue is replayed in order and writes go straight through again.
A run created during an outage gets a `PendingRun` id that later writes refer to and that the replay
resolves. Reads (and so anything that must see earlier writes) first wait for the queue to drain.

Brief failures are MLflow's own business: `ncsearch run` sets MLflow's HTTP retries to 2 quick ones
(`MLFLOW_HTTP_REQUEST_MAX_RETRIES` etc., unless set already), instead of its default of 7 retries over
about 4 minutes that would block the search in one call and hide the outage.

`Outages` counts what happened (time unreachable, calls buffered, replayed, lost: a buffered call
the server refused for another reason on replay) for the search's summary and exit code.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MLFLOW_HTTP_DEFAULTS", "Outages", "PendingRun", "TrackingWriter", "is_unreachable", "writer_for"]

#: MLflow's own HTTP retry settings in a search driver (`setdefault`: the environment wins).
MLFLOW_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
#: Backoff of the retries of the oldest buffered call: 1, 2, 4, 8, 8, ... seconds.
BACKOFF_S = (1.0, 8.0)


def is_unreachable(error: BaseException) -> bool:
    """Whether `error` (an MlflowException, or what it wraps) says the server could not be reached."""
    import requests

    kinds = (requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.RetryError)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, kinds):
            return True
        current = current.__cause__ or current.__context__
    return False


class PendingRun:
    """The id of a run whose creation is buffered; `str()` gives it once the replay has created it."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def __str__(self) -> str:
        if self.run_id is None:
            raise RuntimeError("run not created yet (its creation is buffered)")
        return self.run_id

    def __repr__(self) -> str:
        return f"PendingRun({self.run_id or '...'})"


def _resolve(value: Any) -> Any:
    if isinstance(value, PendingRun):
        return str(value)
    if isinstance(value, dict):
        return {k: _resolve(v) for k, v in value.items()}
    return value


@dataclass
class _Call:
    method: str
    args: tuple
    kwargs: dict
    on_done: Callable[[Any], None] | None = None

    def run(self, client: Any) -> Any:
        result = getattr(client, self.method)(*map(_resolve, self.args), **{k: _resolve(v) for k, v in self.kwargs.items()})
        if self.on_done is not None:
            self.on_done(result)
        return result

    def describe(self) -> str:
        return f"{self.method}({', '.join(map(repr, self.args[:1]))})"


@dataclass
class Outages:
    """What the tracking server's outages cost: see the module docstring."""

    periods: list[list[float]] = field(default_factory=list)  # [start, end] (time.monotonic; end None: still down)
    buffered: int = 0
    replayed: int = 0
    lost: list[str] = field(default_factory=list)  # "call: reason"

    @property
    def seconds(self) -> float:
        now = time.monotonic()
        return sum((end if end is not None else now) - start for start, end in self.periods)

    @property
    def down(self) -> bool:
        return bool(self.periods) and self.periods[-1][1] is None

    def text(self) -> str:
        """One line for the search's summary ("" when the server never went away)."""
        if not self.periods:
            return ""
        n = len(self.periods)
        line = (f"MLflow tracking server unreachable for {self.seconds:.0f} s ({n} outage{'s' if n != 1 else ''}); "
                f"{self.buffered} calls buffered, {self.replayed} replayed")
        if self.lost:
            return line + f", {len(self.lost)} lost (first: {self.lost[0]})"
        return line + (", none lost" if not self.down else f", {self.buffered - self.replayed} still waiting")


class TrackingWriter:
    """The in-order MLflow writes of one tracking URI in this process (see the module docstring).

    Writes come from one thread (the search driver's, where the Tune callbacks run); the replay runs
    in a background thread that exists only while calls are buffered.
    """

    def __init__(self, client: Any, *, echo: Callable[[str], None] | None = None,
                 backoff_s: tuple[float, float] = BACKOFF_S):
        self.client = client
        self.echo = echo or _progress
        self.backoff_s = backoff_s
        self.outages = Outages()
        self._queue: deque[_Call] = deque()
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None

    # ----- writes ------------------------------------------------------------------------------------

    def write(self, method: str, *args: Any, on_done: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
        """`client.<method>(*args, **kwargs)` now, or in order after the calls already buffered."""
        self._submit(_Call(method, args, kwargs, on_done))

    def create_run(self, *args: Any, on_created: Callable[[str], None] | None = None, **kwargs: Any) -> str | PendingRun:
        """`client.create_run(...)`'s run id; a `PendingRun` when the creation had to be buffered.
        `on_created(run_id)` is called once the run exists (at once, or on replay)."""
        pending = PendingRun()

        def done(run: Any) -> None:
            pending.run_id = run.info.run_id
            if on_created is not None:
                on_created(pending.run_id)

        self._submit(_Call("create_run", args, kwargs, done))
        return pending.run_id if pending.run_id is not None else pending

    def _submit(self, call: _Call) -> None:
        with self._lock:
            if self._queue:
                self._buffer(call)
                return
        try:
            call.run(self.client)
        except Exception as err:
            if not is_unreachable(err):
                raise
            with self._lock:
                self._begin_outage(err)
                self._buffer(call)

    def _buffer(self, call: _Call) -> None:
        self._queue.append(call)
        self.outages.buffered += 1
        if self._thread is None:
            self._thread = threading.Thread(target=self._replay, name="ncsearch-mlflow-replay", daemon=True)
            self._thread.start()

    def _begin_outage(self, err: BaseException) -> None:
        if not self.outages.down:
            self.outages.periods.append([time.monotonic(), None])
            first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
            self.echo(f"MLflow tracking server unreachable ({first}); buffering tracking calls, retrying with backoff")

    def _end_outage(self) -> None:
        if self.outages.down:
            period = self.outages.periods[-1]
            period[1] = time.monotonic()
            self.echo(f"MLflow tracking server reachable again after {period[1] - period[0]:.0f} s; "
                      f"replaying {len(self._queue)} buffered calls")

    def _replay(self) -> None:
        delay = self.backoff_s[0]
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    self._lock.notify_all()
                    return
                call = self._queue[0]
            try:
                call.run(self.client)
            except Exception as err:  # noqa: BLE001 - whatever a call raises, the replay goes on
                if is_unreachable(err):
                    with self._lock:
                        self._begin_outage(err)
                    time.sleep(delay)
                    delay = min(2 * delay, self.backoff_s[1])
                    continue
                with self._lock:  # refused for good (e.g. an invalid value): keep going with the rest
                    self._end_outage()
                    self.outages.lost.append(f"{call.describe()}: {str(err).splitlines()[0][:300] if str(err) else type(err).__name__}")
                    self._queue.popleft()
                continue
            with self._lock:
                self._end_outage()
                self._queue.popleft()
                self.outages.replayed += 1
            delay = self.backoff_s[0]

    # ----- reads and the end -----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every buffered call has been replayed (True) or `timeout` seconds pass (False)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._queue, timeout=timeout)

    def read(self, fn: Callable[[], Any], *, timeout: float | None = None) -> Any:
        """`fn()` (a read of the server) once the buffered writes are in; retried with backoff while
        the server is unreachable, up to `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.flush(timeout):
            raise TimeoutError(f"MLflow tracking server unreachable: {self.outages.text()}")
        delay = self.backoff_s[0]
        while True:
            try:
                result = fn()
            except Exception as err:
                if not is_unreachable(err) or (deadline is not None and time.monotonic() + delay > deadline):
                    raise
                with self._lock:
                    self._begin_outage(err)
                time.sleep(delay)
                delay = min(2 * delay, self.backoff_s[1])
                continue
            with self._lock:
                self._end_outage()
            return result


_WRITERS: dict[str, TrackingWriter] = {}
_WRITERS_LOCK = threading.Lock()


def writer_for(tracking_uri: str, client_factory: Callable[[], Any]) -> TrackingWriter:
    """The one writer of `tracking_uri` in this process (the search's tracker and its Tune callback
    share it, so their writes stay in one order)."""
    with _WRITERS_LOCK:
        writer = _WRITERS.get(tracking_uri)
        if writer is None:
            writer = _WRITERS[tracking_uri] = TrackingWriter(client_factory())
        return writer


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)
