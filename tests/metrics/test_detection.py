"""DS and PCKh: the head-size / PCKh math, and the YOLO pose model on real crops."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.config import PoseConfig
from pipeline.core.keypoints import J
from pipeline.metrics.detection import detect, head_size, load_detector, pckh


def pose(points: dict[str, tuple[float, float]]) -> np.ndarray:
    kp = np.full((18, 2), -1.0)
    for name, xy in points.items():
        kp[J[name]] = xy
    return kp


def test_head_size_is_the_larger_side_of_the_head_points_box():
    a = pose({"nose": (30, 10), "neck": (32, 22), "r_ear": (26, 12)})
    b = pose({"neck": (30, 20)})  # one head point only: undefined
    c = pose({"r_ear": (20, 10), "l_ear": (36, 12), "r_ankle": (0, 120)})  # ankle ignored
    np.testing.assert_allclose(head_size(np.stack([a, b, c])), [12.0, np.nan, 16.0])


def test_pckh_counts_target_joints_within_half_a_head():
    target = pose({"nose": (30, 10), "neck": (30, 20), "r_wrist": (10, 60), "l_wrist": (50, 60)})
    pred = target.copy()
    pred[J["nose"]] = (30 + 4.9, 10)  # h = 10: within 5 px
    pred[J["r_wrist"]] = (10, 66)  # 6 px off: wrong
    pred[J["l_wrist"]] = -1  # missed by the detector: wrong
    pred[J["r_knee"]] = (20, 90)  # not in the target: not counted
    correct, total = pckh(pred[None], target[None])
    assert (correct.tolist(), total.tolist()) == ([2], [4])
    headless = pose({"r_wrist": (10, 60)})
    assert pckh(headless[None], headless[None])[1].tolist() == [0]  # no head size: left out


def test_detector_on_real_crops(shared):
    weights = shared("weights/yolo11n-pose.pt")
    folder = shared("data/deformable-gan-userstudy/real")
    images = np.stack([cv2.imread(str(folder / f"{i}.jpg"))[..., ::-1] for i in range(6)])
    model = load_detector(str(weights), "cpu")
    score, kp = detect(images, model, PoseConfig(imgsz=256, batch=4))
    assert score.shape == (6,) and kp.shape == (6, 18, 3)
    assert (score > 0.3).all() and (score <= 1).all()  # a person in every Market crop
    assert ((kp[..., 0] >= 0).sum(1) >= 6).all()  # most joints found
    # The real images against their own detected keypoints: PCKh 1 where defined.
    c, t = pckh(kp, kp)
    assert (c == t).all() and t.sum() > 0
    blank, _ = detect(np.zeros((1, 128, 64, 3), np.uint8), model, PoseConfig(imgsz=256))
    assert blank[0] < 0.3


def test_missing_weights_raise_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_detector(str(tmp_path / "sub" / "none.pt"))
