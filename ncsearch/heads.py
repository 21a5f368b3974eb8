"""The sparse masked-LM head: vocabulary logits only where there are labels.

A Hugging Face `*ForMaskedLM` forward computes logits for every position, a (batch x length x 30,522)
tensor of which MLM training uses about 15% of the rows. Here the encoder runs as usual and the head
(transform + decoder) runs only on the labelled positions. The loss equals the Hugging Face loss on the
same batch (mean cross-entropy over positions whose label is not -100) with the same gradients, which
tests/test_heads.py checks.

Used by MLM adaptation, every training baseline, and evaluation (which asks for log-probabilities at a
few masked positions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ncsearch.errors import ModelError
from ncsearch.model_families import FAMILIES, family_of_head

__all__ = ["IGNORE_INDEX", "MLMHead", "SparseMLM", "SparseMLMOutput", "encode", "mlm_head", "sparse_mlm_loss", "unwrap"]

# The label of a position that is not predicted (as in Hugging Face and F.cross_entropy). Defined here,
# the lowest module that reads it, so collapse and training import it without importing each other.
IGNORE_INDEX = -100


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP/`SparseMLM` wrappers (parameters are shared, not copied)."""
    while True:
        if isinstance(model, SparseMLM):
            model = model.mlm
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model


@dataclass
class MLMHead:
    """The parts of a masked-LM head: `transform` (dense, activation, LayerNorm) then the decoder.

    `weight` is the decoder matrix W (|vocab| x d), tied to the input embeddings in BERT-family models:
    the NC3 regularizer acts on its rows.
    """

    transform: Callable[[Tensor], Tensor]
    weight: nn.Parameter
    bias: Tensor | None


def mlm_head(model: nn.Module) -> MLMHead:
    """The MLM head of a masked LM of a family in `ncsearch.model_families` (wrappers are looked through)."""
    inner = unwrap(model)
    family = family_of_head(inner)
    if family is None:
        names = ", ".join(f.name for f in FAMILIES)
        raise ModelError(f"no supported masked-LM head on {type(inner).__name__} (families: {names})")
    transform, decoder = family.head(inner)
    return MLMHead(transform, decoder.weight, decoder.bias)


def encode(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Last encoder layer (B, T, d), without the head."""
    base = unwrap(model).base_model
    return base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@dataclass
class SparseMLMOutput:
    """`index` holds flat positions (into B*T) where labels != -100, in row-major order; `logits` the
    vocabulary logits at those positions, in the same order."""

    loss: Tensor
    hidden: Tensor
    index: Tensor
    logits: Tensor


class SparseMLM(nn.Module):
    """A masked LM whose forward computes the MLM loss with the head applied only at labelled positions.

    Wrap this module (not the bare model) in DDP so that gradient synchronisation covers the whole
    forward; the regularizer can then use `mlm_head(self).weight` in the same backward pass.
    """

    def __init__(self, mlm: nn.Module):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor | None = None) -> SparseMLMOutput:
        """`labels` None: an unmasked pass (no MLM loss; `hidden` for a baseline's own losses)."""
        hidden = encode(self.mlm, input_ids, attention_mask)
        head = mlm_head(self.mlm)
        if labels is None:
            labels = torch.full_like(input_ids, IGNORE_INDEX)
        index = (labels.reshape(-1) != IGNORE_INDEX).nonzero(as_tuple=True)[0]
        at_labels = hidden.reshape(-1, hidden.shape[-1]).index_select(0, index)
        logits = F.linear(head.transform(at_labels), head.weight, head.bias)
        targets = labels.reshape(-1).index_select(0, index)
        if index.numel():
            # half-precision logits are upcast for a stable softmax, as Hugging Face does
            upcast = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            loss = F.cross_entropy(upcast, targets)
        else:  # no labelled position: a zero that still depends on the parameters
            loss = hidden.sum() * 0.0
        return SparseMLMOutput(loss, hidden, index, logits)


def sparse_mlm_loss(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None, labels: Tensor) -> SparseMLMOutput:
    """The masked-LM loss of `model` on a batch, head applied only where `labels` != -100."""
    if isinstance(model, SparseMLM) or isinstance(getattr(model, "module", None), SparseMLM):
        return model(input_ids, attention_mask, labels)
    return SparseMLM(model)(input_ids, attention_mask, labels)

