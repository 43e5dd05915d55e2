"""Protocol person masks for mask-SSIM, mask-IS and masked L1 (drawn on the TARGET pose).

The Market-1501 protocol (the Deformable GAN evaluation, reused by later papers) draws, on
the target keypoints, in pixel coordinates of the image (pixel centres at integer
row r / column c):
  * for each connection of PROTOCOL_LIMBS with both joints present, the rectangle whose
    corners are the two joints offset by +-4 px perpendicular to the segment (skimage.draw
    .polygon of those corners);
  * for each present joint, the disc (r - y)^2 + (c - x)^2 < 4^2 (skimage.draw.disk);
then a 5x5 binary dilation followed by a 5x5 erosion (a closing; at the image border the
windows are clipped, which is what skimage's 'reflect' mode amounts to for max/min).

Boundary pixels: a pixel centre lying on a rectangle's edge (within 1e-7 px) counts as
inside, as in current scikit-image's polygon (>= 0.19), which agrees with us on every pixel
except rare float-rounding ties (about 1 pixel in 10^4 on the canonical integer
keypoints). The 2017 scikit-image the original code ran on used the plain crossing-number
rule, which drops pixels on right/bottom edges: the masks then differ by a 1-px rim where
an edge passes exactly through pixel centres (axis-aligned limbs with integer keypoints);
about 0.5% of mask pixels on the canonical test keypoints.

Vectorised over the batch without any [B, H, W] work per shape: every rectangle and disc is
a set of per-row column intervals [start, end), accumulated as +1/-1 in a [B, H, W + 1]
difference array whose cumulative sum along W is the coverage count.
"""
from __future__ import annotations

import numpy as np
import torch

# OpenPose-18 connections of the protocol mask (0-based: 0 nose, 1 neck, 2-4 right arm,
# 5-7 left arm, 8-10 right leg, 11-13 left leg, 14/15 eyes, 16/17 ears). Compared with
# pipeline.core.keypoints.LIMBS (the skeleton drawing) it adds neck-ears and ear-ear, joins each
# hip to the SAME side's shoulder (hip 8 - shoulder 2, hip 11 - shoulder 5), and has no
# shoulder-shoulder segment.
PROTOCOL_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
    (1, 16), (1, 17), (8, 11), (11, 5), (8, 2), (16, 17),
)
RADIUS = 4.0
CLOSING = 5
_EPS = 1e-7  # on-edge tolerance in pixels: a centre on the rectangle's edge is inside


def _solve_band(k: torch.Tensor, c: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float):
    """Real interval of x with lo <= k * x + c <= hi (k, c broadcastable float64).

    Returns (xmin, xmax); empty as (+inf, -inf); k == 0 gives everything or nothing.
    """
    inf = torch.full_like(c, float("inf"))
    safe = torch.where(k == 0, torch.ones_like(k), k)
    a, b = (lo - c) / safe, (hi - c) / safe
    xmin = torch.where(k > 0, a, b)
    xmax = torch.where(k > 0, b, a)
    inside = (c >= lo - _EPS) & (c <= hi + _EPS)
    xmin = torch.where(k == 0, torch.where(inside, -inf, inf), xmin)
    xmax = torch.where(k == 0, torch.where(inside, inf, -inf), xmax)
    return xmin, xmax


def _rect_intervals(kp: torch.Tensor, limbs: tuple[tuple[int, int], ...], height: int, radius: float):
    """Per-row column intervals [start, end) of every limb rectangle: int64-valued [B, H, L].

    The closed rectangle around segment t -> f: 0 <= (p - t).u <= |f - t| along the unit
    direction u and |(p - t).n| <= radius across it (n = u rotated by 90 degrees).
    """
    f = kp[:, [a for a, _ in limbs]].unsqueeze(1)  # [B, 1, L, 2] (x, y)
    t = kp[:, [b for _, b in limbs]].unsqueeze(1)
    d = f - t
    length = torch.sqrt((d * d).sum(-1))  # [B, 1, L]
    ok = (f >= 0).all(-1) & (t >= 0).all(-1) & (length > 0)
    u = d / torch.where(length > 0, length, torch.ones_like(length)).unsqueeze(-1)
    ux, uy = u[..., 0], u[..., 1]
    y = torch.arange(height, dtype=torch.float64, device=kp.device).view(1, height, 1)
    dy = y - t[..., 1]  # [B, H, L]
    # along: ux * x + (uy * dy - ux * tx) in [0, L]; across: -uy * x + (ux * dy + uy * tx) in [-r, r]
    a0, a1 = _solve_band(ux, uy * dy - ux * t[..., 0], -_EPS, length + _EPS)
    b0, b1 = _solve_band(-uy, ux * dy + uy * t[..., 0], -radius - _EPS, radius + _EPS)
    xmin, xmax = torch.maximum(a0, b0), torch.minimum(a1, b1)
    return _as_index(torch.ceil(xmin), torch.floor(xmax) + 1, ok & (xmin <= xmax))


