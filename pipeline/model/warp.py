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
    thetas [B, K, 2, 3] (at least float32) for grid_sample / affine_grid with align_corners=False.

    theta = N A N^-1 with N: x -> u = (2x + 1) / W - 1 (and y -> v likewise with H), written
    out element-wise: exact in float32 and free of host-to-device constant copies."""
    a = affines.to(torch.promote_types(affines.dtype, torch.float32))
    (p, q, c), (r, s, f) = a[..., 0, :].unbind(-1), a[..., 1, :].unbind(-1)
    # Source pixel of the target pixel centre at (u, v) = (0, 0), i.e. x = (W-1)/2, y = (H-1)/2.
    x0 = p * (width - 1) / 2 + q * (height - 1) / 2 + c
    y0 = r * (width - 1) / 2 + s * (height - 1) / 2 + f
    row_u = torch.stack([p, q * height / width, (2 * x0 + 1) / width - 1], -1)
    row_v = torch.stack([r * width / height, s, (2 * y0 + 1) / height - 1], -1)
    return torch.stack([row_u, row_v], -2)


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
    pixels no part covers are 0. Returns [B, C, h, w]. (The paper takes the max over all
    ten mask-multiplied maps, zeros included, i.e. max(0, this); the decoder reads the
    skips only through a ReLU, where the two are the same function.)

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
                            padding_mode="zeros", align_corners=False)  # [B, C, K*h, w]
    cover = (resize_masks(masks, h, w) > 0) & valid[..., None, None]  # [B, K, h, w]
    # Masking happens in place on grid_sample's own output (not on a view of it, and its
    # backward does not need it), so no second K-fold buffer is made, forward or backward.
    if agg == "max":
        # Outside autograd: max(dim) (not amax) sends gradients only to its argmax, which is
        # never a filled -inf (pixels where every part is -inf are zeroed below), so the fill
        # needs no backward of its own (that would be one more K-fold pass).
        with torch.no_grad():
            sampled.masked_fill_(~cover.reshape(b, 1, k * h, w), float("-inf"))
        out = sampled.view(b, c, k, h, w).max(2).values
        out = torch.where(cover.any(1, keepdim=True), out,
                          torch.zeros((), dtype=out.dtype, device=out.device))
    else:
        sampled.mul_(cover.reshape(b, 1, k * h, w))
        count = cover.sum(1, keepdim=True, dtype=sampled.dtype)
        out = sampled.view(b, c, k, h, w).sum(2) / count.clamp_min(1)
    return out.to(feat.dtype)
