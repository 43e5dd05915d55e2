"""Part geometry: affines (target -> source), masks on the target pose, missing parts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.core.keypoints import J
from pipeline.model.geometry import (
    HEAD_JOINTS, LIMBS, NUM_PARTS, PART_NAMES, TORSO_JOINTS, fit_affine, part_geometry,
)
from pipeline.model.part_polygons import limb_polygons, rasterise_polygons
from pipeline.model.warp import affine_to_grid_theta, warp_parts

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 128, 64
RECT = {"affine_fit": "lstsq", "part_masks": "rect"}  # ours
ORIGINAL = {"affine_fit": "dlt", "part_masks": "original"}  # the original code's (default)
# A frontal standing person in a 128 x 64 crop, OpenPose-18 order, (x, y).
BASE = torch.tensor([
    [32, 14], [32, 26], [24, 26], [21, 42], [20, 57], [40, 26], [43, 42], [44, 57],
    [27, 62], [26, 86], [26, 110], [37, 62], [38, 86], [38, 110],
    [30, 12], [34, 12], [28, 13], [36, 13],
], dtype=torch.float32)



def pose(batch: int = 1) -> torch.Tensor:
    return BASE.expand(batch, -1, -1).clone()


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> torch.Tensor:
    a = math.radians(angle_deg)
    return torch.tensor([[scale * math.cos(a), -scale * math.sin(a), shift[0]],
                         [scale * math.sin(a), scale * math.cos(a), shift[1]]])


def apply(affine: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
    out = kp @ affine[:, :2].T + affine[:, 2]
    return torch.where((kp >= 0).all(-1, keepdim=True), out, torch.full_like(out, -1.0))


@pytest.mark.parametrize("opts", [RECT, ORIGINAL])
def test_identical_poses_give_identity_affines(opts):
    geo = part_geometry(pose(2), pose(2), H, W, **opts)
    assert geo.masks.shape == (2, NUM_PARTS, H, W)
    assert geo.affines.shape == (2, NUM_PARTS, 2, 3)
    assert geo.valid.all()
    torch.testing.assert_close(geo.affines, torch.eye(2, 3).expand(2, NUM_PARTS, 2, 3),
                               atol=1e-4, rtol=0)
    assert set(geo.masks.unique().tolist()) <= {0.0, 1.0}
    assert (geo.masks[:, 0] == 1).all()  # torso: the whole image


@pytest.mark.parametrize("opts", [RECT, ORIGINAL])
def test_known_similarity_recovered_target_to_source(opts):
    tgt = pose()
    affine = similarity(20.0, 1.3, (30.0, -7.0))  # source = affine(target)
    src = apply(affine, tgt[0])[None]
    assert (src >= 0).all()  # every joint stays present (no mirrored limbs involved)
    geo = part_geometry(src, tgt, H, W, **opts)
    assert geo.valid.all()
    for k, name in enumerate(PART_NAMES):
        torch.testing.assert_close(geo.affines[0, k], affine, atol=2e-3, rtol=0,
                                   msg=f"part {name}")


def test_global_mode_recovers_affine_and_falls_back_to_identity():
    tgt = pose()
    affine = torch.tensor([[0.9, 0.2, 3.0], [-0.1, 1.1, -4.0]])  # a general affine
    geo = part_geometry(apply(affine, tgt[0])[None], tgt, H, W, mode="global")
    assert geo.masks.shape == (1, 1, H, W) and (geo.masks == 1).all() and geo.valid.all()
    torch.testing.assert_close(geo.affines[0, 0], affine, atol=1e-3, rtol=0)
    few = torch.full_like(tgt, -1.0)
    few[0, :2] = tgt[0, :2]  # only two joints: no affine can be fitted
    geo = part_geometry(few, tgt, H, W, mode="global")
    torch.testing.assert_close(geo.affines[0, 0], torch.eye(2, 3))
    assert geo.valid.all()


def test_limb_masks_cover_their_segment_and_not_far_pixels():
    geo = part_geometry(pose(), pose(), H, W, **RECT)
    scale = (BASE[J["r_hip"]] - BASE[J["r_shoulder"]]).norm()  # both sides equal here
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pixels = torch.stack([xs, ys], -1).float()
    for k, (a, b, ext) in enumerate(LIMBS, start=2):
        mask = geo.masks[0, k]
        pa, pb = BASE[a], BASE[b]
        t = torch.linspace(0, 1, 25)[:, None]
        on = (pa + t * (pb - pa)).round().long()
        assert (mask[on[:, 1], on[:, 0]] == 1).all(), PART_NAMES[k]
        # Distance of every pixel to the segment; beyond the rectangle's reach -> 0.
        seg = pb - pa
        u_raw = (pixels - pa) @ seg / seg.dot(seg)
        u = u_raw.clamp(0, 1)
        dist = (pixels - (pa + u[..., None] * seg)).norm(dim=-1)
        reach = max(ext, 0.1) * seg.norm() + 0.2 * scale * 2 ** 0.5 + 1
        assert (mask[dist > reach] == 0).all(), PART_NAMES[k]
        # Alongside the segment and well within the half width (0.2 s): all inside.
        assert (mask[(u_raw > 0) & (u_raw < 1) & (dist < 0.2 * scale - 1)] == 1).all()
    head = geo.masks[0, 1]
    assert head[13, 32] == 1 and head[100, 32] == 0


def test_limb_mask_extends_further_beyond_shin_than_thigh():
    geo = part_geometry(pose(), pose(), H, W, **RECT)
    r_thigh, r_shin = geo.masks[0, 2], geo.masks[0, 4]
    thigh_rows = torch.nonzero(r_thigh.any(1)).flatten()
    shin_rows = torch.nonzero(r_shin.any(1)).flatten()
    # thigh 62 -> 86 (length 24): up to ~86 + 2.4; shin 86 -> 110: up to 110 + 12.
    assert 87 <= thigh_rows.max() <= 90
    assert 120 <= shin_rows.max() <= 123
    assert 59 <= thigh_rows.min() <= 61  # 10% behind the hip


@pytest.mark.parametrize("opts", [RECT, ORIGINAL])
def test_missing_target_joint_gives_empty_mask_invalid_and_zero_warp(opts):
    tgt = pose()
    tgt[0, J["r_wrist"]] = -1
    geo = part_geometry(pose(), tgt, H, W, **opts)
    k = PART_NAMES.index("r_forearm")
    assert not geo.valid[0, k]
    assert geo.masks[0, k].sum() == 0
    assert geo.valid[0, [i for i in range(NUM_PARTS) if i != k]].all()
    feat = torch.randn(1, 4, H, W) + 5.0
    only = torch.zeros(1, NUM_PARTS, dtype=torch.bool)
    only[0, k] = True
    theta = affine_to_grid_theta(geo.affines, H, W)
    out = warp_parts(feat, theta, geo.masks, geo.valid & only, "max")
    assert (out == 0).all()


def test_missing_source_limb_borrows_mirrored_limb():
    tgt, src = pose(), pose()
    src[0, J["r_knee"]] = -1  # right thigh and shin missing in the source
    geo = part_geometry(src, tgt, H, W, **RECT)
    assert geo.valid.all()
    for part, (a, b), (ma, mb) in (("r_thigh", ("r_hip", "r_knee"), ("l_hip", "l_knee")),
                                   ("r_shin", ("r_knee", "r_ankle"), ("l_knee", "l_ankle"))):
        affine = geo.affines[0, PART_NAMES.index(part)]
        mapped = apply(affine, tgt[0, [J[a], J[b]]])
        torch.testing.assert_close(mapped, src[0, [J[ma], J[mb]]], atol=1e-3, rtol=0)
    src[0, J["l_knee"]] = -1  # no twin either: the thigh is missing
    geo = part_geometry(src, tgt, H, W, **RECT)
    assert not geo.valid[0, PART_NAMES.index("r_thigh")]
    assert geo.masks[0, PART_NAMES.index("r_thigh")].sum() == 0


def test_singular_fit_is_missing():
    tgt, src = pose(), pose()
    # Collinear source torso points: the torso fit is singular.
    src[0, [J["r_hip"], J["l_hip"], J["l_shoulder"], J["r_shoulder"]]] = torch.tensor(
        [[30.0, 60.0], [31.0, 70.0], [32.0, 80.0], [33.0, 90.0]])
    geo = part_geometry(src, tgt, H, W, **RECT)
    assert not geo.valid[0, 0] and geo.masks[0, 0].sum() == 0
    torch.testing.assert_close(geo.affines[0, 0], torch.eye(2, 3))
    assert torch.isfinite(geo.affines).all()


@pytest.mark.parametrize("opts", [RECT, ORIGINAL])
def test_head_missing_in_target(opts):
    tgt = pose()
    tgt[0, [J["nose"], J["r_eye"], J["l_eye"], J["r_ear"], J["l_ear"]]] = -1
    geo = part_geometry(pose(), tgt, H, W, **opts)
    assert not geo.valid[0, 1] and geo.masks[0, 1].sum() == 0


@pytest.mark.parametrize("opts", [RECT, ORIGINAL])
def test_batched_equals_per_sample(opts):
    gen = torch.Generator().manual_seed(0)
    batch = 6
    tgt = pose(batch) + torch.randn(batch, 18, 2, generator=gen) * 2
    src = pose(batch) @ similarity(10.0, 0.9, (0, 0))[:, :2].T + torch.randn(
        batch, 18, 2, generator=gen) * 2 + 3
    drop_t = torch.rand(batch, 18, generator=gen) < 0.15
    drop_s = torch.rand(batch, 18, generator=gen) < 0.15
    tgt[drop_t], src[drop_s] = -1.0, -1.0
    whole = part_geometry(src, tgt, H, W, **opts)
    assert not whole.valid.all() and whole.valid.any()  # the drops hit some parts
    for i in range(batch):
        one = part_geometry(src[i:i + 1], tgt[i:i + 1], H, W, **opts)
        torch.testing.assert_close(whole.affines[i:i + 1], one.affines, atol=1e-4, rtol=1e-4)
        assert torch.equal(whole.valid[i:i + 1], one.valid)
        assert torch.equal(whole.masks[i:i + 1], one.masks)


def test_fit_affine_weights_drop_points():
    tgt = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [50.0, 50.0]])
    affine = similarity(0.0, 2.0, (1.0, 1.0))
    src = apply(affine, tgt)
    src[3] = torch.tensor([-500.0, 900.0])  # an outlier, weighted out
    fitted, ok = fit_affine(tgt, src, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert ok
    torch.testing.assert_close(fitted, affine, atol=1e-4, rtol=0)


def test_float32_inside_autocast():
    tgt = pose(3)
    src = apply(similarity(15.0, 1.2, (30.0, -5.0)), tgt[0]).expand(3, -1, -1)
    ref = part_geometry(src, tgt, H, W)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = part_geometry(src, tgt, H, W)
        theta = affine_to_grid_theta(low.affines, H, W)
    assert low.affines.dtype == theta.dtype == torch.float32
    torch.testing.assert_close(low.affines, ref.affines)
    torch.testing.assert_close(theta, affine_to_grid_theta(ref.affines, H, W))
    assert torch.equal(low.masks, ref.masks)


def test_bad_input_shapes_and_mode():
    with pytest.raises(ValueError, match="keypoints"):
        part_geometry(torch.zeros(1, 17, 2), torch.zeros(1, 17, 2), H, W)
    with pytest.raises(ValueError, match="mode"):
        part_geometry(pose(), pose(), H, W, mode="none")


def test_real_test_pairs_limb_affines_map_joint_to_joint(shared):
    """On real Market-1501 pairs a limb affine maps the target rectangle onto the source one
    exactly, so it sends the target's limb joints onto the source's."""
    from pipeline.core.keypoints import read_annotation_csv

    names, kp = read_annotation_csv(shared("data/market1501-annotations/market-annotation-test.csv"))
    pairs = shared("data/market1501-annotations/market-pairs-test.csv").read_text().splitlines()
    index = {n: i for i, n in enumerate(names)}
    rows = [line.split(",") for line in pairs[1:65]]
    src = torch.from_numpy(kp[[index[a] for a, _ in rows]])
    tgt = torch.from_numpy(kp[[index[b] for _, b in rows]])
    geo = part_geometry(src, tgt, H, W, **RECT)
    assert torch.isfinite(geo.affines).all()
    assert geo.valid[:, 0].float().mean() > 0.9  # usable images have shoulders and hips
    assert (geo.masks.flatten(2).amax(-1) == geo.valid.float()).all()  # valid <=> non-empty
    checked = 0
    for k, (a, b, _) in enumerate(LIMBS, start=2):
        own = geo.valid[:, k] & (src[:, [a, b]] >= 0).all(-1).all(-1)
        for joint in (a, b):
            mapped = (geo.affines[own, k, :, :2] @ tgt[own, joint, :, None]).squeeze(-1) \
                + geo.affines[own, k, :, 2]
            torch.testing.assert_close(mapped, src[own, joint], atol=1e-2, rtol=0)
        checked += int(own.sum())
    assert checked > 200


# ------------------------------------------------------------ the original's masks ("original")


def np_polygon(fr, to, st, inc_to):
    """The original's estimate_polygon(fr, to, st, inc_to, 0.1, 0.2, 0.2), (x, y) points."""
    fr = fr + (fr - to) * 0.1
    to = to + (to - fr) * inc_to
    nv = fr - to
    nv = np.array([-nv[1], nv[0]])
    norm = np.linalg.norm(nv)
    if norm == 0:
        return np.array([fr + 1, fr - 1, to - 1, to + 1])
    nv = nv / norm
    return np.array([fr + st * 0.2 * nv, fr - st * 0.2 * nv, to - st * 0.2 * nv, to + st * 0.2 * nv])


