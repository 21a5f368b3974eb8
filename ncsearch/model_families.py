"""What ncsearch knows about each masked-LM family, in one table.

Three places depend on how a Hugging Face family names its modules and settings: the sparse MLM head
(`ncsearch.heads`: the head's transform and decoder), the evaluation row encoder
(`ncsearch.evaluate._row_encoder`: each encoder layer's parts, by role) and config overrides
(`ncsearch.debias._model_config`: which config attribute holds a dropout rate). Keeping all of it in
`FAMILIES` means supporting another family, or following a renamed module in a new transformers
release, is one entry here rather than three edits that can drift apart.

The lookups keep the rules they had: a head is found by the attribute that holds it (first family
that matches wins), the row encoder by `config.model_type`, a config setting by the first of the
families' attribute names that the config has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CONFIG_KEYS", "FAMILIES", "Family", "LayerLayout", "family_of_head", "family_of_model_type"]

#: A masked LM's head, split as (transform: dense, activation, LayerNorm; decoder: the vocabulary Linear).
HeadParts = tuple[Callable[[Tensor], Tensor], nn.Linear]


@dataclass(frozen=True)
class LayerLayout:
    """Where one post-LN encoder layer keeps each part: dotted attribute paths from the layer module."""

    query: str
    key: str
    value: str
    heads: str  # the layer's number of attention heads (an int attribute)
    attn_out: str
    attn_norm: str
    up: str
    act: str
    down: str
    out_norm: str

    def parts(self, layer: nn.Module) -> dict[str, object]:
        """The layer's parts keyed by role; AttributeError when this layer is laid out otherwise."""
        return {role: attrgetter(path)(layer) for role, path in vars(self).items()}


@dataclass(frozen=True)
class Family:
    """One family of masked LMs.

    `head_attribute`: the attribute of the `*ForMaskedLM` module that marks this family's MLM head;
    `head`: that module's (transform, decoder). `model_types`: the `config.model_type` values whose
    base model is exactly "embeddings, then a stack of post-LN layers" laid out as `layer`, found at
    `layers` (a dotted path from the base model); empty where that does not hold. `config_keys`:
    logical setting -> the config attribute that holds it.
    """

    name: str
    head_attribute: str
    head: Callable[[nn.Module], HeadParts]
    model_types: frozenset[str]
    layers: str
    layer: LayerLayout
    config_keys: Mapping[str, str]

    def encoder_layers(self, base: nn.Module) -> list[nn.Module]:
        """The base model's layers, in order (AttributeError when laid out otherwise)."""
        return list(attrgetter(self.layers)(base))


def _bert_head(model: nn.Module) -> HeadParts:
    predictions = model.cls.predictions
    return predictions.transform, predictions.decoder


def _roberta_head(model: nn.Module) -> HeadParts:
    head = model.lm_head

    def transform(h: Tensor) -> Tensor:
        return head.layer_norm(F.gelu(head.dense(h)))

    return transform, head.decoder


def _distilbert_head(model: nn.Module) -> HeadParts:
    def transform(h: Tensor) -> Tensor:
        return model.vocab_layer_norm(model.activation(model.vocab_transform(h)))

    return transform, model.vocab_projector


# BERT and RoBERTa (with XLM-R and CamemBERT) share the encoder layer; they differ in the head.
_BERT_LAYER = LayerLayout(
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    heads="attention.self.num_attention_heads",
    attn_out="attention.output.dense",
    attn_norm="attention.output.LayerNorm",
    up="intermediate.dense",
    act="intermediate.intermediate_act_fn",
    down="output.dense",
    out_norm="output.LayerNorm",
)
_BERT_CONFIG = {"hidden_dropout": "hidden_dropout_prob", "attention_dropout": "attention_probs_dropout_prob"}

#: Checked in this order wherever more than one family could match.
FAMILIES: tuple[Family, ...] = (
    Family(
        name="bert",
        head_attribute="cls",
        head=_bert_head,
        model_types=frozenset({"bert"}),
        layers="encoder.layer",
        layer=_BERT_LAYER,
        config_keys=_BERT_CONFIG,
    ),
    Family(
        name="roberta",
        head_attribute="lm_head",
        head=_roberta_head,
        model_types=frozenset({"roberta", "xlm-roberta", "camembert"}),
        layers="encoder.layer",
        layer=_BERT_LAYER,
        config_keys=_BERT_CONFIG,
    ),
    Family(
        name="distilbert",
        head_attribute="vocab_projector",
        head=_distilbert_head,
        model_types=frozenset({"distilbert"}),
        layers="transformer.layer",
        layer=LayerLayout(
            query="attention.q_lin",
            key="attention.k_lin",
            value="attention.v_lin",
            heads="attention.n_heads",
            attn_out="attention.out_lin",
            attn_norm="sa_layer_norm",
            up="ffn.lin1",
            act="ffn.activation",
            down="ffn.lin2",
            out_norm="output_layer_norm",
        ),
        config_keys={"hidden_dropout": "dropout", "attention_dropout": "attention_dropout"},
    ),
)

#: logical setting -> the config attributes that may hold it, one per family that names it differently
#: (a config is asked for each in turn, so a family outside the table with BERT's names works too).
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    logical: tuple(dict.fromkeys(f.config_keys[logical] for f in FAMILIES)) for logical in FAMILIES[0].config_keys
}


def family_of_head(model: nn.Module) -> Family | None:
    """The first family whose head attribute `model` (an unwrapped `*ForMaskedLM`) has, else None."""
    return next((f for f in FAMILIES if hasattr(model, f.head_attribute)), None)


def family_of_model_type(model_type: str | None) -> Family | None:
    """The family whose encoder layout `model_type` has, else None (ELECTRA, for one, may project its
    embeddings before the first layer, so it is in no family)."""
    return next((f for f in FAMILIES if model_type in f.model_types), None)
