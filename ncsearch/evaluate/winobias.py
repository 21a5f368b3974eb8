"""WinoBias pronoun probe (Zhao et al. 2018) as a masked-LM task.

Work in progress: the scoring lands in the next commits.
"""

from __future__ import annotations

from typing import Any

from ncsearch.evaluate._base import Benchmark, BenchmarkResult, register

__all__ = ["WinoBiasBenchmark"]


@register
class WinoBiasBenchmark(Benchmark):
    """WinoBias benchmark."""

    name = "winobias"

    def score(self, model: Any, tokenizer: Any) -> BenchmarkResult:
        raise NotImplementedError("winobias scoring is not implemented yet")
