"""BERT-ASE: pronoun masking on WinoBias lines, the orthogonality and EWC terms with hand-computed values,
the Fisher diagonal, the preset, and a full step on a tiny model (ncsearch/debias/_ase.py)."""

from __future__ import annotations

import pytest
import torch

from ncsearch.data import parse_winobias_line
from ncsearch.debias import StepContext, get_baseline
from ncsearch.debias._ase import (
    ASEOptions,
    EWCAnchors,
    _pack_words,
    build_examples,
    diagonal_fisher,
    ewc_penalty,
    orthogonal_term,
)
from ncsearch.errors import ConfigError
from ncsearch.heads import IGNORE_INDEX, SparseMLM

NEUTRAL = ["clerk", "hairdresser", "mechanic", "ceo"]


def tokens(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(list(ids))


def line(text: str, kind: str = "pro"):
    return parse_winobias_line(text, stereotype=kind, type=1).text


# ----- pronoun masking --------------------------------------------------------------------------


def test_the_pronoun_of_a_winobias_line_is_masked_and_labelled(minilm_tokenizer):
    tok = minilm_tokenizer
    text = line("4 The mechanic gave [the clerk] a present because it was [her] birthday.")
    (example,) = build_examples(tok, [text], NEUTRAL, max_length=64)
    assert tokens(tok, example.input_ids) == [
        "[CLS]", "the", "mechanic", "gave", "the", "clerk", "a", "present", "because", "it", "was", "[MASK]",
        "birthday", ".", "[SEP]",
    ]
    her = tok.convert_tokens_to_ids("her")
    assert list(example.labels) == [IGNORE_INDEX] * 11 + [her] + [IGNORE_INDEX] * 3
    # the neutral words of the sentence (mechanic, clerk) are marked, nothing else
    assert list(example.neutral) == [0, 0, 1, 0, 0, 1] + [0] * 9
    assert example.masked == 1


def test_every_gendered_pronoun_is_masked_with_its_own_label(minilm_tokenizer):
    # As the reference's data preparation does: all he/she/him/his/her/hers of the sentence, any case,
    # bracketed or not; here each mask keeps its own pronoun as the label.
    tok = minilm_tokenizer
    text = line("27 [The developer] visited the hairdresser because [he] needed to cut [his] hair.")
    (example,) = build_examples(tok, [text], NEUTRAL, max_length=64)
    shown = tokens(tok, example.input_ids)
    assert shown == ["[CLS]", "the", "developer", "visited", "the", "hair", "##dre", "##sser", "because", "[MASK]",
                     "needed", "to", "cut", "[MASK]", "hair", ".", "[SEP]"]
    labelled = {i: tok.convert_ids_to_tokens(label) for i, label in enumerate(example.labels) if label != IGNORE_INDEX}
    assert labelled == {9: "he", 13: "his"}
    assert [shown[i] for i, flag in enumerate(example.neutral) if flag] == ["hair", "##dre", "##sser"]

    (capital,) = build_examples(tok, ["He told the CEO that hers was the other one, then left."], NEUTRAL, max_length=64)
    labelled = [tok.convert_ids_to_tokens(label) for label in capital.labels if label != IGNORE_INDEX]
    assert labelled == ["he", "hers"]  # "the", "then", "other" are not pronouns
    assert sum(capital.neutral) == 1  # CEO, matched case-insensitively


def test_a_sentence_without_a_listed_pronoun_is_dropped_and_truncation_counts(minilm_tokenizer):
    tok = minilm_tokenizer
    texts = ["The nurse hurt herself.", "The clerk said that she would come."]
    examples = build_examples(tok, texts, NEUTRAL, max_length=64)
    assert len(examples) == 1 and tokens(tok, examples[0].input_ids)[5] == "[MASK]"
    # cut before the pronoun: nothing to predict, dropped
    assert build_examples(tok, texts[1:], NEUTRAL, max_length=5) == []


def test_the_whole_dev_split_gives_one_example_per_sentence(minilm_tokenizer, data_root):
    from ncsearch.data import load_gender_words, load_winobias

    sentences = load_winobias(data_root, "dev")
    examples = build_examples(minilm_tokenizer, [s.text for s in sentences], load_gender_words(data_root).neutral, 128)
    assert len(examples) == len(sentences) == 1584
    assert sum(e.masked for e in examples) == 1584 + 34  # 34 sentences have two pronouns


# ----- the regularizers ---------------------------------------------------------------------------


def test_orthogonal_term_on_hand_made_vectors():
    hidden = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], [[-3.0, -4.0], [2.0, 2.0], [0.0, 0.0]]])
    neutral = torch.tensor([[1, 0, 1], [1, 0, 0]])
    g = torch.tensor([0.6, 0.8])
    # projections: row 0: 5.0, 0.6, 1.6; row 1: -5.0, 2.8, 0 -> marked: 5.0, 1.6, -5.0
    assert orthogonal_term(hidden, neutral, g, "abs").item() == pytest.approx(5.0 + 1.6 + 5.0)
    assert orthogonal_term(hidden, neutral, g, "square").item() == pytest.approx(25.0 + 2.56 + 25.0)
    # the gradient of |h . g| at a marked position is sign(h . g) g; unmarked positions get none
    h = hidden.clone().requires_grad_(True)
    orthogonal_term(h, neutral, g, "abs").backward()
    torch.testing.assert_close(h.grad[0, 0], g)
    torch.testing.assert_close(h.grad[1, 0], -g)
    torch.testing.assert_close(h.grad[0, 1], torch.zeros(2))


