"""Tiny random masked LMs of the three supported families, built from a config (no download)."""

from __future__ import annotations

from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

FAMILIES = ("bert", "roberta", "distilbert")


def tiny_masked_lm(family: str, *, vocab: int, hidden: int, layers: int, heads: int, intermediate: int,
                   max_positions: int):
    """A randomly initialised `*ForMaskedLM` of `family` with these sizes (RoBERTa pads with id 1)."""
    if family == "bert":
        return BertForMaskedLM(BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                          num_attention_heads=heads, intermediate_size=intermediate,
                                          max_position_embeddings=max_positions))
    if family == "roberta":
        return RobertaForMaskedLM(RobertaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                                num_attention_heads=heads, intermediate_size=intermediate,
                                                max_position_embeddings=max_positions, pad_token_id=1))
    if family == "distilbert":
        return DistilBertForMaskedLM(DistilBertConfig(vocab_size=vocab, dim=hidden, n_layers=layers, n_heads=heads,
                                                      hidden_dim=intermediate, max_position_embeddings=max_positions))
    raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")


#: The tiny BERT of the `tiny_mlm` fixture (2 layers, 32-d), besides its vocabulary size.
TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 128}