def np_pnpoly_grid(shape, verts):
    """scikit-image 0.13 grid_points_in_poly(shape, verts): PNPOLY at every (r, c) with
    x = r, y = c against the vertices' first and second coordinates."""
    xp, yp = verts[:, 0].astype(np.float64), verts[:, 1].astype(np.float64)
    out = np.zeros(shape, bool)
    for m in range(shape[0]):
        for n in range(shape[1]):
            inside, j = False, len(xp) - 1
            for i in range(len(xp)):
                if ((yp[i] <= n < yp[j]) or (yp[j] <= n < yp[i])) and \
                        m < (xp[j] - xp[i]) * (n - yp[i]) / (yp[j] - yp[i]) + xp[i]:
                    inside = not inside
                j = i
            out[m, n] = inside
    return out


def np_head_square(points, st, shape):
    """The original's head mask: mask_from_kp_array(int(mean), 0.4 st, shape)."""
    centre = np.mean(points, axis=0).astype(int)
    b = int(0.4 * st)
    lo, hi = np.maximum(centre - b, 0), np.minimum(centre + b, shape[::-1])
    mask = np.zeros(shape, bool)
    mask[lo[1]:hi[1], lo[0]:hi[0]] = True
    return mask


def np_original_masks(kp: np.ndarray, shape=(H, W)) -> np.ndarray:
    """pose_masks of one target pose [18, 2] (x, y), -1 missing -> [10, H, W] bool."""
    have = (kp >= 0).all(1)
    st = np.sqrt((np.sum((kp[J["r_hip"]] - kp[J["r_shoulder"]]) ** 2)
                  + np.sum((kp[J["l_hip"]] - kp[J["l_shoulder"]]) ** 2)) / 2.0)
    masks = np.zeros((10,) + shape, bool)
    masks[0] = True
    head = [J[n] for n in ("nose", "r_eye", "l_eye", "r_ear", "l_ear") if have[J[n]]]
    if head:
        masks[1] = np_head_square(kp[head], st, shape)
    for k, (a, b, _) in enumerate(LIMBS, start=2):
        if have[a] and have[b]:
            inc = 0.5 if PART_NAMES[k].endswith(("shin", "forearm")) else 0.1
            masks[k] = np_pnpoly_grid(shape, np_polygon(kp[a], kp[b], st, inc)[:, ::-1])
    return masks


