"""Warping features part by part: pixel semantics, pyramid levels, aggregation, offsets."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.model.warp import (
    affine_to_grid_theta, resize_masks, resize_masks_nearest, sampling_grid, warp_parts,
    warp_parts_nearest,
)

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 32, 16



def translation(dx: float, dy: float, batch: int = 1, parts: int = 1) -> torch.Tensor:
    """Target -> source pixel affine: the target pixel (x, y) takes source (x + dx, y + dy)."""
    return torch.tensor([[1.0, 0.0, dx], [0.0, 1.0, dy]]).expand(batch, parts, 2, 3)


def whole(batch: int = 1, parts: int = 1):
    return torch.ones(batch, parts, H, W), torch.ones(batch, parts, dtype=torch.bool)


@pytest.mark.parametrize("scale", [1, 2])
def test_integer_shift_moves_features_at_two_resolutions(scale):
    gen = torch.Generator().manual_seed(0)
    h, w = H // scale, W // scale
    feat = torch.randn(2, 3, h, w, generator=gen)
    theta = affine_to_grid_theta(translation(4.0, 6.0, batch=2), H, W)  # full-res pixels
    masks, valid = whole(2)
    out = warp_parts(feat, theta, masks, valid, "max")
    dx, dy = 4 // scale, 6 // scale  # the same physical shift at the coarser level
    torch.testing.assert_close(out[..., : h - dy, : w - dx], feat[..., dy:, dx:],
                               atol=1e-5, rtol=0)
    assert (out[..., h - dy:, :] == 0).all()  # sampled outside the source: zeros padding


def test_sampling_grid_matches_affine_grid():
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(2, 3, 2, 3, generator=gen)
    offset = torch.randn(2, 2, 8, 4, generator=gen) * 0.1
    ref = F.affine_grid(theta.flatten(0, 1), [6, 1, 8, 4], align_corners=False).view(2, 3, 8, 4, 2)
    torch.testing.assert_close(sampling_grid(theta, 8, 4), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(sampling_grid(theta, 8, 4, offset),
                               ref + offset.permute(0, 2, 3, 1)[:, None], atol=1e-6, rtol=0)


def test_identity_affine_is_identity_theta():
    theta = affine_to_grid_theta(translation(0.0, 0.0, 2, 3), H, W)
    torch.testing.assert_close(theta, torch.eye(2, 3).expand(2, 3, 2, 3))


def test_offset_in_normalised_units_shifts_like_the_affine():
    feat = torch.randn(1, 2, H, W, generator=torch.Generator().manual_seed(2))
    masks, valid = whole()
    identity = affine_to_grid_theta(translation(0.0, 0.0), H, W)
    offset = torch.zeros(1, 2, H, W)
    offset[:, 0] = 2 * 3 / W  # three pixels to the right, in normalised units
    by_offset = warp_parts(feat, identity, masks, valid, "max", offset)
    by_affine = warp_parts(feat, affine_to_grid_theta(translation(3.0, 0.0), H, W),
                           masks, valid, "max")
    torch.testing.assert_close(by_offset, by_affine, atol=1e-5, rtol=0)


def test_max_and_avg_combine_covering_parts_only():
    feat = -torch.ones(1, 1, H, W)  # negative features must survive the max
    feat[..., :, W // 2:] = -3.0
    theta = affine_to_grid_theta(translation(0.0, 0.0, 1, 2), H, W)
    masks = torch.zeros(1, 2, H, W)
    masks[0, 0, : H // 2] = 1  # top half
    masks[0, 1, H // 4: 3 * H // 4] = 1  # middle, overlapping the top half
    valid = torch.ones(1, 2, dtype=torch.bool)
    out_max = warp_parts(feat, theta, masks, valid, "max")[0, 0]
    out_avg = warp_parts(feat, theta, masks, valid, "avg")[0, 0]
    covered = masks.amax(1)[0] > 0
    torch.testing.assert_close(out_max[covered], feat[0, 0][covered])
    torch.testing.assert_close(out_avg[covered], feat[0, 0][covered])
    assert (out_max[~covered] == 0).all() and (out_avg[~covered] == 0).all()

    # Two parts sampling different places: max picks the larger, avg their mean.
    theta2 = affine_to_grid_theta(torch.stack([translation(0.0, 0.0)[0, 0],
                                               translation(W / 2, 0.0)[0, 0]])[None], H, W)
    ramp = torch.arange(W, dtype=torch.float32).expand(1, 1, H, W).contiguous()
    both = torch.ones(1, 2, H, W)
    m = warp_parts(ramp, theta2, both, valid, "max")[0, 0, :, : W // 2]
    a = warp_parts(ramp, theta2, both, valid, "avg")[0, 0, :, : W // 2]
    torch.testing.assert_close(m, ramp[0, 0, :, W // 2:])
    torch.testing.assert_close(a, ramp[0, 0, :, : W // 2] + W / 4)


def test_invalid_part_samples_nothing():
    feat = torch.rand(1, 2, H, W) + 1
    theta = affine_to_grid_theta(translation(0.0, 0.0, 1, 2), H, W)
    masks = torch.ones(1, 2, H, W)
    out = warp_parts(feat, theta, masks, torch.tensor([[False, False]]), "max")
    assert (out == 0).all()
    out = warp_parts(feat, theta, masks, torch.tensor([[True, False]]), "avg")
    torch.testing.assert_close(out, feat)


def test_resize_masks_area_threshold_is_unbiased():
    masks = torch.zeros(1, 1, 8, 8)
    masks[..., 2:6, 2:6] = 1
    small = resize_masks(masks, 4, 4)
    expected = torch.zeros(1, 1, 4, 4)
    expected[..., 1:3, 1:3] = 1
    assert torch.equal(small, expected)
    masks[..., 2:6, 3:6] = 0  # a one-pixel-wide column covers half of a coarse pixel
    assert resize_masks(masks, 4, 4)[0, 0, 1:3, 1].eq(1).all()


def test_gradients_reach_features_and_offset():
    feat = torch.randn(1, 3, H, W, requires_grad=True)
    offset = torch.zeros(1, 2, H, W, requires_grad=True)
    masks, valid = whole()
    theta = affine_to_grid_theta(translation(1.5, -0.5), H, W)
    warp_parts(feat, theta, masks, valid, "max", offset).square().sum().backward()
    assert feat.grad.abs().sum() > 0 and offset.grad.abs().sum() > 0


def test_channels_last_and_autocast():
    feat = torch.randn(2, 4, H, W)
    theta = affine_to_grid_theta(translation(2.0, 1.0, 2, 3), H, W)
    masks = (torch.rand(2, 3, H, W) > 0.5).float()
    valid = torch.ones(2, 3, dtype=torch.bool)
    ref = warp_parts(feat, theta, masks, valid, "max")
    cl = warp_parts(feat.to(memory_format=torch.channels_last), theta, masks, valid, "max")
    torch.testing.assert_close(cl, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = warp_parts(feat.bfloat16(), theta, masks, valid, "avg")
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), warp_parts(feat, theta, masks, valid, "avg"),
                               atol=0.05, rtol=0.02)


def test_bad_arguments():
    masks, valid = whole()
    theta = affine_to_grid_theta(translation(0.0, 0.0), H, W)
    with pytest.raises(ValueError, match="agg"):
        warp_parts(torch.zeros(1, 1, H, W), theta, masks, valid, "sum")
    with pytest.raises(ValueError, match="shapes"):
        warp_parts(torch.zeros(2, 1, H, W), theta, masks, valid, "max")


@pytest.mark.parametrize("agg", ["max", "avg"])
def test_gradcheck_features_and_offset(agg):
    gen = torch.Generator().manual_seed(3)
    h, w = 8, 4
    feat = torch.randn(1, 2, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    offset = (torch.rand(1, 2, h, w, generator=gen, dtype=torch.float64) * 0.2 - 0.1)
    offset.requires_grad_(True)
    theta = affine_to_grid_theta(translation(0.3, -0.2, 1, 2).double(), h, w).double()
    masks = torch.ones(1, 2, h, w, dtype=torch.float64)
    masks[0, 1, : h // 2] = 0
    valid = torch.ones(1, 2, dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda f, o: warp_parts(f, theta, masks, valid, agg, o), (feat, offset))


# ------------------------------------------------------- the original's nearest sampling


def test_resize_masks_nearest_takes_every_2k_th_pixel():
    masks = torch.arange(2 * 3 * 16 * 8, dtype=torch.float32).view(2, 3, 16, 8)
    for k in range(4):
        f = 2 ** k
        torch.testing.assert_close(resize_masks_nearest(masks, 16 // f, 8 // f),
                                   masks[..., ::f, ::f])
    assert resize_masks_nearest(masks, 16, 8) is masks


def _round_away(v: float) -> int:
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def nearest_reference(feat, affines, masks, valid, agg, scale):
    """Loops: every part, every output pixel, tf.contrib.image.transform NEAREST by hand."""
    b, c, h, w = feat.shape
    k = affines.shape[1]
    maps = torch.zeros(b, k, c, h, w)
    for i in range(b):
        for p in range(k):
            (a0, a1, a2), (b0, b1, b2) = affines[i, p].tolist()
            for y in range(h):
                for x in range(w):
                    sx = _round_away(a0 * x + a1 * y + a2 / scale)
                    sy = _round_away(b0 * x + b1 * y + b2 / scale)
                    if 0 <= sx < w and 0 <= sy < h and valid[i, p]:
                        maps[i, p, :, y, x] = feat[i, :, sy, sx] * masks[i, p, y, x]
    if agg == "max":
        return maps.amax(1)
    count = masks.sum(1, keepdim=True)
    return torch.where(count > 0, maps.sum(1) / count.clamp_min(1), torch.zeros(()))


@pytest.mark.parametrize("agg", ["max", "avg"])
def test_nearest_warp_matches_hand_computed_case_at_every_level(agg):
    full_h, full_w = 16, 8
    affines = torch.tensor([[[[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]],     # shift (2, 1) px
                             [[0.0, -1.0, 6.0], [1.0, 0.0, -1.5]],   # a rotation
                             [[1.0, 0.0, -0.5], [0.0, 1.0, 0.5]],    # halves: away from 0
                             [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])  # invalid: samples zeros
    valid = torch.tensor([[True, True, True, False]])
    masks = torch.zeros(1, 4, full_h, full_w)
    masks[0, 0] = 1  # whole image, as the torso
    masks[0, 1, 2:10, 1:6] = 1
    masks[0, 2, ::3] = 1
    masks[0, 3, 4:, :4] = 1  # drawn, but its part is invalid
    for level in range(4):
        f = 2 ** level
        h, w = full_h // f, full_w // f
        feat = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(level))
        lm = resize_masks_nearest(masks, h, w)
        out = warp_parts_nearest(feat, affines, lm, valid, agg, float(f))
        torch.testing.assert_close(out, nearest_reference(feat, affines, lm, valid, agg, f),
                                   msg=f"level {level}")
    # Spot values at level 1 (scale 2), part 0 alone: pixel (x, y) reads (x + 1, round(y + 0.5)).
    feat = torch.arange(32.0).view(1, 1, 8, 4) + 1
    one = warp_parts_nearest(feat, affines[:, :1], torch.ones(1, 1, 8, 4), valid[:, :1], "max", 2.0)
    assert one[0, 0, 0, 0] == feat[0, 0, 1, 1] and one[0, 0, 2, 2] == feat[0, 0, 3, 3]
    assert one[0, 0, 0, 3] == 0 and one[0, 0, 7, 0] == 0  # read outside the map: zero


def test_nearest_warp_gradients_reach_features_and_split_ties():
    feat = torch.randn(1, 2, 8, 4, generator=torch.Generator().manual_seed(4), requires_grad=True)
    eye = torch.eye(2, 3).expand(1, 2, 2, 3)
    valid = torch.ones(1, 2, dtype=torch.bool)
    # Two identical covering parts: every value is a tie, and whichever part takes the
    # gradient (TF's reduce_max splits it) it reaches the same feature pixel: 1 everywhere.
    warp_parts_nearest(feat, eye, torch.ones(1, 2, 8, 4), valid).sum().backward()
    torch.testing.assert_close(feat.grad, torch.ones_like(feat))
    # Part 1 not covering: its zeros join the max, so negative features lose to 0.
    feat.grad = None
    masks = torch.stack([torch.ones(8, 4), torch.zeros(8, 4)])[None]
    warp_parts_nearest(feat, eye, masks, valid).sum().backward()
    torch.testing.assert_close(feat.grad, (feat > 0).float())


# --------------------------------------------- sparse bilinear warp == dense (issue 9)


@pytest.mark.parametrize("agg", ["max", "avg"])
@pytest.mark.parametrize("ties", [False, True])
def test_sparse_bilinear_equals_dense_forward_and_gradients(agg, ties):
    gen = torch.Generator().manual_seed(7)
    b, c, k = 3, 4, 10
    feat = torch.randn(b, c, H, W, generator=gen, dtype=torch.float64, requires_grad=True)
    affines = torch.eye(2, 3, dtype=torch.float64).expand(b, k, 2, 3).clone()
    if not ties:  # identical affines make every part sample the same values: exact ties
        affines = affines + torch.randn(b, k, 2, 3, generator=gen, dtype=torch.float64) * 0.1
        affines[..., 2] *= 30
    theta = affine_to_grid_theta(affines, H, W)
    masks = (torch.rand(b, k, H, W, generator=gen) > 0.6).double()
    masks[:, 0] = 1
    valid = torch.rand(b, k, generator=gen) > 0.2
    valid[0, 0] = False  # no torso in one sample
    offset = (torch.randn(b, 2, H, W, generator=gen, dtype=torch.float64) * 0.05).requires_grad_()
    weight = torch.randn(b, c, H, W, generator=gen, dtype=torch.float64)
    results = []
    for sparse in (False, True):
        out = warp_parts(feat, theta, masks, valid, agg, offset, sparse=sparse)
        grads = torch.autograd.grad((out * weight).sum(), [feat, offset])
        results.append((out, *grads))
    for dense, sparse in zip(*results):
        torch.testing.assert_close(sparse, dense, atol=1e-12, rtol=1e-12)


def test_sparse_bilinear_equals_dense_in_float32_at_a_coarse_level():
    gen = torch.Generator().manual_seed(8)
    feat = torch.randn(2, 8, 16, 8, generator=gen)
    theta = affine_to_grid_theta(torch.eye(2, 3).expand(2, 10, 2, 3)
                                 + torch.randn(2, 10, 2, 3, generator=gen) * 0.05, H, W)
    masks = (torch.rand(2, 10, H, W, generator=gen) > 0.7).float()  # resized inside
    valid = torch.ones(2, 10, dtype=torch.bool)
    torch.testing.assert_close(warp_parts(feat, theta, masks, valid, sparse=True),
                               warp_parts(feat, theta, masks, valid, sparse=False))
