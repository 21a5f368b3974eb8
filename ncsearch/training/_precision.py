"""The arithmetic of the training forward pass: fp32, or bf16 autocast where the hardware has it.

`train.precision` is "fp32" (the default; bit-for-bit the loss curve of earlier commits), "bf16"
(torch.autocast to bfloat16 on the encoder and head forward: matrix products in bf16, and on CPU
the LayerNorm and GELU that follow them too; weights, gradients and optimizer state stay fp32, the
MLM logits are upcast before the softmax (`heads.SparseMLM`) and the recipe hands NC3 fp32 features,
so its class sums and cosines are fp32) or "auto": bf16 where the device does bf16
natively (a CUDA GPU that reports bf16 support; a CPU with AVX512-BF16 or AMX-BF16), else fp32. On
other CPUs bf16 is emulated and slower than fp32, which is why "auto" does not pick it there. Each
worker resolves "auto" for its own device and reports the result as `train/bf16` (1 or 0), so a
search over mixed hardware shows which arithmetic every run had.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["autocast_for", "native_bf16", "resolve_precision"]

_CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bf16 matrices natively (not by converting to fp32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    return bool(_cpu_flags() & _CPU_BF16_FLAGS)


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def resolve_precision(precision: str, device: torch.device) -> str:
    """"fp32" or "bf16": the spec's value, with "auto" decided by `native_bf16(device)`."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast_for(precision: str, device: torch.device) -> Callable[[], Any]:
    """A context factory for the forward pass under the resolved `precision`."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
