"""BERT-style masking for masked-LM batches, for every caller in ncsearch.

Training batches (`MLMBatches`), MLM adaptation (`ncsearch._adapt.mask_tokens`) and the collapse study
(`ncsearch.collapse.collapse_study`, positions="masked") all mask here. Each caller decides which
positions may be masked (`candidates`) and where its generator comes from; the draws made from the
generator, their order and their shapes are fixed by `mlm_mask`, so a seeded batch is the same whoever
builds it:

1. `torch.rand(shape)`: a position is chosen when its draw is below `probability` (and it is a candidate);
2. only with `ensure_one`, and only when nothing was chosen: `torch.randint(candidates, (1,))` picks one;
3. unless `replace_all`: `torch.rand(shape)` splits the chosen positions 80% [MASK] / 10% a random
   token / 10% unchanged, and `torch.randint(vocab_size, shape)` supplies the random tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ncsearch.heads import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "maskable", "mlm_mask"]


def maskable(input_ids: Tensor, special_ids: Sequence[int], attention_mask: Tensor | None = None) -> Tensor:
    """Positions that may be masked: real tokens (attention 1) whose id is not a special id."""
    allowed = ~torch.isin(input_ids, torch.tensor(list(special_ids), dtype=input_ids.dtype))
    return allowed if attention_mask is None else attention_mask.bool() & allowed


def mlm_mask(
    input_ids: Tensor,
    candidates: Tensor,
    generator: torch.Generator,
    *,
    probability: float,
    mask_id: int,
    vocab_size: int | None = None,
    replace_all: bool = False,
    ensure_one: bool = False,
) -> tuple[Tensor, Tensor]:
    """(masked input ids, labels) for a (B, T) batch; labels hold the original token at chosen
    positions and IGNORE_INDEX elsewhere. The draws are the ones listed in the module docstring.

    `replace_all=True` puts [MASK] at every chosen position and draws nothing more: the stricter
    measure for scoring (an unchanged token is trivially easy to predict), and what the collapse study
    reads features at. Otherwise the 80/10/10 split of BERT training needs `vocab_size`.
    `ensure_one=True` chooses one candidate when the draw chose none (a tiny batch can; a loss over
    no position is undefined).
    """
    if not replace_all and vocab_size is None:
        raise ValueError("mlm_mask needs vocab_size for the random-token replacement (or replace_all=True)")
    chosen = (torch.rand(input_ids.shape, generator=generator) < probability) & candidates
    if ensure_one and not chosen.any():
        positions = candidates.nonzero()
        pick = positions[torch.randint(len(positions), (1,), generator=generator)][0]
        chosen[pick[0], pick[1]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    as_mask = torch.full_like(input_ids, mask_id)
    if replace_all:
        return torch.where(chosen, as_mask, input_ids), labels
    action = torch.rand(input_ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, dtype=torch.long)
    masked = torch.where(chosen & (action < 0.8), as_mask, input_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels
