"""Training examples and deterministic, resumable MLM batches.

The corpus (a baseline's texts) is tokenized once and cut into chunks of at most `max_length`
tokens including the special tokens, so long passages are used whole rather than truncated.

`MLMBatches.batch(step)` returns this worker's share of global batch `step`: the global batch is drawn
from a per-epoch permutation seeded by (seed, epoch), padded, and masked as BERT does (`mlm_mask`: 15% of
the real, non-special tokens; of those 80% [MASK], 10% a random token, 10% unchanged) with a generator
seeded by (seed, step); then its rows are split over the workers in rank order. Everything is a pure
function of the step, so resuming needs only the step counter, and 1 or N workers see the same global batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ncsearch._batching import pad_batch
from ncsearch.errors import DataError
from ncsearch.training._masking import maskable, mlm_mask
from ncsearch.training._seeding import generator

__all__ = ["MLMBatches", "StepSampler", "chunk_corpus"]


def chunk_corpus(texts: Sequence[str], tokenizer, max_length: int, *, min_tokens: int = 2) -> list[list[int]]:
    """Token-id lists (with the tokenizer's special tokens) of at most `max_length` ids each.

    Each text is tokenized without truncation and cut into consecutive pieces; pieces with fewer than
    `min_tokens` content tokens are dropped (a lone trailing word adds nothing to learn from).
    """
    prefix, suffix = special_affixes(tokenizer)
    body = max_length - len(prefix) - len(suffix)
    if body < 1:
        raise DataError(f"train.max_length {max_length} leaves no room for text next to {len(prefix) + len(suffix)} special tokens")
    from ncsearch._tokenized import encode_corpus

    encoded = encode_corpus(texts, tokenizer)  # once per tokenizer and corpus on this machine
    examples: list[list[int]] = []
    for ids in encoded:
        for start in range(0, len(ids), body):
            piece = ids[start : start + body]
            if len(piece) >= min_tokens:
                examples.append(prefix + piece + suffix)
    return examples


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after one sequence ([CLS] / [SEP], <s> / </s>).

    Read off the tokenizer's own template by encoding a probe word with and without special tokens,
    so any single-sequence template works without knowing the family.
    """
    plain = tokenizer("probe", add_special_tokens=False)["input_ids"]
    full = tokenizer("probe", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise DataError(f"cannot find where {type(tokenizer).__name__} puts its special tokens")


@dataclass(frozen=True)
class _TokenInfo:
    pad_id: int
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]


class StepSampler:
    """Which examples global batch `step` holds, and which of its rows are this worker's.

    The order is a per-epoch permutation of `size` examples seeded by (seed, stream, epoch), and
    epochs follow each other seamlessly, so a batch is a pure function of the step: resuming needs only
    the step counter, and 1 or N workers see the same global batch. `stream` keeps the draws of
    different streams of one run (the MLM corpus, a baseline's own pairs) independent.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int, stream: int = 1, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise DataError("a training stream is empty")
        if batch_size < world_size:
            raise DataError(f"train.batch_size {batch_size} is smaller than the {world_size} workers sharing it")
        self.size = size
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self.rank = rank
        self.world_size = world_size
        self._orders: dict[int, Tensor] = {}

    def _order(self, epoch: int) -> Tensor:
        if epoch not in self._orders:
            if len(self._orders) >= 2:  # a batch spans at most two epochs unless the stream is tiny
                self._orders.pop(min(self._orders))
            self._orders[epoch] = torch.randperm(self.size, generator=generator(self.seed, self.stream, epoch))
        return self._orders[epoch]

    def global_indices(self, step: int) -> list[int]:
        """Example indices of global batch `step`."""
        out = []
        for pos in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(pos, self.size)
            out.append(int(self._order(epoch)[offset]))
        return out

    def epoch_of(self, step: int) -> int:
        """The epoch global batch `step` starts in (epochs follow each other, so a batch that spans a
        boundary counts for the epoch of its first example)."""
        return step * self.batch_size // self.size

    def local_rows(self) -> Tensor:
        """Positions within a global batch that are this worker's (contiguous, in rank order)."""
        return torch.tensor_split(torch.arange(self.batch_size), self.world_size)[self.rank]

    def local_indices(self, step: int) -> list[int]:
        """Example indices of this worker's share of global batch `step`."""
        everything = self.global_indices(step)
        return [everything[int(i)] for i in self.local_rows()]


class MLMBatches:
    """Masked-LM batches for worker `rank` of `world_size`; `batch_size` is the global batch."""

    def __init__(
        self,
        examples: Sequence[Sequence[int]],
        tokenizer,
        *,
        batch_size: int,
        mlm_probability: float,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        if not examples:
            raise DataError("the training corpus is empty after tokenization")
        if tokenizer.mask_token_id is None or tokenizer.pad_token_id is None:
            raise DataError(f"tokenizer {type(tokenizer).__name__} has no mask or pad token; it cannot do MLM")
        self.examples = [list(e) for e in examples]
        self.batch_size = batch_size
        self.mlm_probability = mlm_probability
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.sampler = StepSampler(len(self.examples), batch_size, seed=seed, stream=1, rank=rank, world_size=world_size)
        self.tokens = _TokenInfo(
            pad_id=tokenizer.pad_token_id,
            mask_id=tokenizer.mask_token_id,
            vocab_size=len(tokenizer),
            special_ids=tuple(sorted(set(tokenizer.all_special_ids))),
        )

    def __len__(self) -> int:
        return len(self.examples)

    def global_indices(self, step: int) -> list[int]:
        """Example indices of global batch `step` (epochs follow each other seamlessly)."""
        return self.sampler.global_indices(step)

    def global_batch(self, step: int) -> dict[str, Tensor]:
        """The whole masked global batch `step` (every worker computes it; it is small)."""
        rows = [self.examples[i] for i in self.global_indices(step)]
        info = self.tokens
        input_ids, attention_mask = pad_batch(rows, info.pad_id)
        masked, labels = mlm_mask(
            input_ids,
            maskable(input_ids, info.special_ids, attention_mask),
            generator(self.seed, 2, step),
            probability=self.mlm_probability,
            mask_id=info.mask_id,
            vocab_size=info.vocab_size,
        )
        return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}

    def batch(self, step: int) -> dict[str, Tensor]:
        """This worker's rows of global batch `step`, trimmed to their longest row."""
        full = self.global_batch(step)
        rows = self.sampler.local_rows()
        local = {k: v.index_select(0, rows) for k, v in full.items()}
        width = int(local["attention_mask"].sum(dim=1).max())
        return {k: v[:, :width].contiguous() for k, v in local.items()}
