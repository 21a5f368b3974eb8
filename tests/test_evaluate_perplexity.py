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
    requests, owners, scorable = pppl_requests(["one two three", "a b c d e f g h i j k l"], minilm_tokenizer, max_length=8)
    assert owners == [0, 0, 0] + [1] * 6  # 8 tokens minus [CLS], [SEP]
    assert scorable == [3, 6]
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


def test_sampled_positions_are_seeded_per_passage_and_labelled(minilm_tokenizer):
    texts = ["one two three", "a b c d e f g h i j k l"]
    requests, owners, scorable = pppl_requests(texts, minilm_tokenizer, max_length=8, positions=2, seed=3)
    assert owners == [0, 0, 1, 1] and scorable == [3, 6]  # at most 2 per passage, counts kept whole
    repeat, _, _ = pppl_requests(texts, minilm_tokenizer, max_length=8, positions=2, seed=3)
    assert [r.positions for r in requests] == [r.positions for r in repeat]  # same tokens every checkpoint
    draws = {tuple(p for r in pppl_requests(texts, minilm_tokenizer, max_length=8, positions=2, seed=s)[0][2:]
                   for p in r.positions) for s in range(8)}
    assert len(draws) > 1  # the seed chooses which tokens


def test_sampled_estimate_is_the_scaled_sum_and_has_its_own_name(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    exact = PerplexityBenchmark(data_root, limit=3, batch_size=16).score(model, tokenizer)
    everything = PerplexityBenchmark(data_root, limit=3, batch_size=16, positions=10_000).score(model, tokenizer)
    # every token scored: the sampled estimator is the exact metric, under the sampled name
    assert set(everything.metrics) == {"perplexity/pppl_sampled"}
    assert everything.metrics["perplexity/pppl_sampled"] == pytest.approx(exact.metrics["perplexity/pppl"], rel=1e-9)
    few = PerplexityBenchmark(data_root, limit=3, batch_size=16, positions=4).score(model, tokenizer)
    table = few.details["passages"]
    assert (table["scored"] == 4).all() and (table["tokens"] > 4).all()
    estimate = (table["sum_logprob"] * table["tokens"] / table["scored"]).sum() / table["tokens"].sum()
    assert few.metrics["perplexity/pppl_sampled"] == pytest.approx(math.exp(-estimate), rel=1e-9)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_positions_must_be_a_positive_integer(data_root, bad):
    from ncsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="eval.options.perplexity.positions: "):
        PerplexityBenchmark(data_root, positions=bad)
