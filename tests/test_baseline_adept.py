"""ADEPT (ncsearch.debias._adept): its two loss terms against independent numpy/scipy computations,
the sentence selection on concrete sentences, a training step on the tiny BERT (only the prefix gets
gradients), resume through `trainable_state`, and the prefixed model's save/load/scoring path."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from scipy.stats import entropy

from ncsearch.debias import ADEPT, ADEPTOptions, StepContext, get_baseline
from ncsearch.debias._adept import collect_examples, equidistance_js, preservation_kl, word_tokens
from ncsearch.heads import SparseMLM

# ----- the JS equidistance term ------------------------------------------------------------------


def _js_reference(neutral: np.ndarray, prototypes: np.ndarray, rho: float) -> float:
    """exp(-||a_k - n_j||^2 / (2 rho^2)) normalised over j, then scipy's JS divergence in bits."""
    sq = ((prototypes[:, None, :] - neutral[None, :, :]) ** 2).sum(-1)
    p = np.exp(-sq / (2 * rho**2))
    p = p / p.sum(axis=1, keepdims=True)
    pairs = [(i, j) for i in range(len(p)) for j in range(i + 1, len(p))]
    return float(np.mean([jensenshannon(p[i], p[j], base=2) ** 2 for i, j in pairs]))


def test_equidistance_js_matches_scipy_on_hand_made_vectors():
    neutral = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 1.0], [-1.0, 1.0, 1.0], [0.5, -2.0, 0.0]])
    prototypes = np.array([[1.0, 0.0, 0.0], [-1.0, 0.5, 0.0]])
    for rho in (1.0, 2.5):
        got = equidistance_js(torch.tensor(neutral), torch.tensor(prototypes), rho)
        assert float(got) == pytest.approx(_js_reference(neutral, prototypes, rho), rel=1e-9, abs=1e-12)
        assert float(got) > 1e-3  # these words are not equidistant: the term is not trivially 0


def test_equidistance_js_averages_over_attribute_pairs():
    rng = np.random.default_rng(0)
    neutral, prototypes = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    got = equidistance_js(torch.tensor(neutral), torch.tensor(prototypes), 1.5)
    assert float(got) == pytest.approx(_js_reference(neutral, prototypes, 1.5), rel=1e-9)


