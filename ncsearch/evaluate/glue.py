"""GLUE short fine-tune (CoLA, MRPC, RTE, STS-B, WNLI).

Work in progress: the scoring lands in the next commits.
"""

from __future__ import annotations

from typing import Any

from ncsearch.evaluate._base import Benchmark, BenchmarkResult, register

__all__ = ["GlueBenchmark"]


@register
class GlueBenchmark(Benchmark):
    """GLUE benchmark."""

    name = "glue"

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        raise NotImplementedError("glue scoring is not implemented yet")
