"""GLUE: metric functions on hand cases; a short seeded fine-tune on the tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ncsearch.errors import ConfigError
from ncsearch.evaluate.glue import GlueBenchmark, accuracy, f1_binary, matthews_corr, pearson, spearman


def test_matthews_by_hand():
    labels = [1, 1, 1, 0, 0, 0, 0, 1]
    preds = [1, 1, 0, 0, 0, 1, 0, 1]
    # TP=3, TN=3, FP=1, FN=1: (9 - 1) / sqrt(4 * 4 * 4 * 4) = 0.5
    assert matthews_corr(labels, preds) == pytest.approx(0.5)
    assert matthews_corr([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    assert matthews_corr([1, 0, 1, 0], [1, 1, 1, 1]) == 0.0  # an empty margin: 0 by convention


def test_f1_and_accuracy_by_hand():
    labels = [1, 1, 1, 0, 0, 1]
    preds = [1, 0, 1, 1, 0, 1]
    # TP=3, FP=1, FN=1: F1 = 6 / 8
    assert f1_binary(labels, preds) == pytest.approx(0.75)
    assert accuracy(labels, preds) == pytest.approx(4 / 6)
    assert f1_binary([0, 0], [0, 0]) == 0.0


def test_correlations_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # x = [1, 2, 3], y = [1, 3, 2]: centred (-1, 0, 1) . (-1, 1, 0) = 1, norms sqrt(2) * sqrt(2) -> 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    # Ranks of [10, 20, 30, 40] vs [1, 8, 27, 1000] agree exactly; Pearson would not be 1.
    assert spearman([10, 20, 30, 40], [1, 8, 27, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [5, 5, 5]) == 0.0


KEYS = {"glue/cola/mcc", "glue/mrpc/f1", "glue/mrpc/acc", "glue/rte/acc", "glue/stsb/pearson", "glue/stsb/spearman",
        "glue/wnli/acc", "glue/average"}


def test_glue_on_tiny_model(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_state = torch.get_rng_state()
    bench = GlueBenchmark(data_root, limit=24, seed=3, max_steps=4, train_batch_size=8)
    result = bench.score(model, tokenizer)
    assert set(result.metrics) == KEYS
    assert all(math.isfinite(v) for v in result.metrics.values())
    m = result.metrics
    task_scores = [m["glue/cola/mcc"], (m["glue/mrpc/f1"] + m["glue/mrpc/acc"]) / 2, m["glue/rte/acc"],
                   (m["glue/stsb/pearson"] + m["glue/stsb/spearman"]) / 2, m["glue/wnli/acc"]]
    assert m["glue/average"] == pytest.approx(np.mean(task_scores))
    for key in ("glue/rte/acc", "glue/wnli/acc", "glue/mrpc/acc"):
        assert round(m[key] * 24 / 100) == pytest.approx(m[key] * 24 / 100)  # a count over 24 dev examples
    table = result.details["tasks"]
    assert table["steps"].tolist() == [4] * 5  # 3 epochs of ceil(24 / 8) = 3 batches, capped at max_steps=4
    # The model passed in is untouched, and so is the caller's RNG.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_state, torch.get_rng_state())
    # Deterministic given the seed, whichever other tasks run.
    again = GlueBenchmark(data_root, limit=24, seed=3, max_steps=4, train_batch_size=8, tasks=("stsb",)).score(
        model, tokenizer)
    assert again.metrics["glue/stsb/pearson"] == m["glue/stsb/pearson"]


def test_glue_rejects_unknown_task(data_root):
    with pytest.raises(ConfigError, match="'qqp'"):
        GlueBenchmark(data_root, tasks=("qqp",))
