"""Tensors computed once per machine from a model and fixed data, then read from the cache.

Some baselines start every trial with the same expensive pass over the *original* model: ASE's EWC
Fisher (about a minute of one core on MiniLM-L6, the same for every trial of a search),
Fisher-low-rank's neutralisation masks (about 10 s, the same for every configuration at one seed) and
ADEPT's step-0 prototypes (30-70 s; the same for every trial with `tuning: full`, for every
configuration at one seed behind a fresh prefix).
`cached_tensors` computes such a result on first use and stores it under
`<cache>/<kind>/<key digest>.safetensors`; later trials read it.

- **Keyed by content.** The caller's key names everything the result depends on (the model's own
  tensors, `parameters_digest`; the sample's token ids; the options; the device type), so a changed
  model or sample can never read a stale entry.
- **Concurrent trials compute once.** The first holds a file lock while it computes; the others wait
  and then read its file. The file is written atomically.
- **Damage is repaired.** An entry that does not load, or whose names or shapes differ from the
  tensors the caller expects (`like`), is recomputed and replaced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["cache_path", "cached_tensors", "parameters_digest"]


def parameters_digest(model: Any) -> str:
    """sha256 over a model's state (every tensor's name, dtype, shape and bytes): the key of a result
    computed from these weights, whatever folder they were loaded from (about 0.2 s for MiniLM-L6)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_path(kind: str, key: dict[str, Any]) -> Path:
    """Where the entry of `kind` (a folder name) with this key (JSON-serialisable) is stored."""
    from ncsearch.paths import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / kind / f"{digest}.safetensors"


def cached_tensors(kind: str, key: dict[str, Any], compute: Callable[[], dict[str, Tensor]], *,
                   like: Mapping[str, Tensor], device: Any = "cpu") -> dict[str, Tensor]:
    """The tensors `compute()` returns for `key`, read from the cache (onto `device`) when a whole entry
    with the names and shapes of `like` is there, else computed, stored and returned as computed."""
    from filelock import FileLock
    from safetensors.torch import load_file, save

    from ncsearch._atomic import atomic_write

    path = cache_path(kind, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        try:
            stored = load_file(str(path), device=str(device))
        except Exception:  # noqa: BLE001 - absent (OSError) or damaged (safetensors' own error type)
            stored = {}
        if set(stored) == set(like) and all(stored[name].shape == tensor.shape for name, tensor in like.items()):
            return stored
        computed = compute()
        atomic_write(path, save({name: tensor.detach().contiguous().cpu() for name, tensor in computed.items()}))
        return computed
