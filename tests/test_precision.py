"""train.precision: "auto" picks bf16 only where the device has it natively."""

from __future__ import annotations

import contextlib

import pytest
import torch

from test_baseline_contract import tiny_model_dir  # noqa: F401  (the contract test's saved tiny BERT, a fixture)

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


# ----- fp16: GPU only, with a loss scaler ---------------------------------------------------------


def test_fp16_is_refused_off_cuda_with_one_line_naming_the_key():
    from ncsearch.errors import ConfigError
    from ncsearch.training._precision import grad_scaler_for

    for call in (resolve_precision, autocast_for, grad_scaler_for):
        with pytest.raises(ConfigError, match=r"^train\.precision: fp16 needs a CUDA GPU, but this run's device is cpu") as err:
            call("fp16", CPU)
        assert "\n" not in str(err.value)


def test_fp16_with_a_gpu_share_parses_and_without_one_is_refused_at_parse_time():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import make_spec

    from ncsearch.errors import ConfigError

    assert make_spec(**{"train.precision": "fp16", "resources.gpus_per_worker": 0.25}).train.precision == "fp16"
    with pytest.raises(ConfigError, match=r"train\.precision: fp16 needs a CUDA GPU \(resources\.gpus_per_worker > 0\)"):
        make_spec(**{"train.precision": "fp16"})


def test_auto_never_picks_fp16(monkeypatch):
    monkeypatch.setattr(_precision, "_cpu_flags", lambda: frozenset({"avx512_bf16", "avx512_fp16", "amx_fp16"}))
    assert resolve_precision("auto", CPU) == "bf16"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "auto"])
def test_the_scaler_is_disabled_and_the_identity_outside_fp16(precision):
    from ncsearch.training._precision import grad_scaler_for

    scaler = grad_scaler_for(precision, CPU)
    assert not scaler.is_enabled() and scaler.state_dict() == {}
    loss = torch.tensor(3.0, requires_grad=True)
    assert scaler.scale(loss) is loss


def test_autocast_for_fp16_casts_to_float16(monkeypatch):
    """The context autocast_for builds for fp16 (checked on CPU by letting fp16 through there)."""
    monkeypatch.setattr(_precision, "resolve_precision", lambda precision, device: precision)
    with autocast_for("fp16", CPU)():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16


# ----- CUDA-only device settings: decided by the device type, no-ops on CPU ---------------------------


def test_device_settings_turn_on_tf32_and_pinned_copies_for_cuda_only():
    from ncsearch.training._precision import DeviceSettings, device_settings

    assert device_settings(torch.device("cuda", 0)) == DeviceSettings(tf32=True, pin_memory=True)
    assert device_settings(CPU) == DeviceSettings(tf32=False, pin_memory=False)


def test_applying_the_cpu_settings_changes_nothing():
    from ncsearch.training._precision import apply_device_settings

    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    assert apply_device_settings(CPU).tf32 is False
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision()) == before


def test_apply_device_settings_for_cuda_sets_tf32():
    from ncsearch.training._precision import apply_device_settings

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:  # process-wide flags (settable without a GPU): put them back for later tests
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        assert apply_device_settings(torch.device("cuda", 0)).tf32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_batch_to_device_pins_only_when_asked():
    from ncsearch.training._precision import batch_to_device

    batch = {"input_ids": torch.arange(6).view(2, 3), "labels": torch.full((2, 3), -100)}
    moved = batch_to_device(batch, CPU)
    assert all(torch.equal(moved[k], batch[k]) for k in batch)

    class Recorder(torch.Tensor):
        pass

    calls = []

    def fake_pin(self):
        calls.append("pin")
        return self

    def fake_to(self, *args, **kwargs):
        calls.append(kwargs.get("non_blocking"))
        return self

    tensor = torch.zeros(2).as_subclass(Recorder)
    Recorder.pin_memory, Recorder.to = fake_pin, fake_to
    batch_to_device({"x": tensor}, torch.device("cuda", 0), pin_memory=True)
    assert calls == ["pin", True]


# ----- the training recipe: fp32 unchanged, the scaler's bookkeeping and resume ------------------------

