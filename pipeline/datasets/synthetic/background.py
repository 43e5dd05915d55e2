"""Per-camera backgrounds: a wall/floor scene (gradients, bricks, panels, windows, foliage,
tiles, steps, poles, noise) that each image of that camera crops at a random offset."""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.datasets.synthetic.identity import hsv

WALLS: tuple[str, ...] = ("plain", "bricks", "panels", "windows", "foliage")
WALL_PROBS = (0.25, 0.2, 0.2, 0.13, 0.22)
FLOORS: tuple[str, ...] = ("plain", "tiles", "steps")


# Scene hues: greys with a tint of beige/brown, green, blue-grey or brick red.
_HUES = (0.08, 0.3, 0.58, 0.02)


def _muted(rng: np.random.Generator, v: tuple[float, float]) -> np.ndarray:
    hue = _HUES[rng.integers(len(_HUES))] + rng.normal(0, 0.03)
    return np.array(hsv(hue, rng.uniform(0.0, 0.25) ** 1.3, rng.uniform(*v)), np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], [h, w]: a coarse random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, (max(2, cells * h // max(w, 1)), cells)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1)


def camera_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A scene float32 [Hb, Wb, 3] (BGR 0..255) larger than the crop (Hb = 1.2 H, Wb = 2.5 W)."""
    hb, wb = int(round(height * 1.2)), int(round(width * 2.5))
    unit = height / 128.0
    yy = np.arange(hb, dtype=np.float32)[:, None]
    xx = np.arange(wb, dtype=np.float32)[None, :]
    horizon = rng.uniform(0.3, 0.7) * hb
    wall_c, floor_c = _muted(rng, (0.35, 0.85)), _muted(rng, (0.3, 0.75))
    if rng.random() < 0.25:  # a saturated wall now and then (shop fronts, green hedges)
        wall_c = np.array(hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.8)), np.float32)
    wall = np.broadcast_to(wall_c, (hb, wb, 3)) * (1.0 + rng.uniform(-0.25, 0.25) * (yy / hb - 0.5))[..., None]
    floor = np.broadcast_to(floor_c, (hb, wb, 3)) * (0.85 + 0.3 * ((yy - horizon) / hb))[..., None]
    wall = wall * _wall_texture(rng, yy, xx, unit, hb, wb)[..., None]
    floor = floor * _floor_texture(rng, yy, xx, unit, horizon)[..., None]
    img = np.where((yy < horizon)[..., None], wall, floor).astype(np.float32)
    for _ in range(int(rng.integers(0, 4))):  # poles, doors, bins
        x0 = rng.uniform(0, wb)
        w = rng.uniform(2, 12) * unit
        y0 = rng.uniform(0, horizon * 0.8)
        y1 = horizon + rng.uniform(-0.1, 0.2) * hb
        col = _muted(rng, (0.1, 0.9))
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0 + w), int(y1)), col.tolist(), -1)
    # Large-scale lighting variation and sensor-ish grain, then camera softness.
    img *= (1.0 + 0.12 * _smooth_noise(rng, hb, wb, 5))[..., None]
    img += rng.normal(0, 3.0, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 0.6 * unit)
    return np.clip(img, 0, 255)


def _wall_texture(rng, yy, xx, unit, hb, wb) -> np.ndarray:
    kind = WALLS[rng.choice(len(WALLS), p=WALL_PROBS)]
    if kind == "bricks":
        bh, bw = rng.uniform(4, 8) * unit, rng.uniform(10, 18) * unit
        row = np.floor(yy / bh)
        xs = xx + (row % 2) * bw / 2
        mortar = ((yy % bh) < 1.0 * unit) | ((xs % bw) < 1.0 * unit)
        return np.where(mortar, 0.8, 1.0) * (1 + 0.05 * np.sin(row * 12.9898 + np.floor(xs / bw) * 78.233))
    if kind == "panels":
        period = rng.uniform(6, 22) * unit
        return np.where((xx % period) < period / 2, 1.0, rng.uniform(0.82, 0.94)) * np.ones_like(yy)
    if kind == "windows":
        px, py = rng.uniform(14, 26) * unit, rng.uniform(16, 30) * unit
        win = ((xx % px) > 0.3 * px) & ((yy % py) > 0.35 * py)
        return np.where(win, rng.uniform(0.35, 0.6), 1.0)
    if kind == "foliage":
        n = _smooth_noise(rng, hb, wb, 12) + 0.5 * _smooth_noise(rng, hb, wb, 30)
        return 0.75 + 0.3 * n
    return 1.0 + 0.04 * _smooth_noise(rng, hb, wb, 8)


def _floor_texture(rng, yy, xx, unit, horizon) -> np.ndarray:
    kind = FLOORS[rng.integers(len(FLOORS))]
    if kind == "tiles":
        period = rng.uniform(8, 18) * unit
        line = ((xx % period) < unit) | (((yy - horizon) % (period * 0.6)) < unit)
        return np.where(line, 0.82, 1.0)
    if kind == "steps":
        period = rng.uniform(5, 10) * unit
        return np.where(((yy - horizon) % period) < period * 0.35, 0.8, 1.0) * np.ones_like(xx)
    return 1.0 + 0.0 * xx + 0.0 * yy


def crop(scene: np.ndarray, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random height x width window of a camera scene, float32 [H, W, 3]."""
    hb, wb = scene.shape[:2]
    y = int(rng.integers(0, hb - height + 1))
    x = int(rng.integers(0, wb - width + 1))
    return scene[y:y + height, x:x + width].copy()
