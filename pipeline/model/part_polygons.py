"""The original code's part masks (pose_transform.py pose_masks), batched in torch.

Limbs: a 4-corner polygon per limb (the original's estimate_polygon with inc_from 0.1 and half
widths 0.2 s): the first joint is moved 0.1 of the segment behind itself, then the far joint
is moved inc_to of the ALREADY-extended segment beyond itself; the corners are those two
points -/+ 0.2 s along the unit normal (fr + w n, fr - w n, to - w n, to + w n; a zero-length
segment gives fr + 1, fr - 1, to - 1, to + 1). The mask is that polygon rasterised as
scikit-image 0.13's grid_points_in_poly does it: the PNPOLY crossing test on the integer
grid, called with the vertices as (row, col), so its "x" is the row and its "y" the column.
Head: the square of rows/cols [c - b, c + b) (clipped to the image) around the int-truncated
mean c of the target's head points, b = int(0.4 s).

Everything runs in float64 with the original's operation order, so the masks are the same
pixel for pixel (tests/test_geometry.py checks them against a NumPy PNPOLY transcription).
Points are (x, y) pixels.
"""
from __future__ import annotations

import torch
from torch import Tensor

INC_FROM = 0.1    # extension behind the first joint, fraction of the segment
HALF_WIDTH = 0.2  # p_from = p_to: half width, fraction of the body scale s
HEAD_HALF = 0.4   # head square half side, fraction of s (int-truncated)


def sqrt_rn(x: Tensor) -> Tensor:
    """float64 square root rounded to nearest like NumPy's: torch's CPU sqrt (MKL/SLEEF) is
    off by one ulp for ~1% of inputs, enough to move a polygon edge across a grid point.
    One Newton correction with the exact residual x - r^2 (Dekker's product: r^2 = p + e)."""
    r = torch.sqrt(x)
    split = r * 134217729.0  # 2^27 + 1
    hi = split - (split - r)
    lo = r - hi
    p = r * r
    e = ((hi * hi - p) + 2 * hi * lo) + lo * lo
    fixed = r + ((x - p) - e) / (2 * r)
    return torch.where(r > 0, fixed, r)


def limb_polygons(fr: Tensor, to: Tensor, scale: Tensor, inc_to: Tensor) -> Tensor:
    """fr, to [B, P, 2] float64 joints; scale [B]; inc_to [P] -> corners [B, P, 4, 2]."""
    fr = fr + (fr - to) * INC_FROM
    to = to + (to - fr) * inc_to[:, None]
    d = fr - to
    normal = torch.stack([-d[..., 1], d[..., 0]], -1)
    norm = sqrt_rn(normal[..., 0] * normal[..., 0] + normal[..., 1] * normal[..., 1])
    unit = normal / torch.where(norm == 0, torch.ones_like(norm), norm)[..., None]
    side = (scale * HALF_WIDTH)[:, None, None] * unit  # st * p * n, in that order
    corners = torch.stack([fr + side, fr - side, to - side, to + side], -2)
    one = torch.ones_like(fr)
    flat = torch.stack([fr + one, fr - one, to - one, to + one], -2)  # zero-length limb
    return torch.where((norm == 0)[..., None, None], flat, corners)


def rasterise_polygons(corners: Tensor, height: int, width: int) -> Tensor:
    """Convex polygons [B, P, V, 2] (x, y) -> bool masks [B, P, H, W], grid_points_in_poly.

    PNPOLY toggles a grid point (row m, col n) for every edge (i, j = i - 1) with
    c_i <= n < c_j or c_j <= n < c_i and m < (r_j - r_i) (n - c_i) / (c_j - c_i) + r_i.
    For a convex polygon exactly two edges pass that column test where any does (the
    half-open rule tiles the column range once per boundary chain), so the point is inside
    iff lo(n) <= m < hi(n) for the two edges' thresholds: one comparison pair per pixel."""
    r, c = corners[..., 1], corners[..., 0]  # PNPOLY's x (row) and y (column) [B, P, V]
    r_j, c_j = r.roll(1, -1), c.roll(1, -1)
    n = torch.arange(width, dtype=corners.dtype, device=corners.device)
    ci, cj, ri, rj = c[..., None], c_j[..., None], r[..., None], r_j[..., None]  # [B, P, V, 1]
    active = ((ci <= n) & (n < cj)) | ((cj <= n) & (n < ci))  # [B, P, V, W]
    thr = (rj - ri) * (n - ci) / (cj - ci) + ri
    inf = torch.tensor(float("inf"), dtype=corners.dtype, device=corners.device)
    lo = torch.where(active, thr, inf).amin(-2)[..., None, :]  # [B, P, 1, W]
    hi = torch.where(active, thr, -inf).amax(-2)[..., None, :]
    m = torch.arange(height, dtype=corners.dtype, device=corners.device)[:, None]  # [H, 1]
    return (m >= lo) & (m < hi)


def head_squares(head: Tensor, present: Tensor, scale: Tensor, height: int, width: int
                 ) -> Tensor:
    """Head points [B, 5, 2] float64 of the target, present [B, 5] bool, scale [B] ->
    bool [B, H, W]: rows/cols [c - b, c + b) around c = trunc(mean), b = trunc(0.4 s).
    Empty where no head point is present."""
    n = present.sum(-1)
    mean = (head * present[..., None]).sum(1) / n.clamp_min(1)[:, None]
    centre = mean.trunc()
    half = (HEAD_HALF * scale).trunc()
    rows = torch.arange(height, dtype=head.dtype, device=head.device)
    cols = torch.arange(width, dtype=head.dtype, device=head.device)
    cx, cy, b = centre[:, 0, None], centre[:, 1, None], half[:, None]
    in_rows = (rows >= cy - b) & (rows < cy + b)  # [B, H]
    in_cols = (cols >= cx - b) & (cols < cx + b)  # [B, W]
    return in_rows[:, :, None] & in_cols[:, None, :] & (n > 0)[:, None, None]