def test_rasterise_polygons_matches_pnpoly_on_random_polygons():
    """Random limbs, including integer joints (edges through grid points), vertical and
    horizontal limbs, limbs leaving the image and zero-length ones."""
    rng = np.random.default_rng(0)
    h, w = 24, 16
    polys = []
    for i in range(40):
        fr = rng.integers(-4, 20, 2).astype(np.float64) if i % 2 else rng.uniform(-4, 20, 2)
        to = fr + (rng.integers(-8, 9, 2) if i % 3 else rng.uniform(-8, 8, 2))
        if i % 7 == 0:
            to[0] = fr[0]  # vertical
        if i % 11 == 0:
            to = fr.copy()  # zero length
        st = float(rng.choice([10.0, 12.5, rng.uniform(3, 30)]))
        polys.append(np_polygon(fr, to, st, float(rng.choice([0.1, 0.5]))))
    corners = torch.from_numpy(np.stack(polys))[None]  # [1, 40, 4, 2]
    got = rasterise_polygons(corners, h, w)[0].numpy()
    for i, poly in enumerate(polys):
        np.testing.assert_array_equal(got[i], np_pnpoly_grid((h, w), poly[:, ::-1]), err_msg=str(i))
    assert got.any(axis=(1, 2)).sum() > 20


