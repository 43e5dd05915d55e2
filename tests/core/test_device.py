"""pipeline.core.device: device names and the mixed-precision policy.

There is no GPU here, so the CUDA policy is checked on a simulated GPU: the hardware queries
torch makes (availability, device count, compute capability, whether a bf16 tensor can be
created) are patched; setup_device and torch.cuda.is_bf16_supported run unchanged.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipeline.core.device import (DeviceSetup, adam_implementation, cpu_has_native_bf16, select_device,
                                  set_tf32, setup_device, tf32_allowed)


def test_cpu_is_float32_without_scaler_or_channels_last() -> None:
    setup = setup_device("cpu")
    assert setup == DeviceSetup(device=torch.device("cpu"))
    assert setup.amp_dtype is None and not setup.grad_scaler().is_enabled()
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select_device("tpu")


@pytest.mark.parametrize("caps, native", [
    ({"avx512_bf16": True, "amx_bf16": False}, True),   # e.g. AMD Zen 4, Cooper Lake
    ({"avx512_bf16": False, "amx_bf16": True}, True),   # Sapphire Rapids AMX tiles
    ({"avx512_bf16": False, "amx_bf16": False, "avx2": True}, False),
    ({}, False),                                         # non-x86: no such flags
])
def test_cpu_amp_is_bf16_only_with_native_bf16(monkeypatch, caps, native) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert cpu_has_native_bf16() is native
    setup = setup_device("cpu", amp=True)
    assert setup.amp_dtype == (torch.bfloat16 if native else None)
    assert not setup.use_scaler and not setup.channels_last
    assert setup_device("cpu", amp=False).amp_dtype is None


def test_adam_is_fused_on_cpu_and_cuda() -> None:
    assert adam_implementation(torch.device("cpu")) == "fused"
    assert adam_implementation(torch.device("cuda")) == "fused"


@pytest.fixture(autouse=True)
def tf32_flags():
    """Restore torch's process-wide TF32 flags (setup_device sets them on CUDA)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _fake_gpu(monkeypatch: pytest.MonkeyPatch, major: int) -> None:
    """One CUDA device of compute capability `major`.x, on which bf16 tensors can be made
    (so bf16 counts as 'supported with emulation' even before Ampere)."""
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)
    monkeypatch.setattr(cuda, "set_device", lambda device: None)
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    monkeypatch.setattr(cuda, "_check_bf16_tensor_supported", lambda device: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)


def test_pre_ampere_gpu_gets_float16_with_a_grad_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    # V100 / T4 (7.x): bf16 would only be emulated (slow), so float16 + GradScaler.
    _fake_gpu(monkeypatch, major=7)
    setup = setup_device("auto", amp=True)
    assert setup.device == torch.device("cuda", 0)
    assert setup.amp_dtype == torch.float16 and setup.use_scaler and setup.channels_last


def test_ampere_gpu_gets_bfloat16_without_scaler(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpu(monkeypatch, major=8)
    setup = setup_device("cuda", amp=True)
    assert setup.amp_dtype == torch.bfloat16 and not setup.use_scaler and setup.channels_last
    assert setup_device("cuda", amp=False).amp_dtype is None
    assert setup_device("cuda").amp_dtype is None  # float32 unless train.amp asks
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        select_device("cuda:1")


def test_a_fixed_gpu_under_several_local_processes_is_refused(monkeypatch):
    from pipeline.core.device import select_device

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="every local process on one GPU"):
        select_device("cuda:1")
    assert select_device("cpu").type == "cpu"


def test_float32_on_cuda_is_true_float32_and_amp_allows_tf32(monkeypatch):
    """train.amp false: TF32 off for matmuls and cuDNN convolutions (the original's float32);
    amp true: on. Read back through torch's flags, legacy and fp32_precision alike."""
    _fake_gpu(monkeypatch, major=9)
    setup_device("cuda", amp=False)
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision != "tf32" and not tf32_allowed()
    setup_device("cuda", amp=True)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    assert torch.backends.cudnn.conv.fp32_precision == "tf32" and tf32_allowed()
    set_tf32(False)
    assert not tf32_allowed()