def _disc_intervals(kp: torch.Tensor, height: int, radius: float):
    """Per-row column intervals of the open discs |p - joint| < radius. int64 [B, H, 18]."""
    r = torch.arange(height, dtype=torch.float64, device=kp.device).view(1, height, 1)
    x, y = kp[..., 0].unsqueeze(1), kp[..., 1].unsqueeze(1)  # [B, 1, 18]
    q = radius * radius - (r - y) ** 2  # (c - x)^2 must stay below q
    s = torch.sqrt(q.clamp(min=0))
    keep = (q > 0) & (kp >= 0).all(-1).unsqueeze(1)
    return _as_index(torch.floor(x - s) + 1, torch.ceil(x + s), keep)


def _as_index(start: torch.Tensor, end: torch.Tensor, keep: torch.Tensor):
    big = torch.tensor(2**30, dtype=start.dtype, device=start.device)
    start = torch.where(keep, start, big)
    end = torch.where(keep, end, big)
    return start, end


def person_masks(
    keypoints,
    height: int,
    width: int,
    *,
    radius: float = RADIUS,
    closing: int = CLOSING,
    limbs: tuple[tuple[int, int], ...] = PROTOCOL_LIMBS,
) -> torch.Tensor:
    """Protocol masks from target keypoints [B, 18, >=2] (x, y pixels, -1 missing) -> bool [B, H, W].

    An image with no present joint gets an all-False mask.
    """
    if isinstance(keypoints, torch.Tensor):
        kp = keypoints.detach().to(torch.float64)
    else:
        kp = torch.from_numpy(np.asarray(keypoints, dtype=np.float64))
    if kp.ndim != 3 or kp.shape[1] != 18 or kp.shape[2] < 2:
        raise ValueError(f"expected keypoints [B, 18, 2], got shape {tuple(kp.shape)}")
    kp = kp[..., :2].contiguous()
    b = kp.shape[0]
    starts, ends = [], []
    if limbs:
        s, e = _rect_intervals(kp, limbs, height, radius)
        starts.append(s)
        ends.append(e)
    s, e = _disc_intervals(kp, height, radius)
    starts.append(s)
    ends.append(e)
    start = torch.cat(starts, -1).clamp(0, width).long()  # [B, H, K]
    end = torch.cat(ends, -1).clamp(0, width).long()
    nonempty = (start < end).to(torch.int32)
    diff = torch.zeros(b, height, width + 1, dtype=torch.int32, device=kp.device)
    diff.scatter_add_(2, start, nonempty)
    diff.scatter_add_(2, end, -nonempty)
    mask = diff.cumsum(-1)[..., :width] > 0
    return close(mask, closing)


def _max_filter(mask: torch.Tensor, size: int, dim: int, fill: bool) -> torch.Tensor:
    """OR (fill=False) or AND (fill=True) over a centred window of `size` along `dim`;
    positions outside the image are `fill`, i.e. ignored: the window is clipped."""
    pad = size // 2
    n = mask.shape[dim]
    shape = list(mask.shape)
    shape[dim] = pad
    edge = torch.full(shape, fill, dtype=torch.bool, device=mask.device)
    padded = torch.cat([edge, mask, edge], dim)
    out = padded.narrow(dim, 0, n).clone()
    for i in range(1, size):
        window = padded.narrow(dim, i, n)
        if fill:
            out &= window
        else:
            out |= window
    return out


def close(mask: torch.Tensor, size: int = CLOSING) -> torch.Tensor:
    """Binary closing of bool [B, H, W] by a size x size square: dilation, then erosion.

    The square is separable, so each step is a 1-D window along W and then H. Windows are
    clipped at the image border, which is what skimage's 'reflect' mode gives for max/min.
    """
    if size <= 1:
        return mask
    dilated = _max_filter(_max_filter(mask, size, -1, False), size, -2, False)
    return _max_filter(_max_filter(dilated, size, -1, True), size, -2, True)


def apply_masks(images, masks) -> np.ndarray:
    """uint8 [B, H, W, 3] * bool [B, H, W] -> uint8 [B, H, W, 3] (pixels outside set to 0)."""
    images = np.asarray(images)
    m = masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    if images.shape[:3] != m.shape:
        raise ValueError(f"mask shape {m.shape} does not match images {images.shape}")
    return images * m[..., None].astype(images.dtype)
