"""Pseudo-perplexity: the formula on known numbers and the batched scorer against a plain loop."""

from __future__ import annotations

import math

import pytest
import torch

from ncsearch.evaluate.perplexity import PerplexityBenchmark, pppl_requests, pseudo_perplexity


def test_pseudo_perplexity_is_exp_of_mean_nll_over_tokens():
    assert pseudo_perplexity([math.log(0.5), math.log(0.125)]) == pytest.approx(4.0)  # exp(mean(ln2, ln8))
    assert math.isnan(pseudo_perplexity([]))


def test_requests_skip_special_tokens_and_respect_max_length(minilm_tokenizer):
    requests, owners = pppl_requests(["one two three", "a b c d e f g h i j k l"], minilm_tokenizer, max_length=8)
    assert owners == [0, 0, 0] + [1] * 6  # 8 tokens minus [CLS], [SEP]
    first = requests[0]
    assert first.input_ids[1] == minilm_tokenizer.mask_token_id and first.positions == [1]
    assert first.targets == [minilm_tokenizer.encode("one two three")[1]]


def test_benchmark_equals_plain_loop(tiny_mlm, data_root):
    from ncsearch.data import load_gap_corpus

    model, tokenizer = tiny_mlm
    result = PerplexityBenchmark(data_root, limit=1, batch_size=16).score(model, tokenizer)
    texts = load_gap_corpus(data_root, splits=("validation",))[:1]
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer.encode(text, truncation=True, max_length=PerplexityBenchmark.max_length)
        for position in range(1, len(ids) - 1):
            masked = torch.tensor([ids])
            masked[0, position] = tokenizer.mask_token_id
            with torch.no_grad():
                logits = model.cls(model.bert(masked).last_hidden_state[0, position])
            total += torch.log_softmax(logits, dim=-1)[ids[position]].item()
            count += 1
    assert result.metrics["perplexity/pppl"] == pytest.approx(math.exp(-total / count), rel=1e-5)
    table = result.details["passages"]
    assert table["tokens"].sum() == count and len(table) == 1
