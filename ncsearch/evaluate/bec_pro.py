"""BEC-Pro profession/gender association (Bartl et al. 2020).

Work in progress: the scoring lands in the next commits.
"""

from __future__ import annotations

from typing import Any

from ncsearch.evaluate._base import Benchmark, BenchmarkResult, register

__all__ = ["BecProBenchmark"]


@register
class BecProBenchmark(Benchmark):
    """BEC-Pro benchmark."""

    name = "bec_pro"

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        raise NotImplementedError("bec_pro scoring is not implemented yet")
