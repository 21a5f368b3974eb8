"""Baselines: each one's defining transformation on concrete inputs, plus a shared contract."""

from __future__ import annotations

import pytest
import torch

from ncsearch.config import BASELINES, BaselineOptions
from ncsearch.data import load_gap_corpus, load_gender_words
from ncsearch.debias import BEC, CDA, MLM, CounterfactualSwapper, Dropout, available, get_baseline
from ncsearch.errors import ConfigError


@pytest.fixture(scope="module")
def swap(data_root):
    return CounterfactualSwapper(load_gender_words(data_root).pairs)


# ----- registry -------------------------------------------------------------------------------------


def test_registry_matches_the_schema():
    assert available() == sorted(BASELINES)
    assert get_baseline("cda") is CDA and get_baseline("bec") is BEC
    assert get_baseline("dropout") is Dropout and get_baseline("mlm") is MLM


def test_unknown_baseline_lists_the_valid_ones():
    valid = ", ".join(sorted(BASELINES))
    with pytest.raises(ConfigError, match=rf"unknown baseline 'inlp'; valid: {valid}$"):
        get_baseline("inlp")


# ----- CDA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("he went home", "she went home"),
        ("she went home", "he went home"),
        ("The actress thanked the actor.", "The actor thanked the actress."),
        ("He said hello.", "She said hello."),  # case kept; "hello" starts with "he" but is untouched
        ("HE IS THE KING", "SHE IS THE QUEEN"),
        ("Actresses and actors", "Actors and actresses"),
        ("the theme of them", "the theme of them"),  # "the"/"them"/"theme" hold "he" inside a word
        ("hers is here; she's there", "hers is here; he's there"),  # "hers" is no listed word
        ("Mr. Smith met his wife", "Mrs. Smith met her husband"),
        ("Her mother told her to stay", "His father told him to stay"),  # "her": determiner vs object
        ("himself, herself", "herself, himself"),
        ("shepherd helmet", "shepherd helmet"),
    ],
)
def test_cda_swaps_gender_words_on_word_boundaries_keeping_case(swap, text, expected):
    assert swap(text) == expected


def test_cda_swap_is_an_involution_on_unambiguous_words(swap):
    text = "The boy and his uncle met a waitress; Father and Son were kings."
    assert swap(swap(text)) == text


def test_cda_two_sided_keeps_originals_and_adds_the_changed_swaps(data_root):
    baseline = CDA(data_root=data_root)
    texts = baseline.transform_corpus(["He is an actor.", "No gendered word here.", "the theme"])
    assert texts == ["He is an actor.", "No gendered word here.", "the theme", "She is an actress."]


def test_cda_one_sided_replaces_each_text(data_root):
    options = BaselineOptions.model_validate({"cda": {"two_sided": False}}).cda
    texts = CDA(data_root=data_root, options=options).transform_corpus(["He is an actor.", "plain"])
    assert texts == ["She is an actress.", "plain"]


def test_cda_corpus_caps_the_source_before_augmenting(data_root, swap):
    corpus = CDA(data_root=data_root).corpus(limit=3)
    source = load_gap_corpus(data_root, ("development", "test"))[:3]
    assert corpus == source + [swap(t) for t in source]  # each GAP passage holds a gendered pronoun
    assert "after he slept with Jenny" in source[0] and "after she slept with Jenny" in corpus[3]


# ----- dropout --------------------------------------------------------------------------------------


def test_dropout_applies_the_configured_rates_to_config_and_modules(data_root, tiny_mlm):
    model, _ = tiny_mlm
    options = BaselineOptions.model_validate({"dropout": {"hidden_dropout": 0.3, "attention_dropout": 0.25}}).dropout
    prepared = Dropout(data_root=data_root, options=options).prepare_model(model)
    assert prepared.config.hidden_dropout_prob == 0.3
    assert prepared.config.attention_probs_dropout_prob == 0.25
    assert model.config.hidden_dropout_prob == 0.1  # the input model is left alone
    rates = {name: m.p for name, m in prepared.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert rates["bert.embeddings.dropout"] == 0.3
    assert rates["bert.encoder.layer.0.attention.self.dropout"] == 0.25
    assert rates["bert.encoder.layer.1.output.dropout"] == 0.3
    # same weights, and the decoder stays tied to the input embeddings
    for (name, a), (_, b) in zip(model.state_dict().items(), prepared.state_dict().items()):
        assert torch.equal(a, b), name
    emb = prepared.get_input_embeddings().weight
    assert prepared.cls.predictions.decoder.weight.data_ptr() == emb.data_ptr()


def test_dropout_defaults_are_webster_et_al(data_root):
    assert Dropout(data_root=data_root).config_overrides() == {"hidden_dropout": 0.20, "attention_dropout": 0.15}


# ----- bec ------------------------------------------------------------------------------------------


def test_bec_reads_the_gender_flipped_corpus(data_root):
    flipped = BEC(data_root=data_root).corpus(limit=20)
    original = MLM(data_root=data_root).corpus(limit=20)
    assert flipped == load_gap_corpus(data_root, ("development", "test"), flipped=True)[:20]
    assert len(flipped) == 20 and flipped != original
    # the first passage: "... after he slept with Jenny" becomes "... after she slept with Denver"
    assert "after he slept" in original[0] and "after she slept" in flipped[0]


# The shared contract every registered baseline passes is tests/test_baseline_contract.py.


def test_a_baselines_eval_options_apply_unless_the_spec_sets_them():
    """ASE trains on WinoBias dev, so its trials score WinoBias test; a spec that asks for dev is run as
    asked, with a warning that names the overlap."""
    import warnings

    from ncsearch._trial_driver import evaluation_suite
    from ncsearch.config import parse_spec

    def suite(**eval_spec):
        spec = parse_spec({
            "name": "t", "baseline": "ase", "eval": {"suite": "custom", "benchmarks": ["winobias", "stereoset"], **eval_spec},
            "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "winobias/gap", "mode": "min"}],
        })
        return evaluation_suite(spec, vocab_ids=[1])[1]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert suite()["winobias"] == {"split": "test"}
    with pytest.warns(UserWarning, match=r"baseline 'ase' trains on the data of winobias split='dev'"):
        assert suite(options={"winobias": {"split": "dev"}})["winobias"] == {"split": "dev"}


def test_a_baselines_eval_options_skip_benchmarks_the_suite_does_not_run():
    from ncsearch._trial_driver import evaluation_suite
    from ncsearch.config import parse_spec

    spec = parse_spec({
        "name": "t", "baseline": "ase", "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
        "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
    })
    assert "winobias" not in evaluation_suite(spec, vocab_ids=[1])[1]
