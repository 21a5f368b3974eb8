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


# ----- the reference control variate (ncsearch.evaluate._reference) -----------------------------------


def _saved(model, tokenizer, folder):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture()
def reference_dir(tmp_path, minilm_tokenizer, monkeypatch):
    """A second tiny masked LM (other random weights, same tokenizer) saved as a folder, and a fresh
    cache for reference tables."""
    from transformers import BertConfig, BertForMaskedLM

    from tiny_models import TINY_BERT

    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(1)
    model = BertForMaskedLM(BertConfig(vocab_size=minilm_tokenizer.vocab_size, **TINY_BERT)).eval()
    return _saved(model, minilm_tokenizer, tmp_path / "reference")


def test_reference_estimate_is_exact_when_every_token_is_scored(tiny_mlm, data_root, reference_dir):
    """R_p + (all tokens' sum - R_p) is the exact sum: the control changes the estimator's variance, never
    its target."""
    model, tokenizer = tiny_mlm
    exact = PerplexityBenchmark(data_root, limit=3, batch_size=16).score(model, tokenizer)
    controlled = PerplexityBenchmark(data_root, limit=3, batch_size=16, positions=10_000,
                                     reference=reference_dir).score(model, tokenizer)
    assert controlled.metrics["perplexity/pppl_sampled"] == pytest.approx(exact.metrics["perplexity/pppl"], rel=1e-9)
    table = controlled.details["passages"]
    assert table["reference_sum"].to_numpy() == pytest.approx(table["reference_sampled_sum"].to_numpy())


def test_reference_estimate_is_the_difference_estimator(tiny_mlm, data_root, reference_dir):
    model, tokenizer = tiny_mlm
    result = PerplexityBenchmark(data_root, limit=3, batch_size=16, positions=4,
                                 reference=reference_dir).score(model, tokenizer)
    table = result.details["passages"]
    reference, _ = __import__("ncsearch.models", fromlist=["load_mlm"]).load_mlm(reference_dir)
    # the reference's exact sums are its own exact pseudo-perplexity
    own = PerplexityBenchmark(data_root, limit=3, batch_size=16).score(reference, tokenizer)
    assert math.exp(-table["reference_sum"].sum() / table["tokens"].sum()) == pytest.approx(
        own.metrics["perplexity/pppl"], rel=1e-5)
    sums = table["reference_sum"] + (table["sum_logprob"] - table["reference_sampled_sum"]) * table["tokens"] / table["scored"]
    assert result.metrics["perplexity/pppl_sampled"] == pytest.approx(
        math.exp(-sums.sum() / table["tokens"].sum()), rel=1e-9)
    plain = PerplexityBenchmark(data_root, limit=3, batch_size=16, positions=4).score(model, tokenizer)
    assert (plain.details["passages"]["sum_logprob"] == table["sum_logprob"]).all()  # the same tokens scored


def test_reference_of_the_scored_model_itself_gives_its_exact_metric(data_root, reference_dir):
    from ncsearch.models import load_mlm

    model, tokenizer = load_mlm(reference_dir)
    exact = PerplexityBenchmark(data_root, limit=2, batch_size=16).score(model, tokenizer)
    controlled = PerplexityBenchmark(data_root, limit=2, batch_size=16, positions=2,
                                     reference=reference_dir).score(model, tokenizer)
    assert controlled.metrics["perplexity/pppl_sampled"] == pytest.approx(exact.metrics["perplexity/pppl"], rel=1e-6)


def test_reference_table_is_computed_once_and_keyed_by_weights(tiny_mlm, data_root, reference_dir, monkeypatch, tmp_path):
    from ncsearch.evaluate import _reference

    model, tokenizer = tiny_mlm
    texts = __import__("ncsearch.evaluate.perplexity", fromlist=["x"]).held_out_passages(data_root, 2)
    first = _reference.reference_table(reference_dir, texts, tokenizer, max_length=16)
    cached = list((tmp_path / "cache" / "pppl_reference").glob("*.npz"))
    assert len(cached) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a cached reference table")

    monkeypatch.setattr(_reference, "_compute", refuse)
    again = _reference.reference_table(reference_dir, texts, tokenizer, max_length=16)
    assert (again.logprobs == first.logprobs).all() and (again.offsets == first.offsets).all()
    with pytest.raises(AssertionError, match="recomputed"):  # other passages or truncation: another key
        _reference.reference_table(reference_dir, texts, tokenizer, max_length=12)
    other = _saved(model, tokenizer, tmp_path / "other-weights")
    with pytest.raises(AssertionError, match="recomputed"):  # other weights: another key
        _reference.reference_table(other, texts, tokenizer, max_length=16)


def test_reference_with_another_tokenizer_is_refused(tiny_mlm, data_root, tmp_path, monkeypatch):
    from transformers import BertConfig, BertForMaskedLM

    from ncsearch.errors import UserInputError
    from tiny_models import TINY_BERT

    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    model, tokenizer = tiny_mlm
    other_tokenizer = __import__("copy").deepcopy(tokenizer)
    other_tokenizer.add_tokens(["zzyzx-not-a-word"])
    other = BertForMaskedLM(BertConfig(vocab_size=len(other_tokenizer), **TINY_BERT))
    folder = _saved(other, other_tokenizer, tmp_path / "other-tokenizer")
    with pytest.raises(UserInputError, match="another tokenizer"):
        PerplexityBenchmark(data_root, limit=1, positions=2, reference=folder).score(model, tokenizer)


def test_reference_needs_positions_and_base_needs_a_search(data_root, tiny_mlm):
    from ncsearch.errors import ConfigError, UserInputError

    with pytest.raises(ConfigError, match="eval.options.perplexity.*set positions too"):
        PerplexityBenchmark(data_root, reference="minilm-l6")
    model, tokenizer = tiny_mlm
    with pytest.raises(UserInputError, match="reference 'base' means a search's own model"):
        PerplexityBenchmark(data_root, limit=1, positions=2, reference="base").score(model, tokenizer)


def test_search_resolves_reference_base_to_its_model():
    from ncsearch._trial_driver import evaluation_suite
    from ncsearch.config import load_spec

    spec = load_spec("search_spaces/alpha.yaml", [])
    _, options = evaluation_suite(spec, vocab_ids=[1, 2])
    assert options["perplexity"]["reference"] == spec.model == "minilm-l6"
