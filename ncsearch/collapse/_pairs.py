"""Which (feature, label) pairs feed the class statistics (DESIGN.md §4 options).

- `features`: "encoder" (last encoder layer, the paper) or "head" (the MLM transform's output, the
  space in which the decoder W actually classifies).
- `positions`: "masked" (pairs whose target position holds an MLM label) or "all" (every non-pad
  target position).
- `label_shift` s ∈ {0, 1}: the feature at position t is paired with the token at t + s. s = 1 is the
  paper's code (`X = embeds[:, :-1]`, `Y = batch[:, 1:]`, a leftover from causal-LM code); the target
  position t + s decides the label and whether the pair counts (masked / non-pad), and the feature
  position t must be a non-pad position too.
- `label_source`: where the label of a pair is read.
  "original" (default): the original token, i.e. `labels` where not -100 (the masked positions), else
  `input_ids`.
  "masked_input": the model's input ids as they are, after masking. This is what the paper's BEC and
  ASE code did (`process_batch(hidden, b_input_ids, ...)` in Fairness-NC `bec/code/main_nc.py` and
  `ase/finetune_both_nc.py`, where `b_input_ids` is already masked): a target that became [MASK]
  carries the [MASK] id (and drops out of V, which does not hold it), one replaced by a random token
  carries that token (and counts for its class when it is in V), one left unchanged keeps its own.
  For an unmasked pass (labels None, or no position masked) both sources give the same labels.

The returned features are detached: they only feed statistics whose means are detached (gradient
reaches W only), and detaching here keeps the head transform out of the autograd graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ncsearch.errors import ConfigError
from ncsearch.heads import IGNORE_INDEX

__all__ = ["LABEL_SOURCES", "pair_positions", "select_pairs"]

LABEL_SOURCES = ("original", "masked_input")


@torch.no_grad()
def select_pairs(
    hidden: Tensor,
    *,
    input_ids: Tensor,
    labels: Tensor | None,
    attention_mask: Tensor | None,
    features: Literal["encoder", "head"] = "encoder",
    positions: Literal["masked", "all"] = "masked",
    label_shift: int = 0,
    head_transform: Callable[[Tensor], Tensor] | None = None,
    label_source: Literal["original", "masked_input"] = "original",
) -> tuple[Tensor, Tensor]:
    """(features (N, d), token ids (N,)) for the selected positions of a batch.

    hidden: (B, T, d) last encoder layer; input_ids: (B, T) model input (masked for MLM); labels: (B, T)
    MLM labels with -100 where not masked (None means nothing is masked: positions must be "all");
    attention_mask: (B, T) 1 for real tokens (None: all real). `head_transform` is required for
    features="head" and applied only to the selected rows. `label_source` ("original" | "masked_input")
    says whether a pair's label is the original token or the (masked) input id (module docstring).
    """
    if features not in ("encoder", "head"):
        raise ConfigError(f"nc3 features must be 'encoder' or 'head', but got {features!r}")
    if features == "head" and head_transform is None:
        raise ConfigError("nc3 features='head' needs the MLM head transform (head_transform=...)")
    where, tokens = pair_positions(input_ids=input_ids, labels=labels, attention_mask=attention_mask,
                                   positions=positions, label_shift=label_shift, label_source=label_source)
    feats = hidden.detach()[where[:, 0], where[:, 1]]
    if features == "head":
        assert head_transform is not None
        feats = head_transform(feats)
    return feats, tokens


@torch.no_grad()
def pair_positions(
    *,
    input_ids: Tensor,
    labels: Tensor | None,
    attention_mask: Tensor | None,
    positions: Literal["masked", "all"] = "masked",
    label_shift: int = 0,
    label_source: Literal["original", "masked_input"] = "original",
) -> tuple[Tensor, Tensor]:
    """(feature positions (N, 2) as (batch row, position), token ids (N,)) of the pairs `select_pairs`
    selects, in its order (row-major). Lets a caller that needs few of them (the held-out `collapse`
    benchmark: only V's tokens) compute the last layer at those positions alone."""
    if positions not in ("masked", "all"):
        raise ConfigError(f"nc3 positions must be 'masked' or 'all', but got {positions!r}")
    if label_shift not in (0, 1):
        raise ConfigError(f"nc3 label_shift must be 0 or 1, but got {label_shift!r}")
    if label_source not in LABEL_SOURCES:
        raise ConfigError(f"nc3 labels must be one of {', '.join(LABEL_SOURCES)}, but got {label_source!r}")
    if positions == "masked" and labels is None:
        raise ConfigError("nc3 positions='masked' needs MLM labels")

    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if labels is None:
        target_ok = real
    else:
        target_ok = real & (labels != IGNORE_INDEX) if positions == "masked" else real
    if labels is None or label_source == "masked_input":
        token_ids = input_ids
    else:
        token_ids = torch.where(labels != IGNORE_INDEX, labels, input_ids)

    s = int(label_shift)
    length = input_ids.shape[1]
    # feature positions t = 0..T-1-s, target positions t + s
    ok = target_ok[:, s:] & real[:, : length - s]
    return torch.nonzero(ok), token_ids[:, s:][ok]
