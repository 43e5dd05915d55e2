"""Shared test helpers (moved out of tests/data/test_pair_dataset.py)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core.config import ImageConfig, LossConfig, ModelConfig, Params, PathsConfig, TrainConfig
from pipeline.data.heatmap_store import write_heatmap_store
from pipeline.core.keypoints import make_table, scale_keypoints

# Stored images are 128x64 (Market size); the model runs at 64x32 so resizing and keypoint
# scaling are exercised.
SRC_H, SRC_W = 128, 64
H, W = 64, 32

# A standing person in 128x64 pixels, OpenPose-18 order (x, y).
_BASE_POSE = np.array([
    [32, 14], [32, 28], [22, 28], [19, 46], [17, 62], [42, 28], [45, 46], [47, 62],
    [26, 66], [25, 90], [24, 114], [38, 66], [39, 90], [40, 114], [29, 11], [35, 11],
    [26, 13], [38, 13],
], dtype=np.float32)


def build_tiny_data(root: Path, ids: int = 2, per_id: int = 3, seed: int = 0) -> PathsConfig:
    """Write JPEGs, manifest, keypoint table, heatmap store and train pairs under root."""
    rng = np.random.default_rng(seed)
    dataset = root / "dataset"
    (dataset / "bounding_box_train").mkdir(parents=True)
    names, kps = [], []
    for pid in range(1, ids + 1):
        colour = rng.integers(0, 255, 3)
        for k in range(per_id):
            name = f"{pid:04d}_c{k % 6 + 1}s1_{k:06d}_00.jpg"
            img = np.full((SRC_H, SRC_W, 3), 40, np.uint8)
            kp = _BASE_POSE + rng.normal(0, 2, _BASE_POSE.shape).astype(np.float32)
            pts = kp.round().astype(int)
            cv2.rectangle(img, tuple(pts[2]), tuple(pts[11]), colour.tolist(), -1)
            cv2.circle(img, tuple(pts[0]), 6, (200, 170, 150), -1)
            img = np.clip(img + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(dataset / "bounding_box_train" / name), img)
            if k == per_id - 1:
                kp[4] = -1  # one missing joint (right wrist) per person
            names.append(name)
            kps.append(kp)
    kp_arr = np.stack(kps)
    n = len(names)
    pids = [int(nm[:4]) for nm in names]
    manifest = pd.DataFrame({
        "name": names, "path": [f"bounding_box_train/{nm}" for nm in names], "person_id": pids,
        "camera": [int(nm[6]) for nm in names], "split": ["train"] * n,
        "width": [SRC_W] * n, "height": [SRC_H] * n,
    })
    table = make_table(names, kp_arr, split="train", person_id=pids, width=SRC_W, height=SRC_H)
    pairs = pd.DataFrame(
        [(a, b, pa, "train") for a, pa in zip(names, pids) for b, pb in zip(names, pids)
         if pa == pb and a != b],
        columns=["from", "to", "person_id", "split"],
    )
    paths = PathsConfig(
        dataset=str(dataset), manifest=str(root / "manifest.parquet"),
        keypoints=str(root / "keypoints.parquet"), heatmaps=str(root / "heatmaps"),
        pairs=str(root / "pairs.parquet"), models=str(root / "models"),
        train_metrics=str(root / "metrics" / "train.json"),
        train_plots=str(root / "plots" / "train_losses.csv"),
        train_validation=str(root / "plots" / "train_validation.csv"),
        evaluation=str(root / "evaluation"), eval_metrics=str(root / "metrics" / "eval.json"),
        eval_details=str(root / "metrics" / "eval_details.json"),
    )
    manifest.to_parquet(paths.manifest, index=False)
    table.to_parquet(paths.keypoints, index=False)
    pairs.to_parquet(paths.pairs, index=False)
    scaled = scale_keypoints(kp_arr, np.tile([SRC_W, SRC_H], (n, 1)), (H, W))
    write_heatmap_store(paths.heatmaps, names, scaled, H, W, sigma=3.0)
    return paths


def tiny_params(**train: object) -> Params:
    """A model small enough for CPU tests at 64x32 (G/D widths (8, 16, ...)). Three D
    levels: the original head needs 2^(n+1) * 4 rows and columns (3x1 patches here)."""
    model = ModelConfig(encoder_widths=(8, 16, 16, 32, 32, 32), decoder_widths=(32, 32, 32, 16, 8),
                        disc_widths=(8, 16, 32))
    loss = LossConfig(nn_weight=0.0, perceptual_weight=0.0, l1_weight=1.0, offset_smooth_weight=0.01)
    tc = dict(steps=6, batch_size=2, num_workers=0, device="cpu", checkpoint_every=3,
              log_every=2, sample_every=1000)
    tc.update(train)
    return Params(image=ImageConfig(height=H, width=W), model=model, loss=loss,
                  train=TrainConfig(**tc))

