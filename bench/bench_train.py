"""Benchmark: train-step throughput / peak memory, and data-loader throughput.

    python -m bench.bench_train [--batch 8] [--steps 3] [--workers N] [--vgg PATH]

1. One GAN iteration (D step + G step, pipeline.training.GanTrainer) on CPU at batch 8,
   128x64, paper widths, for warp none / parts / parts+offsets. Each configuration runs
   in its own subprocess so its peak RSS (ru_maxrss) is its own. The loss is the Market
   setting (GAN + 0.01 NN + offset smoothness) when VGG19 weights are available
   (--vgg, default ../shared/weights/...), else GAN + offset smoothness only (said so).
2. The DataLoader (pipeline.data.build_loader, train.num_workers from params.yaml unless
   --workers) on a generated 128x64 dataset, against the slowest train step (target:
   loader >= 10x the step, so data never limits training).
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VGG = ROOT.parent / "shared" / "weights" / "vgg19_features_caffe_rgb_fp16.pt"
CONFIGS = {"none": ("none", False), "parts": ("parts", False), "parts+offsets": ("parts", True)}


def _params(warp: str, offsets: bool, batch: int, vgg: str | None):
    import dataclasses

    from pipeline.config import LossConfig, ModelConfig, Params, TrainConfig

    loss = LossConfig(vgg_weights=vgg) if vgg else LossConfig(nn_weight=0.0)
    return dataclasses.replace(Params(), model=ModelConfig(warp=warp, offsets=offsets), loss=loss,
                               train=TrainConfig(batch_size=batch, device="cpu"))


def one_config(name: str, batch: int, steps: int, vgg: str | None) -> dict:
    """Time `steps` iterations after one warm-up; runs inside a fresh subprocess."""
    import torch

    from pipeline.device import setup_device
    from pipeline.training import build_trainer

    warp, offsets = CONFIGS[name]
    params = _params(warp, offsets, batch, vgg)
    torch.manual_seed(0)
    trainer = build_trainer(params, setup_device("cpu"))
    h, w = params.image.height, params.image.width
    g = torch.Generator().manual_seed(0)
    kp = torch.rand(batch, 18, 2, generator=g) * torch.tensor([w * 0.6, h * 0.8]) + torch.tensor([w * 0.2, h * 0.1])
    batch_t = {"xa": torch.rand(batch, 3, h, w, generator=g) * 2 - 1, "xb": torch.rand(batch, 3, h, w, generator=g) * 2 - 1,
               "ha": torch.rand(batch, 18, h, w, generator=g), "hb": torch.rand(batch, 18, h, w, generator=g),
               "kpa": kp, "kpb": kp.flip(0)}
    trainer.step(batch_t)  # warm-up (allocations, oneDNN primitive creation)
    t = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch_t)
    sec = (time.perf_counter() - t) / steps
    return {"config": name, "sec_per_step": sec, "images_per_sec": batch / sec,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "threads": torch.get_num_threads()}


def _make_dataset(root: Path, n_ids: int = 16, per_id: int = 8, h: int = 128, w: int = 64):
    """Textured 128x64 JPEGs with plausible keypoints -> a PairDataset."""
    import cv2
    import pandas as pd

    from pipeline.data import PairDataset
    from pipeline.heatmap_store import HeatmapStore, write_heatmap_store
    from pipeline.keypoints import make_table

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    names, kps = [], []
    for pid in range(1, n_ids + 1):
        for k in range(per_id):
            name = f"{pid:04d}_c1s1_{k:06d}_00.jpg"
            noise = rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8)
            img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / "img" / name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            names.append(name)
            kps.append(rng.uniform([4, 4], [w - 4, h - 4], (18, 2)).astype(np.float32))
    kp = np.stack(kps)
    pids = [int(n[:4]) for n in names]
    manifest = pd.DataFrame({"name": names, "path": [f"img/{n}" for n in names], "width": w, "height": h})
    table = make_table(names, kp, split="train", person_id=pids, width=w, height=h)
    pairs = pd.DataFrame([(a, b, "train") for a, pa in zip(names, pids) for b, pb in zip(names, pids)
                          if pa == pb and a != b], columns=["from", "to", "split"])
    write_heatmap_store(root / "hm", names, kp, h, w, sigma=6.0)
    return PairDataset(pairs, "train", manifest, table, HeatmapStore(root / "hm"), root, h, w)


def loader_throughput(batch: int, workers: int, batches: int = 60) -> float:
    from pipeline.data import build_loader

    with tempfile.TemporaryDirectory() as tmp:
        ds = _make_dataset(Path(tmp))
        it = iter(build_loader(ds, batch, workers, seed=0))
        for _ in range(max(4, 2 * workers)):  # warm-up: start workers, fill the prefetch queue
            next(it)
        t = time.perf_counter()
        for _ in range(batches):
            next(it)
        ips = batches * batch / (time.perf_counter() - t)
        del it
    return ips


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="default: train.num_workers")
    ap.add_argument("--vgg", default=str(DEFAULT_VGG) if DEFAULT_VGG.is_file() else None)
    ap.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_config(args.one, args.batch, args.steps, args.vgg)))
        return 0

    from pipeline.config import load_params

    workers = args.workers if args.workers is not None else load_params(ROOT / "params.yaml").train.num_workers
    loss = "GAN + 0.01 NN (VGG19 relu1_2) + 0.01 offset smoothness" if args.vgg else \
        "GAN + 0.01 offset smoothness (no VGG weights: NN loss off)"
    print(f"train step: CPU, batch {args.batch}, 128x64, paper widths, loss {loss}")
    print(f"{'config':<15}{'s/step':>9}{'images/s':>10}{'peak RSS MB':>13}{'threads':>9}")
    step_ips = []
    for name in CONFIGS:
        cmd = [sys.executable, "-m", "bench.bench_train", "--one", name, "--batch", str(args.batch),
               "--steps", str(args.steps)] + (["--vgg", args.vgg] if args.vgg else [])
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name:<15} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        step_ips.append(r["images_per_sec"])
        print(f"{name:<15}{r['sec_per_step']:>9.2f}{r['images_per_sec']:>10.2f}"
              f"{r['peak_rss_mb']:>13.0f}{r['threads']:>9}")

    ips = loader_throughput(args.batch, workers)
    print(f"data loader: {workers} worker(s), batch {args.batch}, 128x64: {ips:.1f} images/s")
    if step_ips:
        slowest, fastest = min(step_ips), max(step_ips)
        print(f"loader / train step: {ips / fastest:.0f}x (fastest config) .. {ips / slowest:.0f}x "
              f"(slowest); target >= 10x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
