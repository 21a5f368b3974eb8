"""Writing a file so that no reader ever sees half of it.

Reports, evaluation folders, tracking state and command outputs are read by other processes (the
MLflow UI, a resumed driver, `ncsearch compare`) possibly while they are written: the data goes to a
temporary file in the same folder, which then replaces the target in one `os.replace`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path`, creating its folder; atomic on one filesystem."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
