"""Which examples a `limit` keeps.

Benchmark files are often grouped or skewed by category (StereoSet domains, CrowS-Pairs bias types);
a plain "first N" would then score one category only. Taking one example per category in turn keeps a
small limit representative and stays deterministic without a seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["take_stratified"]


def take_stratified(items: Sequence[Any], key: str, limit: int | None) -> list[Any]:
    """The first `limit` items taking one per group in turn (groups in order of first appearance),
    so that a small limit still covers every domain/bias type; all items when `limit` is None."""
    if limit is None or limit >= len(items):
        return list(items)
    groups: dict[str, list[Any]] = {}
    for item in items:
        groups.setdefault(getattr(item, key), []).append(item)
    chosen: list[Any] = []
    depth = 0
    while len(chosen) < limit:
        for members in groups.values():
            if depth < len(members) and len(chosen) < limit:
                chosen.append(members[depth])
        depth += 1
    order = {id(item): n for n, item in enumerate(items)}
    return sorted(chosen, key=lambda item: order[id(item)])