def test_limb_polygons_match_the_original_estimate_polygon():
    rng = np.random.default_rng(1)
    fr, to = rng.uniform(0, 60, (2, 3, 8, 2))
    to[0, 0] = fr[0, 0]  # a zero-length limb
    st = rng.uniform(5, 40, 3)
    inc = np.array([0.1, 0.1, 0.5, 0.5, 0.1, 0.1, 0.3, 0.3])
    got = limb_polygons(torch.from_numpy(fr), torch.from_numpy(to), torch.from_numpy(st),
                        torch.from_numpy(inc)).numpy()
    for b in range(3):
        for p in range(8):
            np.testing.assert_allclose(got[b, p], np_polygon(fr[b, p], to[b, p], st[b], inc[p]),
                                       rtol=0, atol=1e-12)


def test_original_masks_equal_the_numpy_transcription_on_jittered_poses():
    gen = torch.Generator().manual_seed(5)
    tgt = (pose(6) + torch.randn(6, 18, 2, generator=gen) * 4).round()  # integer joints
    tgt[1, J["r_wrist"]] = -1
    tgt[2, list(HEAD_JOINTS)] = -1
    tgt[3, J["l_knee"]] = tgt[3, J["l_ankle"]]  # zero-length shin
    geo = part_geometry(pose(6), tgt, H, W, **ORIGINAL)
    for i in range(6):
        np.testing.assert_array_equal(geo.masks[i].bool().numpy(),
                                      np_original_masks(tgt[i].double().numpy()), err_msg=str(i))


