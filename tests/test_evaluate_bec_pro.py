"""BEC-Pro: batched scores equal a plain one-sentence-at-a-time computation; aggregation by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ncsearch.evaluate.bec_pro import BecProBenchmark, summarise


def _plain_association(model, tokenizer, row) -> float:
    """The reference's recipe, one row at a time: full HF forward, softmax, probability of the plain
    sentence's token at the first mask of Sent_TAM, read in Sent_TM and Sent_TAM."""
    def probs(text):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return torch.softmax(model(input_ids=ids).logits[0].double(), dim=-1), ids[0]

    p_tm, _ = probs(row["Sent_TM"])
    p_tam, tam_ids = probs(row["Sent_TAM"])
    position = int((tam_ids == tokenizer.mask_token_id).nonzero()[0])
    target = tokenizer(row["Sentence"])["input_ids"][position]
    return math.log(p_tm[position, target].item() / p_tam[position, target].item())


def test_batched_equals_one_at_a_time(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    result = BecProBenchmark(data_root, limit=24, batch_size=5, seed=1).score(model, tokenizer)
    table = result.details["rows"]
    assert len(table) == 24 and (table.groupby(["Prof_Gender", "Gender"]).size() == 4).all()
    assert (table["person_pieces"] == 1).all()
    for _, row in table.iterrows():
        assert row["association"] == pytest.approx(_plain_association(model, tokenizer, row), abs=1e-5)
    # The metrics are the cell means of those associations.
    for group in ("male", "female", "balanced"):
        cell = table[table["Prof_Gender"] == group]
        male = cell.loc[cell["Gender"] == "male", "association"].mean()
        female = cell.loc[cell["Gender"] == "female", "association"].mean()
        assert result.metrics[f"bec_pro/{group}/male"] == pytest.approx(male)
        assert result.metrics[f"bec_pro/{group}/diff"] == pytest.approx(male - female)


def test_summarise_by_hand():
    table = pd.DataFrame({
        "Prof_Gender": ["male"] * 4 + ["female"] * 2 + ["balanced"] * 2,
        "Gender": ["male", "male", "female", "female", "male", "female", "male", "female"],
        "association": [1.0, 3.0, -1.0, 0.0, 0.5, 2.5, 0.0, 0.0],
    })
    metrics = summarise(table)
    assert metrics["bec_pro/male/male"] == 2.0
    assert metrics["bec_pro/male/female"] == -0.5
    assert metrics["bec_pro/male/diff"] == 2.5
    assert metrics["bec_pro/female/diff"] == -2.0
    assert metrics["bec_pro/balanced/diff"] == 0.0
    assert metrics["bec_pro/mean_abs_diff"] == pytest.approx((2.5 + 2.0 + 0.0) / 3)
    assert len(metrics) == 10
