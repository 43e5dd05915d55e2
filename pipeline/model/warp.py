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

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

# The default for sparse=None on CPU. bench/bench_train.py turns it off to time the dense
# path (ten full-map samples per level), the step as it was before the sparse warp.
SPARSE_ON_CPU = True


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
               offset: Tensor | None = None, sparse: bool | None = None) -> Tensor:
    """Warp a feature map by every part's affine and combine the parts (bilinear sampling).

    feat [B, C, h, w]; theta [B, K, 2, 3] (affine_to_grid_theta); masks [B, K, H, W] at any
    resolution (resized with resize_masks; pass them pre-resized to skip that); valid [B, K];
    offset [B, 2, h, w] or None, added to every part's sampling grid. Each part samples feat
    bilinearly (zeros outside), is restricted to its mask, and the parts are combined by
    "max" (element-wise max over the parts covering a pixel) or "avg" (mean over them);
    pixels no part covers are 0. Returns [B, C, h, w]. (The paper takes the max over all
    ten mask-multiplied maps, zeros included, i.e. max(0, this); the decoder reads the
    skips only through a ReLU, where the two are the same function.)

    sparse (None = on CPU): part 0 (the torso, whose mask is the whole image) is sampled in
    full, every other part only at the pixels its mask covers (one grid_sample over all
    those points), and the results are scattered back with a max (or a sum) per pixel. Same
    result as the dense path (every part over the whole map, sparse=False) up to float
    rounding, forward and backward, at a fraction of the sampling cost; it needs the covered
    pixel count, a host synchronisation, which is why CUDA stays dense by default.
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
    cover = (resize_masks(masks, h, w) > 0) & valid[..., None, None]  # [B, K, h, w]
    if sparse is None:
        sparse = SPARSE_ON_CPU and feat.device.type == "cpu"
    if sparse and k > 1:
        out = _warp_sparse(feat.to(work), theta.to(work), cover, agg, offset)
    else:
        out = _warp_dense(feat.to(work), theta.to(work), cover, agg, offset)
    return out.to(feat.dtype)


def _warp_dense(feat: Tensor, theta: Tensor, cover: Tensor, agg: str,
                offset: Tensor | None) -> Tensor:
    """Every part over the whole map. All K parts go through one grid_sample call: their
    grids are stacked along the output height ([B, K*h, w, 2]), so the input is read in
    place rather than copied K times."""
    b, c, h, w = feat.shape
    k = theta.shape[1]
    grid = sampling_grid(theta, h, w, offset)
    sampled = F.grid_sample(feat, grid.reshape(b, k * h, w, 2), mode="bilinear",
                            padding_mode="zeros", align_corners=False)  # [B, C, K*h, w]
    # Masking happens in place on grid_sample's own output (not on a view of it, and its
    # backward does not need it), so no second K-fold buffer is made, forward or backward.
    if agg == "max":
        # Outside autograd: max(dim) (not amax) sends gradients only to its argmax, which is
        # never a filled -inf (pixels where every part is -inf are zeroed below), so the fill
        # needs no backward of its own (that would be one more K-fold pass).
        with torch.no_grad():
            sampled.masked_fill_(~cover.reshape(b, 1, k * h, w), float("-inf"))
        out = sampled.view(b, c, k, h, w).max(2).values
        return torch.where(cover.any(1, keepdim=True), out,
                           torch.zeros((), dtype=out.dtype, device=out.device))
    sampled.mul_(cover.reshape(b, 1, k * h, w))
    count = cover.sum(1, keepdim=True, dtype=sampled.dtype)
    return sampled.view(b, c, k, h, w).sum(2) / count.clamp_min(1)


class _ScatterMax(torch.autograd.Function):
    """out[n] = max(base[n], max of vals[p] with pixel[p] = n), per channel; base [N, C],
    vals [P, C]. Backward sends each output gradient to ONE winner, as max(dim) does on the
    dense stack: base (part 0) first, else the earliest point (lowest part index)."""

    @staticmethod
    def forward(ctx, base: Tensor, pixel: Tensor, vals: Tensor) -> Tensor:
        with warnings.catch_warnings():  # index_reduce is "beta": a stable API since 2.0
            warnings.simplefilter("ignore")
            out = base.index_reduce(0, pixel, vals, "amax", include_self=True)
        win_base = base == out
        ctx.save_for_backward(pixel, win_base, vals == out[pixel])
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        pixel, win_base, equal = ctx.saved_tensors
        cand = equal & ~win_base[pixel]  # [P, C]
        n_pts = cand.shape[0]
        order = torch.arange(n_pts, device=cand.device)[:, None].expand_as(cand)
        order = torch.where(cand, order, n_pts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = torch.full_like(win_base, n_pts, dtype=order.dtype).index_reduce_(
                0, pixel, order, "amin", include_self=True)
        winner = cand & (order == first[pixel])
        return grad * win_base, None, grad[pixel] * winner


def _warp_sparse(feat: Tensor, theta: Tensor, cover: Tensor, agg: str,
                 offset: Tensor | None) -> Tensor:
    """Part 0 over the whole map, parts 1.. at their covered pixels only (warp_parts)."""
    b, c, h, w = feat.shape
    dense = F.grid_sample(feat, sampling_grid(theta[:, :1], h, w, offset)[:, 0],
                          mode="bilinear", padding_mode="zeros", align_corners=False)
    bi, ki, ii, ji = cover[:, 1:].nonzero().unbind(1)  # points sorted by (b, part, row, col)
    ki = ki + 1
    counts = torch.bincount(bi, minlength=b)
    n_max = int(counts.max()) if bi.numel() else 0
    pos = torch.arange(bi.numel(), device=bi.device) - (counts.cumsum(0) - counts)[bi]
    # The points' grid values, computed as sampling_grid does (same rounding).
    u = (2 * ji.to(theta.dtype) + 1) / w - 1
    v = (2 * ii.to(theta.dtype) + 1) / h - 1
    th = theta[bi, ki]  # [P, 2, 3]
    grid = th[..., 0] * u[:, None] + th[..., 1] * v[:, None] + th[..., 2]  # [P, 2]
    if offset is not None:
        grid = grid + offset.to(grid.dtype)[bi, :, ii, ji]
    padded = grid.new_full((b, max(n_max, 1), 2), 4.0).index_put((bi, pos), grid)
    vals = F.grid_sample(feat, padded[:, None], mode="bilinear", padding_mode="zeros",
                         align_corners=False)[:, :, 0]  # [B, C, n_max]
    vals = vals.transpose(1, 2)[bi, pos]  # [P, C]
    pixel = (bi * h + ii) * w + ji
    base = dense.permute(0, 2, 3, 1).reshape(b * h * w, c)
    cover0 = cover[:, 0].reshape(b * h * w, 1)
    if agg == "max":
        base = torch.where(cover0, base, torch.tensor(float("-inf"), dtype=base.dtype,
                                                      device=base.device))
        out = _ScatterMax.apply(base, pixel, vals)
        out = torch.where(cover.any(1).reshape(-1, 1), out,
                          torch.zeros((), dtype=out.dtype, device=out.device))
    else:
        out = (base * cover0).index_add(0, pixel, vals)
        out = out / cover.sum(1, dtype=out.dtype).reshape(-1, 1).clamp_min(1)
    return out.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------ the original's sampling


def resize_masks_nearest(masks: Tensor, height: int, width: int) -> Tensor:
    """Masks [B, K, H, W] -> [B, K, h, w] as TF1's resize_images(NEAREST_NEIGHBOR) without
    half-pixel centres: output pixel i takes input pixel floor(i * H / h), i.e. every
    2^k-th row and column (0, 2^k, 2 * 2^k, ...) at pyramid level k."""
    big_h, big_w = masks.shape[-2:]
    if (big_h, big_w) == (height, width):
        return masks
    rows = torch.arange(height, device=masks.device) * big_h // height
    cols = torch.arange(width, device=masks.device) * big_w // width
    return masks.index_select(-2, rows).index_select(-1, cols)


def _round_half_away(x: Tensor) -> Tensor:
    """std::round: halves away from zero (torch.round rounds them to even)."""
    whole = x.trunc()
    return whole + torch.sign(x) * ((x - whole).abs() >= 0.5)


def warp_parts_nearest(feat: Tensor, affines: Tensor, masks: Tensor, valid: Tensor,
                       agg: str = "max", scale: float = 1.0) -> Tensor:
    """The original's deformable skip: tf.contrib.image.transform (NEAREST) per part, times
    the part's mask, combined over all K parts.

    feat [B, C, h, w]; affines [B, K, 2, 3] pixel affines at the full resolution (target
    (x, y, 1) -> source (x, y), top-left pixel convention); masks [B, K, h, w] at this level
    (resize_masks_nearest; the masks each part's map is multiplied by); valid [B, K] (an
    invalid part samples nothing: zeros, as the original's far-off transform); scale = 2^k,
    the level's downsampling factor: its translation is divided by it, the linear part kept.
    Output pixel (x, y) reads input (round(a0 x + a1 y + a2 / 2^k), round(b0 x + b1 y +
    b2 / 2^k)) in float32 (round half away from zero), zero outside the map. "max": the
    element-wise max over all K mask-multiplied maps, zeros included; "avg": their sum divided by the number of
    masks covering the pixel, 0 where none does. Differentiable w.r.t. feat only.
    Returns [B, C, h, w] in feat's dtype.
    """
    if agg not in ("max", "avg"):
        raise ValueError(f"warp_parts_nearest: agg must be 'max' or 'avg', got {agg!r}")
    b, c, h, w = feat.shape
    k = affines.shape[1]
    if affines.shape != (b, k, 2, 3) or masks.shape != (b, k, h, w) or valid.shape != (b, k):
        raise ValueError(f"warp_parts_nearest: inconsistent shapes feat {tuple(feat.shape)}, "
                         f"affines {tuple(affines.shape)}, masks {tuple(masks.shape)}, "
                         f"valid {tuple(valid.shape)}")
    a = affines.float()
    xs = torch.arange(w, dtype=a.dtype, device=a.device)
    ys = torch.arange(h, dtype=a.dtype, device=a.device)[:, None]
    shift = a[..., 2] / scale  # [B, K, 2]

    def coord(row: int) -> Tensor:  # ((a0 x) + (a1 y)) + a2 / 2^k, TF's order  [B, K, h, w]
        lin = a[..., row, 0, None, None] * xs + a[..., row, 1, None, None] * ys
        return _round_half_away(lin + shift[..., row, None, None])

    src_x, src_y = coord(0), coord(1)
    keep = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h) & (masks > 0) \
        & valid[..., None, None]
    # Pixels a part does not keep read an appended zero (index h*w): no mask multiply.
    index = torch.where(keep, src_y * w + src_x, h * w).long()  # [B, K, h, w]
    flat = torch.cat([feat.reshape(b, c, h * w), feat.new_zeros(b, c, 1)], 2)
    sampled = flat.gather(2, index.view(b, 1, k * h * w).expand(b, c, k * h * w))
    sampled = sampled.view(b, c, k, h, w)
    if agg == "max":
        # max(dim) sends a tie's gradient to one part (TF's reduce_max splits it): the same
        # feature gradient whenever the tied parts read the same pixel, and a far cheaper
        # backward than amax's tie counting over the K-fold stack.
        return sampled.max(2).values
    count = (masks > 0).sum(1, keepdim=True, dtype=feat.dtype)  # every drawn mask counts
    out = sampled.sum(2) / count.clamp_min(1)
    return torch.where(count > 0, out, torch.zeros((), dtype=out.dtype, device=out.device))
