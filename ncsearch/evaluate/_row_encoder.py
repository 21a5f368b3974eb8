"""Final encoder states at a few (row, position) pairs, with the last layer computed only there.

Likelihood benchmarks need the last hidden state at one or a few masked positions per sequence, yet a
Hugging Face forward computes the whole last layer for every token. The last layer's output at
position t depends on every token only through the attention keys and values, so for a query row we
need (per head h, with x the layer input and q the row's scaled query):

    scores_h = x (W_k,h^T q_h)                       (no key projection of the other rows; the key
                                                     bias adds b_k,h . q_h to every score, which
                                                     softmax ignores)
    context_h = (softmax(scores_h) x) W_v,h^T + b_v,h   (no value projection either)

then the output projection, residual, LayerNorm and feed-forward block on that row alone. The layers
before it run as in Hugging Face (embeddings module, one stacked Q/K/V projection, SDPA, post-LN
blocks), with every linear map a `FusedLinear` (bias, GELU and residual adds inside oneDNN's GEMM on CPU).
Results equal `encode(model, ...)[rows]` up to float rounding (tests/test_evaluate_row_encoder.py);
for 6-layer MiniLM the arithmetic per masked sentence falls by about a sixth.

Only post-LN BERT-layout encoders are handled (the `model_types` of `ncsearch.model_families`: BERT,
RoBERTa, XLM-R, CamemBERT, DistilBERT, which include MiniLM); `RowEncoder.for_model` returns None for
anything else and callers use the full forward. It is the evaluation fast path's encoder half, used
only when scoring runs with `fast_path` on (`score_masked`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncsearch.evaluate._fused_linear import FusedLinear
from ncsearch.heads import encode, unwrap
from ncsearch.model_families import Family, family_of_model_type

__all__ = ["RowEncoder", "encode_rows"]


@dataclass(frozen=True)
class _Layer:
    """One post-LN transformer layer's weights, named by role rather than by family."""

    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    heads: int
    attn_out: nn.Linear
    attn_norm: nn.LayerNorm
    up: nn.Linear
    act: Callable[[Tensor], Tensor]
    down: nn.Linear
    out_norm: nn.LayerNorm

    @classmethod
    def of(cls, layer: nn.Module, family: Family) -> _Layer:
        """`layer`'s parts as `family` lays them out (AttributeError when it does not)."""
        return cls(**family.layer.parts(layer))


def _is_exact_gelu(act: Callable[[Tensor], Tensor]) -> bool:
    """Whether `act` is erf GELU, judged by its values (each transformers version wraps it differently)."""
    probe = torch.linspace(-8.0, 8.0, 161)
    with torch.inference_mode():
        return torch.equal(act(probe), F.gelu(probe))


@dataclass(frozen=True)
class _Kernels:
    """One layer's linear maps ready to run: Q/K/V stacked into one GEMM (faster than three), and on
    CPU each packed for oneDNN so that bias, GELU and residual adds happen inside the GEMM. `qkv` is
    None for the last layer, whose keys and values are folded into the query (`_last_layer_at`)."""

    layer: _Layer
    qkv: FusedLinear | None
    attn_out: FusedLinear
    up: FusedLinear
    down: FusedLinear
    fuse_gelu: bool

    @classmethod
    def of(cls, layer: _Layer, *, stack_qkv: bool) -> _Kernels:
        qkv = None
        if stack_qkv:
            weight = torch.cat([layer.query.weight, layer.key.weight, layer.value.weight])
            bias = torch.cat([layer.query.bias, layer.key.bias, layer.value.bias])
            qkv = FusedLinear.of(weight, bias)
        return cls(layer=layer, qkv=qkv,
                   attn_out=FusedLinear.of(layer.attn_out.weight, layer.attn_out.bias),
                   up=FusedLinear.of(layer.up.weight, layer.up.bias),
                   down=FusedLinear.of(layer.down.weight, layer.down.bias),
                   fuse_gelu=_is_exact_gelu(layer.act))

    def feed_forward(self, residual: Tensor, context: Tensor) -> Tensor:
        """Output projection, residual + LayerNorm, then the feed-forward block (post-LN)."""
        attended = self.layer.attn_norm(self.attn_out(context, residual=residual))
        inner = self.up(attended, gelu=True) if self.fuse_gelu else self.layer.act(self.up(attended))
        return self.layer.out_norm(self.down(inner, residual=attended))


