"""FusedLinear: oneDNN's bias/GELU/residual-add epilogues give what F.linear and the plain ops give."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ncsearch.evaluate._fused_linear import FusedLinear
from ncsearch.evaluate._row_encoder import _is_exact_gelu

onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch build has no oneDNN")


def _weights(out_features: int = 24, in_features: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(out_features, in_features, generator=generator),
            torch.randn(out_features, generator=generator))


@onednn
@pytest.mark.parametrize("shape", [(7, 16), (3, 5, 16)], ids=["2d", "3d"])
def test_packed_epilogues_equal_the_plain_operations(shape):
    weight, bias = _weights()
    x = torch.randn(shape)
    residual = torch.randn(*shape[:-1], 24)
    fused = FusedLinear.of(weight, bias)
    assert fused.packed  # float32 on CPU with oneDNN: the fused kernel is what runs
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), F.linear(x, weight, bias), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused(x, gelu=True), F.gelu(F.linear(x, weight, bias)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused(x, residual=residual), F.linear(x, weight, bias) + residual,
                                   atol=1e-5, rtol=1e-5)
        assert not torch.allclose(fused(x, gelu=True), fused(x))  # GELU really applied


@onednn
def test_no_bias_and_non_contiguous_input():
    weight, _ = _weights()
    x = torch.randn(16, 9).t()  # (9, 16), transposed storage
    with torch.inference_mode():
        torch.testing.assert_close(FusedLinear.of(weight, None)(x), F.linear(x, weight), atol=1e-5, rtol=1e-5)


def test_unpackable_weights_use_f_linear_exactly():
    weight, bias = _weights()
    x = torch.randn(4, 16)
    for fused, x_in in ((FusedLinear.of(weight, bias, pack=False), x),
                        (FusedLinear.of(weight.double(), bias.double()), x.double())):
        assert not fused.packed
        assert torch.equal(fused(x_in), F.linear(x_in, fused.weight, fused.bias))
        assert torch.equal(fused(x_in, gelu=True), F.gelu(F.linear(x_in, fused.weight, fused.bias)))


@onednn
def test_misuse_is_refused_with_a_message():
    weight, bias = _weights()
    fused = FusedLinear.of(weight, bias)
    with pytest.raises(ValueError, match="either GELU or a residual"):
        fused(torch.randn(2, 16), gelu=True, residual=torch.randn(2, 24))
    with pytest.raises(ValueError, match="float32 CPU input, but got torch.float64"):
        fused(torch.randn(2, 16, dtype=torch.float64))


def test_only_erf_gelu_counts_as_exact_gelu():
    assert _is_exact_gelu(F.gelu)
    assert _is_exact_gelu(torch.nn.GELU())
    assert not _is_exact_gelu(torch.nn.GELU(approximate="tanh"))
    assert not _is_exact_gelu(torch.relu)