#: Reports of a 4-step fp32 run (tiny BERT of the contract test, mlm baseline, nc3.alpha 10, grad clip
#: 1.0), recorded at commit 529713a, before the loss scaler existed; `update_l1` is the summed
#: |final - initial| over every weight. With 1 or 2 threads the values agree to 1e-7 relative.
FP32_GOLDEN = {
    "train/loss": [12.257355690002441, 12.2843017578125, 11.432944297790527, 12.686382293701172],
    "train/mlm_loss": [10.336257934570312, 10.342019081115723, 10.336548805236816, 10.349771499633789],
    "train/unc3": [0.19210976362228394, 0.19422821700572968, 0.10963958501815796, 0.23366111516952515],
}
FP32_GOLDEN_UPDATE_L1 = 4110.163879817107


@pytest.fixture(scope="module")
def contract():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import test_baseline_contract

    return test_baseline_contract


def _update_l1(folder, weights) -> float:
    from ncsearch.models import load_mlm

    initial = load_mlm(str(folder))[0].state_dict()
    return sum(float((weights[k].double() - initial[k].double()).abs().sum())
               for k in weights if k in initial and weights[k].is_floating_point())


def test_fp32_training_is_the_loss_curve_recorded_before_the_scaler(contract, tiny_model_dir, data_root, tmp_path):
    reports, weights = contract.run_local("mlm", tiny_model_dir, data_root, tmp_path, alpha=10.0)
    for key, expected in FP32_GOLDEN.items():
        assert [r[key] for r in reports] == pytest.approx(expected, rel=1e-6, abs=1e-6), key
    assert _update_l1(tiny_model_dir, weights) == pytest.approx(FP32_GOLDEN_UPDATE_L1, rel=1e-6)
    assert all("train/skipped_steps" not in r for r in reports)


def _cpu_scaler(monkeypatch, init_scale: float):
    """Let the recipe run an enabled GradScaler on CPU (fp32 forward): its bookkeeping, not fp16's speed."""
    from ncsearch.training import _recipe

    monkeypatch.setattr(_recipe, "grad_scaler_for",
                        lambda precision, device: torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=1))


def test_a_skipped_scaler_step_keeps_the_schedule_and_the_weights(contract, monkeypatch, tiny_model_dir, data_root, tmp_path):
    """A scale so large the scaled gradients overflow: the steps are skipped (weights unchanged), the
    step counter and the LR schedule advance as in the fp32 run, and the skips are reported."""
    plain, _ = contract.run_local("mlm", tiny_model_dir, data_root, tmp_path / "plain", alpha=10.0)
    _cpu_scaler(monkeypatch, init_scale=2.0**127)
    reports, weights = contract.run_local("mlm", tiny_model_dir, data_root, tmp_path / "scaled", alpha=10.0)
    assert [r["step"] for r in reports] == [1, 2, 3, 4]
    assert [r["train/lr"] for r in reports] == [r["train/lr"] for r in plain]
    # 2^127 down to 2^124: every scaled backward overflows (the 5th step, at 2^123, would not)
    assert [r["train/skipped_steps"] for r in reports] == [1, 2, 3, 4]
    assert _update_l1(tiny_model_dir, weights) == 0.0  # no step taken, not even weight decay
    # the step-1 loss is computed before any update: the same as fp32's
    assert reports[0]["train/loss"] == plain[0]["train/loss"]


def test_a_scaled_run_resumes_exactly_with_the_scaler_state(contract, monkeypatch, tiny_model_dir, data_root, tmp_path):
    from ncsearch.training import read_state

    _cpu_scaler(monkeypatch, init_scale=2.0**16)
    reports, weights = contract.run_local("mlm", tiny_model_dir, data_root, tmp_path / "full", alpha=10.0)
    crashed, _ = contract.run_local("mlm", tiny_model_dir, data_root, tmp_path, alpha=10.0, fail_after_step=2)
    assert crashed[-1]["step"] == 2
    checkpoint = tmp_path / "checkpoints" / "checkpoint_000002"
    saved = read_state(checkpoint).scaler
    assert saved["scale"] == 2.0**18  # grown once per finite step (growth_interval 1)
    resumed, resumed_weights = contract.run_local("mlm", tiny_model_dir, data_root, tmp_path, alpha=10.0, resume_from=checkpoint)
    assert [r["step"] for r in resumed] == [3, 4]
    for a, b in zip(reports[2:], resumed):
        contract.metrics_close(a, b, tol=1e-6)
    contract.weights_close(weights, resumed_weights, tol=1e-6)