def test_equidistance_js_is_zero_for_equidistant_words_and_survives_far_states():
    # Prototypes at +-e1, neutral words in the plane x1 = 0: every word is equally far from both.
    neutral = torch.tensor([[0.0, 1.0, 0.0], [0.0, -3.0, 2.0], [0.0, 0.5, 0.5]], requires_grad=True)
    prototypes = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    assert float(equidistance_js(neutral, prototypes, 10.0).detach()) == pytest.approx(0.0, abs=1e-12)
    # Distances of ~1e4 underflow exp() in the reference's order of operations; here they stay finite.
    far = torch.tensor([[300.0, 0.0], [0.0, 300.0]], requires_grad=True)
    value = equidistance_js(far, torch.tensor([[0.0, 0.0], [1.0, 0.0]]), 1.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(far.grad).all()


# ----- the KL preservation term ------------------------------------------------------------------


def test_preservation_kl_matches_scipy_and_skips_padding():
    rng = np.random.default_rng(1)
    prompted, original = rng.normal(size=(2, 2, 3, 4)), rng.normal(size=(2, 2, 3, 4))  # (S, B, T, d)
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    per_sentence = []
    for b in range(2):
        values = [
            entropy(softmax(original[s, b, t]), softmax(prompted[s, b, t]), base=2)
            + entropy(softmax(-original[s, b, t]), softmax(-prompted[s, b, t]), base=2)
            for s in range(2)
            for t in range(3)
            if mask[b, t]
        ]
        per_sentence.append(np.mean(values))
    got = preservation_kl(torch.tensor(prompted), torch.tensor(original), torch.tensor(mask))
    assert float(got) == pytest.approx(float(np.mean(per_sentence)), rel=1e-6)
    # the padded position may hold anything
    changed = prompted.copy()
    changed[:, 1, 2] += 100.0
    assert float(preservation_kl(torch.tensor(changed), torch.tensor(original), torch.tensor(mask))) == pytest.approx(
        float(got), rel=1e-9
    )
    same = preservation_kl(torch.tensor(original), torch.tensor(original), torch.tensor(mask))
    assert float(same) == pytest.approx(0.0, abs=1e-9)


# ----- word lists and sentence selection ---------------------------------------------------------


def test_word_tokens_cut_as_gpt2_pattern():
    words = ["He", "'s", "a", "mother", "-", "in", "-", "law", ",", "42", "!"]
    assert word_tokens("He's a mother-in-law, 42!") == words


def _decoded(tokenizer, example) -> str:
    return tokenizer.decode([example.input_ids[p] for p in example.positions])


def test_collect_examples_on_concrete_sentences(minilm_tokenizer):
    tok = minilm_tokenizer
    sentences = [
        "He is a doctor.",                 # male (he); not neutral: it holds an attribute word
        "She is a doctor.",                # female (she)
        "He said she left.",               # male and female
        "He's tired.",                     # male (he, before 's)
        "The doctor met the nurse.",       # neutral twice: doctor, nurse
        "The king spoke.",                 # king has no queen sentence: the pair is dropped
        "Doctor",                          # one word: skipped
        "The physiotherapist rested.",     # neutral, a word of several pieces
    ]
    data = collect_examples(sentences, tok, male=["he", "king"], female=["she", "queen"],
                            neutral=["nurse", "doctor", "physiotherapist"], max_length=64, min_pair_sentences=2)
    # he: sentences 0, 2, 3; she: 1, 2 -> both keep their first 2
    def text(example):
        return tok.decode(example.input_ids, skip_special_tokens=True)

    assert [text(e) for e in data.attributes[0]] == ["he is a doctor.", "he said she left."]
    assert [text(e) for e in data.attributes[1]] == ["she is a doctor.", "he said she left."]
    assert [_decoded(tok, e) for e in data.attributes[0]] == ["he", "he"]
    assert data.attributes[1][1].positions == (3,)  # [CLS] he said she
    assert [(_decoded(tok, e), tok.decode(e.input_ids, skip_special_tokens=True)) for e in data.neutral] == [
        ("doctor", "the doctor met the nurse."),
        ("nurse", "the doctor met the nurse."),
        ("physiotherapist", "the physiotherapist rested."),
    ]
    pieces = tok("physiotherapist", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1 and len(data.neutral[2].positions) == len(pieces)
    # a pair below the threshold is dropped whole
    strict = collect_examples(sentences, tok, male=["he"], female=["she"], neutral=["nurse"], max_length=64,
                              min_pair_sentences=3)
    assert strict.attributes == [[], []]
    # sentences over max_length tokens are not used
    short = collect_examples(["The nurse slept.", "The nurse told the doctor about the long day."], tok, male=["he"],
                             female=["she"], neutral=["nurse"], max_length=6, min_pair_sentences=1)
    assert [tok.decode(e.input_ids, skip_special_tokens=True) for e in short.neutral] == ["the nurse slept."]


# ----- the method on the tiny model --------------------------------------------------------------

_SMALL_CORPUS = [
    "He is a doctor. She is a doctor. He met the nurse. She met the nurse.",
    "He was tired. She was tired. He likes the engineer. She likes the engineer.",
    "The doctor met the nurse. The engineer spoke to the secretary. The nurse rested.",
    "The secretary called the doctor. The engineer was late. The cook smiled.",
]


class _SmallADEPT(ADEPT):
    """ADEPT on a hand-written corpus, so the step test does not tokenize GAP."""

    def source_corpus(self) -> list[str]:
        return list(_SMALL_CORPUS)


def _prepared(tiny_mlm, data_root, *, batch_size=4, tuning="prefix"):
    model, tok = tiny_mlm
    options = ADEPTOptions(prefix_length=4, min_pair_sentences=2, tuning=tuning)
    baseline = _SmallADEPT(data_root=data_root, options=options)
    baseline.setup(tok, 0, 1, seed=3, batch_size=batch_size, max_length=48)
    return baseline, baseline.prepare_model(model)


def _step(baseline, prepared, step):
    torch.manual_seed(step)
    wrapped = SparseMLM(prepared)
    return baseline.step_terms(StepContext(step, wrapped, prepared, torch.device("cpu"), None, None))


def test_registered_with_contract_flags():
    assert get_baseline("adept") is ADEPT
    assert ADEPT.mlm_stream is False and ADEPT.frozen_base is True and ADEPT.paper_alpha == 5.0
    assert ADEPTOptions().model_dump() == {
        "tuning": "prefix", "prefix_length": 40, "prefix_projection": False, "prefix_hidden_size": 512, "js_weight": 0.3,
        "kl_weight": 0.7, "perplexity": 10.0, "min_pair_sentences": 30,
    }


def test_step_trains_only_the_prefix(tiny_mlm, data_root):
    baseline, prepared = _prepared(tiny_mlm, data_root)
    assert [len(a) for a in baseline.data.attributes] == [4, 4] and len(baseline.data.neutral) > 4
    prepared.train()
    terms = _step(baseline, prepared, 0)
    assert set(terms.losses) == {"adept_js", "adept_kl"}
    loss = sum(terms.losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    trained = {n for n, p in prepared.named_parameters() if p.grad is not None}
    assert trained == {"prefixed.peft.prompt_encoder.default.embedding.weight"}
    grad = prepared.get_parameter("prefixed.peft.prompt_encoder.default.embedding.weight").grad
    assert float(grad.abs().sum()) > 0
    assert all(p.grad is None for n, p in prepared.named_parameters() if "prompt_encoder" not in n)
    # NC3 features: the unmasked prompted pass over the three kinds (4 rows each)
    assert terms.nc3.labels is None and terms.nc3.hidden.shape[0] == 12
    assert terms.nc3.hidden.shape[:2] == terms.nc3.input_ids.shape == terms.nc3.attention_mask.shape
    # the KL term compares the prompted model with the same model without its prefix: non-zero
    assert float(terms.losses["adept_kl"]) > 0 and float(terms.losses["adept_js"]) >= 0
    # epochs: one pass over the 4 examples of each attribute: 1 step of 4, 2 steps of 2
    assert [baseline.epoch_of(s) for s in range(3)] == [0, 1, 2]
    half, _ = _prepared(tiny_mlm, data_root, batch_size=2)
    assert [half.epoch_of(s) for s in range(4)] == [0, 0, 1, 1]


def test_full_tuning_trains_every_weight_against_a_frozen_copy(tiny_mlm, data_root):
    model, _ = tiny_mlm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    baseline, prepared = _prepared(tiny_mlm, data_root, tuning="full")
    assert prepared is model and type(prepared).__name__ == "BertForMaskedLM"  # no prefix, exported as is
    prepared.eval()  # no dropout: at the start the trained model is the original, so L_kl is exactly 0
    terms = _step(baseline, prepared, 0)
    assert float(terms.losses["adept_kl"].detach()) == 0.0
    sum(terms.losses.values()).backward()
    assert prepared.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert prepared.bert.embeddings.word_embeddings.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in baseline._original.parameters())
    with torch.no_grad():
        for p in prepared.parameters():
            p.add_(0.01)
    moved = _step(baseline, prepared, 0)
    assert float(moved.losses["adept_kl"].detach()) > 0  # the copy kept the starting weights
    assert all(torch.equal(v, before[k]) for k, v in baseline._original.state_dict().items())
    # a restart starts from the original weights and loads every trained weight plus the prototypes
    state = baseline.trainable_state(prepared)
    assert "bert.encoder.layer.0.attention.self.query.weight" in state and "adept.prototypes" in state


def test_paper_preset_runs_adept_finetuning():
    from ncsearch.config import parse_spec

    spec = {
        "name": "adept", "model": "minilm-l6", "baseline": "adept",
        "train": {"steps": 2, "batch_size": 4},
        "nc3": {"preset": "paper", "vocab": {"source": "gender", "size": 60}},
        "eval": {"suite": "custom", "benchmarks": ["stereoset", "perplexity"]},
        "objectives": [{"metric": "stereoset/gender/icat", "mode": "max"}, {"metric": "perplexity/pppl", "mode": "min"}],
    }
    parsed = parse_spec(spec)
    assert parsed.baseline_options.adept.tuning == "full" and parsed.nc3.alpha == 5.0
    assert parse_spec({**spec, "nc3": {"alpha": 0.0, "positions": "all"}}).baseline_options.adept.tuning == "prefix"


def test_prototypes_are_the_mean_word_representation_of_each_attribute(tiny_mlm, data_root):
    from ncsearch.debias._adept import _layer_states

    baseline, prepared = _prepared(tiny_mlm, data_root)
    shared = collect_examples(  # sentences that are examples of both attributes, one of a long word
        ["He said she left.", "She told him the story of the physiotherapist.", "The king saw the queen.", "He slept."],
        tiny_mlm[1], male=["he", "him", "king"], female=["she", "she", "queen"], neutral=[], max_length=64,
        min_pair_sentences=1,
    )
    for data in (baseline.data, shared):
        baseline.data = data
        prepared.train()
        got = baseline.prototypes(prepared, chunk=3)
        assert prepared.training  # restored after the eval-mode pass
        prepared.eval()
        expected = []
        with torch.no_grad(), _layer_states(prepared.masked_lm.base_model) as states:
            for examples in data.attributes:  # one example at a time: no padding, no sharing
                vectors = []
                for example in examples:
                    prepared(torch.tensor([example.input_ids]), torch.ones(1, len(example.input_ids), dtype=torch.long))
                    at_word = torch.stack([s[0, list(example.positions)].mean(0) for s in states])  # (S, d)
                    vectors.append(at_word.flatten())
                expected.append(torch.stack(vectors).mean(0))
        assert got.shape == (2, 3 * 32)  # embeddings + 2 layers, 32 wide
        torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got[0], got[1])
    assert [len(a) for a in shared.attributes] == [4, 4]  # he, him, king, he / she, she, queen, she


def test_step_0_prototypes_are_computed_once_per_model_and_examples_then_read_from_the_cache(
        tiny_mlm, data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    computed = []
    real = ADEPT._local_sums
    monkeypatch.setattr(ADEPT, "_local_sums", lambda self, *a, **k: computed.append(1) or real(self, *a, **k))
    model, tok = tiny_mlm
    original = copy.deepcopy(model)

    def entries():
        return list((tmp_path / "cache" / "adept_prototype_sums").glob("*.safetensors"))

    first, prepared = _prepared((model, tok), data_root, tuning="full")  # "full": step 0 is the original model
    prepared.eval()
    _step(first, prepared, 0)
    assert len(computed) == 1 and len(entries()) == 1
    torch.testing.assert_close(first._prototypes, first._mean_of_sums(real(first, prepared, 64)), rtol=0, atol=0)
    again, fresh = _prepared((copy.deepcopy(original), tok), data_root, tuning="full")  # the next trial
    fresh.eval()
    _step(again, fresh, 0)
    assert len(computed) == 1  # the next trial read the cache (the check above called the pass directly)
    torch.testing.assert_close(again._prototypes, first._prototypes, rtol=0, atol=0)
    _step(again, fresh, 1)  # epoch 1 (4 examples per attribute, batch 4): trained weights, computed, not stored
    assert len(computed) == 2 and len(entries()) == 1
    other, moved = _prepared((copy.deepcopy(original), tok), data_root, tuning="full")
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.01)
    moved.eval()
    _step(other, moved, 0)  # other weights: their own entry
    assert len(computed) == 3 and len(entries()) == 2
    assert not torch.allclose(other._prototypes, first._prototypes)


def test_resume_from_trainable_state_repeats_the_step(tiny_mlm, data_root):
    model, tok = tiny_mlm
    original = copy.deepcopy(model)
    baseline, prepared = _prepared((model, tok), data_root, batch_size=2)
    prepared.train()
    optimizer = torch.optim.SGD([p for p in prepared.parameters() if p.requires_grad], lr=0.5)
    sum(_step(baseline, prepared, 0).losses.values()).backward()
    optimizer.step()
    state = baseline.trainable_state(prepared)
    assert "adept.prototypes" in state and int(state["adept.prototype_epoch"]) == 0
    expected = {k: float(v) for k, v in _step(baseline, prepared, 1).losses.items()}  # still epoch 0

    restarted, fresh = _prepared((original, tok), data_root, batch_size=2)
    restarted.load_trainable_state(fresh, state)
    fresh.train()
    got = {k: float(v) for k, v in _step(restarted, fresh, 1).losses.items()}
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # without the saved prototypes the restart would recompute them with the trained prefix: different
    bare = {k: v for k, v in state.items() if not k.startswith("adept.")}
    other, third = _prepared((copy.deepcopy(original), tok), data_root, batch_size=2)
    other.load_trainable_state(third, bare)
    third.train()
    assert float(_step(other, third, 1).losses["adept_js"]) != pytest.approx(expected["adept_js"], rel=1e-6)


def test_gap_setup_finds_all_three_kinds(minilm_tokenizer, data_root):
    baseline = ADEPT(data_root=data_root)
    baseline.setup(minilm_tokenizer, 0, 1, seed=0, batch_size=16, max_length=128)
    sizes = [len(a) for a in baseline.data.attributes]
    assert sizes[0] == sizes[1] > 1000 and len(baseline.data.neutral) > 100
    n = sizes[0]  # an epoch is one pass over the attribute examples, in batches of 16
    assert [baseline.epoch_of(s) for s in (0, n // 16 - 1, -(-n // 16), -(-2 * n // 16))] == [0, 0, 1, 2]


# ----- evaluation: the saved prefix model --------------------------------------------------------


def test_saved_prefix_model_loads_and_scores_with_its_prefix(tiny_mlm, data_root, tmp_path):
    from ncsearch.evaluate._row_encoder import RowEncoder
    from ncsearch.evaluate._scoring import MaskedRequest, score_masked
    from ncsearch.models import load_mlm

    model, tok = tiny_mlm
    base = copy.deepcopy(model)
    baseline, prepared = _prepared(tiny_mlm, data_root)
    ids = tok("the nurse said that she was tired")["input_ids"]
    requests = [MaskedRequest(ids[:3] + [tok.mask_token_id] + ids[4:], [3], [ids[3]]),
                MaskedRequest(ids[:5], [1, 2], [ids[1], ids[2]])]
    prompted = score_masked(prepared, requests, fast_path=False)
    plain = score_masked(base, requests)
    assert not np.allclose(np.concatenate(prompted), np.concatenate(plain))  # the prefix changes the scores

    baseline.export_model(prepared).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "prefix" / "adapter_config.json").is_file() and (tmp_path / "config.json").is_file()
    loaded, _ = load_mlm(tmp_path)
    assert type(loaded).__name__ == "PrefixMaskedLM" and not loaded.training
    assert RowEncoder.for_model(loaded) is None  # the fast row encoder knows no prefix: plain forward
    for fast in (True, False):
        got = score_masked(loaded, requests, fast_path=fast)
        np.testing.assert_allclose(np.concatenate(got), np.concatenate(prompted), rtol=1e-6)
    assert all(p.requires_grad for p in loaded.parameters())  # GLUE fine-tunes it like any checkpoint
    encoder = copy.deepcopy(loaded.base_model)  # what GLUE copies
    assert encoder.config.hidden_size == 32
