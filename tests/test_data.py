"""pipeline.data: PairDataset on a tiny generated dataset, the sampler and the loader.

Also home of `build_tiny_data` / `tiny_params`, the tiny on-disk dataset and config the
training, checkpoint, tracking and DDP tests share.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.config import ImageConfig, LossConfig, ModelConfig, Params, PathsConfig, TrainConfig
from pipeline.data import DataError, InfiniteSampler, PairDataset, build_loader, load_pair_dataset, read_image
from pipeline.heatmap_store import HeatmapStore, write_heatmap_store
from pipeline.keypoints import make_table, scale_keypoints

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


@pytest.fixture
def tiny(tmp_path: Path) -> PathsConfig:
    return build_tiny_data(tmp_path)


def _open(paths: PathsConfig) -> PairDataset:
    return load_pair_dataset(paths.pairs, paths.manifest, paths.keypoints, paths.heatmaps,
                             paths.dataset, H, W)


def test_items_have_contract_shapes_ranges_and_scaled_keypoints(tiny: PathsConfig) -> None:
    ds = _open(tiny)
    assert len(ds) == 2 * 3 * 2  # 2 ids x 3 images -> 6 ordered pairs each
    item = ds[0]
    for key in ("xa", "xb"):
        assert item[key].shape == (3, H, W) and item[key].dtype == torch.float32
        assert item[key].min() >= -1 and item[key].max() <= 1 and item[key].std() > 0.05
    for key in ("ha", "hb"):
        assert item[key].shape == (18, H, W) and 0 <= item[key].min() and item[key].max() <= 1
    table = pd.read_parquet(tiny.keypoints).set_index("name")
    row = table.loc[item["name_a"]]
    assert item["kpa"].shape == (18, 2)
    # nose x, y halve from 128x64 to 64x32
    np.testing.assert_allclose(item["kpa"][0].numpy(), [row["nose_x"] / 2, row["nose_y"] / 2], atol=1e-5)
    # the heatmap peak sits at the scaled keypoint
    peak = np.unravel_index(item["ha"][0].argmax().item(), (H, W))
    assert abs(peak[1] - row["nose_x"] / 2) <= 1 and abs(peak[0] - row["nose_y"] / 2) <= 1
    # image content: the source image equals its INTER_AREA-resized JPEG, RGB order
    bgr = cv2.imread(str(Path(tiny.dataset) / "bounding_box_train" / item["name_a"]))
    want = cv2.resize(bgr, (W, H), interpolation=cv2.INTER_AREA)[:, :, ::-1].transpose(2, 0, 1)
    np.testing.assert_allclose(item["xa"].numpy(), want / 127.5 - 1, atol=1e-6)


def test_missing_joint_stays_minus_one_and_pairs_share_identity(tiny: PathsConfig) -> None:
    ds = _open(tiny)
    missing = [n for n in ds.names if n.endswith("_000002_00.jpg")]
    assert missing
    kp = ds.keypoints[list(ds.names).index(missing[0])]
    assert (kp[4] == -1).all() and (kp[0] >= 0).all()
    batch = ds.__getitems__(list(range(len(ds))))
    assert all(it["name_a"][:4] == it["name_b"][:4] and it["name_a"] != it["name_b"] for it in batch)


def test_corrupt_image_error_names_the_file(tiny: PathsConfig) -> None:
    ds = _open(tiny)
    bad = Path(ds.paths[ds.pair_a[0]])
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=bad.name):
        ds[0]
    with pytest.raises(DataError, match="cannot read"):
        read_image(bad.parent / "nope.jpg", H, W)


def test_inconsistent_inputs_raise_clear_errors(tiny: PathsConfig) -> None:
    pairs = pd.read_parquet(tiny.pairs)
    manifest = pd.read_parquet(tiny.manifest)
    table = pd.read_parquet(tiny.keypoints)
    store = HeatmapStore(tiny.heatmaps)
    with pytest.raises(DataError, match="no pairs for split 'test'"):
        PairDataset(pairs, "test", manifest, table, store, tiny.dataset, H, W)
    with pytest.raises(DataError, match="manifest"):
        PairDataset(pairs, "train", manifest.iloc[1:], table, store, tiny.dataset, H, W)
    with pytest.raises(DataError, match="keypoint table"):
        PairDataset(pairs, "train", manifest, table.iloc[1:], store, tiny.dataset, H, W)
    with pytest.raises(DataError, match="heatmap store: maps have shape"):
        PairDataset(pairs, "train", manifest, table, store, tiny.dataset, 2 * H, 2 * W)


def test_infinite_sampler_is_seeded_sharded_and_resumable() -> None:
    take = lambda s, k: [i for _, i in zip(range(k), iter(s))]  # noqa: E731
    a = take(InfiniteSampler(10, seed=3), 25)
    assert a == take(InfiniteSampler(10, seed=3), 25)
    assert sorted(a[:10]) == list(range(10)) and a[:10] != a[10:20]  # epochs are permutations
    assert take(InfiniteSampler(10, seed=3, start=7), 18) == a[7:25]  # resume mid-epoch
    r0 = take(InfiniteSampler(10, seed=3, rank=0, world_size=2), 5)
    r1 = take(InfiniteSampler(10, seed=3, rank=1, world_size=2), 5)
    assert sorted(r0 + r1) == list(range(10))  # shards are disjoint and cover the epoch
    s = InfiniteSampler(10, seed=3)
    s.set_epoch(1)
    assert take(s, 10) == a[10:20]


def test_loader_batches_follow_the_sampler_with_workers(tiny: PathsConfig) -> None:
    ds = _open(tiny)
    loader = build_loader(ds, batch_size=4, num_workers=2, seed=5, start=4)
    it = iter(loader)
    batch = next(it)
    assert batch["xa"].shape == (4, 3, H, W) and batch["kpb"].shape == (4, 18, 2)
    order = [i for _, i in zip(range(8), iter(InfiniteSampler(len(ds), seed=5)))]
    assert batch["index"].tolist() == order[4:8]
    state = torch.get_rng_state()
    iter(build_loader(ds, batch_size=2, num_workers=0, seed=5))
    # Workers are capped at the usable cores; the batches do not depend on their number.
    many = build_loader(ds, batch_size=4, num_workers=1000, seed=5, start=4)
    assert many.num_workers == len(os.sched_getaffinity(0)) and many.persistent_workers
    assert next(iter(many))["index"].tolist() == order[4:8]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is not consumed
    del it

