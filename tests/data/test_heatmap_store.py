"""The on-disk heatmap store (pipeline/data/heatmap_store.py)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from pipeline.data import heatmap_store
from pipeline.data.heatmap_store import HeatmapStore, write_heatmap_store
from pipeline.data.heatmaps import render_heatmaps, render_heatmaps_exact, render_heatmaps_uint8
from pipeline.core.keypoints import NUM_JOINTS

H, W, S = 32, 16, 3.0


def _data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    kp = np.stack([rng.uniform(0, W - 1, (n, NUM_JOINTS)), rng.uniform(0, H - 1, (n, NUM_JOINTS))], -1)
    kp[rng.random((n, NUM_JOINTS)) < 0.2] = -1
    names = [f"{i:04d}_c1s1_000000_00.jpg" for i in range(n)]
    return names, kp.astype(np.float32)


def test_round_trip_by_name(tmp_path):
    names, kp = _data(11)
    path = write_heatmap_store(tmp_path / "hm", names, kp, H, W, S, chunk=4, extra_meta={"k": "v"})
    store = HeatmapStore(path)
    assert len(store) == 11 and store.names == names
    assert names[3] in store and "nope.jpg" not in store
    meta = json.loads((path / "meta.json").read_text())
    assert meta == {"height": H, "width": W, "sigma": S, "scale": 1 / 255, "count": 11,
                    "dtype": "uint8", "format": "keypoints", "k": "v"}
    assert store.keypoints.shape == (11, NUM_JOINTS, 2) and store.keypoints.dtype == np.float32
    want = [names[7], names[2], names[7]]
    rows = store.rows(want)
    np.testing.assert_array_equal(rows, [7, 2, 7])
    got = store.get(rows)
    assert got.dtype == np.float32 and got.shape == (3, NUM_JOINTS, H, W)
    ref = render_heatmaps(kp[[7, 2, 7]], H, W, S)
    assert np.abs(got - ref).max() <= 1 / 510 + 1e-6
    np.testing.assert_array_equal(store.load(want), got)
    # Missing joints stay exactly zero after quantisation.
    assert not got[kp[[7, 2, 7], :, 0] < 0].any()


def test_unknown_names_raise_keyerror_listing_them(tmp_path):
    names, kp = _data(3)
    store = HeatmapStore(write_heatmap_store(tmp_path / "hm", names, kp, H, W, S))
    with pytest.raises(KeyError, match="ghost1.jpg.*ghost2.jpg"):
        store.rows([names[0], "ghost1.jpg", "ghost2.jpg"])


def test_works_after_pickling(tmp_path):
    names, kp = _data(5)
    store = HeatmapStore(write_heatmap_store(tmp_path / "hm", names, kp, H, W, S))
    before = store.load(names)  # opens the memmap
    blob = pickle.dumps(store)
    assert len(blob) < 10_000  # the memmap is not pickled
    clone = pickle.loads(blob)
    assert clone._kp is None
    np.testing.assert_array_equal(clone.load(names), before)


def test_overwrite_replaces_atomically_and_leaves_no_temp(tmp_path):
    names, kp = _data(6)
    path = write_heatmap_store(tmp_path / "hm", names, kp, H, W, S)
    names2, kp2 = _data(4, seed=1)
    write_heatmap_store(path, names2, kp2, H, W, S)
    assert HeatmapStore(path).names == names2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hm"]


def test_failed_write_keeps_old_store(tmp_path, monkeypatch):
    names, kp = _data(6)
    path = write_heatmap_store(tmp_path / "hm", names, kp, H, W, S)
    old = HeatmapStore(path).load(names)

    real = heatmap_store._render_chunk
    calls = []

    def fail_on_second_chunk(*args, **kwargs):  # fault injection: the disk fills up mid-run
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(heatmap_store, "_render_chunk", fail_on_second_chunk)
    names2, kp2 = _data(9, seed=1)
    with pytest.raises(OSError, match="No space"):
        write_heatmap_store(path, names2, kp2, H, W, S, chunk=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hm"]
    np.testing.assert_array_equal(HeatmapStore(path).load(names), old)


def test_bad_input_and_corrupt_store(tmp_path):
    names, kp = _data(3)
    with pytest.raises(ValueError, match="duplicate"):
        write_heatmap_store(tmp_path / "a", names + names[:1], np.concatenate([kp, kp[:1]]), H, W, S)
    with pytest.raises(ValueError, match=r"\[3, 18"):
        write_heatmap_store(tmp_path / "a", names, kp[:2], H, W, S)
    assert not (tmp_path / "a").exists()
    with pytest.raises(FileNotFoundError, match="not a heatmap store"):
        HeatmapStore(tmp_path)
    path = write_heatmap_store(tmp_path / "hm", names, kp, H, W, S)
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "height": H + 1}))
    np.save(path / "keypoints.npy", kp[:2])
    with pytest.raises(ValueError, match="keypoints.npy"):
        _ = HeatmapStore(path).keypoints


def test_values_equal_the_dense_uint8_store(tmp_path):
    """Rendered on read, the maps are bit-identical to what the former dense store held
    (uint8 q = floor(255 h + 0.5), decoded q * float32(1/255)), incl. NaN and off-image joints."""
    names, kp = _data(13, seed=3)
    kp[0, 0] = np.nan
    kp[1, 1] = (W + 5.0, H / 2)  # off the image: a partial tail of the Gaussian
    store = HeatmapStore(write_heatmap_store(tmp_path / "hm", names, kp, H, W, S))
    dense = render_heatmaps_uint8(kp, H, W, S).numpy()
    got = store.get(np.arange(13)[::-1])
    np.testing.assert_array_equal(got, dense[::-1].astype(np.float32) * np.float32(1 / 255))
    assert not got[-1, 0].any()  # the NaN joint renders empty


def test_float32_store_renders_the_exact_maps(tmp_path):
    names, kp = _data(5, seed=4)
    store = HeatmapStore(write_heatmap_store(tmp_path / "hm", names, kp, H, W, S, values="float32"))
    assert store.meta["dtype"] == "float32"
    want = render_heatmaps_exact(kp, H, W, S).numpy()
    np.testing.assert_array_equal(store.get(np.arange(5)), want)
    assert not np.array_equal(want, render_heatmaps_uint8(kp, H, W, S).numpy() / np.float32(255))
    with pytest.raises(ValueError, match="heatmaps.values"):
        write_heatmap_store(tmp_path / "x", names, kp, H, W, S, values="float16")
    meta = json.loads((tmp_path / "hm" / "meta.json").read_text())
    (tmp_path / "hm" / "meta.json").write_text(json.dumps({**meta, "dtype": "int4"}))
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        HeatmapStore(tmp_path / "hm")


def test_size_on_disk(tmp_path):
    """144 bytes per image (+ the name index), not 18 * H * W: Market-1501 stays ~5 MB."""
    n = 500
    names, kp = _data(n)
    path = write_heatmap_store(tmp_path / "hm", names, kp, 128, 64, 6.0)
    assert heatmap_store.stored_bytes_per_image() == 144
    npy = (path / "keypoints.npy").stat().st_size
    assert n * 144 <= npy <= n * 144 + 256  # + the .npy header
    assert heatmap_store.bytes_per_image(128, 64) == 147_456
