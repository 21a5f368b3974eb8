"""Full-vocabulary token id -> row of a |V| x d buffer, without anything of full-vocabulary size per step.

Every statistic in this package is kept only for the classes in a vocabulary subset V. A token id is
mapped to its row by an integer table (the only object whose size grows with the vocabulary: 8 bytes
per id, built once), so per step the cost is O(N + |V|·d) for N labelled features, never O(N·|vocab|)
as with the one-hot matrix product of the paper's code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ncsearch.errors import ConfigError

__all__ = ["VocabIndex"]


class VocabIndex:
    """Maps token ids to positions 0..|V|-1 in `vocab_ids` order (-1 for ids outside V, -100 included)."""

    def __init__(self, vocab_ids: Sequence[int] | Tensor):
        ids = torch.as_tensor(list(vocab_ids) if not isinstance(vocab_ids, Tensor) else vocab_ids, dtype=torch.long)
        ids = ids.reshape(-1)
        if ids.numel() == 0:
            raise ConfigError("the vocabulary subset V is empty; NC3 statistics need at least one token id")
        if int(ids.min()) < 0:
            raise ConfigError(f"token ids must be non-negative, but got {int(ids.min())}")
        if torch.unique(ids).numel() != ids.numel():
            raise ConfigError(f"the vocabulary subset holds duplicate token ids: {sorted(ids.tolist())[:10]}...")
        self.ids = ids
        self._table = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)
        self._table[ids] = torch.arange(ids.numel())

    def __len__(self) -> int:
        return self.ids.numel()

    def to(self, device: torch.device | str) -> VocabIndex:
        """Move the table (and ids) to `device` in place; returns self."""
        self.ids = self.ids.to(device)
        self._table = self._table.to(device)
        return self

    def rows(self, labels: Tensor) -> Tensor:
        """Row in V of each label (same shape), -1 where the label is not in V."""
        labels = labels.to(self._table.device, torch.long)
        size = self._table.numel()
        inside = (labels >= 0) & (labels < size)
        return torch.where(inside, self._table[labels.clamp(0, size - 1)], torch.full_like(labels, -1))
