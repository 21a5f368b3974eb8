"""Where ncsearch keeps things on disk: the cache (adapted models, staged data) and run directories."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]


def cache_dir() -> Path:
    """`$NCSEARCH_CACHE_DIR`, else `~/.cache/ncsearch`. Created on first use."""
    root = Path(os.environ.get("NCSEARCH_CACHE_DIR") or Path.home() / ".cache" / "ncsearch").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
