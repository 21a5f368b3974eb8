"""Seeds, set in one place.

Every random choice of a training run is a function of (train.seed, step, worker rank): the data order
of an epoch, the masking of a global batch and the dropout of a worker at a step. A run resumed from a
checkpoint at step k therefore draws exactly what the uninterrupted run drew from step k on, with no
generator state to save, and the masking of a global batch does not depend on the number of workers.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

__all__ = ["derive_seed", "generator", "seed_everything"]

_MASK = (1 << 63) - 1


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from `seed` and integer `keys` (a hash, so nearby inputs give unrelated seeds)."""
    text = ",".join(str(int(v)) for v in (seed, *keys)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") & _MASK


def generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch generator seeded from `derive_seed(seed, *keys)`."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) with one value."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
