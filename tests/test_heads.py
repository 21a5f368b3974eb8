"""The sparse MLM head must be a drop-in for the Hugging Face masked-LM loss: same value, same gradients."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, tiny_masked_lm

from ncsearch.heads import SparseMLM, encode, mlm_head, sparse_mlm_loss

VOCAB = 97


def _models():
    for family in FAMILIES:
        yield family, tiny_masked_lm(family, vocab=VOCAB, hidden=16, layers=2, heads=2, intermediate=32, max_positions=40)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (3, 11), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    labels = torch.full_like(input_ids, -100)
    chosen = torch.rand(input_ids.shape, generator=g) < 0.3
    chosen[0, 2] = True
    chosen &= attention_mask.bool()
    labels[chosen] = torch.randint(3, VOCAB, (int(chosen.sum()),), generator=g)
    return input_ids, attention_mask, labels


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_sparse_loss_and_grads_equal_hf(family: str) -> None:
    torch.manual_seed(0)
    model = dict(_models())[family].double().eval()
    input_ids, attention_mask, labels = _batch()

    hf = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    hf.backward()
    hf_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    out = sparse_mlm_loss(model, input_ids, attention_mask, labels)
    out.loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    assert abs(out.loss.item() - hf.item()) < 1e-10
    assert out.logits.shape == (int((labels != -100).sum()), VOCAB)
    assert set(ours) == set(hf_grads)
    for name, grad in hf_grads.items():
        torch.testing.assert_close(ours[name], grad, atol=1e-10, rtol=1e-8, msg=name)


def test_float32_loss_within_1e5_and_head_only_at_labels() -> None:
    torch.manual_seed(1)
    model = dict(_models())["bert"].eval()
    input_ids, attention_mask, labels = _batch(1)
    hf = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    out = SparseMLM(model)(input_ids, attention_mask, labels)
    assert abs(out.loss.item() - hf.item()) < 1e-5
    # logits at the labelled rows equal the full-head logits at those rows
    full = model(input_ids=input_ids, attention_mask=attention_mask).logits.reshape(-1, VOCAB)
    torch.testing.assert_close(out.logits, full[out.index], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.hidden, encode(model, input_ids, attention_mask))


def test_head_weight_is_tied_input_embedding() -> None:
    model = dict(_models())["bert"]
    assert mlm_head(model).weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def test_no_labels_gives_zero_loss_with_graph() -> None:
    model = dict(_models())["bert"]
    input_ids, attention_mask, _ = _batch()
    out = sparse_mlm_loss(model, input_ids, attention_mask, torch.full_like(input_ids, -100))
    assert out.loss.item() == 0.0 and out.loss.requires_grad
