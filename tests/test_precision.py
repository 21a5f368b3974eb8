"""train.precision: "auto" picks bf16 only where the device has it natively."""

from __future__ import annotations

import contextlib

import pytest
import torch

from ncsearch.training import _precision
from ncsearch.training._precision import autocast_for, native_bf16, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize(("flags", "expected"), [
    (frozenset({"avx2", "avx512f"}), "fp32"),
    (frozenset({"avx512f", "avx512_bf16"}), "bf16"),
    (frozenset({"amx_bf16", "amx_tile"}), "bf16"),
    (frozenset(), "fp32"),
])
def test_auto_follows_the_cpu_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(_precision, "_cpu_flags", lambda: flags)
    assert resolve_precision("auto", CPU) == expected
    assert native_bf16(CPU) == (expected == "bf16")


def test_explicit_values_are_kept_whatever_the_device(monkeypatch):
    monkeypatch.setattr(_precision, "_cpu_flags", frozenset)
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"


def test_autocast_only_for_bf16():
    assert autocast_for("fp32", CPU) is contextlib.nullcontext
    with autocast_for("bf16", CPU)():
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")
