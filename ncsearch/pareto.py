"""Pareto fronts of a multi-objective search: the non-dominated trials and their hypervolume.

Pure computation (numpy, pandas); the report (`ncsearch.report`) decides what is on the front of a
search's configuration means, adds intervals, and draws it. Every function takes the objective directions explicitly (`"min"` / `"max"`), and
internally turns the values into a minimization problem by negating the "max" columns.

Hypervolume reference point
---------------------------
The hypervolume is the volume (area for two objectives) dominated by the front and bounded by a
reference point `r`. Unless one is given, `r` is the *nadir of all trials with finite objectives,
pushed outwards by 10% of each objective's range* (by 10% of |value| when every trial has the same
value, or by 1.0 when that value is 0). The margin lets the extreme points of the front contribute
volume. Because this default depends on the trials, hypervolumes of two searches are comparable only
when both are computed with the same explicit reference (`reference=`). Points that do not strictly
dominate `r` in every objective contribute nothing.

The hypervolume is exact for any number of objectives: a sweep for two, and for more the "slicing
objectives" recursion (While et al., HSO): sort by the last objective and add up the (k-1)-dimensional
volume of each slab. Its cost grows as O(n^(k-1) log n), which is instant for the tens to hundreds of
trials a search produces with up to four or five objectives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ncsearch.errors import ConfigError

__all__ = [
    "ParetoInfo",
    "dominates",
    "hypervolume",
    "non_dominated",
    "pareto_info",
    "reference_point",
]

#: Default margin of the reference point beyond the worst trial, as a fraction of each objective's range.
REFERENCE_MARGIN = 0.1


def _modes(modes: Sequence[str], k: int) -> np.ndarray:
    if len(modes) != k:
        raise ConfigError(f"got {len(modes)} objective directions for {k} objectives: {list(modes)}")
    bad = [m for m in modes if m not in ("min", "max")]
    if bad:
        raise ConfigError(f"objective direction must be 'min' or 'max', got {bad[0]!r}")
    return np.array([1.0 if m == "min" else -1.0 for m in modes])


def _as_matrix(values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1) if arr.size else arr.reshape(0, 0)
    if arr.ndim != 2:
        raise ValueError(f"expected an (n_points, n_objectives) array, got shape {arr.shape}")
    return arr


def _to_min(values: Any, modes: Sequence[str]) -> np.ndarray:
    arr = _as_matrix(values)
    return arr * _modes(modes, arr.shape[1]) if arr.size else arr


def dominates(a: Sequence[float], b: Sequence[float], modes: Sequence[str]) -> bool:
    """True when `a` is at least as good as `b` in every objective and strictly better in one."""
    sign = _modes(modes, len(a))
    x, y = np.asarray(a, dtype=float) * sign, np.asarray(b, dtype=float) * sign
    return bool(np.all(x <= y) and np.any(x < y))


def non_dominated(values: Any, modes: Sequence[str]) -> np.ndarray:
    """Boolean mask of the Pareto-optimal rows of `values` (n_points x n_objectives).

    Rows with a non-finite value (a failed or unfinished trial) are never on the front and never
    dominate anything. Identical rows do not dominate each other, so duplicates of a front point are
    all on the front.
    """
    v = _to_min(values, modes)
    n = v.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    finite = np.all(np.isfinite(v), axis=1)
    w = v[finite]
    # dom[j, i]: row j dominates row i.
    le = np.all(w[:, None, :] <= w[None, :, :], axis=-1)
    lt = np.any(w[:, None, :] < w[None, :, :], axis=-1)
    on_front = ~np.any(le & lt, axis=0)
    mask = np.zeros(n, dtype=bool)
    mask[np.flatnonzero(finite)[on_front]] = True
    return mask


def reference_point(values: Any, modes: Sequence[str], *, margin: float = REFERENCE_MARGIN) -> np.ndarray:
    """The default reference point (in the objectives' own units): the worst finite value of each
    objective, moved `margin` x its range further in the worse direction (see the module docstring)."""
    v = _to_min(values, modes)
    sign = _modes(modes, v.shape[1]) if v.size else np.ones(0)
    finite = v[np.all(np.isfinite(v), axis=1)] if v.size else v
    if finite.size == 0:
        raise ValueError("no trial has finite values for every objective; no reference point")
    worst, best = finite.max(axis=0), finite.min(axis=0)
    span = worst - best
    fallback = np.where(worst != 0, np.abs(worst), 1.0)
    step = np.where(span > 0, span, fallback) * margin
    return (worst + step) * sign


def _hv_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume of minimization points that strictly dominate `ref` in every coordinate."""
    n, k = points.shape
    if n == 0:
        return 0.0
    if k == 1:
        return float(ref[0] - points[:, 0].min())
    if k == 2:
        order = np.lexsort((points[:, 1], points[:, 0]))
        area, prev_y = 0.0, ref[1]
        for x, y in points[order]:
            if y < prev_y:
                area += (ref[0] - x) * (prev_y - y)
                prev_y = y
        return float(area)
    order = np.argsort(points[:, -1], kind="stable")
    pts = points[order]
    volume = 0.0
    for i in range(n):
        top = pts[i + 1, -1] if i + 1 < n else ref[-1]
        depth = top - pts[i, -1]
        if depth > 0:
            sub = pts[: i + 1, :-1]
            sub = sub[non_dominated(sub, ["min"] * (k - 1))]
            volume += _hv_min(sub, ref[:-1]) * depth
    return float(volume)


def hypervolume(values: Any, modes: Sequence[str], reference: Sequence[float] | None = None) -> float:
    """Exact hypervolume dominated by `values` up to `reference` (default: `reference_point`).

    `values` may hold dominated and non-finite rows; only the finite non-dominated rows that strictly
    beat the reference in every objective count.
    """
    v = _to_min(values, modes)
    if v.size == 0:
        return 0.0
    ref_user = reference_point(values, modes) if reference is None else np.asarray(reference, dtype=float)
    if ref_user.shape != (v.shape[1],):
        raise ValueError(f"reference needs {v.shape[1]} values, got {list(np.ravel(ref_user))}")
    ref = ref_user * _modes(modes, v.shape[1])
    front = v[non_dominated(values, modes)]
    front = front[np.all(front < ref, axis=1)]
    return _hv_min(front, ref)


# ----- trial tables ------------------------------------------------------------------------------


def _objective_pairs(objectives: Sequence[Any]) -> list[tuple[str, str]]:
    pairs = []
    for obj in objectives:
        if isinstance(obj, Mapping):
            pairs.append((str(obj["metric"]), str(obj["mode"])))
        elif isinstance(obj, (tuple, list)):
            pairs.append((str(obj[0]), str(obj[1])))
        else:
            pairs.append((str(obj.metric), str(obj.mode)))
    return pairs


@dataclass
class ParetoInfo:
    """Everything a report or a plot needs about one search's trade-off.

    `trials` holds one row per trial (whatever columns the caller had: trial id, status, params, all
    metrics) plus a boolean `pareto` column; `front` is the Pareto-optimal rows sorted by the first
    objective; `reference` is in the objectives' own units.
    """

    trials: pd.DataFrame
    objectives: list[tuple[str, str]]
    reference: dict[str, float] | None
    hypervolume: float
    front: pd.DataFrame = field(init=False)

    def __post_init__(self) -> None:
        first, mode = self.objectives[0]
        front = self.trials[self.trials["pareto"]]
        self.front = front.sort_values(first, ascending=(mode == "min"), kind="stable")

    @property
    def metrics(self) -> list[str]:
        return [m for m, _ in self.objectives]


def pareto_info(trials: pd.DataFrame, objectives: Sequence[Any], *, reference: Sequence[float] | None = None) -> ParetoInfo:
    """Mark the Pareto-optimal trials of `trials` and compute the hypervolume of the front.

    `objectives` are (metric, mode) pairs, mappings with metric/mode, or `SearchSpec.objectives`.
    Trials missing an objective column value (failed trials) are kept with `pareto = False`.
    """
    pairs = _objective_pairs(objectives)
    table = trials.copy().reset_index(drop=True)
    for metric, _ in pairs:
        if metric not in table.columns:
            table[metric] = np.nan
        table[metric] = pd.to_numeric(table[metric], errors="coerce")
    metrics = [m for m, _ in pairs]
    modes = [d for _, d in pairs]
    values = table[metrics].to_numpy(dtype=float) if len(table) else np.zeros((0, len(pairs)))
    table["pareto"] = non_dominated(values, modes) if len(table) else pd.Series(dtype=bool)
    has_finite = len(table) and bool(np.any(np.all(np.isfinite(values), axis=1)))
    if not has_finite:
        return ParetoInfo(table, pairs, None, math.nan)
    ref = reference_point(values, modes) if reference is None else np.asarray(reference, dtype=float)
    hv = hypervolume(values, modes, ref)
    return ParetoInfo(table, pairs, dict(zip(metrics, map(float, ref))), hv)
