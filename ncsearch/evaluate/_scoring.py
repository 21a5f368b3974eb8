"""Batched masked-LM scoring shared by every likelihood benchmark.

Every likelihood benchmark (StereoSet, CrowS-Pairs, pseudo-perplexity, BEC-Pro, WinoBias) reduces to
the same request: "in this token sequence, which already holds [MASK] at some positions, what is the
log-probability of these target tokens at those positions?". Collecting all requests of a benchmark
and answering them here lets us sort them by length (little padding), run the encoder on full
batches, and apply the MLM head only at the requested positions, which on a 30k vocabulary is most of
the cost of a naive `model(**batch).logits` call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ncsearch._batching import pad_batch

__all__ = ["MaskedRequest", "mean_pool", "report_progress", "score_masked"]

# Set by the suite runner so that every `score_masked` call inside a benchmark feeds its progress bar
# without the benchmark knowing about it: hook(added_total, advanced).
_PROGRESS_HOOK: ContextVar[Callable[[int, int], None] | None] = ContextVar("ncsearch_scoring_progress", default=None)


@contextmanager
def report_progress(hook: Callable[[int, int], None]) -> Iterator[None]:
    """Within the block, `score_masked` calls `hook(n_requests, 0)` when it starts and
    `hook(0, n_done)` after each batch."""
    token = _PROGRESS_HOOK.set(hook)
    try:
        yield
    finally:
        _PROGRESS_HOOK.reset(token)


@dataclass(frozen=True)
class MaskedRequest:
    """One sequence to score: `input_ids` already hold the mask token at `positions` (or not: the
    scorer never changes the ids), and `targets[i]` is the token whose log-probability is wanted at
    `positions[i]`. A position may appear more than once (e.g. two candidate tokens)."""

    input_ids: list[int]
    positions: list[int]
    targets: list[int]

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.targets):
            raise ValueError(
                f"positions and targets differ in length: {len(self.positions)} != {len(self.targets)}"
            )


def _buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Request indices grouped into batches of similar length (longest first, so a too-large batch
    fails at once rather than at the end). Stable: equal lengths keep their input order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def score_masked(
    model: Any,
    requests: Sequence[MaskedRequest],
    *,
    batch_size: int = 64,
    pad_id: int = 0,
    fast_path: bool = True,
) -> list[np.ndarray]:
    """Log-probabilities (float64) of each request's `targets` at its `positions`.

    Requests with identical `input_ids` share one encoder row (StereoSet's three candidates share
    the masked context of their first word piece), and a position asked for several targets gets
    the head once. Unique sequences are sorted by length and padded per batch of `batch_size`
    (attention mask 0 on padding); the MLM head (`ncsearch.heads.mlm_head`) runs only at the
    requested positions.

    `fast_path` (on by default: it equals the plain forward up to float rounding, which
    tests/test_evaluate_contract.py checks for every benchmark) computes the last layer only at the
    requested positions for BERT-layout encoders (`_row_encoder`) and runs linear maps through
    oneDNN's fused kernels on CPU (`_fused_linear`). Both rest on private torch operators and
    hand-written layer code, so off, scoring uses only the model's own Hugging Face encoder forward
    and a plain `F.linear` decoder: the reference to fall back on when a new torch or transformers
    release is suspected of breaking the fast path.
    """
    from ncsearch.evaluate._fused_linear import FusedLinear
    from ncsearch.evaluate._row_encoder import RowEncoder, encode_rows
    from ncsearch.evaluate._shard import map_shards
    from ncsearch.heads import mlm_head

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, but got {batch_size}")
    results: list[np.ndarray] = [np.zeros(0, dtype=np.float64)] * len(requests)
    if not requests:
        return results
    hook = _PROGRESS_HOOK.get()
    if hook is not None:
        hook(len(requests), 0)
    members: dict[tuple[int, ...], list[int]] = {}
    for i, request in enumerate(requests):
        members.setdefault(tuple(request.input_ids), []).append(i)
    sequences = list(members)
    head = mlm_head(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def score_batch(batch: list[int]) -> list[tuple[int, np.ndarray]]:
        """(request index, log-probs) of every request whose sequence is in `batch` (the encoder and
        decoder are the ones built under inference mode below)."""
        ids, mask = pad_batch([sequences[u] for u in batch], pad_id)
        slots: dict[tuple[int, int], int] = {}  # (row, position) -> row of the head output
        picks: list[tuple[int, list[int]]] = []  # (request, head rows)
        targets: list[int] = []
        for row, u in enumerate(batch):
            for i in members[sequences[u]]:
                request = requests[i]
                picks.append((i, [slots.setdefault((row, p), len(slots)) for p in request.positions]))
                targets.extend(request.targets)
        flat = np.zeros(0, dtype=np.float64)
        if slots:
            where = torch.tensor(list(slots), dtype=torch.long, device=device)
            hidden = encode_rows(model, ids.to(device), mask.to(device), where, row_encoder)
            logprobs = torch.log_softmax(decoder(head.transform(hidden)).float(), dim=-1)
            sel_rows = torch.tensor([r for _, rows in picks for r in rows], dtype=torch.long, device=device)
            flat = logprobs[sel_rows, torch.tensor(targets, dtype=torch.long, device=device)].double().cpu().numpy()
        out, start = [], 0
        for i, rows in picks:
            out.append((i, flat[start : start + len(rows)].copy()))
            start += len(rows)
        if hook is not None:
            hook(0, len(picks))
        return out

    try:
        with torch.inference_mode():
            row_encoder = RowEncoder.for_model(model) if fast_path else None
            # packed: the bias added inside oneDNN's GEMM on CPU; unpacked: F.linear
            decoder = FusedLinear.of(head.weight, head.bias, pack=fast_path)
            # On a trial's workers each scores its share of the batches (`_shard`); all get every result.
            for scored in map_shards(_buckets([len(seq) for seq in sequences], batch_size), score_batch):
                for i, values in scored:
                    results[i] = values
    finally:
        model.train(was_training)
    return results


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states where `attention_mask` is 1: (B, T, d), (B, T) -> (B, d)."""
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
