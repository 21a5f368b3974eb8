"""Intervals and paired comparisons for any registered benchmark, from its per-example tables.

The statistics stay generic: a benchmark declares its `Resampling` (unit, key, strata) and its
`metrics_from_weights`; this module aligns one or more checkpoints' tables on the units they share,
draws the bootstrap once (`ncsearch.stats`, stream = the benchmark's name), and evaluates every
checkpoint's metrics under the *same* draws. One checkpoint gives intervals; two give a paired
difference; many (a search's trials and controls) give the joint samples the search analysis builds on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ncsearch.evaluate._base import Resampling, get_benchmark
from ncsearch.stats import LEVEL, RESAMPLES, SEED, Estimate, draw_counts, estimate, rng, unit_draws

__all__ = ["Comparison", "JointSamples", "compare", "intervals", "joint_samples"]

Details = Mapping[str, pd.DataFrame]


@dataclass
class JointSamples:
    """One benchmark's metrics for several checkpoints under shared bootstrap draws.

    `point[m, j]` is checkpoint m's value of `metrics[j]` on the shared units (its published value
    when every checkpoint was scored on the same examples); `samples[m, b, j]` the same under
    resample b. `units` counts the shared units.
    """

    benchmark: str
    resampling: Resampling
    metrics: list[str]
    point: np.ndarray
    samples: np.ndarray
    units: int


def _keys(table: pd.DataFrame, resampling: Resampling, benchmark: str) -> list[tuple]:
    missing = [c for c in (*resampling.key, *resampling.strata) if c not in table.columns]
    if missing:
        raise ValueError(f"{benchmark}: table {resampling.table!r} lacks the resampling column(s) {missing}")
    return list(table[list(resampling.key)].itertuples(index=False, name=None))


def joint_samples(
    benchmark: str,
    details: Sequence[Details],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> JointSamples:
    """Every checkpoint's metrics of `benchmark`, at weight 1 and under `resamples` shared draws.

    `details` holds each checkpoint's details tables (as `BenchmarkResult.details` of the benchmark,
    keyed by table name). Units are aligned by the benchmark's key columns; units missing from any
    checkpoint are left out of all of them.
    """
    cls = get_benchmark(benchmark)
    resampling = cls.resampling
    tables = []
    for one in details:
        if resampling.table not in one:
            raise ValueError(f"{benchmark}: no {resampling.table!r} table among {sorted(one)}")
        tables.append(one[resampling.table].reset_index(drop=True))
    keys = [_keys(t, resampling, benchmark) for t in tables]
    shared = [set(k) for k in keys[1:]]
    units = [k for k in dict.fromkeys(keys[0]) if all(k in s for s in shared)]
    position = {k: i for i, k in enumerate(units)}
    first_rows = {}
    for row, k in enumerate(keys[0]):
        first_rows.setdefault(k, row)
    if resampling.strata:
        strata_values = tables[0].loc[[first_rows[k] for k in units], list(resampling.strata)]
        codes = pd.MultiIndex.from_frame(strata_values).factorize()[0] if len(units) else np.zeros(0, np.int64)
    else:
        codes = np.zeros(len(units), dtype=np.int64)
    draws = unit_draws(codes, resamples=resamples, generator=rng(seed, benchmark))
    counts = draw_counts(draws, len(units))
    points: list[dict[str, np.ndarray]] = []
    samples: list[dict[str, np.ndarray]] = []
    for table, table_keys in zip(tables, keys):
        rows = [i for i, k in enumerate(table_keys) if k in position]
        unit_of_row = np.array([position[table_keys[i]] for i in rows], dtype=np.int64)
        sub = table.iloc[rows].reset_index(drop=True)
        points.append(cls.metrics_from_weights(sub, np.ones((1, len(sub)))))
        samples.append(cls.metrics_from_weights(sub, counts[:, unit_of_row]))
    metrics = [m for m in points[0] if all(m in p for p in points[1:])]
    point = np.array([[p[m][0] for m in metrics] for p in points], dtype=np.float64).reshape(len(tables), len(metrics))
    sampled = np.stack([np.stack([s[m] for m in metrics], axis=-1) if metrics else np.zeros((resamples, 0))
                        for s in samples])
    return JointSamples(benchmark, resampling, metrics, point, sampled, len(units))


def intervals(
    benchmark: str,
    details: Details,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, Estimate]:
    """Every metric of one checkpoint with its percentile bootstrap interval over the benchmark's units."""
    joint = joint_samples(benchmark, [details], resamples=resamples, seed=seed)
    return {m: estimate(joint.point[0, j], joint.samples[0, :, j], level=level) for j, m in enumerate(joint.metrics)}


@dataclass(frozen=True)
class Comparison:
    """One metric of two checkpoints on the same units: each with its interval, and B − A paired."""

    benchmark: str
    metric: str
    a: Estimate
    b: Estimate
    difference: Estimate
    units: int
    unit: str


def compare(
    benchmark: str,
    details_a: Details,
    details_b: Details,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> list[Comparison]:
    """Paired bootstrap of B − A for every metric of `benchmark`: both checkpoints are re-aggregated
    under the same resample indices, so the interval reflects only how the two differ."""
    joint = joint_samples(benchmark, [details_a, details_b], resamples=resamples, seed=seed)
    out = []
    for j, metric in enumerate(joint.metrics):
        a = estimate(joint.point[0, j], joint.samples[0, :, j], level=level)
        b = estimate(joint.point[1, j], joint.samples[1, :, j], level=level)
        diff = estimate(joint.point[1, j] - joint.point[0, j], joint.samples[1, :, j] - joint.samples[0, :, j],
                        level=level, test=True)
        out.append(Comparison(benchmark, metric, a, b, diff, joint.units, joint.resampling.unit))
    return out
