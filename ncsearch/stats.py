"""Uncertainty for every number ncsearch shows (DESIGN.md §10): bootstrap draws, intervals, tests.

Everything here is plain numpy and vectorised over resamples:

- **Draws.** `unit_draws` draws B bootstrap samples of resampling units (examples, pairs, passages,
  ...), optionally within strata so that each stratum keeps its size (StereoSet target terms).
  `draw_counts` turns them into a (B, n_units) matrix of how often each unit was drawn. A benchmark
  writes its metric once, as a function of per-row weights (`Benchmark.metrics_from_weights`): at
  weight 1 it is the published point estimate, and the count matrix gives every resample in one call.
- **Pairing.** Draws come from `rng(seed, stream)`, a generator keyed by the seed and a stream name
  (the benchmark's name). Two checkpoints scored on the same examples therefore get the same resample
  indices, and their difference is a paired bootstrap: example difficulty cancels.
- **Intervals and tests.** Percentile intervals (`interval`), a two-sided bootstrap p-value of a
  difference (`p_value`, the smallest level at which the percentile interval excludes 0, so the two
  always agree), Holm's step-down adjustment across a family of tests (`holm`), and Spearman's rank
  correlation with a Fisher-z interval and a permutation p-value (`spearman`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LEVEL",
    "RESAMPLES",
    "SEED",
    "Estimate",
    "draw_counts",
    "estimate",
    "flat_intervals",
    "holm",
    "interval",
    "p_value",
    "rng",
    "spearman",
    "unit_draws",
]

#: Bootstrap resamples behind every interval unless a caller asks for another number.
RESAMPLES = 2000
#: Coverage of every interval (two-sided, percentile).
LEVEL = 0.95
#: Seed of the resampling streams (independent of any training or evaluation seed).
SEED = 0
#: Fewest pairs for which `spearman` gives an interval (its p-value needs four).
MIN_INTERVAL_PAIRS = 10


@dataclass(frozen=True)
class Estimate:
    """A point value with its percentile interval (and, for a difference, its bootstrap p-value)."""

    value: float
    low: float
    high: float
    p_value: float | None = None

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes(self, x: float = 0.0) -> bool:
        """True when the interval lies entirely on one side of `x` (a difference told from noise)."""
        return bool(math.isfinite(self.low) and math.isfinite(self.high) and (self.low > x or self.high < x))

    def format(self, digits: int = 4) -> str:
        """ "value [low, high]", the form every table of ncsearch uses."""
        if not math.isfinite(self.value):
            return "-"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return f"{self.value:.{digits}g} [n/a]"
        return f"{self.value:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


#: Suffixes of the metric keys that carry an interval's bounds (MLflow, eval JSON, trial results):
#: `stereoset/gender/icat` has `stereoset/gender/icat.ci_low` and `stereoset/gender/icat.ci_high`.
LOW_SUFFIX, HIGH_SUFFIX = ".ci_low", ".ci_high"


def flat_intervals(intervals: dict[str, tuple[float, float]]) -> dict[str, float]:
    """`{metric: (low, high)}` as flat metric keys `<metric>.ci_low` / `<metric>.ci_high`."""
    out = {}
    for metric, (low, high) in intervals.items():
        out[metric + LOW_SUFFIX] = float(low)
        out[metric + HIGH_SUFFIX] = float(high)
    return out


def rng(seed: int, stream: str) -> np.random.Generator:
    """The generator of one resampling stream: the same (seed, stream) always draws the same."""
    return np.random.default_rng([int(seed), zlib.crc32(stream.encode("utf-8"))])


def unit_draws(strata: Sequence[int] | np.ndarray | int, *, resamples: int, generator: np.random.Generator) -> np.ndarray:
    """(resamples, n) unit indices: each row a bootstrap sample of the n units.

    `strata` is the number of units (no strata) or one stratum code per unit; then column j of every
    row holds a unit of the same stratum as unit j, so each stratum keeps its size in every resample.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be positive, but got {resamples}")
    codes = np.zeros(strata, dtype=np.int64) if isinstance(strata, (int, np.integer)) else np.asarray(strata)
    n = codes.shape[0]
    draws = np.empty((resamples, n), dtype=np.int64)
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        picks = generator.integers(0, members.size, size=(resamples, members.size))
        draws[:, members] = members[picks]
    return draws


def draw_counts(draws: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float64 counts: how often each of the n units appears in each row of `draws`."""
    b = draws.shape[0]
    offsets = (np.arange(b, dtype=np.int64) * n)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of the finite values of a 1-D sample (NaN, NaN when none is finite)."""
    values = np.asarray(samples, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "this difference is 0": 2·min(P*(d ≤ 0), P*(d ≥ 0)), each
    counted as (k + 1) / (B + 1) so that it is never exactly 0 with finitely many resamples."""
    values = np.asarray(samples, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan
    below = (np.count_nonzero(values <= 0) + 1) / (values.size + 1)
    above = (np.count_nonzero(values >= 0) + 1) / (values.size + 1)
    return float(min(1.0, 2 * min(below, above)))


def estimate(value: float, samples: np.ndarray, *, level: float = LEVEL, test: bool = False) -> Estimate:
    """`value` with the percentile interval of `samples` (and their p-value when `test`)."""
    low, high = interval(samples, level)
    return Estimate(float(value), low, high, p_value(samples) if test else None)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control), NaN entries left out of the
    family and returned as NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (ties share their mean rank)."""
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    y = y - y.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((x * x).sum(axis=-1) * (y * y).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (x * y).sum(axis=-1) / denominator, np.nan)


def spearman(
    x: Sequence[float],
    y: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    stream: str = "spearman",
    level: float = LEVEL,
) -> Estimate:
    """Spearman's rank correlation of paired values with a Fisher-z interval and a permutation p-value.

    A search has few runs (often under 20), where a percentile bootstrap of a correlation is far too
    narrow (with 4 points it can exclude 0 for noise). So the p-value is a permutation test of "no
    association" (`resamples` shuffles of y against x, seeded), exact in its assumptions at any n, and
    the interval is Fisher's z-transform with Bonett and Wright's (2000) variance for Spearman's rho,
    (1 + rho²/2) / (n − 3), given only from `MIN_INTERVAL_PAIRS` pairs on (below that, and at
    |rho| = 1, the transform gives intervals that are far too narrow; the bounds are NaN). Pairs with a
    non-finite value are dropped; with fewer than four pairs, or a constant side, everything is NaN.
    """
    from scipy.stats import norm

    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    n = xs.size
    if n < 4:
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    rx, ry = _ranks(xs), _ranks(ys)
    value = float(_pearson_rows(rx[None, :], ry[None, :])[0])
    if not math.isfinite(value):
        return Estimate(math.nan, math.nan, math.nan, math.nan)
    shuffled = rng(seed, stream).permuted(np.tile(ry, (resamples, 1)), axis=1)
    null = _pearson_rows(np.broadcast_to(rx, shuffled.shape), shuffled)
    p = float((1 + np.count_nonzero(np.abs(null) >= abs(value) - 1e-12)) / (resamples + 1))
    if n < MIN_INTERVAL_PAIRS or abs(value) >= 1.0:
        return Estimate(value, math.nan, math.nan, p)
    z = math.atanh(value)
    half = float(norm.ppf(1 - (1 - level) / 2)) * math.sqrt((1 + value * value / 2) / (n - 3))
    return Estimate(value, math.tanh(z - half), math.tanh(z + half), p)
