"""One search per run directory at a time: an advisory lock held for the life of the `ncsearch run` process.

Two drivers on one run directory would write the same Tune state, Optuna study and MLflow runs. The
lock is `fcntl.flock` on `<run dir>/ncsearch.lock`, whose text is the holder's PID and host. The
kernel releases a flock when its process dies, however it dies (SIGKILL included), so a lock file left
by a dead driver is simply taken over (and said so); a live holder makes the second run stop with one
line naming its PID. The descriptor is not inherited by Ray's processes (Python opens files
non-inheritable), so a driver's lock ends with the driver itself.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ncsearch.errors import UserInputError

__all__ = ["LOCK_FILE", "RunLock"]

LOCK_FILE = "ncsearch.lock"


class RunLock:
    """The lock of run directory `root` (not taken until `acquire`)."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> str | None:
        """Take the lock (the folder must exist). Returns a note when a dead process's lock was taken
        over; raises UserInputError (exit 2) naming the holder when a live process has it."""
        if self._fd is not None:
            return None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise UserInputError(
                f"{self.path.parent}: another ncsearch run is using this run directory ({holder or 'holder unknown'}); "
                "wait for it to end, or choose another --storage or name"
            ) from None
        previous = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return f"took over the lock of a run that ended without releasing it ({previous})" if previous else None

    def release(self) -> None:
        """Let go: the file is emptied (a clean end), then closing the descriptor drops the flock."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _read(fd: int) -> str:
    return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
