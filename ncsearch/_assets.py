"""The adapted model and the data root, for cluster nodes that do not have them.

The search driver resolves both on its own node (`ensure_model` adapts the model into the cache; the
data root is the benchmark mirror). On one machine, or on a cluster whose nodes mount the same folders
(NFS), every Train worker finds them at the same paths. A node that does not have them receives them
through Ray's object store instead: the driver puts each folder once, as an uncompressed tar, and a
worker whose copy is missing or different unpacks it into its own cache (`<cache>/shipped/<digest>`),
once per node, atomically. A folder is "the same" when its files have the same relative names and
sizes (`folder_digest`), which is cheap to check on every trial.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ShippedFolder", "folder_digest"]


def folder_digest(folder: str | Path) -> str:
    """A fingerprint of a folder's files: every relative path and size, sorted (no contents read)."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ShippedFolder:
    """A folder of the driver's node (`path`, `digest`), with a copy in Ray's object store (`ref`)."""

    path: str
    digest: str
    ref: Any

    @classmethod
    def put(cls, folder: str | Path) -> ShippedFolder:
        """Put `folder` into the object store (inside a Ray driver). Symlinks are followed."""
        import ray

        root = Path(folder).resolve()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", dereference=True) as archive:
            archive.add(str(root), arcname=".")
        return cls(str(root), folder_digest(root), ray.put(buffer.getvalue()))

    def local_path(self, cache: Path | None = None) -> str:
        """This folder on the current node: its own path when that holds the same files, else a copy
        unpacked from the object store into `cache` (default: ncsearch's cache folder)."""
        if Path(self.path).is_dir() and folder_digest(self.path) == self.digest:
            return self.path
        from ncsearch.paths import cache_dir

        target = (cache or cache_dir()) / "shipped" / self.digest
        if target.is_dir():
            return str(target)
        import ray

        payload = ray.get(self.ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.digest}-", dir=target.parent))
        try:
            with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as archive:
                archive.extractall(scratch, filter="data")
            os.replace(scratch, target)  # atomic: a concurrent worker either sees all of it or unpacks its own
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return str(target)
