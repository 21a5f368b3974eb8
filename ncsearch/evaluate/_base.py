"""The benchmark interface and its registry.

A benchmark is a small class: it loads its examples from the data root, scores one model, and returns
a flat `{benchmark/.../metric: value}` dict plus per-example tables. Every registered benchmark must
pass the shared test case in tests/test_evaluate_contract.py on a tiny model.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from ncsearch.errors import UserInputError

__all__ = ["Benchmark", "BenchmarkResult", "available", "get_benchmark", "register"]

_REGISTRY: dict[str, type[Benchmark]] = {}


@dataclass
class BenchmarkResult:
    """Flat metrics (keys start with the benchmark's name) and per-example tables, by table name."""

    metrics: dict[str, float]
    details: dict[str, pd.DataFrame] = field(default_factory=dict)


class Benchmark(abc.ABC):
    """One benchmark. Subclasses set `name` and implement `score`.

    `limit` caps the number of examples (first N in file order, or a seeded sample where the file is
    ordered by category); `batch_size` is the number of sequences per forward pass.
    """

    name: ClassVar[str]

    def __init__(self, data_root: Path, *, limit: int | None = None, batch_size: int = 64, seed: int = 0):
        self.data_root = Path(data_root)
        self.limit = limit
        self.batch_size = batch_size
        self.seed = seed

    @abc.abstractmethod
    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        """Evaluate `model` (a Hugging Face masked LM in eval mode) and return its metrics."""


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make a benchmark available by its `name`."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(_REGISTRY)


def get_benchmark(name: str) -> type[Benchmark]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserInputError(f"unknown benchmark {name!r}; valid: {', '.join(available())}") from None
