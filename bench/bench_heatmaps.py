"""Heatmap stage throughput against a naive renderer and the disk-write bound.

    python -m bench.bench_heatmaps [--n 5000] [--dir DIR] [--naive 200]

Prints images/s for: the heatmaps stage end to end on a synthetic keypoint table (Parquet
read, rendering, uint8 store writing incl. fsync, preview), the vectorised renderer alone
(into memory), a naive per-joint Python loop renderer, and the disk-write bound = write
bandwidth of the same number of bytes to the same filesystem (write + fsync) / bytes per
image. DIR (default: a temporary folder under data/) decides the filesystem measured.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data.heatmap_store import bytes_per_image
from pipeline.data.heatmaps import render_heatmaps_uint8
from pipeline.core.keypoints import NUM_JOINTS, make_table

H, W, SIGMA = 128, 64, 6.0


def synthetic_table(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    kp = np.stack([rng.uniform(0, W - 1, (n, NUM_JOINTS)), rng.uniform(0, H - 1, (n, NUM_JOINTS))], -1)
    kp[rng.random((n, NUM_JOINTS)) < 0.15] = -1  # some missing joints, like real poses
    names = [f"{i // 8 + 1:04d}_c1s1_{i:06d}_00.jpg" for i in range(n)]
    return make_table(names, kp, split="train", person_id=[i // 8 + 1 for i in range(n)],
                      width=W, height=H), kp.astype(np.float32)


def naive_render(kp: np.ndarray) -> np.ndarray:
    """Reference: one full 2-D exp per joint per image in Python loops."""
    out = np.zeros((len(kp), NUM_JOINTS, H, W), np.float32)
    rows, cols = np.mgrid[0:H, 0:W]
    for n in range(len(kp)):
        for j in range(NUM_JOINTS):
            x, y = kp[n, j]
            if x >= 0 and y >= 0:
                out[n, j] = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * SIGMA**2))
    return out


def disk_write_bound(folder: Path, nbytes: int, block: int = 8 << 20) -> float:
    """Seconds to write nbytes to a new file in folder and fsync it."""
    buf = np.random.default_rng(0).integers(0, 256, block, dtype=np.uint8).tobytes()
    file = folder / "disk_bound.bin"
    t0 = time.perf_counter()
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = nbytes
        while left > 0:
            left -= os.write(fd, buf[: min(block, left)])
        os.fsync(fd)
    finally:
        os.close(fd)
    dt = time.perf_counter() - t0
    file.unlink()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="synthetic keypoint rows")
    ap.add_argument("--naive", type=int, default=200, help="images for the naive renderer")
    ap.add_argument("--dir", default=None, help="scratch folder (decides the filesystem)")
    args = ap.parse_args()

    from stages.heatmaps import main as stage_main

    base = Path(args.dir or "data")
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench_heatmaps_", dir=base))
    try:
        table, kp = synthetic_table(args.n)
        table.to_parquet(work / "kp.parquet")
        (work / "params.yaml").write_text(f"image: {{height: {H}, width: {W}}}\nheatmaps: {{sigma: {SIGMA}}}\n")
        per_image = bytes_per_image(H, W)
        total = per_image * args.n
        print(f"{args.n} images {H}x{W}, {per_image} B each, {total / 1e6:.0f} MB; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; scratch {work}")

        dt_disk = disk_write_bound(work, total)
        bound = total / dt_disk / per_image
        print(f"disk-write bound : {bound:8.0f} images/s  ({total / dt_disk / 1e6:.0f} MB/s write+fsync)")

        t0 = time.perf_counter()
        stage_main(["--params", str(work / "params.yaml"), "--keypoints", str(work / "kp.parquet"),
                    "--out", str(work / "store"), "--preview", str(work / "preview.png"),
                    "--manifest", str(work / "none.parquet"), "--dataset", str(work)])
        stage = args.n / (time.perf_counter() - t0)
        shutil.rmtree(work / "store")

        torch.set_num_threads(1)  # as the store writer renders
        t0 = time.perf_counter()
        m = min(args.n, 2000)
        render_heatmaps_uint8(kp[:m], H, W, SIGMA)
        render = m / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        naive_render(kp[: args.naive])
        naive = args.naive / (time.perf_counter() - t0)

        print(f"stage end to end : {stage:8.0f} images/s  ({stage / bound:.2f} x disk bound; target >= 0.5)")
        print(f"render only (RAM): {render:8.0f} images/s  (1 thread, uint8)")
        print(f"naive loop       : {naive:8.0f} images/s  (float32, no store; vectorised render {render / naive:.1f}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
