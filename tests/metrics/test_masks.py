"""Protocol person masks: geometry on known keypoints and agreement with skimage drawing."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk, polygon
from skimage.morphology import dilation, erosion

from pipeline.core.keypoints import J, LIMBS, read_annotation_csv
from pipeline.metrics.masks import PROTOCOL_LIMBS, apply_masks, close, person_masks

H, W = 128, 64


def empty_pose() -> np.ndarray:
    return np.full((18, 2), -1.0)


def skimage_mask(kp: np.ndarray, closing: bool = True) -> np.ndarray:
    """Independent drawing with scikit-image primitives (x, y keypoints -> rows/cols)."""
    m = np.zeros((H, W), bool)
    ok = (kp >= 0).all(1)
    for f, t in PROTOCOL_LIMBS:
        if not (ok[f] and ok[t]):
            continue
        p, q = kp[f][::-1].astype(np.float64), kp[t][::-1].astype(np.float64)  # (row, col)
        d = p - q
        if np.hypot(*d) == 0:
            continue
        n = 4.0 * np.array([-d[1], d[0]]) / np.hypot(*d)
        corners = np.array([p + n, p - n, q - n, q + n])
        rr, cc = polygon(corners[:, 0], corners[:, 1], shape=(H, W))
        m[rr, cc] = True
    for j in np.nonzero(ok)[0]:
        rr, cc = disk((kp[j, 1], kp[j, 0]), 4, shape=(H, W))
        m[rr, cc] = True
    if closing:
        m = erosion(dilation(m, np.ones((5, 5), bool)), np.ones((5, 5), bool))
    return m


def test_vertical_limb_and_joint_discs():
    kp = empty_pose()
    kp[J["r_hip"]] = (30, 60)
    kp[J["r_knee"]] = (30, 90)
    m = person_masks(kp[None], H, W, closing=1)[0].numpy()
    assert m[75, 30] and m[75, 26] and m[75, 34]  # on the segment and 4 px either side
    assert not m[75, 24] and not m[75, 36]
    assert m[57, 30] and not m[55, 30]  # disc of radius 4 (open) above the hip
    assert not m[10, 10] and not m[120, 60]
    assert m.sum() == skimage_mask(kp, closing=False).sum()


def test_missing_joints_draw_nothing():
    assert not person_masks(empty_pose()[None], H, W).any()
    kp = empty_pose()
    kp[J["l_knee"]] = (20, 50)  # its connections' other ends are missing: only a disc
    m = person_masks(kp[None], H, W, closing=1)[0].numpy()
    assert m.sum() == 7 + 2 * (7 + 7 + 5)  # integer offsets with dx^2 + dy^2 < 16, rows dy = 0, +-1, +-2, +-3
    ys, xs = np.nonzero(m)
    assert ys.min() == 47 and ys.max() == 53 and xs.min() == 17 and xs.max() == 23


def test_closing_fills_a_narrow_gap():
    kp = empty_pose()
    kp[J["r_eye"]] = (20, 30)
    kp[J["l_eye"]] = (29, 30)  # not connected to each other; discs 1 px apart
    raw = person_masks(kp[None], H, W, closing=1)[0].numpy()
    closed = person_masks(kp[None], H, W)[0].numpy()
    assert not raw[30, 24] and closed[30, 24]
    assert (closed >= raw).all()
    np.testing.assert_array_equal(closed, skimage_mask(kp))


def test_close_matches_skimage_at_borders():
    rng = np.random.default_rng(0)
    m = rng.random((3, 20, 16)) < 0.3
    ours = close(__import__("torch").from_numpy(m)).numpy()
    for a, b in zip(ours, m):
        np.testing.assert_array_equal(a, erosion(dilation(b, np.ones((5, 5), bool)), np.ones((5, 5), bool)))


def test_matches_skimage_drawing_on_random_float_keypoints():
    rng = np.random.default_rng(1)
    kp = rng.uniform(0, 1, (60, 18, 2)) * [W + 6, H + 6] - 3  # some joints off the image
    kp[rng.random((60, 18)) < 0.25] = -1
    ours = person_masks(kp, H, W).numpy()
    ref = np.stack([skimage_mask(k) for k in kp])
    np.testing.assert_array_equal(ours, ref)


def test_canonical_keypoints_agree_with_skimage_up_to_rounding_ties(shared):
    _, kp = read_annotation_csv(shared("data/market1501-annotations/market-annotation-test.csv"))
    kp = kp[:300]
    ours = person_masks(kp, H, W).numpy()
    ref = np.stack([skimage_mask(k) for k in kp])
    assert (ours != ref).mean() < 2e-4  # integer keypoints put some pixels exactly on edges


def test_protocol_connections_differ_from_the_skeleton():
    assert len(PROTOCOL_LIMBS) == 23 and len(set(PROTOCOL_LIMBS)) == 23
    assert (J["neck"], J["r_ear"]) in PROTOCOL_LIMBS and (J["r_shoulder"], J["l_shoulder"]) not in PROTOCOL_LIMBS
    assert set(PROTOCOL_LIMBS) != set(LIMBS)


def test_apply_masks_and_errors():
    images = np.full((2, H, W, 3), 200, np.uint8)
    kp = np.stack([empty_pose(), empty_pose()])
    kp[1, J["nose"]] = (32, 64)
    m = person_masks(kp, H, W)
    out = apply_masks(images, m)
    assert out[0].max() == 0 and out[1, 64, 32].tolist() == [200, 200, 200] and out[1, 0, 0].max() == 0
    with pytest.raises(ValueError, match="keypoints"):
        person_masks(np.zeros((2, 17, 2)), H, W)
    with pytest.raises(ValueError, match="mask shape"):
        apply_masks(images[:, :10], m)
