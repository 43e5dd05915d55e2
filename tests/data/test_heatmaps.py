"""Gaussian heatmap rendering (pipeline/data/heatmaps.py) and the preview (pipeline/data/preview.py)."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pipeline.data.heatmaps import (render_heatmaps, render_heatmaps_exact, render_heatmaps_uint8,
                                    table_keypoints)
from pipeline.core.keypoints import NUM_JOINTS, make_table
from pipeline.data.preview import (TITLE_H, draw_skeleton, load_images, pick_rows, preview_grid,
                                   with_titles, write_png)

H, W, S = 32, 16, 3.0


def _kp(n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = np.stack([rng.integers(0, W, (n, NUM_JOINTS)), rng.integers(0, H, (n, NUM_JOINTS))], -1)
    return kp.astype(np.float32)


def test_peak_is_one_at_integer_keypoint_and_value_matches_formula():
    kp = np.full((1, NUM_JOINTS, 2), -1.0, np.float32)
    kp[0, 0] = (5, 10)  # x = column 5, y = row 10
    hm = render_heatmaps(kp, H, W, S)
    assert hm.shape == (1, NUM_JOINTS, H, W) and hm.dtype == np.float32
    ch = hm[0, 0]
    assert np.unravel_index(ch.argmax(), ch.shape) == (10, 5)
    assert ch[10, 5] == pytest.approx(1.0, abs=1e-7)
    rows, cols = np.mgrid[0:H, 0:W]
    expected = np.exp(-((cols - 5) ** 2 + (rows - 10) ** 2) / (2 * S**2))
    np.testing.assert_allclose(ch, expected, rtol=1e-5, atol=1e-7)
    # Exact value at distance d = 5 (a 3-4-5 offset) and symmetric falloff around the peak.
    assert ch[13, 9] == pytest.approx(math.exp(-25 / (2 * S**2)), rel=1e-6)
    assert ch[10, 8] == pytest.approx(ch[10, 2]) and ch[13, 5] == pytest.approx(ch[7, 5])


def test_missing_joint_gives_zero_channel():
    kp = _kp(2)
    kp[0, 3] = (-1, -1)
    kp[1, 7] = (4, -1)  # one coordinate missing is missing
    kp[1, 8] = (np.nan, np.nan)
    hm = render_heatmaps(kp, H, W, S)
    for n, j in [(0, 3), (1, 7), (1, 8)]:
        assert not hm[n, j].any()
    assert np.all(hm[0, 2].max() > 0.99)


def test_scaling_with_image_size():
    # Doubling the resolution, the keypoints and sigma samples the same Gaussian at 2x.
    kp = _kp(2, seed=1)
    small = render_heatmaps(kp, H, W, S)
    big = render_heatmaps(kp * 2, 2 * H, 2 * W, 2 * S)
    np.testing.assert_allclose(big[:, :, ::2, ::2], small, rtol=1e-5, atol=1e-7)
    # The table path: same pose photographed at 2x the size gives the same heatmaps.
    names = ["a.jpg", "b.jpg"]
    t1 = make_table(names, kp, width=W, height=H)
    t2 = make_table(names, kp * 2, width=2 * W, height=2 * H)
    np.testing.assert_allclose(table_keypoints(t2, H, W), table_keypoints(t1, H, W))
    assert (table_keypoints(t1, 2 * H, 2 * W)[kp[..., 0] >= 0] == (kp * 2)[kp[..., 0] >= 0]).all()


def test_table_without_image_size_is_an_error():
    t = make_table(["x.jpg"], _kp(1), width=0, height=0)
    with pytest.raises(ValueError, match="x.jpg"):
        table_keypoints(t, H, W)


def test_torch_and_numpy_agree_and_device_dtype_kept():
    kp = _kp(4, seed=2)
    kp[1, 5] = -1
    out_np = render_heatmaps(kp, H, W, S)
    out_t = render_heatmaps(torch.from_numpy(kp), H, W, S)
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    assert out_t.dtype == torch.float32 and out_t.device == torch.device("cpu")
    np.testing.assert_array_equal(out_t.numpy(), out_np)
    # [N, 18, 3] (x, y, c) input is accepted; the confidence is ignored.
    kp3 = np.concatenate([kp, np.ones_like(kp[..., :1])], -1)
    np.testing.assert_array_equal(render_heatmaps(kp3, H, W, S), out_np)


def test_uint8_quantisation_within_half_a_step():
    kp = _kp(20, seed=3)  # more than one internal block
    hm = render_heatmaps(kp, H, W, S)
    q = render_heatmaps_uint8(kp, H, W, S, block=7)
    assert q.dtype == torch.uint8
    err = np.abs(q.numpy().astype(np.float32) / 255 - hm)
    assert err.max() <= 1 / 510 + 1e-6
    assert (q.numpy() == np.floor(255 * hm.astype(np.float64) + 0.5)).mean() > 0.999


def _original_cords_to_map(kp_yx: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """pose-gan pose_utils.cords_to_map, restated: float64 Gaussians, stored float32 [H, W, 18]."""
    result = np.zeros(size + kp_yx.shape[:1], dtype="float32")
    for i, point in enumerate(kp_yx):
        if point[0] == -1 or point[1] == -1:
            continue
        xx, yy = np.meshgrid(np.arange(size[1]), np.arange(size[0]))
        result[..., i] = np.exp(-((yy - point[0]) ** 2 + (xx - point[1]) ** 2) / (2 * sigma ** 2))
    return result


def test_exact_maps_are_the_originals_float32_values():
    kp = _kp(4, seed=5)  # integer keypoints, as the canonical annotations
    kp[0, 3] = -1
    got = render_heatmaps_exact(torch.from_numpy(kp), 128, 64, 6.0).numpy()
    assert got.dtype == np.float32
    for n in range(len(kp)):
        want = _original_cords_to_map(kp[n, :, ::-1].astype(np.int64), (128, 64), 6.0)
        np.testing.assert_array_max_ulp(got[n], want.transpose(2, 0, 1), maxulp=1)
        assert (got[n] == want.transpose(2, 0, 1)).mean() > 0.9999
    assert not got[0, 3].any()


def test_preview_draws_skeleton_and_heat(tmp_path):
    kp = _kp(2, seed=4)
    kp[:, :, 0] = np.clip(kp[:, :, 0], 2, W - 3)
    hm = render_heatmaps(kp, H, W, S)
    images = [np.zeros((H, W, 3), np.uint8)] * 2
    drawn = draw_skeleton(images[0], kp[0], scale=2)
    assert drawn.shape == (2 * H, 2 * W, 3) and drawn.any()
    grid = preview_grid(images, kp, hm, scale=2)
    assert grid.shape[0] == 2 * H and grid.shape[1] == 2 * (2 * 2 * W) + 4
    png = write_png(tmp_path / "p.png", grid)
    assert cv2.imread(str(png)).shape == grid.shape
    assert list(pick_rows(np.array([0, 1, 1, 0, 1, 1, 1], bool), 3)) == [1, 4, 6]


def test_titles_sit_over_their_columns():
    grid = np.full((20, 2 * (2 * 10) + 4, 3), 77, np.uint8)  # two groups of two 10-px columns, 4 px apart
    titled = with_titles(grid, ("a", "b"), 10, gap=4)
    assert titled.shape == (TITLE_H + 20, grid.shape[1], 3)
    np.testing.assert_array_equal(titled[TITLE_H:], grid)
    ink = (titled[:TITLE_H] < 128).any(axis=(0, 2))
    for x0 in (0, 10, 24, 34):  # every column has its title, the gap none
        assert ink[x0:x0 + 10].any()
    assert not ink[20:24].any()
    with pytest.raises(ValueError, match="not 2 x 9 px"):
        with_titles(grid, ("a", "b"), 9, gap=4)


def test_load_images_via_manifest(tmp_path):
    import pandas as pd

    (tmp_path / "train").mkdir()
    img = np.full((2 * H, 2 * W, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "train" / "a.jpg"), img)
    manifest = pd.DataFrame({"name": ["a.jpg"], "path": ["train/a.jpg"]})
    images, missing = load_images(["a.jpg", "b.jpg"], manifest, tmp_path, H, W)
    assert missing == ["b.jpg"]
    assert images[0].shape == (H, W, 3) and abs(int(images[0].mean()) - 200) <= 2


def test_stage_on_tiny_table(tmp_path, capsys):
    import pandas as pd

    from pipeline.data.heatmap_store import HeatmapStore
    from stages.heatmaps import main

    n = 8
    names = [f"{i:04d}_c1s1_000000_00.jpg" for i in range(1, n + 1)]
    kp = _kp(n, seed=5) * 2  # photos are 2x the training size
    kp[3] = -1  # one image without a person
    table = make_table(names, kp, split="train", person_id=list(range(1, n + 1)),
                       width=2 * W, height=2 * H)
    kp_file = tmp_path / "kp.parquet"
    table.to_parquet(kp_file)
    (tmp_path / "ds" / "train").mkdir(parents=True)
    for name in names[:-1]:  # the last photo is missing: grey tile, no failure
        cv2.imwrite(str(tmp_path / "ds" / "train" / name), np.full((2 * H, 2 * W, 3), 120, np.uint8))
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"name": names, "path": [f"train/{n}" for n in names]}).to_parquet(manifest)
    params = tmp_path / "params.yaml"
    params.write_text(f"image:\n  height: {H}\n  width: {W}\nheatmaps:\n  sigma: {S}\n  chunk: 3\n"
                      # a generator that can take 32x16 (params are checked whole at load)
                      "model:\n  encoder_widths: [8, 8, 8, 8]\n  decoder_widths: [8, 8, 8]\n")

    out, preview = tmp_path / "hm", tmp_path / "p" / "preview.png"
    assert main(["--params", str(params), "--keypoints", str(kp_file), "--out", str(out),
                 "--preview", str(preview), "--manifest", str(manifest),
                 "--dataset", str(tmp_path / "ds")]) == 0
    store = HeatmapStore(out)
    assert store.names == names and store.sigma == S and (store.height, store.width) == (H, W)
    assert len(store.meta["keypoints_sha256"]) == 64
    ref = render_heatmaps(kp / 2, H, W, S)
    assert np.abs(store.load(names) - ref).max() <= 1 / 510 + 1e-6
    assert not store.load([names[3]]).any()
    img = cv2.imread(str(preview))
    assert img.shape[0] == TITLE_H + 2 * H and img.shape[1] == 6 * 4 * W + 5 * 4
    assert "preview without photos for 1 image" in capsys.readouterr().out
