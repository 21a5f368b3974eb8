"""The arithmetic of the training forward pass: fp32, or bf16 / fp16 autocast; GPU-only device settings.

`train.precision` is "fp32" (the default; bit-for-bit the loss curve of earlier commits), "bf16"
(torch.autocast to bfloat16 on the encoder and head forward: matrix products in bf16, and on CPU
the LayerNorm and GELU that follow them too; weights, gradients and optimizer state stay fp32, the
MLM logits are upcast before the softmax (`heads.SparseMLM`) and the recipe hands NC3 fp32 features,
so its class sums and cosines are fp32) or "auto": bf16 where the device does bf16
natively (a CUDA GPU that reports bf16 support; a CPU with AVX512-BF16 or AMX-BF16), else fp32. On
other CPUs bf16 is emulated and slower than fp32, which is why "auto" does not pick it there. Each
worker resolves "auto" for its own device and reports the result as `train/bf16` (1 or 0), so a
search over mixed hardware shows which arithmetic every run had.

"fp16" (CUDA only) runs the forward under torch.autocast to float16 with a `torch.amp.GradScaler`:
the loss is scaled before backward, the gradients unscaled before clipping, and a step whose
gradients overflowed is skipped by the scaler (the step counter, data position and learning-rate
schedule still advance, so a skipped step costs one batch and nothing else). The scaler's state is
part of the checkpoint, so a resumed run continues at the same scale. fp16 on a CPU is refused (a
ConfigError naming train.precision, at spec-parse time when `resources.gpus_per_worker` is 0 and again
at worker setup): torch's CPU autocast to float16 runs, but emulated (about 5x slower than fp32 for
MiniLM-sized matrix products on the AVX512-BF16 VM, where bf16 is faster than fp32) and with
LayerNorm in float16, so it is no training path worth offering.

On a CUDA device, worker setup also turns on TF32 matrix products (`allow_tf32` for cuBLAS and cuDNN;
so "fp32" on an Ampere-or-later GPU means fp32 storage with TF32 products) and the recipe copies
each batch through pinned memory with `non_blocking=True`. On CPU both are no-ops (`device_settings`
says what would be set), so the CPU fp32 loss curve is unchanged bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "DeviceSettings",
    "apply_device_settings",
    "autocast_for",
    "batch_to_device",
    "device_settings",
    "grad_scaler_for",
    "native_bf16",
    "resolve_precision",
]

#: The values of `train.precision`.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

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
    """"fp32", "bf16" or "fp16": the spec's value, with "auto" decided by `native_bf16(device)`
    ("auto" never picks fp16). Raises ConfigError for fp16 on a device that is not CUDA."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        from ncsearch.errors import ConfigError

        raise ConfigError(f"train.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        from ncsearch.errors import ConfigError

        raise ConfigError(FP16_NEEDS_CUDA.format(device=device.type))
    return precision


#: The one-line refusal of fp16 off a GPU (also raised at spec-parse time by ncsearch.config).
FP16_NEEDS_CUDA = ("train.precision: fp16 needs a CUDA GPU, but this run's device is {device} (float16 autocast "
                   "on CPU is emulated, several times slower than fp32, and keeps LayerNorm in float16); "
                   "use bf16 or fp32 on CPU")


def autocast_for(precision: str, device: torch.device) -> Callable[[], Any]:
    """A context factory for the forward pass under the resolved `precision`."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=_AUTOCAST_DTYPES[resolved])


def grad_scaler_for(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The loss scaler of the backward pass: enabled for fp16 only. Disabled, every method of it is
    the identity (`scale` returns the loss itself, `step` is `optimizer.step()`, `unscale_` and
    `update` do nothing, `state_dict` is {}), so fp32 and bf16 runs are the unscaled arithmetic."""
    enabled = resolve_precision(precision, device) == "fp16"
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


@dataclass(frozen=True)
class DeviceSettings:
    """What worker setup sets for a device: TF32 matrix products, and pinned host memory for the
    host-to-device batch copies (both only for CUDA)."""

    tf32: bool
    pin_memory: bool


def device_settings(device: torch.device) -> DeviceSettings:
    """The settings `apply_device_settings` would make for `device` (decided by its type alone)."""
    cuda = device.type == "cuda"
    return DeviceSettings(tf32=cuda, pin_memory=cuda)


def apply_device_settings(device: torch.device) -> DeviceSettings:
    """Set what `device_settings(device)` says (a no-op on CPU) and return it."""
    settings = device_settings(device)
    if settings.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return settings


def batch_to_device(batch: dict[str, torch.Tensor], device: torch.device, *, pin_memory: bool = False) -> dict[str, torch.Tensor]:
    """`batch` on `device`: with `pin_memory`, each CPU tensor is copied through page-locked memory and
    sent with `non_blocking=True` (the copy overlaps the GPU's work); else a plain `.to(device)`."""
    if not pin_memory:
        return {k: v.to(device) for k, v in batch.items()}
    return {k: (v.pin_memory() if v.device.type == "cpu" else v).to(device, non_blocking=True) for k, v in batch.items()}
