"""Sentence Encoder Association Test (May et al. 2019).

Work in progress: the scoring lands in the next commits.
"""

from __future__ import annotations

from typing import Any

from ncsearch.evaluate._base import Benchmark, BenchmarkResult, register

__all__ = ["SeatBenchmark"]


@register
class SeatBenchmark(Benchmark):
    """SEAT benchmark."""

    name = "seat"

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        raise NotImplementedError("seat scoring is not implemented yet")