def test_original_masks_equal_the_numpy_transcription_on_canonical_poses(shared):
    from pipeline.core.keypoints import read_annotation_csv

    _, kp = read_annotation_csv(shared("data/market1501-annotations/market-annotation-test.csv"))
    have = (kp >= 0).all(-1)
    torso = list(TORSO_JOINTS)
    usable = np.nonzero(have[:, torso].all(-1))[0][:40]  # the original needs s defined
    tgt = torch.from_numpy(kp[usable]).float()
    geo = part_geometry(tgt, tgt, H, W, **ORIGINAL)
    for i, row in enumerate(usable):
        np.testing.assert_array_equal(geo.masks[i].bool().numpy(),
                                      np_original_masks(kp[row].astype(np.float64)), err_msg=str(row))


def test_original_masks_are_drawn_when_only_the_source_lacks_the_part():
    tgt, src = pose(), pose()
    src[0, [J["r_knee"], J["l_knee"]]] = -1  # both thighs and shins: no twin to borrow
    src[0, list(HEAD_JOINTS)] = -1  # no head joint in both poses: no head fit
    geo = part_geometry(src, tgt, H, W, **ORIGINAL)
    for part in ("r_thigh", "l_thigh", "r_shin", "l_shin", "head"):
        k = PART_NAMES.index(part)
        assert not geo.valid[0, k] and geo.masks[0, k].sum() > 0, part
        torch.testing.assert_close(geo.affines[0, k], torch.eye(2, 3))
    assert geo.valid[0, PART_NAMES.index("r_forearm")]
    collinear = pose()
    collinear[0, list(TORSO_JOINTS)] = torch.tensor([[30.0, 60.0], [31.0, 70.0], [32.0, 80.0],
                                                     [33.0, 90.0]])
    geo = part_geometry(collinear, pose(), H, W, **ORIGINAL)
    assert not geo.valid[0, 0] and (geo.masks[0, 0] == 1).all()  # singular: drawn, no sample
