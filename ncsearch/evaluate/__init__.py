"""The evaluation suite: fairness and performance benchmarks behind one registry.

Importing the package registers every benchmark (one module each); `run_suite` runs a list of them on
one model and returns flat `{benchmark/.../metric: value}` metrics plus per-example tables.
"""

from ncsearch.evaluate import bec_pro, crows_pairs, glue, perplexity, seat, stereoset, winobias
from ncsearch.evaluate._base import Benchmark, BenchmarkResult, available, get_benchmark, register
from ncsearch.evaluate._scoring import MaskedRequest, mean_pool, score_masked
from ncsearch.evaluate._suite import run_suite

__all__ = [
    "Benchmark",
    "BenchmarkResult",
    "MaskedRequest",
    "available",
    "bec_pro",
    "crows_pairs",
    "get_benchmark",
    "glue",
    "mean_pool",
    "perplexity",
    "register",
    "run_suite",
    "score_masked",
    "seat",
    "stereoset",
    "winobias",
]
