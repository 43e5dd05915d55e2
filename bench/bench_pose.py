"""Pose stage throughput: pipeline.data.pose.estimate end to end vs a bare YOLO.predict loop.

    python -m bench.bench_pose [--n 500] [--weights ../shared/weights/yolo11n-pose.pt]
                               [--images ../shared/data/market1501-sample] [--repeats 3]

The real crops are tiled into N files in a temporary folder. Both sides use the same
model object and predict settings (imgsz, conf, batch, device from PoseConfig defaults);
the bare loop hands file paths to ultralytics, which decodes them itself. Ours adds
byte-level decoding with error capture, main-person selection, COCO->OpenPose mapping
and the table. Prints images/s for both and our overhead in %. Best of --repeats interleaved runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def tile(images: Path, folder: Path, n: int) -> list[Path]:
    """Copy the crops under distinct Market-style names until there are n files."""
    crops = sorted(images.glob("*.jpg"))
    if not crops:
        raise SystemExit(f"{images}: no .jpg crops to benchmark on")
    out = []
    for i in range(n):
        src = crops[i % len(crops)]
        dst = folder / f"{src.stem}_{i:05d}.jpg"
        shutil.copyfile(src, dst)
        out.append(dst)
    return out


def best_times(fns, repeats: int) -> list[tuple[float, float]]:
    """Best (wall, process CPU) seconds of each function. Runs are interleaved so load from
    other processes on a shared machine hits both sides alike; CPU time (all threads of
    this process) is the steadier figure there."""
    times: list[list[tuple[float, float]]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            acc.append((time.perf_counter() - wall, time.process_time() - cpu))
    return [(min(w for w, _ in t), min(c for _, c in t)) for t in times]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_pose",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=500, help="number of images (default 500)")
    ap.add_argument("--weights", default=str(SHARED / "weights/yolo11n-pose.pt"))
    ap.add_argument("--images", default=str(SHARED / "data/market1501-sample"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    os.environ.setdefault("YOLO_VERBOSE", "False")

    from pipeline.core.config import PoseConfig
    from pipeline.data.pose import estimate, load_model, predict_kwargs

    cfg = PoseConfig(backend="yolo", weights=args.weights, device=args.device)
    model = load_model(cfg.weights, cfg.device)
    kwargs = {**predict_kwargs(model, cfg), "batch": cfg.batch}

    with tempfile.TemporaryDirectory() as tmp:
        paths = tile(Path(args.images), Path(tmp), args.n)
        strings = [str(p) for p in paths]

        def bare() -> None:
            for start in range(0, len(strings), cfg.batch):
                for _ in model.yolo.predict(strings[start : start + cfg.batch], **kwargs):
                    pass

        def ours() -> None:
            estimate(paths, model, cfg)

        estimate(paths[: cfg.batch], model, cfg)  # warm-up: model fuse, first allocations
        t_bare, t_ours = best_times([bare, ours], args.repeats)

    n = len(paths)
    print(f"pose benchmark: {n} images of {Path(args.images).name}, imgsz {cfg.imgsz}, "
          f"batch {cfg.batch}, device {model.device}, best of {args.repeats}")
    print(f"  {'':24s} {'wall images/s':>14s} {'CPU images/s':>14s}")
    rows = (("bare YOLO.predict loop", t_bare), ("pipeline.data.pose.estimate", t_ours))
    for label, (wall, cpu) in rows:
        print(f"  {label:24s} {n / wall:14.1f} {n / cpu:14.1f}")
    print(f"  {'overhead':24s} {100 * (t_ours[0] / t_bare[0] - 1):+13.1f}% "
          f"{100 * (t_ours[1] / t_bare[1] - 1):+13.1f}%")


if __name__ == "__main__":
    main()
