"""One search per run directory: a second `ncsearch run` on a folder in use is refused with the holder's PID,
and a lock left by a dead process is taken over (`ncsearch._run_lock`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest_search import SMOKE, env, ncsearch

from ncsearch._run_lock import LOCK_FILE, RunLock
from ncsearch.errors import UserInputError

_HOLD = """
import sys, time
from ncsearch._run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture()
def holder(tmp_path):
    """A live process holding the lock of tmp_path/runs/smoke (a real other process, as a running driver)."""
    folder = tmp_path / "runs" / "smoke"
    folder.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield folder, proc
    proc.kill()
    proc.wait(timeout=30)


def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(holder):
    folder, proc = holder
    with pytest.raises(UserInputError) as info:
        RunLock(folder).acquire()
    assert f"pid {proc.pid} on" in str(info.value) and "another ncsearch run" in str(info.value)
    proc.send_signal(signal.SIGKILL)  # dies holding it: the file still names it, the kernel freed the lock
    proc.wait(timeout=30)
    assert f"pid {proc.pid}" in (folder / LOCK_FILE).read_text()
    lock = RunLock(folder)
    note = lock.acquire()
    assert note is not None and f"pid {proc.pid}" in note
    assert f"pid {os.getpid()}" in (folder / LOCK_FILE).read_text()
    lock.release()
    again = RunLock(folder)
    assert again.acquire() is None  # a clean release leaves nothing to take over
    again.release()


def test_a_second_search_on_a_folder_in_use_stops_in_one_line_before_ray(holder, tmp_path):
    folder, proc = holder
    before = sorted(p.name for p in folder.iterdir())
    second = subprocess.run(ncsearch("run", str(SMOKE), "--storage", str(tmp_path / "runs"), "--resume"),
                            env=env(), capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 2, second.stdout + second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"pid {proc.pid}" in lines[0] and str(folder) in lines[0], second.stderr
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written into the folder
