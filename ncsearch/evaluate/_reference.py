"""A reference model's exact pseudo-log-probabilities, computed once and cached: the control variate
of sampled pseudo-perplexity.

Why: sampled pseudo-perplexity (`positions: k`) spends one forward pass per scored token, and most of
its interval comes from the spread of single-token log-probabilities inside a passage, so scoring
fewer or more tokens per passage barely changes precision per second (bench/trial_cost.py). A
fine-tuned checkpoint's log-probability of a token is, however, almost the same as its base model's:
on the alpha.yaml trials their per-passage sums correlate at 0.997. The difference estimator of
survey sampling uses that. With every token's log-probability under a reference model R known
exactly (this module, once per model, passages and tokenizer), a checkpoint's passage sum is
estimated as

    S_p = R_p + (tokens_p / k) * sum over the k sampled tokens of (logprob_checkpoint - logprob_R),

which is unbiased for the checkpoint's exact sum over the same seeded design, and whose variance is
that of the *differences*: about 190x smaller in interval width squared on those trials, for the same
k forward passes of the checkpoint. The reference's own pass costs one forward per token of every
passage (about 15x a k = 4 trial's), paid once per model on a machine and then read from the cache.

The table is keyed by the reference model's weights, the tokenizer, the passages and the truncation
length, so a changed model or corpus can never reuse a stale table.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ReferenceTable", "reference_cache_path", "reference_table"]

#: Bumped whenever the way reference log-probabilities are computed or stored changes.
_FORMAT = 1


@dataclass(frozen=True)
class ReferenceTable:
    """Every scorable token's log-probability under the reference model, passage by passage:
    passage i owns `positions[offsets[i]:offsets[i + 1]]` and the matching `logprobs`."""

    offsets: np.ndarray
    positions: np.ndarray
    logprobs: np.ndarray

    @property
    def passages(self) -> int:
        return len(self.offsets) - 1

    def totals(self) -> np.ndarray:
        """Each passage's exact sum of log-probabilities under the reference."""
        return np.add.reduceat(self.logprobs, self.offsets[:-1]) if self.logprobs.size else np.zeros(self.passages)

    def at(self, passage: int, positions: Sequence[int]) -> np.ndarray:
        """The reference's log-probabilities of `passage` at these token positions."""
        start, stop = int(self.offsets[passage]), int(self.offsets[passage + 1])
        lookup = dict(zip(self.positions[start:stop].tolist(), self.logprobs[start:stop].tolist()))
        try:
            return np.asarray([lookup[int(p)] for p in positions], dtype=np.float64)
        except KeyError as err:
            raise ValueError(f"passage {passage}: position {err.args[0]} is not in the reference table") from None


def _weights_digest(model_dir: Path) -> str:
    """sha256 over the model folder's weight files (names and bytes), so another checkpoint under the
    same path never reads this one's table."""
    digest = hashlib.sha256()
    files = sorted(p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin") and p.is_file())
    if not files:
        raise ValueError(f"{model_dir} holds no weight files (*.safetensors, *.bin)")
    for path in files:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def reference_cache_path(model_dir: Path, tokenizer: Any, texts: Sequence[str], *, max_length: int) -> Path:
    """Where the table of this reference model, tokenizer, passages and truncation is cached."""
    from ncsearch.models import tokenizer_fingerprint
    from ncsearch.paths import cache_dir

    key = {
        "format": _FORMAT,
        "weights": _weights_digest(model_dir),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "passages": hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest(),
        "max_length": max_length,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / "pppl_reference" / f"{digest}.npz"


def _read(path: Path, passages: int) -> ReferenceTable | None:
    try:
        with np.load(path) as stored:
            table = ReferenceTable(stored["offsets"], stored["positions"], stored["logprobs"])
    except (OSError, ValueError, KeyError):
        return None  # absent, or a damaged file: recomputed and replaced
    return table if table.passages == passages else None


def _write(path: Path, table: ReferenceTable) -> None:
    """Atomically: a reader never sees a half-written table."""
    from ncsearch._atomic import atomic_write

    buffer = io.BytesIO()
    np.savez(buffer, offsets=table.offsets, positions=table.positions, logprobs=table.logprobs)
    atomic_write(path, buffer.getvalue())


def _compute(reference: str, texts: Sequence[str], tokenizer: Any, *, max_length: int, batch_size: int,
             fast_path: bool, device: Any) -> ReferenceTable:
    """Score every scorable token of every passage with the reference model (sharded over the
    trial's workers inside `shard_scoring`, like any benchmark)."""
    import torch

    from ncsearch.errors import UserInputError
    from ncsearch.evaluate._scoring import score_masked
    from ncsearch.evaluate.perplexity import pppl_requests
    from ncsearch.models import load_mlm, tokenizer_fingerprint

    model, reference_tokenizer = load_mlm(reference)
    if tokenizer_fingerprint(reference_tokenizer) != tokenizer_fingerprint(tokenizer):
        raise UserInputError(f"perplexity reference {reference!r} has another tokenizer than the scored model; "
                             "its log-probabilities are of other tokens (use the model the checkpoint was trained from)")
    model.to(device)
    requests, owners, _ = pppl_requests(texts, tokenizer, max_length=max_length, positions=None)
    device_type = torch.device(device).type
    # Always the plain fp32 arithmetic: the table is cached without a precision in its key.
    with torch.inference_mode(), torch.autocast(device_type=device_type, enabled=False):
        values = score_masked(model, requests, batch_size=batch_size, pad_id=tokenizer.pad_token_id or 0,
                              fast_path=fast_path)
    counts = np.bincount(np.asarray(owners, dtype=np.int64), minlength=len(texts))
    return ReferenceTable(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        positions=np.asarray([r.positions[0] for r in requests], dtype=np.int64),
        logprobs=np.asarray([float(v[0]) for v in values], dtype=np.float64),
    )


def reference_table(reference: str, texts: Sequence[str], tokenizer: Any, *, max_length: int,
                    data_root: Path | None = None, batch_size: int = 64, fast_path: bool = True,
                    device: Any = "cpu") -> ReferenceTable:
    """The cached table of `reference` (a model name, alias or folder that `load_mlm` reads) on these
    passages, computed and cached first if needed.

    Concurrent trials on one machine compute it once: the first holds a file lock while the others
    wait and then read its table. Inside `shard_scoring`, rank 0 alone looks in the cache (under the
    lock) and sends the table, or the decision to compute it together, to the other ranks: every rank
    joins the same collectives, and ranks on other nodes need no copy of the cache.
    """
    from filelock import FileLock

    from ncsearch.evaluate._shard import current_group
    from ncsearch.models import ensure_model

    # A model that ships its own code is refused here as everywhere without the explicit flag; the
    # reference is the search's own model, which passed that check before Ray started.
    model_dir = Path(ensure_model(reference, data_root=data_root))
    path = reference_cache_path(model_dir, tokenizer, texts, max_length=max_length)
    group = current_group()
    lead = group is None or group.rank == 0
    lock = FileLock(str(path) + ".lock") if lead else None
    if lock is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    try:
        table = _read(path, len(texts)) if lead else None
        if group is not None:
            table = group.all_gather(table if lead else None)[0]
        if table is not None:
            return table
        table = _compute(str(model_dir), texts, tokenizer, max_length=max_length, batch_size=batch_size,
                         fast_path=fast_path, device=device)
        if lead:
            _write(path, table)
        return table
    finally:
        if lock is not None:
            lock.release()

