"""fisher_lowrank: Fisher diagonal, neutralisation mask, counterfactual sets, LoRA injection and export."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from ncsearch.data import load_gender_words
from ncsearch.debias import (
    FisherLowRank,
    FisherLowRankOptions,
    StepContext,
    get_baseline,
)
from ncsearch.debias._fisher_lowrank import (
    counterfactual_sets,
    diagonal_fisher,
    fisher_difference,
    top_fraction_mask,
)
from ncsearch.errors import ConfigError
from ncsearch.heads import SparseMLM, encode, mlm_head
from ncsearch.training import adamw

PAIRS = [("he", "she"), ("his", "her"), ("him", "her"), ("actor", "actress")]


# ----- the defining pieces, with hand-computed answers ------------------------------------------------


def test_diagonal_fisher_is_mean_squared_gradient_by_hand():
    # loss = 0.5 (w.x - y)^2, so dL/dw = (w.x - y) x.  w = [1, 2]:
    #   x = [1, 1], y = 1: residual 2 -> grad [2, 2] -> squared [4, 4]
    #   x = [2, 0], y = 0: residual 2 -> grad [4, 0] -> squared [16, 0]
    # mean: [10, 2]; the bias-free Linear has no other parameter.
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    batches = [(torch.tensor([[1.0, 1.0]]), torch.tensor([1.0])), (torch.tensor([[2.0, 0.0]]), torch.tensor([0.0]))]

    def loss(batch):
        x, y = batch
        return 0.5 * (layer(x).squeeze(-1) - y).square().sum()

    fisher = diagonal_fisher({"w": layer.weight}, loss, batches)
    assert torch.equal(fisher["w"], torch.tensor([[10.0, 2.0]]))
    assert layer.weight.grad is None  # autograd.grad: .grad is left alone


def test_fisher_difference_normalises_each_group_over_all_tensors():
    # male sums to 4: a [.25, .25], b [.5]; female sums to 4: a [.75, 0], b [.25]
    male = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([2.0])}
    female = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([1.0])}
    diff = fisher_difference(male, female)
    assert torch.allclose(diff["a"], torch.tensor([0.5, 0.25]))
    assert torch.allclose(diff["b"], torch.tensor([0.25]))
    # scale-free: multiplying one group's Fisher changes nothing
    scaled = fisher_difference({k: 7 * v for k, v in male.items()}, female)
    assert all(torch.allclose(scaled[k], diff[k]) for k in diff)


def test_top_fraction_mask_ranks_all_tensors_together():
    scores = {"a": torch.tensor([[0.1, 0.9], [0.5, 0.2]]), "b": torch.tensor([0.7, 0.3, 0.8, 0.0])}
    masks = top_fraction_mask(scores, 0.375)  # 8 weights -> the 3 largest: 0.9 (a), 0.8 and 0.7 (b)
    assert masks["a"].tolist() == [[False, True], [False, False]]
    assert masks["b"].tolist() == [True, False, True, False]
    assert masks["a"].dtype == torch.bool
    # floor: 0.3 x 8 = 2.4 -> 2; a fraction of 0 neutralises nothing
    assert sum(int(m.sum()) for m in top_fraction_mask(scores, 0.3).values()) == 2
    assert not any(m.any() for m in top_fraction_mask(scores, 0.0).values())


def test_top_fraction_mask_ties_go_to_the_earlier_weight():
    masks = top_fraction_mask({"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([1.0, 1.0])}, 0.5)
    assert masks["a"].tolist() == [True, True] and masks["b"].tolist() == [False, False]


def test_counterfactual_sets_are_all_male_and_all_female():
    texts = ["He saw her with his actress friend.", "Nothing gendered here.", "She is an actress.", "HIS book"]
    male, female = counterfactual_sets(texts, PAIRS)
    assert male == ["He saw him with his actor friend.", "He is an actor.", "HIS book"]
    assert female == ["She saw her with her actress friend.", "She is an actress.", "HER book"]


# ----- the baseline on the tiny model ---------------------------------------------------------------


def _baseline(data_root, tokenizer, *, seed=0, **options):
    opts = {"fisher_sentences": 8, "fisher_batch_size": 4, "neutralise_fraction": 0.05}
    opts.update(options)
    baseline = FisherLowRank(data_root=data_root, options=FisherLowRankOptions(**opts))
    baseline.setup(tokenizer, 0, 1, seed, device=torch.device("cpu"), batch_size=4, max_length=48)
    return baseline


def _target_weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith(("query.weight", "value.weight"))}


def test_registered_with_contract_flags():
    assert get_baseline("fisher_lowrank") is FisherLowRank
    assert FisherLowRank.frozen_base and FisherLowRank.mlm_stream


def test_fisher_batches_mask_both_groups_at_the_same_positions(data_root, minilm_tokenizer):
    baseline = _baseline(data_root, minilm_tokenizer)
    assert len(baseline.fisher_batches) == 2  # 8 sentences in batches of 4
    male_texts, female_texts = baseline.counterfactual_sample()
    assert len(male_texts) == len(female_texts) == 8
    GENDERED = {w.lower().strip(".") for pair in load_gender_words(data_root).pairs for w in pair}
    for m, f in zip(male_texts, female_texts):  # the same passage, only gendered words differ
        m_words, f_words = re.findall(r"[A-Za-z]+", m), re.findall(r"[A-Za-z]+", f)
        assert len(m_words) == len(f_words) and m_words != f_words
        assert all(a == b or {a.lower(), b.lower()} <= GENDERED for a, b in zip(m_words, f_words))
    aligned = 0
    for male, female in baseline.fisher_batches:
        assert male["input_ids"].shape == female["input_ids"].shape
        chosen_m, chosen_f = male["labels"] != -100, female["labels"] != -100
        assert chosen_m.any() and chosen_f.any()
        assert (male["input_ids"][chosen_m] == minilm_tokenizer.mask_token_id).all()
        same_length = male["attention_mask"].sum(1) == female["attention_mask"].sum(1)
        # where the two versions tokenize to the same length, the same positions are masked
        assert torch.equal(chosen_m[same_length], chosen_f[same_length])
        aligned += int(same_length.sum())
    assert aligned >= 4
    # the sample is a function of the seed
    assert _baseline(data_root, minilm_tokenizer).counterfactual_sample() == (male_texts, female_texts)
    assert _baseline(data_root, minilm_tokenizer, seed=1).counterfactual_sample()[0] != male_texts


def test_prepare_model_neutralises_and_injects_lora_in_place(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    baseline = _baseline(data_root, tokenizer)
    prepared = baseline.prepare_model(model)

    # still the plain HF masked LM, with LoRA layers inside; ncsearch's head and encoder read it
    assert type(prepared).__name__ == "BertForMaskedLM"
    assert mlm_head(prepared).weight is prepared.bert.embeddings.word_embeddings.weight
    ids = torch.tensor([[101, 2002, 2253, 102]])
    assert encode(prepared, ids, torch.ones_like(ids)).shape == (1, 4, 32)

    # exactly floor(5% of the 4 target matrices) weights were set to zero, all inside the targets
    total = 4 * 32 * 32
    assert baseline.neutralised == math.floor(0.05 * total)
    after = {n.replace(".base_layer", ""): p.detach() for n, p in prepared.named_parameters() if "lora_" not in n}
    changed = 0
    for name, value in before.items():
        differs = value != after[name]
        if name.endswith(("query.weight", "value.weight")):
            assert (after[name][differs] == 0).all()
            changed += int(differs.sum())
        else:
            assert not differs.any(), name
    assert changed == baseline.neutralised


def test_the_masks_are_computed_once_per_model_and_seed_then_read_from_the_cache(tiny_mlm, data_root, tmp_path, monkeypatch):
    """Every configuration at one seed neutralises the same weights: the second reads the first's
    masks; another seed or another model computes its own."""
    import copy

    import ncsearch.debias._fisher_lowrank as flr

    monkeypatch.setenv("NCSEARCH_CACHE_DIR", str(tmp_path / "cache"))
    passes = []
    real = flr.diagonal_fisher
    monkeypatch.setattr(flr, "diagonal_fisher", lambda *a, **k: passes.append(1) or real(*a, **k))
    original, tokenizer = tiny_mlm
    pristine = copy.deepcopy(original)

    first = _baseline(data_root, tokenizer).prepare_model(copy.deepcopy(pristine))
    assert len(passes) == 2  # one Fisher per group
    second_baseline = _baseline(data_root, tokenizer)
    second = second_baseline.prepare_model(copy.deepcopy(pristine))
    assert len(passes) == 2, "the second configuration at seed 0 recomputed the Fisher"
    assert second_baseline.neutralised > 0
    for name, value in _target_weights(first).items():
        assert torch.equal(value, _target_weights(second)[name]), name
    _baseline(data_root, tokenizer, seed=1).prepare_model(copy.deepcopy(pristine))
    assert len(passes) == 4
    other = copy.deepcopy(pristine)
    with torch.no_grad():
        other.bert.encoder.layer[0].attention.self.query.weight[0, 0] += 1.0
    _baseline(data_root, tokenizer).prepare_model(other)
    assert len(passes) == 6
    assert len(list((tmp_path / "cache" / "fisher_lowrank_masks").glob("*.safetensors"))) == 3


def test_gradients_only_on_lora_and_embeddings(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    baseline = _baseline(data_root, tokenizer)
    prepared = baseline.prepare_model(model)
    prepared.train()
    male, _ = baseline.fisher_batches[0]
    out = SparseMLM(prepared)(male["input_ids"], male["attention_mask"], male["labels"])
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trainable = {n for n, p in prepared.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in prepared.named_parameters() if "lora_" in n} | {"bert.embeddings.word_embeddings.weight"}
    assert len([n for n in trainable if "lora_" in n]) == 2 * 2 * 2  # 2 layers x (query, value) x (A, B)
    for name, param in prepared.named_parameters():
        if name in trainable:
            assert param.grad is not None, name
        else:
            assert param.grad is None, name
    # B starts at zero, so A's gradient is zero at step 0 but B's is not
    assert any(float(p.grad.abs().sum()) > 0 for n, p in prepared.named_parameters() if "lora_B" in n)
    assert float(prepared.bert.embeddings.word_embeddings.weight.grad.abs().sum()) > 0
    # the method adds no loss term of its own; an optimizer step moves only what trains
    assert baseline.step_terms(StepContext(0, None, prepared, torch.device("cpu"), None, None)).losses == {}
    before = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    adamw(prepared, lr=1e-2, weight_decay=0.0, fused=True).step()
    for name, param in prepared.named_parameters():
        moved = not torch.equal(before[name], param.detach())
        assert moved == (name in trainable and "lora_A" not in name), name  # A's gradient was zero


def test_train_embeddings_false_trains_lora_only(tiny_mlm, data_root):
    model, tokenizer = tiny_mlm
    prepared = _baseline(data_root, tokenizer, train_embeddings=False).prepare_model(model)
    trainable = [n for n, p in prepared.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for n, p in prepared.named_parameters() if p.requires_grad) == 2 * 2 * (8 * 32 + 32 * 8)


def test_export_merges_into_a_plain_copy(tiny_mlm, data_root, tmp_path):
    model, tokenizer = tiny_mlm
    baseline = _baseline(data_root, tokenizer)
    prepared = baseline.prepare_model(model).eval()
    torch.manual_seed(3)
    with torch.no_grad():  # a non-zero update, as after training
        for name, param in prepared.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    trained = {n: p.detach().clone() for n, p in prepared.named_parameters()}
    exported = baseline.export_model(prepared)

    assert type(exported).__name__ == "BertForMaskedLM"
    assert not any("lora" in n for n, _ in exported.named_modules()) and not hasattr(exported, "peft_config")
    assert exported.cls.predictions.decoder.weight is exported.bert.embeddings.word_embeddings.weight
    assert set(exported.state_dict()) == set(type(exported)(exported.config).state_dict())
    ids = baseline.fisher_batches[0][0]["input_ids"]
    mask = baseline.fisher_batches[0][0]["attention_mask"]
    with torch.no_grad():
        lora_logits = prepared(input_ids=ids, attention_mask=mask).logits
        merged_logits = exported.eval()(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(lora_logits, merged_logits, atol=1e-5)
    # what a checkpoint writes loads back as a normal masked LM with the same outputs
    exported.save_pretrained(tmp_path)
    reloaded = type(exported).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids, attention_mask=mask).logits, lora_logits, atol=1e-5)
    plain = {n: p for n, p in exported.named_parameters()}
    delta = plain["bert.encoder.layer.0.attention.self.query.weight"] - trained["bert.encoder.layer.0.attention.self.query.base_layer.weight"]
    assert float(delta.detach().abs().max()) > 1e-3  # the update was folded in ...
    # ... into a copy: the training model still has its LoRA layers and weights
    assert all(torch.equal(trained[n], p) for n, p in prepared.named_parameters())


def test_restart_rebuilds_the_same_model_and_loads_trainable_state(minilm_tokenizer, data_root):
    from transformers import BertConfig, BertForMaskedLM

    def fresh():
        torch.manual_seed(0)
        config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
        return BertForMaskedLM(config).eval()

    first = _baseline(data_root, minilm_tokenizer)
    a = first.prepare_model(fresh())
    rng_before = torch.random.get_rng_state()
    b = _baseline(data_root, minilm_tokenizer).prepare_model(fresh())
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # LoRA init draws from its own seed
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = _baseline(data_root, minilm_tokenizer, seed=1).prepare_model(fresh())
    assert not torch.equal(a.state_dict()["bert.encoder.layer.0.attention.self.query.lora_A.default.weight"],
                           other.state_dict()["bert.encoder.layer.0.attention.self.query.lora_A.default.weight"])

    with torch.no_grad():  # "train" a: change every trainable tensor
        for p in a.parameters():
            if p.requires_grad:
                p.add_(0.01)
    state = first.trainable_state(a)
    first.load_trainable_state(b, state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----- bad input ----------------------------------------------------------------------------------


def test_unwrappable_model_is_a_config_error_before_any_work(tiny_mlm, data_root):
    model, _ = tiny_mlm
    # prepare_model without setup: no Fisher sample exists, so the check must come first
    baseline = FisherLowRank(data_root=data_root, options=FisherLowRankOptions(target_modules=["q_proj", "v_proj"]))
    with pytest.raises(ConfigError) as err:
        baseline.prepare_model(model)
    line = str(err.value)
    assert "\n" not in line and "BertForMaskedLM" in line and "q_proj" in line

    class NoConfig(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 2)

    with pytest.raises(ConfigError, match="NoConfig.*target_modules"):
        FisherLowRank(data_root=data_root).prepare_model(NoConfig())


def test_preflight_checks_the_model_from_its_config_alone(tiny_mlm, data_root, tmp_path):
    model, _ = tiny_mlm
    model.config.save_pretrained(tmp_path)  # a config and no weights: preflight must not need them
    FisherLowRank(data_root=data_root).preflight(str(tmp_path))
    bad = FisherLowRank(data_root=data_root, options=FisherLowRankOptions(target_modules=["q_lin"]))
    with pytest.raises(ConfigError, match=r"\['q_lin'\] match no Linear layer of BertForMaskedLM"):
        bad.preflight(str(tmp_path))