def test_ewc_penalty_on_a_tiny_parameter_set():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([[0.5]], requires_grad=True)
    c = torch.tensor([7.0], requires_grad=True)  # not anchored: ignored
    reference = {"a": torch.tensor([0.0, 2.0]), "b": torch.tensor([[1.5]])}
    fisher = {"a": torch.tensor([2.0, 3.0]), "b": torch.tensor([[4.0]])}
    penalty = ewc_penalty([("a", a), ("b", b), ("c", c)], reference, fisher)
    assert penalty.item() == pytest.approx(2.0 * 1.0**2 + 3.0 * 0.0 + 4.0 * 1.0**2)  # 6
    penalty.backward()
    torch.testing.assert_close(a.grad, torch.tensor([4.0, 0.0]))  # 2 F (a - a0)
    torch.testing.assert_close(b.grad, torch.tensor([[-8.0]]))
    assert c.grad is None
    with pytest.raises(ConfigError):
        ewc_penalty([("c", c)], reference, fisher)


def test_fisher_is_the_mean_of_per_sentence_squared_gradients(tiny_mlm):
    model, tok = tiny_mlm
    examples = build_examples(tok, ["The clerk said that she would come.", "He gave the mechanic a tip."], NEUTRAL, 32)
    anchors = diagonal_fisher(model, examples, device=torch.device("cpu"))
    # by hand: each sentence's gradient (labels = its own input ids at every position), squared, averaged
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for example in examples:
        model.zero_grad()
        ids = torch.tensor([example.input_ids])
        model(input_ids=ids, labels=ids).loss.backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad.square() / len(examples)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(anchors.fisher[name], expected[name], rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(anchors.fisher["bert.embeddings.word_embeddings.weight"],
                               expected["bert.embeddings.word_embeddings.weight"], rtol=1e-5, atol=1e-10)
    assert anchors.fisher[name].abs().sum() > 0
    assert not anchors.reference[name].requires_grad
    torch.testing.assert_close(anchors.reference[name], dict(model.named_parameters())[name].detach())


def test_gender_words_are_packed_in_order_within_the_budget(minilm_tokenizer):
    words = ["countrywoman", "sororal", "witches", "maidservant", "mothers"]
    chunks = _pack_words(minilm_tokenizer, words, budget=4)
    assert all(0 < len(c) <= 4 for c in chunks)
    flat = [t for c in chunks for t in c]
    assert flat == minilm_tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]


# ----- options --------------------------------------------------------------------------------------


