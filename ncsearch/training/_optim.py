"""AdamW and its linear warm-up/decay schedule, for every fine-tune in ncsearch.

Training trials (`_recipe`), MLM adaptation (`ncsearch._adapt`) and the GLUE fine-tunes
(`ncsearch.evaluate.glue`) all build their optimizer and schedule here. Each caller still decides its
own numbers (learning rates, how many warm-up steps a ratio rounds to, fused or not), because each
cached or recorded result was produced with them; what they share is the formula.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["adamw", "decay_groups", "linear_warmup_decay"]


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups, the usual BERT recipe: weight decay on matrices, none on biases and
    LayerNorm weights (decaying a gain or an offset towards 0 only fights the normalisation).

    Frozen parameters are left out (they never get a gradient, so AdamW would skip them anyway); a
    parameter shared by two modules (a decoder tied to the embeddings) is listed once.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    fused: bool = False,
    extra_groups: Iterable[dict[str, Any]] = (),
) -> torch.optim.AdamW:
    """AdamW over `decay_groups(model, weight_decay)` plus `extra_groups` (e.g. a new head with its own lr).

    `fused=True` runs one kernel per parameter group instead of a dozen elementwise passes per tensor
    (training: 0.10 s -> 0.02 s a step on one CPU thread); it rounds differently from the per-tensor
    update, so callers whose results are cached or pinned keep the default. The default leaves
    `fused` and `foreach` unset (None), so torch picks its own implementation: passing `fused=False`
    explicitly would also switch off foreach on CUDA and change the arithmetic there.
    """
    groups = decay_groups(model, weight_decay) + [dict(group) for group in extra_groups]
    return torch.optim.AdamW(groups, lr=lr, fused=True if fused else None)


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int,
    *,
    peak_at_warmup_end: bool = False,
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps` steps, then linear decay of the lr to 0 at `total_steps`.

    Step s (counted from 0) of the warm-up gets the factor (s + 1) / (warmup_steps + 1): it starts at
    lr / (warmup_steps + 1) rather than 0, so the first step is not wasted, and reaches the full lr at
    step `warmup_steps`, where the decay starts. The training recipe and GLUE use this.

    `peak_at_warmup_end=True` divides by `warmup_steps` instead, so the last warm-up step is already at
    the full lr: the schedule MLM adaptation (`ncsearch._adapt`) has always used. Its adapted model is
    cached under a key that holds `RECIPE_VERSION`, not the code, so it keeps that formula until the
    version is bumped; moving it to the default would leave cached weights no fresh run reproduces.

    The factor is a closure, not a callable object, so `LambdaLR.state_dict()` does not save it and
    training checkpoints keep their format.
    """
    ramp = warmup_steps if peak_at_warmup_end else warmup_steps + 1

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / ramp
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
