"""A corpus's token ids, tokenized once per (tokenizer, corpus) on a machine and then read from the cache.

Why: every trial's worker setup tokenized the same 4,000 GAP training passages twice (for the MLM
chunks and for the vocabulary's token counts): about 2 s of CPU, or 6 s of wall time with two trials
sharing two cores, in every trial of a search, although the ids depend only on the tokenizer and the
text (bench/trial_cost.py's `fixed.worker_setup`). Concurrent trials may both tokenize on a miss;
the file is replaced atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["encode_corpus"]

_FORMAT = 1


def _cache_file(tokenizer: Any, texts: Sequence[str]) -> Path:
    from ncsearch.models import tokenizer_fingerprint
    from ncsearch.paths import cache_dir

    digest = hashlib.sha256()
    digest.update(f"{_FORMAT}\x1f{tokenizer_fingerprint(tokenizer)}\x1f{len(texts)}\x1f".encode())
    for text in texts:
        digest.update(text.encode("utf-8"))
        digest.update(b"\x1e")
    return cache_dir() / "tokenized" / f"{digest.hexdigest()[:24]}.npz"


def _read(path: Path, count: int) -> list[list[int]] | None:
    try:
        with np.load(path) as stored:
            offsets, ids = stored["offsets"], stored["ids"]
    except (OSError, ValueError, KeyError):
        return None
    if len(offsets) != count + 1:
        return None
    flat = ids.tolist()
    bounds = offsets.tolist()
    return [flat[bounds[i] : bounds[i + 1]] for i in range(count)]


def _write(path: Path, encoded: list[list[int]]) -> None:
    from ncsearch._atomic import atomic_write

    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(ids) for ids in encoded], out=offsets[1:])
    flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int64, count=int(offsets[-1]))
    buffer = io.BytesIO()
    np.savez(buffer, offsets=offsets, ids=flat)
    atomic_write(path, buffer.getvalue())


def encode_corpus(texts: Sequence[str], tokenizer: Any, *, cache: bool = True) -> list[list[int]]:
    """`tokenizer(texts, add_special_tokens=False)["input_ids"]` (no truncation), cached on disk when
    `cache` (an unwritable cache only costs the write)."""
    texts = list(texts)
    path = _cache_file(tokenizer, texts) if cache else None
    if path is not None:
        found = _read(path, len(texts))
        if found is not None:
            return found
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    encoded = [list(ids) for ids in encoded]
    if path is not None:
        try:
            _write(path, encoded)
        except OSError:
            pass  # a read-only or full cache: the ids are still right, only not kept
    return encoded
