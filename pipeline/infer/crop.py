"""Person crops at the model's aspect ratio, and keypoints mapped into them.

A crop box is an integer pixel rectangle (x0, y0, w, h) of the ORIGINAL image with
w / h equal to the model's W / H (up to rounding). It may reach outside the image: those
pixels are filled by replicating the border, so a person at the image edge stays centred.
The box is then resized to the model resolution with INTER_AREA (as pipeline.data.pair_dataset does for
training images), so the generator sees inputs framed like its training crops.

Pixel-centre convention (as pipeline.data.heatmaps): pixel (row i, column k) is the point
(x = k, y = i). A box starting at column x0 of width w covers the edges [x0 - 0.5, x0 + w - 0.5];
resizing it to `out_w` columns maps x to (x - x0 + 0.5) * out_w / w - 0.5.
"""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from pipeline.core.keypoints import present


class Box(NamedTuple):
    """Integer crop rectangle in original-image pixels (may extend past the image)."""

    x0: int
    y0: int
    w: int
    h: int


def person_extent(kp: np.ndarray | None, box: np.ndarray | None = None) -> np.ndarray:
    """The person's extent (x0, y0, x1, y1) in pixel edges: the detector box when given,
    else the span of the present keypoints. kp: [18, >=2]; box: [4] xyxy.

    Raises ValueError when neither a box nor any keypoint is available.
    """
    if box is not None:
        b = np.asarray(box, np.float32).reshape(4)
        if b[2] > b[0] and b[3] > b[1]:
            return b
    if kp is not None:
        pts = np.asarray(kp, np.float32)[:, :2]
        pts = pts[present(pts)]
        if len(pts):
            lo, hi = pts.min(axis=0) - 0.5, pts.max(axis=0) + 0.5
            return np.concatenate([lo, hi]).astype(np.float32)
    raise ValueError("no person box and no keypoints to crop around")


def crop_box(extent: np.ndarray, out_hw: tuple[int, int], margin: float = 0.1) -> Box:
    """Smallest box of aspect out_w / out_h around `extent` grown by `margin`.

    extent: (x0, y0, x1, y1) pixel edges. The extent is padded by margin * its height on
    every side (people are tall: the height sets the scale), then the narrower side is
    widened about the centre until the aspect ratio matches.
    """
    x0, y0, x1, y1 = (float(v) for v in extent)
    out_h, out_w = out_hw
    pad = margin * max(y1 - y0, 1.0)
    w, h = (x1 - x0) + 2 * pad, (y1 - y0) + 2 * pad
    aspect = out_w / out_h
    if w / h > aspect:
        h = w / aspect
    else:
        w = h * aspect
    h_int = max(int(round(h)), 1)
    w_int = max(int(round(h_int * aspect)), 1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # Edge coordinates -> index of the first pixel: edge e is pixel e + 0.5.
    return Box(int(round(cx - w_int / 2 + 0.5)), int(round(cy - h_int / 2 + 0.5)), w_int, h_int)


def whole_image_box(width: int, height: int) -> Box:
    return Box(0, 0, int(width), int(height))


def crop_image(image: np.ndarray, box: Box, out_hw: tuple[int, int]) -> np.ndarray:
    """Cut `box` out of image [H, W, C] (border-replicated outside) and resize to out_hw.

    Returns [out_h, out_w, C] of the image's dtype.
    """
    ih, iw = image.shape[:2]
    top, left = max(0, -box.y0), max(0, -box.x0)
    bottom, right = max(0, box.y0 + box.h - ih), max(0, box.x0 + box.w - iw)
    if top or left or bottom or right:
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REPLICATE)
    y0, x0 = box.y0 + top, box.x0 + left
    patch = image[y0 : y0 + box.h, x0 : x0 + box.w]
    out_h, out_w = out_hw
    if patch.shape[:2] == (out_h, out_w):
        return patch.copy()
    interp = cv2.INTER_AREA if box.h >= out_h else cv2.INTER_LINEAR
    return cv2.resize(patch, (out_w, out_h), interpolation=interp)


def map_keypoints(kp: np.ndarray, box: Box, out_hw: tuple[int, int]) -> np.ndarray:
    """Keypoints [..., 18, >=2] of the original image -> float32 [..., 18, 2] in the crop
    resized to out_hw. Missing joints, and joints that land outside the crop, are -1."""
    kp = np.asarray(kp, np.float32)[..., :2]
    out_h, out_w = out_hw
    scale = np.array([out_w / box.w, out_h / box.h], np.float32)
    origin = np.array([box.x0, box.y0], np.float32)
    out = (kp - origin + 0.5) * scale - 0.5
    inside = (out > -0.5).all(-1) & (out < np.array([out_w, out_h], np.float32) - 0.5).all(-1)
    out[~(present(kp) & inside)] = -1.0
    return out
