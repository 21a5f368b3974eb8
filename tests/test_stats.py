"""ncsearch.stats: intervals against closed forms, p-values, Holm, Spearman, stratified draws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ncsearch.evaluate import intervals
from ncsearch.stats import (
    Estimate,
    draw_counts,
    estimate,
    flat_intervals,
    holm,
    interval,
    p_value,
    rng,
    spearman,
    unit_draws,
)

Z = 1.959964


def test_stratified_draws_keep_every_stratum_size_and_stay_inside_it():
    codes = np.array([0, 0, 0, 1, 1, 2])
    draws = unit_draws(codes, resamples=500, generator=rng(0, "t"))
    assert draws.shape == (500, 6)
    assert (codes[draws] == codes[None, :]).all()
    counts = draw_counts(draws, 6)
    assert (counts.sum(axis=1) == 6).all()
    assert counts[:, 5].min() == counts[:, 5].max() == 1  # a stratum of one is always itself


def test_same_stream_same_draws_and_other_streams_differ():
    a = unit_draws(50, resamples=10, generator=rng(0, "stereoset"))
    b = unit_draws(50, resamples=10, generator=rng(0, "stereoset"))
    c = unit_draws(50, resamples=10, generator=rng(0, "crows_pairs"))
    assert (a == b).all() and not (a == c).all()


def _crows_table(wins: np.ndarray) -> pd.DataFrame:
    """A CrowS-Pairs table with one bias type where pair i is won by sent_more iff wins[i]."""
    n = len(wins)
    return pd.DataFrame({
        "pair": np.arange(n), "bias_type": "gender", "stereo_antistereo": "stereo",
        "sent_more_score": np.where(wins, -1.0, -2.0), "sent_less_score": np.full(n, -1.5),
        "nangia_more_score": np.nan, "nangia_less_score": np.nan,
    })


def test_interval_of_a_binomial_proportion_matches_the_closed_form():
    n, p = 400, 0.3
    wins = np.zeros(n, dtype=bool)
    wins[: int(n * p)] = True
    found = intervals("crows_pairs", {"pairs": _crows_table(wins)}, resamples=4000)["crows_pairs/gender/score"]
    half = 100 * Z * math.sqrt(p * (1 - p) / n)  # 4.49 points
    assert found.value == pytest.approx(30.0)
    # Monte Carlo error of a 2.5% quantile with 4000 draws is ~0.06 SE; allow 10% of the half-width.
    assert found.low == pytest.approx(30.0 - half, abs=0.1 * half)
    assert found.high == pytest.approx(30.0 + half, abs=0.1 * half)


def test_interval_of_a_normal_mean_matches_the_closed_form():
    values = np.random.default_rng(7).normal(3.0, 2.0, size=300)
    table = pd.DataFrame({"Sentence": [f"s{i}" for i in range(300)], "Prof_Gender": "male", "Gender": "male",
                          "association": values})
    found = intervals("bec_pro", {"rows": table}, resamples=4000)["bec_pro/male/male"]
    half = Z * values.std(ddof=1) / math.sqrt(values.size)
    assert found.value == pytest.approx(values.mean())
    assert found.low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert found.high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_p_value_agrees_with_the_interval():
    shifted = np.random.default_rng(1).normal(0.5, 0.1, size=2000)
    assert p_value(shifted) < 0.01
    assert estimate(0.5, shifted, test=True).excludes(0.0)
    centred = np.random.default_rng(1).normal(0.0, 0.1, size=2000)
    assert p_value(centred) > 0.2
    assert not estimate(0.0, centred).excludes(0.0)
    assert p_value(np.zeros(100)) == 1.0  # identical models: no difference at all
    assert math.isnan(p_value(np.array([np.nan])))


def test_holm_by_hand():
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    # sorted 0.01 (x3), 0.03 (x2), 0.04 (x1), monotone
    assert adjusted[0] == pytest.approx(0.03)
    assert adjusted[2] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06)
    assert math.isnan(adjusted[3])
    assert holm([0.9, 0.8]).tolist() == [1.0, 1.0]  # 2 x 0.8 caps at 1, and stays monotone


def test_spearman_with_interval():
    x = np.arange(30, dtype=float)
    perfect = spearman(x, x ** 3)
    assert perfect.value == pytest.approx(1.0) and perfect.p_value < 0.001
    noise = np.random.default_rng(3).normal(size=30)
    found = spearman(x, noise)
    assert found.low < 0 < found.high and found.p_value > 0.05
    # Fisher-z with Bonett-Wright variance at n = 30: tanh(atanh(rho) -+ 1.96 sqrt((1 + rho^2 / 2) / 27))
    y = np.array([0.5 * v + w for v, w in zip(x, np.random.default_rng(0).normal(scale=9, size=30))])
    got = spearman(x, y)
    half = Z * math.sqrt((1 + got.value ** 2 / 2) / 27)
    assert got.low == pytest.approx(math.tanh(math.atanh(got.value) - half), rel=1e-4)
    assert got.high == pytest.approx(math.tanh(math.atanh(got.value) + half), rel=1e-4)
    # Four points that rank perfectly together are still compatible with no association.
    few = spearman([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert few.value == pytest.approx(1.0) and few.p_value > 0.03 and math.isnan(few.low)  # 1/24 exactly, x2
    assert math.isnan(spearman([1.0, 2.0, 3.0], [3.0, 4.0, 5.0]).value)


def test_formatting_and_flat_keys():
    assert Estimate(65.448, 51.7, 71.04).format() == "65.45 [51.7, 71.04]"
    assert Estimate(1.0, math.nan, math.nan).format() == "1 [n/a]"
    assert interval(np.array([np.nan, np.nan])) == (math.nan, math.nan) or all(math.isnan(v) for v in interval(np.array([np.nan])))
    assert flat_intervals({"a/b": (1.0, 2.0)}) == {"a/b.ci_low": 1.0, "a/b.ci_high": 2.0}
