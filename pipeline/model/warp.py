"""Deformable skip connections: warp feature maps part by part and combine the parts.

Affines from pipeline.model.geometry map target pixels to source pixels at the input
resolution (H, W). grid_sample works in normalised coordinates, where with
align_corners=False a value u in [-1, 1] names the same physical point at every resolution:
pixel j of a map of width w has centre u = (2j + 1) / w - 1, and the centre of a coarse pixel
(covering f fine pixels) lands on the same u as the centre of the fine pixels it covers. So
the pixel affine is converted once into a normalised theta, and that single theta warps every
pyramid level; the per-level scaling of the translation (paper: "translation scaled to that
resolution") is implicit in the normalisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def affine_to_grid_theta(affines: Tensor, height: int, width: int) -> Tensor:
    """Pixel affines [B, K, 2, 3] (target (x, y, 1) -> source (x, y) at H x W) -> normalised
    thetas [B, K, 2, 3] for grid_sample / affine_grid with align_corners=False."""
    dev, dt = affines.device, affines.dtype
    # pixel = to_pix @ (u, v, 1): x = (W/2) u + (W-1)/2 ; normalised = to_norm @ (x, y, 1).
    to_pix = torch.tensor([[width / 2, 0, (width - 1) / 2],
                           [0, height / 2, (height - 1) / 2],
                           [0, 0, 1]], dtype=dt, device=dev)
    to_norm = torch.tensor([[2 / width, 0, 1 / width - 1],
                            [0, 2 / height, 1 / height - 1]], dtype=dt, device=dev)
    full = torch.cat([affines, to_pix[2:].expand(affines.shape[:-2] + (1, 3))], -2)  # [.., 3, 3]
    return to_norm @ full @ to_pix


def resize_masks(masks: Tensor, height: int, width: int) -> Tensor:
    """Part masks [B, K, H, W] -> binary float [B, K, h, w].

    Downsampling uses area averaging then a 0.5 threshold: a coarse pixel belongs to a part
    when at least half of it does, which (unlike nearest, which keeps the top-left fine pixel)
    does not shift masks by half a pixel per level. Upsampling uses nearest."""
    if masks.shape[-2:] == (height, width):
        return masks
    if height <= masks.shape[-2] and width <= masks.shape[-1]:
        return (F.interpolate(masks, size=(height, width), mode="area") >= 0.5).to(masks.dtype)
    return F.interpolate(masks, size=(height, width), mode="nearest")


def sampling_grid(theta: Tensor, height: int, width: int, offset: Tensor | None = None) -> Tensor:
    """Sampling locations [B, K, h, w, 2] (normalised x, y) of every part at an h x w map:
    theta applied to the output pixel centres (as affine_grid, align_corners=False), plus the
    offset field [B, 2, h, w] (normalised units, channel 0 = x, 1 = y) shared by all parts."""
    dev = theta.device
    u = (2 * torch.arange(width, device=dev, dtype=theta.dtype) + 1) / width - 1
    v = (2 * torch.arange(height, device=dev, dtype=theta.dtype) + 1) / height - 1
    # grid[..., i, j, :] = theta[..., :, 0] u_j + theta[..., :, 1] v_i + theta[..., :, 2]
    col = theta[..., None, None, :, 0] * u[:, None]                  # [B, K, 1, w, 2]
    row = theta[..., None, None, :, 1] * v[:, None, None]            # [B, K, h, 1, 2]
    grid = col + row + theta[..., None, None, :, 2]                  # [B, K, h, w, 2]
    if offset is not None:
        grid = grid + offset.permute(0, 2, 3, 1).unsqueeze(1).to(grid.dtype)
    return grid


def warp_parts(feat: Tensor, theta: Tensor, masks: Tensor, valid: Tensor, agg: str = "max",
               offset: Tensor | None = None) -> Tensor:
    """Warp a feature map by every part's affine and combine the parts.

    feat [B, C, h, w]; theta [B, K, 2, 3] (affine_to_grid_theta); masks [B, K, H, W] at any
    resolution (resized with resize_masks; pass them pre-resized to skip that); valid [B, K];
    offset [B, 2, h, w] or None, added to every part's sampling grid. Each part samples feat
    bilinearly (zeros outside), is restricted to its mask, and the parts are combined by
    "max" (element-wise max over the parts covering a pixel) or "avg" (mean over them);
    pixels no part covers are 0. Returns [B, C, h, w].

    All K parts go through one grid_sample call: their grids are stacked along the output
    height ([B, K*h, w, 2]), so the input is read in place rather than copied K times.
    Sampling runs in at least float32 (a half-precision grid is too coarse for sub-pixel
    positions), the result is cast back to feat's dtype.
    """
    if agg not in ("max", "avg"):
        raise ValueError(f"warp_parts: agg must be 'max' or 'avg', got {agg!r}")
    b, c, h, w = feat.shape
    k = theta.shape[1]
    if theta.shape != (b, k, 2, 3) or masks.shape[:2] != (b, k) or valid.shape != (b, k):
        raise ValueError(f"warp_parts: inconsistent shapes feat {tuple(feat.shape)}, theta "
                         f"{tuple(theta.shape)}, masks {tuple(masks.shape)}, valid {tuple(valid.shape)}")
    work = torch.promote_types(feat.dtype, torch.float32)
    grid = sampling_grid(theta.to(work), h, w, offset)
    sampled = F.grid_sample(feat.to(work), grid.reshape(b, k * h, w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=False)
    sampled = sampled.reshape(b, c, k, h, w)  # splitting K*h is a view, also for channels_last
    cover = (resize_masks(masks, h, w) > 0) & valid[..., None, None]  # [B, K, h, w]
    cover = cover.unsqueeze(1)  # [B, 1, K, h, w]
    if agg == "max":
        out = sampled.masked_fill(~cover, float("-inf")).amax(2)
        out = torch.where(cover.any(2), out, torch.zeros((), dtype=out.dtype, device=out.device))
    else:
        count = cover.sum(2, dtype=sampled.dtype)
        out = (sampled * cover).sum(2) / count.clamp_min(1)
    return out.to(feat.dtype)
