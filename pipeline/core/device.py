"""Device, mixed-precision and distributed-process selection for training and inference.

With amp off everything runs in float32, on CUDA true float32 (TF32 off: torch lets cuDNN
round convolution inputs to TF32's 10-bit mantissa by default, about 1e-3 relative error
per convolution). With amp on, TF32 is allowed and CUDA runs use autocast with bfloat16
when the GPU supports it natively (Ampere or newer), else float16 with a GradScaler, plus
channels_last and cudnn.benchmark; CPU runs use bfloat16 autocast when the CPU has native
bf16 instructions (AVX512-BF16 or AMX), else stay float32 (emulated bf16 is slower than
float32). CPU runs are deterministic either way, so a resumed run repeats an uninterrupted
one exactly. Distributed runs are detected from the environment variables torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class DeviceSetup:
    """What the training loop needs to know about where and how it computes."""

    device: torch.device
    amp_dtype: torch.dtype | None = None  # None = full float32
    use_scaler: bool = False  # GradScaler only for float16 autocast
    channels_last: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes and losses (a no-op without AMP)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is enabled only for float16 autocast."""
        return torch.amp.GradScaler(self.device.type, enabled=self.use_scaler)

    def prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a module to the device (and to channels_last memory format on CUDA)."""
        module = module.to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module


def select_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """"auto" | "cpu" | "cuda" | "cuda:N" -> torch.device.

    "auto" picks CUDA when available. Under torchrun, "auto"/"cuda" pick cuda:LOCAL_RANK.
    Raises ValueError for an unknown name or a CUDA request on a machine without CUDA.
    """
    name = name.strip().lower()
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if ":" in name and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
            raise ValueError(f"device {name!r} under torchrun would put every local process on one "
                             "GPU; use train.device auto or cuda (each rank takes cuda:LOCAL_RANK)")
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        index = int(name.split(":", 1)[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def setup_device(name: str = "auto", amp: bool = False) -> DeviceSetup:
    """Select the device and its precision policy (train.amp); sets global CUDA flags on CUDA."""
    device = select_device(name)
    if device.type != "cuda":
        native = amp and device.type == "cpu" and cpu_has_native_bf16()
        return DeviceSetup(device=device, amp_dtype=torch.bfloat16 if native else None)
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick fast kernels
    set_tf32(amp)
    if not amp:
        return DeviceSetup(device=device, channels_last=True)
    dtype = cuda_amp_dtype()
    return DeviceSetup(device=device, amp_dtype=dtype, use_scaler=dtype == torch.float16,
                       channels_last=True)


def set_tf32(allowed: bool) -> None:
    """Allow TF32 for float32 matmuls and cuDNN convolutions (Ampere and newer), or make them
    true float32. Process-wide; set through the allow_tf32 flags, which torch maps onto its
    fp32_precision settings coherently (setting those directly leaves torch unable to report
    the legacy flags that other libraries read)."""
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed


def tf32_allowed() -> bool:
    """Whether float32 convolutions or matmuls on CUDA may use TF32 (set_tf32)."""
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def cuda_amp_dtype() -> torch.dtype:
    """bfloat16 where the GPU runs it natively, else float16 (which needs a GradScaler).

    Native only (compute capability >= 8): the default including_emulation=True also says
    yes on V100/T4, where bf16 convolutions are emulated and many times slower.
    """
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16, or AMX-BF16 tiles),
    which oneDNN uses for bf16 convolutions and matmuls; elsewhere bf16 is emulated."""
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def adam_implementation(device: torch.device) -> str:
    """"fused" where torch has a fused Adam kernel for the device (CPU and CUDA in torch >=
    2.4), else "foreach" (one multi-tensor op per step instead of a loop over parameters)."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices as fused_devices
        supported = set(fused_devices())
    except ImportError:  # a private helper: older/newer torch may lack it
        supported = {"cuda"}
    return "fused" if device.type in supported else "foreach"


# --------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> DistInfo:
    """Rank / world size / local rank as set by torchrun (single process when unset)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


@contextlib.contextmanager
def distributed(device: torch.device, info: DistInfo | None = None) -> Iterator[DistInfo]:
    """Initialise the default process group for a torchrun launch (gloo on CPU, nccl on
    CUDA) and tear it down afterwards. A no-op for single-process runs or when a group is
    already initialised by the caller (which then also owns its teardown)."""
    info = info or dist_from_env()
    import torch.distributed as dist

    if not info.enabled or dist.is_initialized():
        yield info
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    try:
        yield info
    finally:
        dist.destroy_process_group()
