"""Keep freed memory in the process: glibc malloc settings for the training/evaluation processes.

A training step allocates and frees hundreds of large tensors (activations, their
gradients). With glibc's defaults, blocks above the (dynamic) mmap threshold are mmapped
and unmapped on every use, and freed memory at the top of the heap is trimmed back to the
OS, so each step pays ~10^5 page faults to map fresh zeroed pages again (measured: ~550k
minor faults and 1.2 s of system time per step at paper widths, batch 8, 128x64).

tune_allocator() sets, for the calling process, what glibc's MALLOC_* environment
tunables would (mallopt through ctypes, so it also holds under `dvc repro` and torchrun,
which start our processes without any wrapper): serve every block from the heap (no
mmap: the mmap threshold alone is capped at 32 MiB, and larger activations would still
churn), never trim the heap, and grow it in large steps. DataLoader workers forked later
inherit the setting. The cost is that the heap keeps its high-water mark (peak RSS, not
the working set); measured peak RSS was unchanged (bench/bench_train.py prints it).
A no-op on other C libraries (macOS, musl, Windows).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# glibc <malloc.h> parameter numbers.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

# glibc caps M_MMAP_THRESHOLD at HEAP_MAX_SIZE / 2 (32 MiB with 64-bit longs); M_MMAP_MAX 0
# also stops mmap for blocks above it (threads' arenas then fall back to the main heap).
MMAP_THRESHOLD = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)
TRIM_THRESHOLD = 2**31 - 1  # int: effectively "never trim"
TOP_PAD = 256 * 1024 * 1024  # grow the heap 256 MiB at a time (virtual; touched lazily)

DISABLE_ENV = "DEFORMABLE_GAN_MALLOC_TUNING"  # "0" turns tune_allocator into a no-op

_applied: dict[str, int] | None = None


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def tune_allocator() -> dict[str, int]:
    """Apply the settings above once per process; returns what was set ({} = nothing:
    not glibc, disabled by $DEFORMABLE_GAN_MALLOC_TUNING=0, or mallopt refused)."""
    global _applied
    if _applied is not None:
        return dict(_applied)
    libc = _glibc() if os.environ.get(DISABLE_ENV, "1") != "0" else None
    applied: dict[str, int] = {}
    if libc is not None:
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        for name, param, value in (("M_MMAP_THRESHOLD", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                   ("M_MMAP_MAX", M_MMAP_MAX, 0),
                                   ("M_TRIM_THRESHOLD", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                                   ("M_TOP_PAD", M_TOP_PAD, TOP_PAD)):
            if libc.mallopt(param, value) == 1:  # mallopt returns 1 on success
                applied[name] = value
    _applied = applied
    return dict(applied)
