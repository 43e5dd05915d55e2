"""Gaussian pose heatmaps: one channel per OpenPose-18 joint (method.md "Poses").

    H[n, j, i, k] = exp(-((k - x_nj)^2 + (i - y_nj)^2) / (2 sigma^2))

not normalised (the peak is exactly 1 at an integer keypoint), all zeros for a missing joint.

Pixel-centre convention: pixel (row i, column k) has coordinate (x = k, y = i). The
canonical annotations are integer pixel indices, so an annotated joint lands exactly on a
pixel centre. Keypoints are given at the target resolution (height x width); sigma is in
pixels of that resolution (params `heatmaps.sigma`, 6 px at 128x64).

The 2-D Gaussian is separable, so a heatmap is the outer product of a column Gaussian
[H] and a row Gaussian [W]: O(H + W) exponentials per joint instead of O(H * W). All
functions work on any torch device and accept numpy input.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline.core.keypoints import keypoints_array, present
from pipeline.data.canvas import keypoints_to_canvas

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(kp: ArrayLike) -> torch.Tensor:
    t = kp if isinstance(kp, torch.Tensor) else torch.from_numpy(np.asarray(kp, np.float32))
    if t.ndim != 3 or t.shape[-1] < 2:
        raise ValueError(f"keypoints must be [N, 18, >=2] (x, y, ...), got {tuple(t.shape)}")
    return t[..., :2].double() if t.dtype == torch.float64 else t[..., :2].float()


def gaussians_1d(
    kp: ArrayLike, height: int, width: int, sigma: float, scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two factors of the separable heatmap.

    kp: [N, J, >=2] (x, y) at the target resolution; a joint with x < 0, y < 0 or NaN is
    missing. Returns (gy [N, J, H] multiplied by `scale` and zeroed for missing joints,
    gx [N, J, W]) so that heatmap = gy[..., :, None] * gx[..., None, :].
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    t = _as_tensor(kp)
    x, y = t[..., 0], t[..., 1]
    # NaN compares False, so NaN joints count as missing too.
    ok = (x >= 0) & (y >= 0)
    inv = -1.0 / (2.0 * float(sigma) ** 2)
    rows = torch.arange(height, device=t.device, dtype=t.dtype)  # float64 keypoints: float64 maps
    cols = torch.arange(width, device=t.device, dtype=t.dtype)
    gy = torch.exp((rows - torch.nan_to_num(y, nan=-1.0)[..., None]) ** 2 * inv)
    gx = torch.exp((cols - torch.nan_to_num(x, nan=-1.0)[..., None]) ** 2 * inv)
    gy = gy * (ok.to(gy.dtype) * scale)[..., None]
    return gy, gx


def render_heatmaps(kp: ArrayLike, height: int, width: int, sigma: float) -> ArrayLike:
    """Render Gaussian heatmaps.

    kp: [N, 18, >=2] (x, y) at the target resolution (torch on any device, or numpy).
    Returns float32 [N, 18, height, width] in [0, 1]: a torch tensor on kp's device for a
    tensor input, a numpy array for a numpy input.
    """
    gy, gx = gaussians_1d(kp, height, width, sigma)
    out = gy[..., :, None] * gx[..., None, :]
    return out if isinstance(kp, torch.Tensor) else out.cpu().numpy()


def render_heatmaps_uint8(
    kp: ArrayLike,
    height: int,
    width: int,
    sigma: float,
    out: torch.Tensor | None = None,
    block: int = 16,
) -> torch.Tensor:
    """Quantised heatmaps, uint8 [N, 18, H, W] = floor(255 * h + 0.5) (round half up).

    The storage form: decoding q / 255 is within 1/510 of h. `out` (uint8, right shape,
    e.g. torch.from_numpy of a memmap slice) receives the result without an extra copy.
    Renders `block` images at a time through one reused float buffer that stays in cache
    (about 4x faster on CPU than one float32 pass over a large batch).
    """
    gy, gx = gaussians_1d(kp, height, width, sigma, scale=255.0)
    shape = gy.shape[:-1] + (height, width)
    if out is None:
        out = torch.empty(shape, dtype=torch.uint8, device=gy.device)
    elif out.shape != shape or out.dtype != torch.uint8:
        raise ValueError(f"out must be uint8 {tuple(shape)}, got {out.dtype} {tuple(out.shape)}")
    buf = torch.empty((min(block, shape[0]),) + shape[1:], dtype=torch.float32, device=gy.device)
    for s in range(0, shape[0], block):
        b = buf[: min(block, shape[0] - s)]
        torch.mul(gy[s : s + block, ..., :, None], gx[s : s + block, ..., None, :], out=b)
        b.add_(0.5)
        # float -> uint8 copy truncates toward zero: with the +0.5 above that is rounding.
        out[s : s + block].copy_(b)
    return out


def render_heatmaps_quantised(kp: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """float32 [N, 18, H, W] equal to render_heatmaps_uint8(...) / 255 without the uint8 pass.

    The same float ops as the uint8 path (255-scaled product, + 0.5, then floor, which is
    what the uint8 copy's truncation does to these non-negative values), so the result is
    bit-identical to decoding a uint8 store: q * float32(1/255).
    """
    gy, gx = gaussians_1d(kp, height, width, sigma, scale=255.0)
    out = torch.mul(gy[..., :, None], gx[..., None, :])
    out.add_(0.5).floor_()
    return out.mul_(torch.tensor(np.float32(1.0 / 255.0)))


def render_heatmaps_exact(kp: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """float32 [N, 18, H, W]: the original's maps (pose-gan pose_utils.cords_to_map, float64
    exp(-(dy^2 + dx^2) / (2 sigma^2)) stored as float32). The separable product is taken in
    float64 too, so it differs from the original's exp of the sum by about 1e-16, below
    float32's resolution: the same float32 values (up to a rare last-bit tie)."""
    gy, gx = gaussians_1d(torch.as_tensor(kp).double(), height, width, sigma)
    return torch.mul(gy[..., :, None], gx[..., None, :]).float()


def table_keypoints(table: pd.DataFrame, height: int, width: int,
                    sizes: np.ndarray | None = None, fit: str = "resize") -> np.ndarray:
    """Keypoint table rows -> float32 [N, 18, 2] (x, y) at the target resolution: the one
    rule that brings keypoints to model size (heatmaps stage and pair dataset alike), with
    image.fit `fit` (pipeline.data.canvas: resize, or pad onto the model's aspect first).

    The table stores original-image pixels with each row's width/height (or `sizes`,
    [N, 2] (width, height), where the caller knows better); a row with joints but no
    positive width/height cannot be scaled and raises ValueError naming it.
    """
    kp = keypoints_array(table)
    wh = np.asarray(sizes, np.float64) if sizes is not None else table[["width", "height"]].to_numpy(np.float64)
    bad = present(kp).any(axis=1) & (wh <= 0).any(axis=1)
    if bad.any():
        names = table["name"].astype(str).to_numpy()[bad]
        raise ValueError(
            f"{int(bad.sum())} keypoint row(s) without a positive image width/height, "
            f"cannot scale to {height}x{width}: {list(names[:20])}"
        )
    return keypoints_to_canvas(kp, wh, height, width, fit)
