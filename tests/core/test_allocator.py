"""pipeline.core.allocator: glibc malloc settings that keep freed memory (checked in fresh processes)."""
from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")

# Allocate, touch and free 48 MiB blocks (above glibc's largest mmap threshold) 20 times and
# count the minor page faults this takes: each fresh mmap faults in every page again.
CHURN = """
import json, resource, sys, torch
from pipeline.core.allocator import tune_allocator
applied = tune_allocator() if sys.argv[1] == "tuned" else {}
torch.ones(12 * 2**20).sum()  # warm-up: the heap grows once
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(12 * 2**20).sum()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "again": tune_allocator() if applied else {}, "faults": faults}))
"""


def _run(mode: str, env: dict | None = None) -> dict:
    import os

    out = subprocess.run([sys.executable, "-c", CHURN, mode], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc_only
def test_tuned_process_stops_refaulting_freed_memory() -> None:
    plain, tuned = _run("plain"), _run("tuned")
    pages = 20 * 48 * 2**20 // 4096
    assert plain["faults"] > 0.5 * pages  # glibc's default: every block mmapped afresh
    # Measured 0.15-0.35 (the kernel's own page reclaim adds refaults on some machines).
    assert tuned["faults"] < 0.5 * plain["faults"], (plain, tuned)
    assert set(tuned["applied"]) == {"M_MMAP_THRESHOLD", "M_MMAP_MAX", "M_TRIM_THRESHOLD", "M_TOP_PAD"}
    assert tuned["applied"]["M_MMAP_MAX"] == 0 and tuned["again"] == tuned["applied"]


@glibc_only
def test_disabled_by_environment() -> None:
    off = _run("tuned", {"DEFORMABLE_GAN_MALLOC_TUNING": "0"})
    assert off["applied"] == {}


def test_no_op_without_glibc(monkeypatch) -> None:
    import pipeline.core.allocator as allocator

    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.tune_allocator() == {}
