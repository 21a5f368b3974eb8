"""A linear layer with its bias, GELU or residual add computed inside the GEMM, for CPU evaluation.

On two CPU cores an encoder forward is about three quarters GEMM; most of the rest is work a GEMM
library can do in its epilogue while the output tile is still in cache: `addmm` first copies the bias
into the output, then GELU and the residual add each read and write the whole activation again.
oneDNN (bundled with PyTorch's CPU builds) takes a weight packed once into its blocked layout and fuses
bias, GELU and a residual add into the matrix product: `torch.ops.mkldnn._linear_pointwise`, the
kernel PyTorch's own Inductor backend emits for these patterns. That cuts the batched CrowS-Pairs
scoring time by about 6% on the 2-core VM (bench/eval_speed.py) with identical results up to float
rounding (tests/test_evaluate_fused_linear.py).

Anything else (CUDA, float64, bfloat16, a build without oneDNN, a PyTorch without this operator) gets
`F.linear` and the plain operations, so callers never need to know which path ran. Packing is part of
the evaluation fast path: `score_masked` packs only with `fast_path` on (`ncsearch eval --no-fast-path`
turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FusedLinear"]


def _onednn_packs(weight: Tensor) -> bool:
    """Whether this weight can go through oneDNN's fused linear (CPU, float32, operator present)."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


@dataclass(frozen=True)
class FusedLinear:
    """`x W^T + b`, optionally followed by exact (erf) GELU or by adding a residual, as one call.

    `weight` is oneDNN-packed when `packed` is True (and then only usable through this class), else
    the plain (out, in) matrix. Inference only: the packed weight is a copy made without autograd, so
    build one per evaluation pass and never keep it across a change of the model's parameters.
    """

    weight: Tensor
    bias: Tensor | None
    packed: bool

    @classmethod
    def of(cls, weight: Tensor, bias: Tensor | None, *, pack: bool = True) -> FusedLinear:
        """Packs `weight` for oneDNN when it can (and `pack`), else keeps it as it is."""
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        if pack and _onednn_packs(weight):
            try:
                return cls(torch.ops.mkldnn._reorder_linear_weight(weight.contiguous()), bias, True)
            except RuntimeError:  # an unusual build that lists the operator but cannot run it
                pass
        return cls(weight, bias, False)

    def __call__(self, x: Tensor, *, gelu: bool = False, residual: Tensor | None = None) -> Tensor:
        """`linear(x)`, then GELU when `gelu`, else `+ residual` when given (not both)."""
        if gelu and residual is not None:
            raise ValueError("FusedLinear fuses either GELU or a residual add, not both")
        if self.packed:
            if x.dtype != torch.float32 or x.device.type != "cpu":
                raise ValueError(f"a oneDNN-packed FusedLinear takes float32 CPU input, but got {x.dtype} on {x.device}")
            if residual is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, residual.contiguous(), self.weight, self.bias, "add")
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "gelu" if gelu else "none", [],
                                                      "none" if gelu else "")
        out = F.linear(x, self.weight, self.bias)
        if gelu:
            return F.gelu(out)
        return out if residual is None else out + residual
