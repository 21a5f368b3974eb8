"""The evaluation suite: fairness and performance benchmarks behind one registry.

Importing the package registers every benchmark (one module each); `run_suite` runs a list of them on
one model and returns flat `{benchmark/.../metric: value}` metrics plus per-example tables.
"""

from ncsearch.evaluate import bec_pro, collapse, crows_pairs, glue, heldout_mlm, perplexity, seat, stereoset, winobias
from ncsearch.evaluate._base import (
    Benchmark,
    BenchmarkResult,
    Resampling,
    available,
    get_benchmark,
    point_metrics,
    register,
)
from ncsearch.evaluate._resample import Comparison, JointSamples, compare, intervals, joint_samples
from ncsearch.evaluate._scoring import MaskedRequest, mean_pool, score_masked
from ncsearch.evaluate._suite import build_benchmarks, run_suite

__all__ = [
    "Benchmark",
    "BenchmarkResult",
    "Comparison",
    "JointSamples",
    "MaskedRequest",
    "Resampling",
    "available",
    "bec_pro",
    "build_benchmarks",
    "collapse",
    "compare",
    "crows_pairs",
    "get_benchmark",
    "glue",
    "heldout_mlm",
    "intervals",
    "joint_samples",
    "mean_pool",
    "perplexity",
    "point_metrics",
    "register",
    "run_suite",
    "score_masked",
    "seat",
    "stereoset",
    "winobias",
]
