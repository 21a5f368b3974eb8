"""The batched scorer against Hugging Face's full forward pass, request by request."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ncsearch.evaluate import MaskedRequest, mean_pool, score_masked
from ncsearch.evaluate._scoring import report_progress


def _full_forward(model, request: MaskedRequest) -> np.ndarray:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([request.input_ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return np.array([logprobs[p, t].item() for p, t in zip(request.positions, request.targets)])


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "plain"])
def test_score_masked_equals_full_forward_with_padding_and_buckets(tiny_mlm, fast_path):
    model, tokenizer = tiny_mlm
    mask = tokenizer.mask_token_id
    texts = ["a short one", "a much longer sentence that needs padding in its batch", "mid length text here", "x"]
    requests = []
    for n, text in enumerate(texts):
        ids = tokenizer.encode(text)
        positions = list(range(1, len(ids) - 1))[: 1 + n]  # 1..4 positions per request
        masked = [mask if i in positions else t for i, t in enumerate(ids)]
        requests.append(MaskedRequest(masked, positions, [ids[p] for p in positions]))
    requests.append(MaskedRequest(requests[0].input_ids, [], []))  # no position: empty result
    got = score_masked(model, requests, batch_size=2, pad_id=tokenizer.pad_token_id, fast_path=fast_path)
    assert [len(g) for g in got] == [len(r.positions) for r in requests]
    for request, values in zip(requests, got):
        np.testing.assert_allclose(values, _full_forward(model, request), atol=1e-5)
        assert values.dtype == np.float64
    assert np.all(np.concatenate(got) < 0)


def test_score_masked_reports_progress_and_keeps_training_flag(tiny_mlm):
    model, tokenizer = tiny_mlm
    ids = tokenizer.encode("hello world")
    requests = [MaskedRequest(ids, [1], [ids[1]])] * 5
    events: list[tuple[int, int]] = []
    model.train()
    with report_progress(lambda added, advanced: events.append((added, advanced))):
        score_masked(model, requests, batch_size=2)
    assert model.training
    assert events[0] == (5, 0)
    assert sum(advanced for _, advanced in events) == 5
    with pytest.raises(ValueError, match="positive"):
        score_masked(model, requests, batch_size=0)


def test_masked_request_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        MaskedRequest([1, 2, 3], [1, 2], [5])


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 3.0]]


def test_duplicate_sequences_and_positions_are_scored_once_with_the_same_values(tiny_mlm):
    model, tokenizer = tiny_mlm
    ids = tokenizer.encode("the cat sat on the mat")
    masked = list(ids)
    masked[2] = tokenizer.mask_token_id
    other = list(ids)
    other[3] = tokenizer.mask_token_id
    requests = [
        MaskedRequest(masked, [2], [ids[2]]),
        MaskedRequest(other, [3], [ids[3]]),
        MaskedRequest(masked, [2], [1000]),  # same sequence and position, another target
        MaskedRequest(masked, [2, 4], [ids[2], ids[4]]),
    ]
    seen = []
    # Embeddings run once per batch, on the full forward and on the row encoder alike.
    handle = model.bert.embeddings.register_forward_hook(lambda module, args, output: seen.append(output.shape[0]))
    try:
        got = score_masked(model, requests, batch_size=8)
    finally:
        handle.remove()
    assert seen == [2]  # two distinct sequences in one batch
    for request, values in zip(requests, got):
        np.testing.assert_allclose(values, _full_forward(model, request), atol=1e-5)
    assert got[0][0] == got[3][0]
