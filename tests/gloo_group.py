"""One gloo process group per spawned test worker, torn down safely.

Gloo aborts a process ("terminate called without an active exception") when one rank destroys the group
while its peer is still inside a collective, e.g. the backward of `torch.distributed.nn.all_gather`. Every
rank therefore meets at a barrier before `destroy_process_group` on the way out of a clean block; a rank
that raised skips the barrier (its peer would wait for it forever) and the short timeout ends the peer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta


@contextmanager
def gloo_group(rank: int, world_size: int, init_method: str, *, timeout_s: float = 120.0) -> Iterator[None]:
    """Run the block as `rank` of a `world_size` gloo group rendezvousing at `init_method`."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()
