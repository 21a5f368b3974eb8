"""SEAT: effect size and permutation p-value against hand computations; the benchmark on a tiny MLM."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ncsearch.errors import ConfigError
from ncsearch.evaluate.seat import (
    SeatBenchmark,
    association,
    effect_size,
    encode_sentences,
    permutation_p_value,
)


def _cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _direct_effect_size(X, Y, A, B):
    """May et al.'s formula written out with Python loops (sample std, ddof=1)."""
    def s(w):
        return sum(_cos(w, a) for a in A) / len(A) - sum(_cos(w, b) for b in B) / len(B)

    sx, sy = [s(x) for x in X], [s(y) for y in Y]
    both = sx + sy
    mean = sum(both) / len(both)
    std = math.sqrt(sum((v - mean) ** 2 for v in both) / (len(both) - 1))
    return (sum(sx) / len(sx) - sum(sy) / len(sy)) / std


def test_effect_size_matches_direct_formula_on_fixed_vectors():
    rng = np.random.default_rng(7)
    X, Y, A, B = (rng.normal(size=(n, 5)) for n in (4, 4, 3, 6))
    X[:, 0] += 1.0  # give X a pull towards A
    A[:, 0] += 1.0
    assert effect_size(X, Y, A, B) == pytest.approx(_direct_effect_size(X.tolist(), Y.tolist(), A.tolist(), B.tolist()),
                                                    rel=1e-12)


def test_effect_size_hand_case():
    # Unit vectors at angles: cos to A = e1 and B = e2 are read off directly.
    X = np.array([[1.0, 0.0], [0.6, 0.8]])   # s = 1 - 0 = 1, 0.6 - 0.8 = -0.2
    Y = np.array([[0.0, 1.0], [0.8, 0.6]])   # s = -1, 0.2
    A, B = np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]])  # scale does not matter for cosine
    np.testing.assert_allclose(association(X, A, B), [1.0, -0.2], atol=1e-15)
    # mean_x = 0.4, mean_y = -0.4; s over X u Y = [1, -0.2, -1, 0.2], mean 0, sample var = 2.08/3
    assert effect_size(X, Y, A, B) == pytest.approx(0.8 / math.sqrt(2.08 / 3), rel=1e-12)


def test_exact_p_value_by_hand():
    # s(X) = {3, 1}, s(Y) = {2, 0}: the 6 subsets of size 2 of {3, 1, 2, 0} sum to 4, 5, 3, 3, 1, 2;
    # the observed 4 is matched or beaten by {3,1} and {3,2}: p = 2/6.
    assert permutation_p_value([3.0, 1.0], [2.0, 0.0]) == pytest.approx(2 / 6)
    # Ties count (bias-bench's conservative test): s(X) = {2, 1} (sum 3), s(Y) = {3, 0}:
    # sums 3, 5, 2, 4, 1, 3 -> 3, 5, 4, 3 are >= 3: p = 4/6 (strict '>' would give 2/6).
    assert permutation_p_value([2.0, 1.0], [3.0, 0.0]) == pytest.approx(4 / 6)
    # X holds the two largest: only the observed partition reaches it.
    assert permutation_p_value([5.0, 4.0], [1.0, 0.0]) == pytest.approx(1 / 6)


def test_exact_p_value_matches_brute_force_enumeration():
    rng = np.random.default_rng(3)
    s_x, s_y = rng.normal(size=5), rng.normal(size=5)
    s = np.concatenate([s_x, s_y])
    observed = s_x.sum()
    sums = [s[list(c)].sum() for c in itertools.combinations(range(10), 5)]
    expected = np.mean([v >= observed - 1e-12 for v in sums])
    assert permutation_p_value(s_x, s_y, n_samples=252) == pytest.approx(expected)


def test_sampled_p_value_bias_by_one_and_seeded():
    # C(20, 10) = 184,756 partitions > 1,000 samples: sampled, with one hallucinated success.
    s_x, s_y = np.arange(10, 20, dtype=float), np.arange(10, dtype=float)
    p = permutation_p_value(s_x, s_y, n_samples=1000, rng=np.random.default_rng(0))
    # Only X itself reaches the observed maximum; a random draw hits it with probability 1/184,756.
    assert p == pytest.approx(1 / 1000)
    rng = np.random.default_rng(11)
    s_x, s_y = rng.normal(size=10) + 0.3, rng.normal(size=10)
    a = permutation_p_value(s_x, s_y, n_samples=2000, rng=np.random.default_rng(5))
    b = permutation_p_value(s_x, s_y, n_samples=2000, rng=np.random.default_rng(5))
    exact = permutation_p_value(s_x, s_y, n_samples=200_000)  # enumerates all 184,756
    assert a == b
    assert round(a * 2000) == pytest.approx(a * 2000)  # a count over 2000 draws
    assert abs(a - exact) < 0.04


def test_encode_sentences_equals_one_at_a_time_mean(tiny_mlm):
    model, tokenizer = tiny_mlm
    texts = ["This is John.", "That is a very long sentence about a family home.", "Hi."]
    batched = encode_sentences(model, tokenizer, texts, batch_size=2)
    for text, row in zip(texts, batched):
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            mean = model.bert(input_ids=ids).last_hidden_state.mean(dim=1)[0].double()
        np.testing.assert_allclose(row, (mean / mean.norm()).numpy(), atol=1e-5)
    cls = encode_sentences(model, tokenizer, texts, pooling="cls")
    assert not np.allclose(cls, batched)


def test_seat_benchmark_on_tiny_model(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    bench = SeatBenchmark(data_root, limit=6, tests=("sent-weat6", "sent-weat7"), n_samples=1000)
    result = bench.score(model, tokenizer)
    keys = {f"seat/{t}/{m}" for t in ("sent-weat6", "sent-weat7") for m in ("effect_size", "p_value")}
    assert set(result.metrics) == keys | {"seat/mean_abs_effect_size"}
    # 6 per target set: C(12, 6) = 924 <= 1000 partitions, so the p-value is exact: a multiple of 1/924.
    for test in ("sent-weat6", "sent-weat7"):
        p = result.metrics[f"seat/{test}/p_value"]
        assert 0 < p <= 1 and round(p * 924) == pytest.approx(p * 924)
        # With ddof=1 and two groups of n, |d| <= 2 sqrt((2n - 1) / 2n) = 1.91 for n = 6.
        assert abs(result.metrics[f"seat/{test}/effect_size"]) <= 2 * math.sqrt(11 / 12) + 1e-12
    table = result.details["tests"]
    assert table["n_targ1"].tolist() == [6, 6]
    assert result.metrics["seat/mean_abs_effect_size"] == pytest.approx(
        np.mean([abs(result.metrics[f"seat/{t}/effect_size"]) for t in ("sent-weat6", "sent-weat7")]))
    assert bench.score(model, tokenizer).metrics == result.metrics  # deterministic


def test_seat_rejects_bad_options(data_root):
    with pytest.raises(ConfigError, match="'max'"):
        SeatBenchmark(data_root, pooling="max")
