"""The arithmetic of scoring: `eval.precision` "fp32" (the default: today's scores) or "bf16".

bf16 runs each benchmark's `score` under torch.autocast to bfloat16 on the model's device: matrix
products (and on CPU the LayerNorm and GELU after them) in bfloat16, weights kept in fp32. Scoring
goes through the plain Hugging Face forward (the fast path's oneDNN-packed linears take fp32 only, so
`fast_path` is off under bf16); the MLM logits are upcast before the log-softmax and the log-probs
come out float64 as in fp32 (`score_masked`), and a benchmark that trains a probe (GLUE) trains it
under the same autocast with fp32 weights and optimizer state.

bf16 changes the numbers, so `ncsearch eval --precision bf16` scores the checkpoint both ways and
prints the deviation (bf16 - fp32) of every headline metric with the time of each; the suite's
`suite/timings` table records the precision each benchmark was scored at.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["EVAL_PRECISIONS", "Deviation", "check_precision", "deviations", "scoring_context", "scoring_fast_path"]

#: The values of `eval.precision` (and of `ncsearch eval --precision`).
EVAL_PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> str:
    """`precision` if it is one of EVAL_PRECISIONS, else a one-line ConfigError naming eval.precision."""
    if precision not in EVAL_PRECISIONS:
        from ncsearch.errors import ConfigError

        raise ConfigError(f"eval.precision: {precision!r} is not one of {', '.join(EVAL_PRECISIONS)}")
    return precision


def scoring_fast_path(precision: str, fast_path: bool) -> bool:
    """The fast path as scoring uses it: as asked under fp32, off under bf16 (its packed linears are fp32)."""
    return bool(fast_path) and check_precision(precision) == "fp32"


def scoring_context(precision: str, model: Any) -> contextlib.AbstractContextManager[Any]:
    """The context each benchmark's `score` runs in: nothing for fp32, bf16 autocast on the model's
    device for bf16."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    device = next(model.parameters()).device
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class Deviation:
    """One metric scored at both precisions: `deviation` is bf16 - fp32."""

    metric: str
    fp32: float
    bf16: float

    @property
    def deviation(self) -> float:
        return self.bf16 - self.fp32


def deviations(names: Sequence[str], fp32: Mapping[str, float], bf16: Mapping[str, float],
               *, headline_only: bool = True) -> list[Deviation]:
    """bf16 - fp32 for each metric both results have, in the fp32 result's order; with `headline_only`,
    only the metrics matching a benchmark's `headline` patterns."""
    from ncsearch.evaluate._base import get_benchmark

    patterns: Iterable[str] = [p for name in names for p in get_benchmark(name).headline]
    patterns = list(patterns)
    return [Deviation(key, float(value), float(bf16[key])) for key, value in fp32.items()
            if key in bf16 and (not headline_only or any(fnmatch.fnmatchcase(key, p) for p in patterns))]
