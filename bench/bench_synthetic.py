"""Synthetic dataset generation speed (images/s), and optionally a contact sheet to look at.

    python -m bench.bench_synthetic [--ids 32] [--per-id 8] [--height 128 --width 64]
                                    [--sheet /tmp/synthetic_sheet.png]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


from pipeline.core.config import SyntheticConfig  # noqa: E402
from pipeline.core.keypoints import LIMBS, present  # noqa: E402
from pipeline.datasets.synthetic import generate, make_identity, render_sample  # noqa: E402


def contact_sheet(path: Path, ids: int, per_id: int, height: int, width: int, seed: int,
                  skeleton: bool = False) -> None:
    """One row per identity; with skeleton=True the ground-truth keypoints are overlaid."""
    rows = []
    for pid in range(1, ids + 1):
        identity = make_identity(seed, pid)
        tiles = []
        for index in range(per_id):
            s = render_sample(seed, identity, index, height, width)
            tile = cv2.resize(s.image, (width * 2, height * 2), interpolation=cv2.INTER_NEAREST)
            if skeleton:
                kp, vis = s.keypoints * 2 + 0.5, present(s.keypoints)
                for a, b in LIMBS:
                    if vis[a] and vis[b]:
                        cv2.line(tile, tuple(np.int32(kp[a])), tuple(np.int32(kp[b])), (0, 255, 0), 1)
                for j in np.flatnonzero(vis):  # right joints red, left blue (BGR)
                    red = j in (2, 3, 4, 8, 9, 10, 14, 16)
                    cv2.circle(tile, tuple(np.int32(kp[j])), 2, (0, 0, 255) if red else (255, 0, 0), -1)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    cv2.imwrite(str(path), np.concatenate(rows, axis=0))


def pose_agreement(root: Path, weights: Path) -> None:
    """Run a real pose detector on the generated train images and compare with the truth."""
    from pipeline.data import pose  # lazy: imports ultralytics
    from pipeline.core.config import PoseConfig
    from pipeline.core.keypoints import keypoints_array, read_annotation_csv

    names, gt = read_annotation_csv(root / "annotations" / "market-annotation-train.csv")
    model = pose.load_model(str(weights), "cpu")
    table = pose.estimate([root / "bounding_box_train" / n for n in names], model,
                          PoseConfig(batch=32, imgsz=256), workers=1)
    pred = keypoints_array(table)[..., :2]
    pcks = ", ".join(f"PCK@{a} {pose.pck(pred, gt, a)[0]:.3f}" for a in (0.1, 0.2, 0.5))
    print(f"{weights.name} on {len(names)} synthetic images: detected {table['detected'].mean():.3f}, {pcks}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=32, help="identities (train) to generate")
    ap.add_argument("--per-id", type=int, default=8)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sheet", type=Path, default=None, help="also write a contact sheet PNG here")
    ap.add_argument("--skeleton", action="store_true", help="overlay keypoints on the sheet")
    ap.add_argument("--pose-weights", type=Path, default=None,
                    help="YOLO pose weights: also report its agreement (PCK) with the ground truth")
    args = ap.parse_args()

    cfg = SyntheticConfig(train_ids=args.ids, test_ids=0, images_per_id=args.per_id)
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        summary = generate(Path(tmp), cfg, args.height, args.width, args.seed, junk=0, distractors=0)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        n = summary["train"]
        print(f"synthetic generate: {n} images ({args.ids} ids x {args.per_id}) at "
              f"{args.height}x{args.width} in {dt:.2f} s wall ({cpu:.2f} s CPU) -> "
              f"{n / dt:.1f} images/s (single process, incl. JPEG writing and annotation CSVs)")
        if args.pose_weights is not None:
            pose_agreement(Path(tmp), args.pose_weights)
    if args.sheet is not None:
        contact_sheet(args.sheet, min(args.ids, 8), min(args.per_id, 10) if args.per_id else 10,
                      args.height, args.width, args.seed, args.skeleton)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
