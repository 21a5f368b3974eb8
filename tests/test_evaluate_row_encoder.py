"""The last-layer-at-rows encoder equals Hugging Face's full forward at the requested positions."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_masked_lm
from transformers import AlbertConfig, AlbertForMaskedLM, BertConfig, BertForMaskedLM

from ncsearch.evaluate._row_encoder import RowEncoder, encode_rows
from ncsearch.heads import encode

VOCAB = 120


# Per family (layers, heads, intermediate, max positions): head counts and depths differ on purpose.
SIZES = {"bert": (3, 4, 96, 64), "roberta": (2, 3, 80, 70), "distilbert": (2, 4, 96, 64)}


def _build(family: str):
    layers, heads, intermediate, max_positions = SIZES[family]
    return tiny_masked_lm(family, vocab=VOCAB, hidden=48, layers=layers, heads=heads, intermediate=intermediate,
                          max_positions=max_positions)


def _randomized(model):
    """Every weight, bias and LayerNorm parameter moved off its initial value (biases start at 0)."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def _batch(pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three sequences of lengths 9, 6 and 3, right-padded with `pad_id`."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, VOCAB, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    for row, length in ((1, 6), (2, 3)):
        ids[row, length:] = pad_id
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("family", list(SIZES))
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_row_encoder_equals_full_forward_at_the_rows(family, padded):
    torch.manual_seed(0)
    model = _randomized(_build(family))
    pad_id = model.config.pad_token_id or 0
    ids, mask = _batch(pad_id)
    if not padded:
        ids, mask = ids[:1], mask[:1]
    # Several positions per row, repeated positions, first and last real token.
    where = torch.tensor([[0, 0], [0, 8], [0, 3], [0, 3], [1, 5], [1, 0], [2, 2]])
    where = where[where[:, 0] < len(ids)]
    row_encoder = RowEncoder.for_model(model)
    assert row_encoder is not None and all(kernels.fuse_gelu for kernels in row_encoder._kernels)
    with torch.inference_mode():
        got = encode_rows(model, ids, mask, where, row_encoder)
        want = encode(model, ids, mask)[where[:, 0], where[:, 1]]
    assert got.shape == want.shape == (len(where), 48)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    assert not torch.equal(got[0], got[1])  # different positions, different states


@pytest.mark.parametrize("activation", ["gelu_new", "relu"])
def test_activations_other_than_erf_gelu_run_unfused(activation):
    """The GELU epilogue is fused only for erf GELU; other activations run as the model's own module."""
    torch.manual_seed(0)
    model = _randomized(BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=48, num_hidden_layers=2,
                                                   num_attention_heads=4, intermediate_size=96,
                                                   max_position_embeddings=64, hidden_act=activation)))
    row_encoder = RowEncoder.for_model(model)
    assert row_encoder is not None and not any(kernels.fuse_gelu for kernels in row_encoder._kernels)
    ids, mask = _batch(0)
    where = torch.tensor([[0, 8], [1, 2], [2, 0]])
    with torch.inference_mode():
        got = encode_rows(model, ids, mask, where, row_encoder)
        want = encode(model, ids, mask)[where[:, 0], where[:, 1]]
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_unsupported_architectures_use_the_full_forward():
    torch.manual_seed(0)
    albert = AlbertForMaskedLM(AlbertConfig(vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64)).eval()
    decoder = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, is_decoder=True))
    assert RowEncoder.for_model(albert) is None
    assert RowEncoder.for_model(decoder) is None
    ids, mask = _batch(0)
    where = torch.tensor([[0, 4], [2, 1]])
    with torch.inference_mode():
        got = encode_rows(albert, ids, mask, where, None)
        want = encode(albert, ids, mask)
    torch.testing.assert_close(got, want[where[:, 0], where[:, 1]])


def test_row_encoder_looks_through_wrappers():
    from ncsearch.heads import SparseMLM

    assert RowEncoder.for_model(SparseMLM(_build("bert"))) is not None
