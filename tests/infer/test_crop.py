"""Person crops keep the model aspect ratio and keypoints stay on the same image content."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.infer.crop import Box, crop_box, crop_image, map_keypoints, person_extent


def _marked_image(h: int, w: int, points: np.ndarray) -> np.ndarray:
    """Grey image with a bright 9x9 block centred on each (x, y) point, value = 100 + 10 * k."""
    img = np.full((h, w, 3), 40, np.uint8)
    for k, (x, y) in enumerate(points.astype(int)):
        img[y - 4 : y + 5, x - 4 : x + 5] = 100 + 10 * k
    return img


@pytest.mark.parametrize("out_hw", [(128, 64), (256, 128)])
def test_crop_has_model_aspect_and_keypoints_follow_content(out_hw):
    # A "person" box in a wide 300x500 photo; joints are marked by distinct bright blocks.
    pts = np.array([[250, 80], [230, 150], [270, 150], [240, 230], [262, 228]], np.float32)
    img = _marked_image(300, 500, pts)
    kp = np.full((18, 2), -1.0, np.float32)
    kp[[1, 2, 5, 8, 11]] = pts
    box = crop_box(person_extent(kp, np.array([215, 60, 285, 250])), out_hw, margin=0.1)
    assert abs(box.w / box.h - out_hw[1] / out_hw[0]) < 0.02
    # The person box (grown by the margin) lies inside the crop.
    assert box.x0 <= 215 and box.y0 <= 60 - 19 + 1 and box.x0 + box.w >= 285 and box.y0 + box.h >= 250
    crop = crop_image(img, box, out_hw)
    assert crop.shape == (*out_hw, 3)
    mapped = map_keypoints(kp, box, out_hw)
    assert (mapped[[0, 3, 4, 6]] == -1).all()  # missing joints stay missing
    for k, j in enumerate([1, 2, 5, 8, 11]):
        x, y = np.rint(mapped[j]).astype(int)
        assert abs(int(crop[y, x, 0]) - (100 + 10 * k)) <= 3, f"joint {j} moved off its block"


def test_crop_outside_the_image_is_border_filled_and_outside_joints_dropped():
    img = np.zeros((100, 100, 3), np.uint8)
    img[:, :50] = 200
    box = Box(-20, -10, 60, 120)  # reaches past the left and top edges
    crop = crop_image(img, box, (120, 60))
    assert crop.shape == (120, 60, 3)
    assert (crop[:, :20] == 200).all()  # replicated left border
    kp = np.full((18, 2), -1.0, np.float32)
    kp[0] = (0, 0)
    kp[1] = (90, 50)  # right of the box: outside the crop
    mapped = map_keypoints(kp, box, (120, 60))
    np.testing.assert_allclose(mapped[0], (20, 10))
    assert (mapped[1] == -1).all()


def test_extent_falls_back_to_keypoints_and_rejects_empty():
    kp = np.full((18, 2), -1.0, np.float32)
    kp[2], kp[11] = (10, 20), (30, 60)
    np.testing.assert_allclose(person_extent(kp), (9.5, 19.5, 30.5, 60.5))
    with pytest.raises(ValueError, match="no person box"):
        person_extent(np.full((18, 2), -1.0, np.float32))