def test_preset_paper_turns_both_regularizers_off():
    assert ASEOptions().orthogonal_weight == 1.0 and ASEOptions().ewc_weight == 0.5  # BERT-ASE's defaults
    paper = ASEOptions(preset="paper")
    assert (paper.orthogonal_weight, paper.ewc_weight, paper.needs_original) == (0.0, 0.0, False)
    assert ASEOptions(preset="paper", ewc_weight=0.0).ewc_weight == 0.0
    with pytest.raises(ValueError, match="preset 'paper' fixes ewc_weight=0.0"):
        ASEOptions(preset="paper", ewc_weight=0.5)
    with pytest.raises(ValueError, match="preset 'paper' fixes orthogonal_weight=0.0"):
        ASEOptions(preset="paper", orthogonal_weight=2.0)
    assert get_baseline("ase").paper_alpha == 100.0
    assert get_baseline("ase").eval_options == {"winobias": {"split": "test"}}


def test_a_regularizer_without_the_original_model_path_is_an_error(minilm_tokenizer, data_root):
    ase = get_baseline("ase")(data_root=data_root)
    with pytest.raises(ConfigError, match="model_path"):
        ase.setup(minilm_tokenizer, 0, 1, 0, batch_size=4, max_length=32)
    paper = get_baseline("ase")(data_root=data_root, options=ASEOptions(preset="paper"))
    paper.setup(minilm_tokenizer, 0, 1, 0, batch_size=4, max_length=32)  # nothing anchors to the original
    assert paper.anchors is None and paper.direction is None


# ----- the full step ------------------------------------------------------------------------------


@pytest.fixture()
def tiny_dir(tiny_mlm, tmp_path):
    model, tok = tiny_mlm
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path


def prepared(data_root, tiny_dir, *, rank=0, world_size=1, options=None):
    from ncsearch.models import load_mlm

    model, tok = load_mlm(str(tiny_dir))
    ase = get_baseline("ase")(data_root=data_root, options=options or ASEOptions(fisher_sentences=6))
    ase.setup(tok, rank, world_size, 3, device=torch.device("cpu"), batch_size=4, max_length=32, model_path=str(tiny_dir))
    return ase, ase.prepare_model(model).eval()  # dropout off: passes compare exactly


def step(ase, model, k=0):
    return ase.step_terms(StepContext(k, SparseMLM(model), model, torch.device("cpu"), None, None))


