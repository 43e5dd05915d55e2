"""image.fit: how images and keypoints of another aspect land on the model canvas."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.canvas import image_to_canvas, keypoints_to_canvas, pads, scored_frame


def test_resize_is_the_old_rule():
    kp = np.array([[[10.0, 20.0], [-1.0, -1.0]]])
    out = keypoints_to_canvas(kp, [[64, 128]], 256, 128, "resize")
    assert out.tolist() == [[[20.0, 40.0], [-1.0, -1.0]]]
    assert scored_frame([[64, 128]], 256, 128, "resize") == (0, 256, 0, 128)


def test_pad_puts_176_wide_images_back_on_the_256_canvas():
    assert pads([[176, 256], [256, 256]], 256, 256, "pad").tolist() == [[40, 0], [0, 0]]
    kp = np.array([[[0.0, 5.0], [175.0, 255.0], [-1.0, -1.0]]])
    assert keypoints_to_canvas(kp, [[176, 256]], 256, 256, "pad").tolist() == \
        [[[40.0, 5.0], [215.0, 255.0], [-1.0, -1.0]]]
    # At a smaller model size the same canvas, scaled: 40 px -> 10 px at 64x64.
    assert keypoints_to_canvas(kp, [[176, 256]], 64, 64, "pad")[0, 1].tolist() == [53.75, 63.75]
    img = np.zeros((256, 176, 3), np.uint8)
    out = image_to_canvas(img, 256, 256, "pad")
    assert out.shape == (256, 256, 3)
    assert (out[:, :40] == 255).all() and (out[:, 216:] == 255).all() and (out[:, 40:216] == 0).all()
    assert scored_frame([[176, 256]], 256, 256, "pad") == (0, 256, 40, 216)
    assert scored_frame([[176, 256]], 64, 64, "pad") == (0, 64, 10, 54)


def test_pad_heightens_wide_images_and_rejects_unknown_fits():
    assert pads([[256, 128]], 256, 256, "pad").tolist() == [[0, 64]]
    with pytest.raises(ValueError, match="image.fit must be one of"):
        pads([[1, 1]], 8, 8, "crop")


def test_aspect_frame_is_the_centred_region_of_that_aspect():
    from pipeline.data.canvas import aspect_frame, intersect

    assert aspect_frame(256, 256, (256, 176)) == (0, 256, 40, 216)  # DeepFashion's papers' frame
    assert aspect_frame(64, 64, (256, 176)) == (0, 64, 10, 54)
    assert aspect_frame(128, 64, None) == (0, 128, 0, 64)
    assert aspect_frame(100, 100, (50, 100)) == (25, 75, 0, 100)  # a wider frame cuts rows
    assert intersect((0, 256, 40, 216), (0, 256, 0, 256)) == (0, 256, 40, 216)


def test_canvas_image_of_a_176_wide_image_and_of_its_canvas_agree():
    from pipeline.data.canvas import canvas_image

    rng = np.random.default_rng(0)
    canvas = np.full((256, 256, 3), 255, np.uint8)
    canvas[:, 40:216] = rng.integers(0, 255, (256, 176, 3), dtype=np.uint8)
    frame = (0, 256, 40, 216)
    cut = canvas_image(canvas, 256, 256, "pad", frame)
    assert cut.shape == (256, 176, 3) and np.array_equal(cut, canvas[:, 40:216])
    assert np.array_equal(canvas_image(canvas[:, 40:216], 256, 256, "pad", frame), cut)
