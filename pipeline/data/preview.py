"""A preview PNG of poses for people to look at: for a few images, the photo with its
skeleton drawn next to the photo with the heatmaps' max over joints overlaid.

Images are BGR uint8 [H, W, 3] (OpenCV order) throughout; keypoints are (x, y) pixels of
the image they are drawn on, -1 for missing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd

from pipeline.core.keypoints import LIMBS, present
from pipeline.data.canvas import image_to_canvas

GAP = 4  # pixels between samples
BACKGROUND = 96  # grey used when an image cannot be found
TITLE_H = 14  # pixels of the title row above a grid
PREVIEW_TITLES = ("keypoints", "heatmaps")


def _limb_colors(n: int) -> np.ndarray:
    """n distinct saturated BGR colours (hue wheel), uint8 [n, 3]."""
    hsv = np.stack([np.arange(n) * 180 // n, np.full(n, 255), np.full(n, 255)], -1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2BGR)[0]


def draw_skeleton(image: np.ndarray, kp: np.ndarray, scale: int = 1) -> np.ndarray:
    """Copy of `image` upscaled by `scale` with limbs (keypoints.LIMBS) and joints drawn.

    kp: [18, >=2] (x, y) in `image` pixels.
    """
    img = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    pts = np.asarray(kp, np.float32)[:, :2]
    ok = present(pts)
    # Pixel centre (x, y) of the original image sits at (x + 0.5) * scale - 0.5 after upscaling.
    p = np.rint((pts + 0.5) * scale - 0.5).astype(np.int32)
    for (a, b), color in zip(LIMBS, _limb_colors(len(LIMBS)).tolist()):
        if ok[a] and ok[b]:
            cv2.line(img, tuple(p[a]), tuple(p[b]), color, max(1, scale), cv2.LINE_AA)
    for j in np.flatnonzero(ok):
        cv2.circle(img, tuple(p[j]), max(1, scale + 1), (255, 255, 255), -1, cv2.LINE_AA)
    return img


def overlay_heatmap(image: np.ndarray, heatmaps: np.ndarray, scale: int = 1) -> np.ndarray:
    """`image` blended with a colour map of heatmaps.max(0), upscaled by `scale`.

    heatmaps: [18, H, W] in [0, 1] at the image's resolution.
    """
    heat = np.clip(np.asarray(heatmaps, np.float32).max(axis=0), 0.0, 1.0)
    color = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.8 * heat)[..., None]  # the photo shows through where there is no joint
    out = (image.astype(np.float32) * (1 - alpha) + color.astype(np.float32) * alpha)
    out = np.rint(out).astype(np.uint8)
    return cv2.resize(out, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def preview_grid(
    images: Sequence[np.ndarray], keypoints: np.ndarray, heatmaps: np.ndarray, scale: int = 2
) -> np.ndarray:
    """One row of samples, each [skeleton | heatmap overlay]. Returns BGR uint8.

    images: n BGR [H, W, 3]; keypoints: [n, 18, >=2] at H x W; heatmaps: [n, 18, H, W].
    """
    if len(images) == 0:
        raise ValueError("preview needs at least one image")
    tiles = []
    for img, kp, hm in zip(images, keypoints, heatmaps):
        pair = np.concatenate([draw_skeleton(img, kp, scale), overlay_heatmap(img, hm, scale)], 1)
        tiles.append(pair)
        tiles.append(np.full((pair.shape[0], GAP, 3), 255, np.uint8))
    return np.concatenate(tiles[:-1], axis=1)


def title_row(width: int, spans: Sequence[tuple[int, int, str]], height: int = TITLE_H) -> np.ndarray:
    """A white [height, width, 3] uint8 strip with each title in black, centred over its
    (x0, x1) span and shrunk to fit it (colour-order free: usable for RGB and BGR)."""
    row = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for x0, x1, text in spans:
        scale = 0.4
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        if tw > x1 - x0 - 2:
            scale *= (x1 - x0 - 2) / tw
            (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
        org = (x0 + max(0, (x1 - x0 - tw) // 2), (height + th) // 2)
        cv2.putText(row, text, org, font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return row


def with_titles(image: np.ndarray, titles: Sequence[str], col_width: int, gap: int = 0) -> np.ndarray:
    """`image`, a row of column groups (len(titles) columns of col_width pixels, groups
    separated by `gap` pixels), with the titles on top of every group: [TITLE_H + H, W, 3]."""
    step = len(titles) * col_width + gap
    groups = (image.shape[1] + gap) // step
    if groups * step - gap != image.shape[1]:
        raise ValueError(f"with_titles: {image.shape[1]} px is not {len(titles)} x {col_width} px "
                         f"columns in groups {gap} px apart")
    spans = [(g * step + i * col_width, g * step + (i + 1) * col_width, t)
             for g in range(groups) for i, t in enumerate(titles)]
    return np.concatenate([title_row(image.shape[1], spans), image], axis=0)


def pick_rows(detected: np.ndarray, count: int = 6) -> np.ndarray:
    """Indices of up to `count` rows spread evenly over the rows where detected is true."""
    idx = np.flatnonzero(np.asarray(detected, bool))
    if len(idx) <= count:
        return idx
    return idx[np.linspace(0, len(idx) - 1, count).round().astype(np.int64)]


def load_images(
    names: Sequence[str],
    manifest: pd.DataFrame | None,
    dataset_dir: str | Path,
    height: int,
    width: int,
    fit: str = "resize",
) -> tuple[list[np.ndarray], list[str]]:
    """Read images by name via the manifest (name, path relative to dataset_dir), brought to
    height x width by image.fit `fit` (pipeline.data.canvas). Returns (BGR images, names not
    found); a missing one is a grey tile."""
    paths = {}
    if manifest is not None:
        paths = dict(zip(manifest["name"].astype(str), manifest["path"].astype(str)))
    images, missing = [], []
    for name in names:
        img = None
        if name in paths:
            img = cv2.imread(str(Path(dataset_dir) / paths[name]), cv2.IMREAD_COLOR)
        if img is None:
            missing.append(name)
            img = np.full((height, width, 3), BACKGROUND, np.uint8)
        else:
            img = image_to_canvas(img, height, width, fit)
        images.append(img)
    return images, missing


def write_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not write PNG")
    return path
