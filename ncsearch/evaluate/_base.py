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

from ncsearch._registry import Registry
from ncsearch.errors import UserInputError

__all__ = ["Benchmark", "BenchmarkResult", "available", "get_benchmark", "register"]

_BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark")


@dataclass
class BenchmarkResult:
    """Flat metrics (keys start with the benchmark's name) and per-example tables, by table name."""

    metrics: dict[str, float]
    details: dict[str, pd.DataFrame] = field(default_factory=dict)


class Benchmark(abc.ABC):
    """One benchmark. Subclasses set `name` and implement `score`.

    `limit` caps the number of examples (first N in file order, or a seeded sample where the file is
    ordered by category); `batch_size` is the number of sequences per forward pass. `domains`, where
    given, keeps only examples of those bias types (StereoSet domains, CrowS-Pairs bias types) before
    the limit applies; benchmarks without categories ignore it.
    """

    name: ClassVar[str]

    def __init__(
        self,
        data_root: Path,
        *,
        limit: int | None = None,
        batch_size: int = 64,
        seed: int = 0,
        domains: tuple[str, ...] | None = None,
    ):
        self.data_root = Path(data_root)
        self.limit = limit
        self.batch_size = batch_size
        self.seed = seed
        self.domains = tuple(domains) if domains else None

    def in_domains(self, items: list[Any], key: str = "bias_type") -> list[Any]:
        """The items whose `key` is one of `self.domains` (all items when no domains are set)."""
        if self.domains is None:
            return list(items)
        kept = [item for item in items if getattr(item, key) in self.domains]
        if not kept:
            found = sorted({getattr(item, key) for item in items})
            raise UserInputError(
                f"{self.name}: no examples in domains {list(self.domains)}; its domains are: {', '.join(found)}"
            )
        return kept

    @abc.abstractmethod
    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        """Evaluate `model` (a Hugging Face masked LM in eval mode) and return its metrics."""


register = _BENCHMARKS.register
available = _BENCHMARKS.available


def get_benchmark(name: str) -> type[Benchmark]:
    """The benchmark class registered as `name`; an unknown name lists the valid ones."""
    return _BENCHMARKS.get(name)
