"""Benchmark work split across the workers of a trial, with every worker ending up with every result.

A trial's Ray Train workers evaluate its final model together: inside `shard_scoring(group)`, each
benchmark's unit loops (`score_masked`'s length-sorted batches, SEAT's sentence batches, held-out
collapse's passage batches, GLUE's tasks) go through `map_shards`. Item i is computed by rank
`i % world_size` only, and the results are exchanged with `all_gather_object`, so that each rank returns
the same list it would have computed alone, in the same order. The benchmarks' own code after the loop
(aggregation, metrics, tables) therefore runs unchanged on every rank and gives the same numbers as a
single process: batches are formed before they are dealt out, so each is the same padded batch it
would be on one worker (only the thread count differs, i.e. float rounding at most).

Outside `shard_scoring` (`ncsearch eval`, tests, one worker), `map_shards` is a plain loop.

Dealing batches round-robin keeps the ranks balanced, because the loops sort their batches by length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["ShardGroup", "current_group", "map_shards", "shard_scoring"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ShardGroup:
    """This worker's place among `world_size` workers of an initialised torch.distributed group
    (`process_group` None: the default group)."""

    rank: int
    world_size: int
    process_group: Any = None

    @classmethod
    def from_torch(cls) -> ShardGroup | None:
        """The default torch.distributed group, or None when there is none (or it has one member)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        return cls(dist.get_rank(), dist.get_world_size())

    def mine(self, index: int) -> bool:
        return index % self.world_size == self.rank

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (pickled; NCCL groups move it through the current GPU)."""
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.process_group)
        return gathered


_GROUP: ContextVar[ShardGroup | None] = ContextVar("ncsearch_shard_group", default=None)


def current_group() -> ShardGroup | None:
    """The group `map_shards` deals work to inside `shard_scoring`, else None."""
    return _GROUP.get()


@contextmanager
def shard_scoring(group: ShardGroup | None) -> Iterator[None]:
    """Within the block, `map_shards` splits its items across `group` (None: no split). Every rank
    of the group must run the same benchmarks with the same inputs, in the same order."""
    token = _GROUP.set(group)
    try:
        yield
    finally:
        _GROUP.reset(token)


def map_shards(items: Sequence[T], compute: Callable[[T], R]) -> list[R]:
    """`[compute(item) for item in items]`; inside `shard_scoring`, each rank computes its share and
    the results are exchanged, so every rank returns the whole list. `compute` must not itself call a
    collective (its calls differ in number between ranks)."""
    group = current_group()
    if group is None:
        return [compute(item) for item in items]
    with shard_scoring(None):  # a nested map_shards (one rank's share) is a plain loop
        own = {i: compute(item) for i, item in enumerate(items) if group.mine(i)}
    merged: dict[int, R] = {}
    for part in group.all_gather(own):
        merged.update(part)
    return [merged[i] for i in range(len(items))]
