"""Fault injection for failure drills and their tests: a real SIGKILL of a real Ray Train worker.

`NCSEARCH_FAULT_KILL_AT_STEP=k` makes rank 0 of a trial's Ray Train worker group kill its own process
with SIGKILL (no exception, no cleanup, as the kernel's OOM killer or a lost node would) right after
its step-k checkpoint has been registered by the Train controller, so that the worker group restarted
by Ray Train's `FailureConfig` resumes from that checkpoint. It fires only in a worker group that did
not itself start from a checkpoint, so the restarted group does not kill again.

`NCSEARCH_FAULT_KILL_MARKER=path` (a file on the workers' machine) makes it fire once in all: the
worker that creates the file is killed, every later one (the other trials of the search) runs on.

`NCSEARCH_FAULT_KILL_IN_RUN=i`: in a Train run of several runs (`_run_sequence.py`), only run i's
step-k checkpoint fires it (default: the first run that reaches one).

`ncsearch run` forwards all three to its Ray workers. They are for drills and tests only.
"""

from __future__ import annotations

import logging
import os
import signal
import time

__all__ = ["KILL_AT_STEP_ENV", "KILL_IN_RUN_ENV", "KILL_MARKER_ENV", "kill_after_checkpoint"]

KILL_AT_STEP_ENV = "NCSEARCH_FAULT_KILL_AT_STEP"
KILL_MARKER_ENV = "NCSEARCH_FAULT_KILL_MARKER"
KILL_IN_RUN_ENV = "NCSEARCH_FAULT_KILL_IN_RUN"

_log = logging.getLogger(__name__)


def kill_after_checkpoint(step: int, checkpoint_dir_name: str, *, run_index: int = 0, timeout_s: float = 120.0) -> None:
    """SIGKILL this Ray Train worker if `NCSEARCH_FAULT_KILL_AT_STEP` names `step` (and
    `NCSEARCH_FAULT_KILL_IN_RUN`, when set, `run_index`; see the module docstring); call on rank 0
    right after reporting the checkpoint `checkpoint_dir_name`."""
    wanted = os.environ.get(KILL_AT_STEP_ENV, "").strip()
    if not wanted or int(wanted) != step:
        return
    in_run = os.environ.get(KILL_IN_RUN_ENV, "").strip()
    if in_run and int(in_run) != run_index:
        return
    marker = os.environ.get(KILL_MARKER_ENV, "").strip()
    if marker:
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # another worker of the search took the fault
        os.write(fd, f"pid {os.getpid()} killed after {checkpoint_dir_name}\n".encode())
        os.close(fd)
    registered = _wait_until_registered(checkpoint_dir_name, timeout_s)
    _log.warning("fault injection: SIGKILL of this worker (pid %d) after %s (%s)", os.getpid(), checkpoint_dir_name,
                 "registered" if registered else f"not registered within {timeout_s:g} s")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_until_registered(checkpoint_dir_name: str, timeout_s: float) -> bool:
    """Wait until the Train controller's checkpoint manager lists the checkpoint in its snapshot (it
    writes the snapshot while registering a report), i.e. until a restart would resume from it."""
    import ray.train

    storage = ray.train.get_context().get_storage()
    fs, path = storage.storage_filesystem, storage.checkpoint_manager_snapshot_path
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with fs.open_input_stream(path) as stream:
                if checkpoint_dir_name in stream.read().decode("utf-8", errors="replace"):
                    return True
        except (FileNotFoundError, OSError):
            pass
        time.sleep(0.05)
    return False
