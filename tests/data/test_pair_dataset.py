"""pipeline.data.pair_dataset: PairDataset on a tiny generated dataset, the sampler and the loader.

The tiny on-disk dataset it uses (shared with the training, checkpoint, tracking and DDP
tests) is built by tests/support/tiny_data.py.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.config import PathsConfig
from pipeline.data.pair_dataset import DataError, InfiniteSampler, PairDataset, build_loader, load_pair_dataset, read_image
from pipeline.data.heatmap_store import HeatmapStore

from support.tiny_data import H, W, build_tiny_data


@pytest.fixture
def tiny(tmp_path: Path) -> PathsConfig:
    return build_tiny_data(tmp_path)


def _open(paths: PathsConfig) -> PairDataset:
    return load_pair_dataset(paths, H, W)


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
    with pytest.raises(DataError, match="nope.jpg: file not found"):
        read_image(bad.parent / "nope.jpg", H, W)
    good = Path(ds.paths[ds.pair_b[0]])
    good.write_bytes(good.read_bytes()[:-100])  # cut short: cv2 would decode it half grey
    with pytest.raises(DataError, match=f"{good.name}: truncated"):
        read_image(good, H, W)


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

