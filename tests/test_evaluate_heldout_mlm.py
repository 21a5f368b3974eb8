"""Held-out masked-LM loss: seeded masks, and the batched scorer against a plain loop."""

from __future__ import annotations

import pytest
import torch

from ncsearch.evaluate.heldout_mlm import HeldoutMLMBenchmark, masked_requests


def test_masks_are_seeded_per_passage_and_pattern(minilm_tokenizer):
    texts = ["a b c d e f g h i j k l m n o p q r s t", "one two three"]
    requests, owners = masked_requests(texts, minilm_tokenizer, max_length=32, masks=3, mlm_probability=0.15, seed=0)
    assert owners == [0, 0, 0, 1, 1, 1]
    assert [len(r.positions) for r in requests] == [3, 3, 3, 1, 1, 1]  # round(0.15 x 20) = 3; at least 1
    for request in requests:
        assert all(request.input_ids[p] == minilm_tokenizer.mask_token_id for p in request.positions)
        assert 0 not in request.positions  # never [CLS]
    again, _ = masked_requests(texts, minilm_tokenizer, max_length=32, masks=3, mlm_probability=0.15, seed=0)
    assert [r.positions for r in again] == [r.positions for r in requests]
    assert len({tuple(r.positions) for r in requests[:3]}) > 1  # patterns differ


def test_loss_equals_a_plain_loop(tiny_mlm, data_root):
    from ncsearch.data import load_gap_corpus

    model, tokenizer = tiny_mlm
    result = HeldoutMLMBenchmark(data_root, limit=2, masks=2, batch_size=3).score(model, tokenizer)
    texts = load_gap_corpus(data_root, splits=("validation",))[:2]
    requests, _ = masked_requests(texts, tokenizer, max_length=64, masks=2, mlm_probability=0.15, seed=0)
    total, count = 0.0, 0
    for request in requests:
        with torch.no_grad():
            logits = model(torch.tensor([request.input_ids])).logits[0]
        logprobs = torch.log_softmax(logits, dim=-1)
        for position, target in zip(request.positions, request.targets):
            total += logprobs[position, target].item()
            count += 1
    assert result.metrics["heldout_mlm/loss"] == pytest.approx(-total / count, rel=1e-5)
    assert result.details["passages"]["scored"].sum() == count


@pytest.mark.parametrize(("option", "bad"), [("masks", 0), ("masks", 1.5), ("mlm_probability", 0.0), ("mlm_probability", 1)])
def test_options_are_checked(data_root, option, bad):
    from ncsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=option):
        HeldoutMLMBenchmark(data_root, **{option: bad})
