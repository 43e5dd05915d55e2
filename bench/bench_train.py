"""Benchmark: train-step cost per precision / optimiser / allocator / mode, and the data loader.

    python -m bench.bench_train [--batch 8] [--steps 3] [--workers N] [--vgg PATH]

1. One GAN iteration (GanTrainer.step) on CPU at batch B (8), 128x64, paper widths, loss
   GAN + 0.01 NN (VGG19 relu1_2) when VGG19 weights are available (--vgg, default
   ../shared/weights/...), else GAN only (said so). Each configuration runs in its own
   subprocess, so its peak RSS, page faults and allocator settings are its own:
     fp32      today's step: our model (norm instance, block_bias, disc_head patch, init
               normal, affine_fit lstsq, part_masks rect, warp_sampling bilinear), one
               batch per step, float32, torch's for-loop Adam, glibc malloc defaults
     default   the same model and iteration with the new defaults: amp (bf16 autocast
               where the CPU has native bf16), fused Adam, pipeline.core.allocator tuning
     paper     the original everything (ModelConfig() defaults, batches_per_step 3,
               float32), fused Adam, tuned allocator
     plus      the plus mode's model and train.amp / batches_per_step (conf/mode/plus.yaml)
   Per configuration: s/step, generator-updated images/s (B per step), pairs consumed/s
   (B * batches_per_step), minor page faults and system CPU seconds per step
   (resource.getrusage), peak RSS. Then `default vs fp32: N.NNx` (goal >= 2x).
2. The DataLoader (pipeline.data.pair_dataset.build_loader, train.num_workers from params.yaml unless
   --workers) on a generated 128x64 dataset, against the fastest train step.
Prints figures; asserts nothing. Timings on a shared machine vary between runs; the
ratios are measured within one run, in wall time and in process CPU time (user + system,
which other processes on the machine disturb less).
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
OURS = dict(norm="instance", block_bias=True, disc_head="patch", init="normal", affine_fit="lstsq",
            part_masks="rect", warp_sampling="bilinear")
# name -> (model overrides or "plus", batches_per_step or None = plus's, amp, Adam, tuned allocator)
# "fp32" is the step as it was before this work: float32, the for-loop Adam, glibc's default
# allocator and the dense bilinear warp (every part sampled over the whole map).
CONFIGS = {
    "fp32": (OURS, 1, False, "loop", False),
    "default": (OURS, 1, True, "auto", True),
    "paper": ({}, 3, False, "auto", True),
    "plus": ("plus", None, None, "auto", True),
}


def _params(name: str, batch: int, vgg: str | None):
    import dataclasses

    from pipeline.core.config import LossConfig, ModelConfig, Params, TrainConfig
    from stages.params import composed

    model, bps, amp, _, _ = CONFIGS[name]
    loss = LossConfig(vgg_weights=vgg) if vgg else LossConfig(nn_weight=0.0)
    if model == "plus":
        plus = composed("dataset=market1501", "mode=plus")
        model, bps, amp = plus.model, plus.train.batches_per_step, plus.train.amp
        loss = dataclasses.replace(plus.loss, vgg_weights=vgg) if vgg else \
            dataclasses.replace(plus.loss, nn_weight=0.0, perceptual_weight=0.0)
    else:
        model = ModelConfig(**model)
    return dataclasses.replace(Params(), model=model, loss=loss, train=TrainConfig(
        batch_size=batch, device="cpu", amp=amp, batches_per_step=bps))


def _batch(n: int, h: int, w: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(0)
    kp = torch.rand(n, 18, 2, generator=g) * torch.tensor([w * 0.6, h * 0.8]) + torch.tensor([w * 0.2, h * 0.1])
    return {"xa": torch.rand(n, 3, h, w, generator=g) * 2 - 1, "xb": torch.rand(n, 3, h, w, generator=g) * 2 - 1,
            "ha": torch.rand(n, 18, h, w, generator=g), "hb": torch.rand(n, 18, h, w, generator=g),
            "kpa": kp, "kpb": kp.flip(0)}


def one_config(name: str, batch: int, steps: int, vgg: str | None) -> dict:
    """Time `steps` iterations after one warm-up; runs inside a fresh subprocess."""
    _, _, _, adam, tuned = CONFIGS[name]
    if tuned:  # first, before the big allocations, as the stages do
        from pipeline.core.allocator import tune_allocator

        tune_allocator()
    import torch

    from pipeline.model import warp

    warp.SPARSE_ON_CPU = name != "fp32"

    from pipeline.core.device import setup_device
    from pipeline.train.gan_trainer import build_trainer

    params = _params(name, batch, vgg)
    setup = setup_device("cpu", params.train.amp)
    torch.manual_seed(0)
    trainer = build_trainer(params, setup, adam=adam)
    bps = trainer.batches_per_step
    batch_t = _batch(batch * bps, params.image.height, params.image.width)
    trainer.step(batch_t)  # warm-up (allocations, oneDNN primitive creation)
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        trainer.step(batch_t)
    sec = (time.perf_counter() - t) / steps
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    impl = "fused" if trainer.opt_g.defaults.get("fused") else \
        "foreach" if trainer.opt_g.defaults.get("foreach") else "loop"
    return {"config": name, "warp": "sparse" if warp.SPARSE_ON_CPU else "dense",
            "sec_per_step": sec, "g_images_per_sec": batch / sec,
            "pairs_per_sec": batch * bps / sec, "batches_per_step": bps,
            "dtype": str(setup.amp_dtype or torch.float32).replace("torch.", ""), "adam": impl,
            "faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
            "sys_sec_per_step": (r1.ru_stime - r0.ru_stime) / steps,
            "cpu_sec_per_step": (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / steps,
            "peak_rss_mb": r1.ru_maxrss / 1024, "threads": torch.get_num_threads()}


def _make_dataset(root: Path, n_ids: int = 16, per_id: int = 8, h: int = 128, w: int = 64):
    """Textured 128x64 JPEGs with plausible keypoints -> a PairDataset."""
    import cv2
    import pandas as pd

    from pipeline.data.pair_dataset import PairDataset
    from pipeline.data.heatmap_store import HeatmapStore, write_heatmap_store
    from pipeline.core.keypoints import make_table

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
    from pipeline.data.pair_dataset import build_loader

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
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    ap.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_config(args.one, args.batch, args.steps, args.vgg)))
        return 0

    from pipeline.core.config import load_params

    workers = args.workers if args.workers is not None else load_params(ROOT / "params.yaml").train.num_workers
    loss = "GAN + 0.01 NN (VGG19 relu1_2)" if args.vgg else "GAN only (no VGG weights: NN loss off)"
    print(f"train step: CPU, batch {args.batch} per G update, 128x64, paper widths, loss {loss}, "
          f"{args.steps} timed step(s) after one warm-up")
    print(f"{'config':<9}{'dtype':>9}{'adam':>8}{'warp':>7}{'B/step':>7}{'s/step':>8}{'G img/s':>9}{'pairs/s':>9}"
          f"{'CPU s/step':>11}{'faults/step':>13}{'sys s/step':>11}{'peak RSS MB':>12}{'threads':>8}")
    results = {}
    for name in args.configs.split(","):
        cmd = [sys.executable, "-m", "bench.bench_train", "--one", name, "--batch", str(args.batch),
               "--steps", str(args.steps)] + (["--vgg", args.vgg] if args.vgg else [])
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{name:<9} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<9}{r['dtype']:>9}{r['adam']:>8}{r['warp']:>7}{r['batches_per_step'] * args.batch:>7}"
              f"{r['sec_per_step']:>8.2f}{r['g_images_per_sec']:>9.2f}{r['pairs_per_sec']:>9.2f}"
              f"{r['cpu_sec_per_step']:>11.2f}{r['faults_per_step']:>13.0f}{r['sys_sec_per_step']:>11.2f}{r['peak_rss_mb']:>12.0f}"
              f"{r['threads']:>8}")
    if "fp32" in results and "default" in results:
        f, d = results["fp32"], results["default"]
        print(f"default vs fp32: {f['sec_per_step'] / d['sec_per_step']:.2f}x wall, "
              f"{f['cpu_sec_per_step'] / d['cpu_sec_per_step']:.2f}x CPU time "
              "(bf16 autocast + fused Adam + tuned allocator + sparse warps; goal >= 2x)")
    if "paper" in results and "plus" in results:
        print(f"paper vs plus (per generator update): paper {results['paper']['sec_per_step']:.2f} s, "
              f"plus {results['plus']['sec_per_step']:.2f} s: plus "
              f"{results['paper']['sec_per_step'] / results['plus']['sec_per_step']:.2f}x faster")

    ips = loader_throughput(args.batch, workers)
    print(f"data loader: {workers} worker(s), batch {args.batch}, 128x64: {ips:.1f} images/s")
    if results:
        fastest = max(r["pairs_per_sec"] for r in results.values())
        print(f"loader / fastest train step (pairs/s): {ips / fastest:.0f}x; target >= 10x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
