"""pareto.py: the front and the hypervolume, by property tests and known cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncsearch.pareto import (
    dominates,
    hypervolume,
    non_dominated,
    pareto_info,
    reference_point,
)

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def point_sets(draw, min_k=1, max_k=4):
    k = draw(st.integers(min_k, max_k))
    n = draw(st.integers(0, 25))
    # A small grid of values makes ties and duplicates common, which is where dominance bugs hide.
    value = st.one_of(finite, st.sampled_from([0.0, 1.0, 2.0, 3.0]))
    rows = draw(st.lists(st.lists(value, min_size=k, max_size=k), min_size=n, max_size=n))
    modes = draw(st.lists(st.sampled_from(["min", "max"]), min_size=k, max_size=k))
    return np.array(rows, dtype=float).reshape(n, k), modes


@settings(max_examples=200, deadline=None)
@given(point_sets())
def test_front_points_are_not_dominated_and_the_rest_are(case):
    values, modes = case
    mask = non_dominated(values, modes)
    assert mask.shape == (len(values),)
    for i in range(len(values)):
        dominated_by = [j for j in range(len(values)) if dominates(values[j], values[i], modes)]
        if mask[i]:
            assert not dominated_by, (values[i], values[dominated_by[0]])
        else:
            # every point off the front is dominated by one ON the front (dominance is transitive)
            assert any(mask[j] for j in dominated_by), values[i]
    if len(values):
        assert mask.any()


@settings(max_examples=100, deadline=None)
@given(point_sets(min_k=2, max_k=2))
def test_nan_rows_are_never_on_the_front_and_do_not_dominate(case):
    values, modes = case
    with_nan = np.vstack([values, [[np.nan, 0.0]]]) if len(values) else np.array([[np.nan, 0.0]])
    mask = non_dominated(with_nan, modes)
    assert not mask[-1]
    assert list(mask[:-1]) == list(non_dominated(values, modes))


def test_direction_flips_the_front():
    pts = np.array([[1.0, 1.0], [2.0, 2.0], [1.0, 2.0]])
    assert non_dominated(pts, ["min", "min"]).tolist() == [True, False, False]
    assert non_dominated(pts, ["max", "max"]).tolist() == [False, True, False]
    assert non_dominated(pts, ["min", "max"]).tolist() == [False, False, True]


def test_duplicates_of_a_front_point_are_all_on_the_front():
    pts = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 3.0]])
    assert non_dominated(pts, ["min", "min"]).tolist() == [True, True, False]


# ----- hypervolume ---------------------------------------------------------------------------------


def test_hypervolume_known_2d_cases():
    # One point: the rectangle up to the reference.
    assert hypervolume([[1.0, 1.0]], ["min", "min"], [3.0, 4.0]) == pytest.approx(6.0)
    # Staircase of three points with reference (4, 4): 3*1 + 2*1 + 1*1 = ... computed by hand:
    # (1,3): x in [1,4] y in [3,4] = 3; (2,2): x in [2,4], y in [2,3] = 2; (3,1): x in [3,4], y in [1,2] = 1.
    assert hypervolume([[1, 3], [2, 2], [3, 1]], ["min", "min"], [4, 4]) == pytest.approx(6.0)
    # A dominated point adds nothing.
    assert hypervolume([[1, 3], [2, 2], [3, 1], [3, 3]], ["min", "min"], [4, 4]) == pytest.approx(6.0)
    # Maximization mirrors minimization: maximize both, reference (0, 0).
    assert hypervolume([[3, 1], [2, 2], [1, 3]], ["max", "max"], [0, 0]) == pytest.approx(6.0)
    # Mixed: maximize x (ref 0), minimize y (ref 10): point (5, 4) -> 5 * 6.
    assert hypervolume([[5, 4]], ["max", "min"], [0, 10]) == pytest.approx(30.0)
    # Points not strictly better than the reference contribute nothing.
    assert hypervolume([[5, 1], [1, 5]], ["min", "min"], [5, 5]) == 0.0


def test_hypervolume_known_3d_cases():
    assert hypervolume([[0, 0, 0]], ["min"] * 3, [1, 2, 3]) == pytest.approx(6.0)
    # Two unit-overlapping boxes: [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] -> 2 + 2 - 1.
    pts = [[0, 1, 0], [1, 0, 0]]
    assert hypervolume(pts, ["min"] * 3, [2, 2, 1]) == pytest.approx(3.0)


def _hv_inclusion_exclusion(points, ref):
    """Inclusion-exclusion over every subset: exact, exponential, fine for a handful of points."""
    pts = [p for p in points if all(a < r for a, r in zip(p, ref))]
    total = 0.0
    for size in range(1, len(pts) + 1):
        for subset in itertools.combinations(pts, size):
            corner = np.max(np.array(subset), axis=0)
            total += (-1) ** (size + 1) * float(np.prod(np.array(ref) - corner))
    return total


@settings(max_examples=80, deadline=None)
@given(point_sets(min_k=2, max_k=4).filter(lambda c: 0 < len(c[0]) <= 7))
def test_hypervolume_matches_inclusion_exclusion(case):
    values, modes = case
    ref = reference_point(values, modes)
    got = hypervolume(values, modes, ref)
    sign = np.array([1.0 if m == "min" else -1.0 for m in modes])
    want = _hv_inclusion_exclusion((values * sign).tolist(), (ref * sign).tolist())
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_default_reference_is_the_nadir_plus_ten_percent_of_the_range():
    pts = np.array([[1.0, 10.0], [3.0, 20.0]])
    ref = reference_point(pts, ["min", "max"])
    assert ref.tolist() == pytest.approx([3.2, 9.0])
    # A constant objective falls back to 10% of its magnitude, and to 1.0 around zero.
    assert reference_point([[5.0, 0.0], [5.0, 0.0]], ["min", "max"]).tolist() == pytest.approx([5.5, -0.1])


# ----- tables and files ----------------------------------------------------------------------------


def _trials():
    return pd.DataFrame(
        {
            "trial": ["t1", "t2", "t3", "t4"],
            "status": ["TERMINATED", "TERMINATED", "TERMINATED", "ERROR"],
            "icat": [60.0, 70.0, 65.0, np.nan],
            "pppl": [20.0, 30.0, 35.0, np.nan],
            "param.nc3.alpha": [0.1, 1.0, 10.0, 3.0],
        }
    )


def test_pareto_info_marks_front_and_keeps_failed_trials():
    info = pareto_info(_trials(), [("icat", "max"), ("pppl", "min")])
    assert info.trials["pareto"].tolist() == [True, True, False, False]
    assert info.front["trial"].tolist() == ["t2", "t1"]  # sorted best-first by the first objective
    # reference: icat worst 60 - 10% of 10 = 59; pppl worst 35 + 10% of 15 = 36.5
    assert info.reference == pytest.approx({"icat": 59.0, "pppl": 36.5})
    want = (70 - 59) * (36.5 - 30) + (60 - 59) * (30 - 20)
    assert info.hypervolume == pytest.approx(want)


def test_pareto_info_without_finished_trials():
    frame = pd.DataFrame({"trial": ["a"], "icat": [np.nan]})
    info = pareto_info(frame, [("icat", "max"), ("pppl", "min")])
    assert info.front.empty and math.isnan(info.hypervolume)