class RowEncoder:
    """Computes last-layer states at requested positions for one (evaluation-mode) model.

    Build one per scoring call: it holds stacked and packed copies of the weights (`_Kernels`), so it
    must not outlive a change of the model's parameters.
    """

    def __init__(self, embeddings: nn.Module, layers: list[_Layer]):
        self.embeddings = embeddings
        self.layers = layers
        last = len(layers) - 1
        self._kernels = [_Kernels.of(layer, stack_qkv=i < last) for i, layer in enumerate(layers)]

    @classmethod
    def for_model(cls, model: nn.Module) -> RowEncoder | None:
        """A row encoder for a supported architecture, else None (use the full forward)."""
        inner = unwrap(model)
        config = getattr(inner, "config", None)
        if config is None or getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
            return None
        family = family_of_model_type(getattr(config, "model_type", None))
        if family is None:
            return None
        base = inner.base_model
        try:
            layers = [_Layer.of(layer, family) for layer in family.encoder_layers(base)]
        except AttributeError:  # same model_type, different module layout (another transformers version)
            return None
        if not layers:
            return None
        return cls(base.embeddings, layers)

    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None, where: Tensor) -> Tensor:
        """States (n, d) after the last layer at `where` (n, 2) = (batch row, position) pairs."""
        hidden = self.embeddings(input_ids=input_ids)
        keep = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): True = attend
        for kernels in self._kernels[:-1]:
            hidden = kernels.feed_forward(hidden, self._self_attention(kernels, hidden, keep))
        return self._last_layer_at(self._kernels[-1], hidden, keep, where)

    @staticmethod
    def _self_attention(kernels: _Kernels, hidden: Tensor, keep: Tensor | None) -> Tensor:
        batch, length, width = hidden.shape
        heads = kernels.layer.heads
        head_dim = width // heads
        qkv = kernels.qkv(hidden).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep)
        return context.transpose(1, 2).reshape(batch, length, width)

    @staticmethod
    def _last_layer_at(kernels: _Kernels, hidden: Tensor, keep: Tensor | None, where: Tensor) -> Tensor:
        layer = kernels.layer
        rows, positions = where[:, 0], where[:, 1]
        width = hidden.shape[-1]
        heads, head_dim = layer.heads, width // layer.heads
        states = hidden[rows]  # (n, T, d): each query's whole sequence
        query_in = hidden[rows, positions]  # (n, d)
        query = layer.query(query_in).view(-1, heads, head_dim) * head_dim**-0.5
        # Fold W_k into the query instead of projecting every key: (n, H, d) directions over x.
        key_dirs = torch.einsum("nhe,hed->nhd", query, layer.key.weight.view(heads, head_dim, width))
        scores = torch.bmm(key_dirs, states.transpose(1, 2))  # (n, H, T), up to the key bias's constant
        if keep is not None:
            scores = scores.masked_fill(~keep[rows, 0], float("-inf"))
        mixed = torch.bmm(torch.softmax(scores, dim=-1), states)  # (n, H, d): attention-weighted inputs
        context = torch.einsum("nhd,hed->nhe", mixed, layer.value.weight.view(heads, head_dim, width))
        context = context + layer.value.bias.view(heads, head_dim)
        return kernels.feed_forward(query_in, context.reshape(-1, width))


def encode_rows(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, where: Tensor,
                row_encoder: RowEncoder | None = None) -> Tensor:
    """Last-layer states (n, d) at `where` (n, 2); the row encoder when given, else the full forward."""
    if row_encoder is not None:
        return row_encoder(input_ids, attention_mask, where)
    return encode(model, input_ids, attention_mask)[where[:, 0], where[:, 1]]