def test_full_step_on_tiny_mlm(data_root, tiny_dir):
    from ncsearch.evaluate.winobias import overlap_reason

    ase, model = prepared(data_root, tiny_dir)
    terms = step(ase, model)
    assert sorted(terms.losses) == ["ewc", "orthogonal", "pronoun_mlm"]
    # the MLM term is the plain masked-LM loss of the batch (one worker)
    batch, total = ase._local_batch(0)
    expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert terms.losses["pronoun_mlm"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert total == int((batch["labels"] != IGNORE_INDEX).sum())
    # EWC is 0 at the original weights; the orthogonality term is weight 1 x the sum of |h . g|
    assert terms.losses["ewc"].item() == 0.0
    assert terms.losses["orthogonal"].item() > 0
    assert ase.direction.norm().item() == pytest.approx(1.0)
    # NC3 reads the masked pass: [MASK] in the input ids where the labels are
    nc3 = terms.nc3
    assert nc3.hidden.shape[:2] == nc3.input_ids.shape
    assert bool((nc3.input_ids[nc3.labels != IGNORE_INDEX] == ase.tokenizer.mask_token_id).all())

    sum(terms.losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["bert.encoder.layer.0.attention.self.query.weight"].abs().sum() > 0

    # EWC after moving one weight by d: F_i d^2 x ewc_weight
    name = "bert.encoder.layer.1.output.dense.weight"
    with torch.no_grad():
        dict(model.named_parameters())[name][0, 0] += 0.5
    fisher = ase.anchors.fisher[name][0, 0].item()
    assert step(ase, model).losses["ewc"].item() == pytest.approx(0.5 * fisher * 0.25, rel=1e-4)

    # the model says what it was trained on, and the WinoBias benchmark recognises it
    assert model.config.ncsearch_trained_on == ["winobias/dev"]
    assert "overlap" in overlap_reason(model, "dev") and overlap_reason(model, "test") is None


def test_two_workers_split_the_global_batch_into_the_same_terms(data_root, tiny_dir):
    """Per-worker terms are scaled so that DDP's mean over workers is the one-worker value, in
    the loss and in its gradient."""
    one, model = prepared(data_root, tiny_dir)
    whole = step(one, model, k=1)
    loss = whole.losses["pronoun_mlm"] + whole.losses["orthogonal"]
    (reference,) = torch.autograd.grad(loss, [model.bert.embeddings.word_embeddings.weight])
    values, grads = [], []
    for rank in (0, 1):
        ase, worker = prepared(data_root, tiny_dir, rank=rank, world_size=2)
        terms = step(ase, worker, k=1)
        values.append({k: v.item() for k, v in terms.losses.items()})
        part = terms.losses["pronoun_mlm"] + terms.losses["orthogonal"]
        grads.append(torch.autograd.grad(part, [worker.bert.embeddings.word_embeddings.weight])[0])
    for key in ("pronoun_mlm", "orthogonal", "ewc"):
        assert (values[0][key] + values[1][key]) / 2 == pytest.approx(whole.losses[key].item(), rel=1e-5)
    torch.testing.assert_close((grads[0] + grads[1]) / 2, reference, rtol=1e-4, atol=1e-5)  # summation order


def test_a_restart_recomputes_the_same_anchors_and_batches(data_root, tiny_dir):
    first, _ = prepared(data_root, tiny_dir)
    again, _ = prepared(data_root, tiny_dir)
    torch.testing.assert_close(first.direction, again.direction, rtol=0, atol=0)
    for name, value in first.anchors.fisher.items():
        torch.testing.assert_close(value, again.anchors.fisher[name], rtol=0, atol=0)
    for k in (0, 5, 400):
        a, b = first._local_batch(k)[0], again._local_batch(k)[0]
        assert all(torch.equal(a[key], b[key]) for key in a)


def test_the_fisher_is_computed_once_per_model_and_sample_then_read_from_the_cache(data_root, tiny_dir, tmp_path, monkeypatch):
    import ncsearch.debias._ase as ase_module

    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    computed = []
    real = ase_module.diagonal_fisher
    monkeypatch.setattr(ase_module, "diagonal_fisher", lambda *a, **k: computed.append(1) or real(*a, **k))

    first, model = prepared(data_root, tiny_dir)
    entries = sorted((tmp_path / "cache" / "ase_fisher").glob("*.safetensors"))
    assert len(computed) == 1 and len(entries) == 1
    again, _ = prepared(data_root, tiny_dir)  # a second trial or replicate: read, not computed
    assert len(computed) == 1
    assert sorted(again.anchors.fisher) == sorted(first.anchors.fisher)
    for name, value in first.anchors.fisher.items():
        torch.testing.assert_close(again.anchors.fisher[name], value, rtol=0, atol=0)
        torch.testing.assert_close(again.anchors.reference[name], first.anchors.reference[name], rtol=0, atol=0)
    assert again.anchors.fisher[name].abs().sum() > 0

    entries[0].write_bytes(entries[0].read_bytes()[:1000])  # damaged: recomputed and replaced
    repaired, _ = prepared(data_root, tiny_dir)
    assert len(computed) == 2
    torch.testing.assert_close(repaired.anchors.fisher[name], first.anchors.fisher[name], rtol=0, atol=0)
    prepared(data_root, tiny_dir, options=ASEOptions(fisher_sentences=5))  # another sample: its own entry
    assert len(computed) == 3
    assert len(list((tmp_path / "cache" / "ase_fisher").glob("*.safetensors"))) == 2


def test_winobias_warns_when_it_scores_the_training_split(data_root, tiny_dir):
    from ncsearch.evaluate.winobias import TrainTestOverlapWarning, WinoBiasBenchmark

    _, model = prepared(data_root, tiny_dir, options=ASEOptions(preset="paper"))
    model.eval()
    with pytest.warns(TrainTestOverlapWarning, match="fine-tuned on the WinoBias dev sentences"):
        WinoBiasBenchmark(data_root, split="dev", limit=4).score(model, _tokenizer(tiny_dir))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainTestOverlapWarning)
        WinoBiasBenchmark(data_root, split="test", limit=4).score(model, _tokenizer(tiny_dir))


def _tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def test_ewc_anchors_are_not_model_parameters(data_root, tiny_dir):
    ase, model = prepared(data_root, tiny_dir)
    assert isinstance(ase.anchors, EWCAnchors)
    params = {id(p) for p in model.parameters()}
    assert not any(id(t) in params for t in ase.anchors.reference.values())
