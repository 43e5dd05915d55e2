"""Part geometry for the deformable skip connections: body-part masks and affines.

For a source pose (the appearance image) and a target pose (the pose to generate), each body
part gets a binary mask drawn on the TARGET pose and an affine transform mapping a target
pixel (x, y, 1) to the source pixel (x, y) its appearance should be taken from.

Parts (mode "parts", K = 10), see method.md "Deformable skip connections":
    0 torso  whole-image mask; affine fitted on R-hip, L-hip, L-shoulder, R-shoulder
    1 head   axis-aligned square (half side 0.4 s) around the mean of the target's head
             joints; affine over the head joints present in both poses plus both shoulders
    2-9      R/L thigh, R/L shin, R/L upper arm, R/L forearm: a box along the segment,
             0.1 of its length behind the first joint, 0.1 (thigh, upper arm) or 0.5 (shin,
             forearm) beyond the second, half width 0.2 s; affine over its 4 corners (the
             source borrows the mirrored limb when it lacks the limb)
with s = sqrt((|Rhip-Rsho|^2 + |Lhip-Lsho|^2) / 2) the body scale of each pose.
affine_fit (model.affine_fit): "dlt" = the original's skimage 0.13 normalised DLT, "lstsq" =
least squares (pipeline.model.affine_fit). part_masks (model.part_masks): "original" = the
original's raster (pipeline.model.part_polygons: far end extended from the already-extended
segment, PNPOLY half-open boundaries, int-truncated head square; masks drawn wherever the
target has the part, float64); "rect" = closed rectangles of the sizes above (float32).
Mode "global" (K = 1): whole-image mask and one affine over every joint present in both
poses (identity when that fit is impossible).

Everything is batched torch on the keypoints' device: all B*K fits are solved at once in
closed form, masks come from vectorised comparisons. No per-sample loops and no host
synchronisation, so it runs inside a training step at negligible cost (bench/bench_geometry.py).

Keypoints: float [B, 18, 2] as (x, y) pixels of the model's input resolution (pixel at row i,
column j has x = j, y = i), OpenPose-18 order (pipeline.core.keypoints.JOINTS), -1 when missing.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from pipeline.core.keypoints import J, NUM_JOINTS
from pipeline.model.affine_fit import (
    DLT_MIN_SPREAD_RATIO, MIN_SPREAD_RATIO, fit_affine_dlt, fit_affine_lstsq,
)
from pipeline.model.part_polygons import (
    head_squares, limb_polygons, rasterise_polygons, sqrt_rn,
)

PART_NAMES: tuple[str, ...] = (
    "torso", "head",
    "r_thigh", "l_thigh", "r_shin", "l_shin",
    "r_upper_arm", "l_upper_arm", "r_forearm", "l_forearm",
)
NUM_PARTS = len(PART_NAMES)

TORSO_JOINTS = (J["r_hip"], J["l_hip"], J["l_shoulder"], J["r_shoulder"])
HEAD_JOINTS = (J["nose"], J["r_eye"], J["l_eye"], J["r_ear"], J["l_ear"])
SHOULDERS = (J["r_shoulder"], J["l_shoulder"])
# Limbs in PART_NAMES[2:] order: (first joint, second joint, extension beyond the second).
LIMBS = (
    (J["r_hip"], J["r_knee"], 0.1), (J["l_hip"], J["l_knee"], 0.1),
    (J["r_knee"], J["r_ankle"], 0.5), (J["l_knee"], J["l_ankle"], 0.5),
    (J["r_shoulder"], J["r_elbow"], 0.1), (J["l_shoulder"], J["l_elbow"], 0.1),
    (J["r_elbow"], J["r_wrist"], 0.5), (J["l_elbow"], J["l_wrist"], 0.5),
)
LIMB_MIRROR = (1, 0, 3, 2, 5, 4, 7, 6)  # index of the L<->R twin within LIMBS
BEHIND = 0.1       # rectangle extension behind the first joint, fraction of the limb length
LIMB_HALF_WIDTH = 0.2  # fraction of the body scale s
HEAD_HALF_SIDE = 0.4   # fraction of the body scale s
_EPS = 1e-6
FITS = {"dlt": fit_affine_dlt, "lstsq": fit_affine_lstsq}
PART_MASKS = ("original", "rect")
# The original's far-end extensions (of the already-extended segment): masks use 0.5 for
# shins and forearms, the affines' polygons 0.3 (the same affine: both corner sets are the
# same affine combination of the joints in both poses).
ORIGINAL_MASK_INC = (0.1, 0.1, 0.5, 0.5, 0.1, 0.1, 0.5, 0.5)
ORIGINAL_FIT_INC = (0.1, 0.1, 0.3, 0.3, 0.1, 0.1, 0.3, 0.3)


class PartGeometry(NamedTuple):
    masks: Tensor    # [B, K, H, W] float in {0, 1}, drawn on the target pose; zero when invalid
    affines: Tensor  # [B, K, 2, 3] float: target pixel (x, y, 1) -> source pixel (x, y)
    valid: Tensor    # [B, K] bool


@functools.lru_cache(maxsize=None)
def _constants(device: torch.device) -> dict[str, Tensor]:
    """Index and constant tensors, built once per device: creating them from Python lists
    on every call would be a host-to-device copy, which synchronises a CUDA stream."""
    values = {
        "sides": [[J["r_hip"], J["r_shoulder"]], [J["l_hip"], J["l_shoulder"]]],
        "limb_a": [limb[0] for limb in LIMBS],
        "limb_b": [limb[1] for limb in LIMBS],
        "mirror": list(LIMB_MIRROR),
        "torso": list(TORSO_JOINTS),
        "head": list(HEAD_JOINTS + SHOULDERS),
    }
    out = {k: torch.tensor(v, dtype=torch.long).to(device) for k, v in values.items()}
    out["limb_ext"] = torch.tensor([limb[2] for limb in LIMBS]).to(device)
    out["mask_inc"] = torch.tensor(ORIGINAL_MASK_INC, dtype=torch.float64).to(device)
    out["fit_inc"] = torch.tensor(ORIGINAL_FIT_INC, dtype=torch.float64).to(device)
    out["x_axis"] = torch.tensor([1.0, 0.0]).to(device)
    return out


def joints_present(kp: Tensor) -> Tensor:
    """[B, 18, 2] -> bool [B, 18]: joints whose coordinates are not -1."""
    return (kp[..., 0] >= 0) & (kp[..., 1] >= 0)


def body_scale(kp: Tensor, present: Tensor, exact: bool = False) -> tuple[Tensor, Tensor]:
    """Body scale s [B] (see module doc) and whether it is defined [B] bool (exact: the
    square root rounded as NumPy's, for the original's masks).

    With one hip-shoulder side missing the other side alone gives s; with both missing s is
    undefined (and the parts sized by it are missing)."""
    sides = _constants(kp.device)["sides"]
    d2 = (kp[:, sides[:, 0]] - kp[:, sides[:, 1]]).square().sum(-1)  # [B, 2]
    ok = present[:, sides[:, 0]] & present[:, sides[:, 1]]  # [B, 2]
    n = ok.sum(-1)
    mean = (d2 * ok).sum(-1) / n.clamp_min(1)
    s = sqrt_rn(mean) if exact else mean.sqrt()
    return s, (n > 0) & (s > _EPS)


def fit_affine(tgt: Tensor, src: Tensor, weight: Tensor, min_ratio: float | None = None,
               method: str = "lstsq") -> tuple[Tensor, Tensor]:
    """Batched affines mapping tgt points onto src points (pipeline.model.affine_fit).

    tgt, src: [..., N, 2]; weight: [..., N] (0 drops a point). method "lstsq" (ordinary least
    squares) or "dlt" (the original's skimage 0.13 normalised DLT). Returns (A [..., 2, 3],
    ok [...]): a fit needs >= 3 points and non-collinear point clouds in both poses (spread
    ratio >= min_ratio, scale-free; None = the method's default: MIN_SPREAD_RATIO for lstsq,
    DLT_MIN_SPREAD_RATIO, i.e. only numerically singular fits, for dlt); otherwise ok is
    False and A is the identity."""
    if method not in FITS:
        raise ValueError(f"fit_affine: method (model.affine_fit) must be one of {tuple(FITS)}, "
                         f"got {method!r}")
    if min_ratio is None:
        min_ratio = DLT_MIN_SPREAD_RATIO if method == "dlt" else MIN_SPREAD_RATIO
    return FITS[method](tgt, src, weight, min_ratio)


def _limb_joints(kp: Tensor, present: Tensor, borrow_mirror: bool):
    """First and second joints [B, 8, 2] of every limb (LIMBS order) and ok [B, 8]. With
    borrow_mirror, a limb whose joints are missing uses its L<->R twin's (the source rule)."""
    const = _constants(kp.device)
    a_idx, b_idx = const["limb_a"], const["limb_b"]
    a, b = kp[:, a_idx], kp[:, b_idx]
    ok = present[:, a_idx] & present[:, b_idx]
    if borrow_mirror:
        mirror = const["mirror"]
        use_twin = ~ok & ok[:, mirror]
        a = torch.where(use_twin[..., None], a[:, mirror], a)
        b = torch.where(use_twin[..., None], b[:, mirror], b)
        ok = ok | use_twin
    return a, b, ok


def _limb_frames(kp: Tensor, present: Tensor, s: Tensor, s_ok: Tensor, borrow_mirror: bool):
    """Limb rectangles of one pose ("rect" masks), in LIMBS order.

    Returns centre [B, 8, 2], unit axis [B, 8, 2], half length [B, 8], half width [B, 8],
    corners [B, 8, 4, 2] and ok [B, 8]."""
    a, b, ok = _limb_joints(kp, present, borrow_mirror)
    ext = _constants(kp.device)["limb_ext"]
    seg = b - a
    length = seg.norm(dim=-1)
    axis = seg / length.clamp_min(_EPS).unsqueeze(-1)
    normal = torch.stack([-axis[..., 1], axis[..., 0]], -1)
    # The rectangle spans [-BEHIND * L, (1 + ext) * L] along the axis from the first joint.
    half_len = length * (1 + ext + BEHIND) / 2
    centre = a + axis * (length * (1 + ext - BEHIND) / 2).unsqueeze(-1)
    half_w = (LIMB_HALF_WIDTH * s).unsqueeze(-1).expand_as(length)
    along, across = axis * half_len.unsqueeze(-1), normal * half_w.unsqueeze(-1)
    corners = torch.stack([centre - along - across, centre - along + across,
                           centre + along + across, centre + along - across], -2)
    ok = ok & s_ok.unsqueeze(-1) & (length > _EPS)
    return centre, axis, half_len, half_w, corners, ok


def rectangle_masks(centre: Tensor, axis: Tensor, half_len: Tensor, half_w: Tensor,
                    height: int, width: int) -> Tensor:
    """Oriented rectangles [B, P] (centre [B, P, 2], unit axis [B, P, 2], half extents [B, P];
    inf extents give the whole image) rasterised to float {0, 1} masks [B, P, H, W].

    Pixel centres on the border count as inside. The projections of the pixel grid on each
    rectangle's axes are separable (a column term plus a row term), so only two full-size
    buffers are allocated and the rest is done in place."""
    ys = torch.arange(height, dtype=centre.dtype, device=centre.device).view(1, 1, -1, 1)
    xs = torch.arange(width, dtype=centre.dtype, device=centre.device).view(1, 1, 1, -1)
    dx = xs - centre[..., 0, None, None]  # [B, P, 1, W]
    dy = ys - centre[..., 1, None, None]  # [B, P, H, 1]
    ax, ay = axis[..., 0, None, None], axis[..., 1, None, None]
    tol = 1e-4  # keeps pixels exactly on the border inside despite rounding
    inside = (dx * ax + dy * ay).abs_().le_(half_len[..., None, None] + tol)
    across = (dy * ax - dx * ay).abs_().le_(half_w[..., None, None] + tol)
    return inside.mul_(across)


def part_geometry(kp_src: Tensor, kp_tgt: Tensor, height: int, width: int,
                  mode: str = "parts", min_ratio: float | None = None,
                  affine_fit: str = "dlt", part_masks: str = "original") -> PartGeometry:
    """Masks [B, K, H, W], affines [B, K, 2, 3] (target -> source pixels), valid [B, K].

    kp_src, kp_tgt: [B, 18, 2] (x, y) pixels, -1 missing. mode "parts" (K = 10) or "global"
    (K = 1); "none" means no warping and is handled by the generator. affine_fit "dlt" (the
    original's skimage fit) or "lstsq"; part_masks "original" (the original's polygons and
    head square) or "rect" (module doc). Invalid parts (missing in the target or source, or
    a singular fit) have an identity affine and must sample nothing. Their masks: "rect"
    empties them; "original" keeps every mask the target pose draws (the torso always, the
    head when the target has a head joint, a limb when the target has both its joints), as
    the original did, whose missing-part transform then warps only zeros into it.
    """
    if kp_src.shape != kp_tgt.shape or kp_src.ndim != 3 or kp_src.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"part_geometry: expected keypoints [B, {NUM_JOINTS}, 2] for both poses, "
                         f"got {tuple(kp_src.shape)} and {tuple(kp_tgt.shape)}")
    if mode not in ("parts", "global"):
        raise ValueError(f"part_geometry: mode must be 'parts' or 'global', got {mode!r}")
    if affine_fit not in FITS or part_masks not in PART_MASKS:
        raise ValueError(f"part_geometry: affine_fit must be one of {tuple(FITS)} and "
                         f"part_masks one of {PART_MASKS}, got {affine_fit!r}, {part_masks!r}")
    # float32 even inside a mixed-precision step: half-precision matmuls would cost pixels;
    # the original's masks are float64, as the NumPy code computed them.
    dtype = torch.float64 if part_masks == "original" else torch.float32
    with torch.autocast(kp_src.device.type, enabled=False):
        geo = _part_geometry(kp_src.to(dtype), kp_tgt.to(dtype), height, width, mode,
                             min_ratio, affine_fit, part_masks)
    return PartGeometry(geo.masks.float(), geo.affines.float(), geo.valid)


def _pad(x: Tensor, n_pts: int) -> Tensor:
    """[B, P, n, ...] -> [B, P, n_pts, ...], padded with zeros (weight 0 in the fits)."""
    extra = n_pts - x.shape[2]
    return torch.cat([x, x.new_zeros(x.shape[:2] + (extra,) + x.shape[3:])], 2)


def _part_geometry(src: Tensor, tgt: Tensor, height: int, width: int, mode: str,
                   min_ratio: float | None, affine_fit: str, part_masks: str) -> PartGeometry:
    p_src, p_tgt = joints_present(src), joints_present(tgt)
    both = p_src & p_tgt
    batch = src.shape[0]
    if mode == "global":
        affine, _ = fit_affine(tgt, src, both, min_ratio, affine_fit)  # identity if impossible
        valid = torch.ones(batch, 1, dtype=torch.bool, device=src.device)
        ones = torch.ones(batch, 1, height, width, device=src.device)
        return PartGeometry(ones, affine.unsqueeze(1), valid)

    exact = part_masks == "original"
    s_src, s_src_ok = body_scale(src, p_src, exact)
    s_tgt, s_tgt_ok = body_scale(tgt, p_tgt, exact)
    n_pts = len(HEAD_JOINTS) + len(SHOULDERS)  # the largest point set (head); others padded
    const = _constants(src.device)
    torso, head = const["torso"], const["head"]  # torso: its 4 joints present in both poses
    head_t = p_tgt[:, head[: len(HEAD_JOINTS)]]  # [B, 5] head joints the target draws
    head_ok = head_t.any(-1) & s_tgt_ok  # the fit: head joints in both + shoulders

    if part_masks == "rect":
        c_t, axis_t, hl_t, hw_t, corners_t, limb_ok_t = _limb_frames(tgt, p_tgt, s_tgt,
                                                                     s_tgt_ok, False)
        _, _, _, _, corners_s, limb_ok_s = _limb_frames(src, p_src, s_src, s_src_ok, True)
    else:
        a_t, b_t, limb_ok_t = _limb_joints(tgt, p_tgt, False)
        a_s, b_s, limb_ok_s = _limb_joints(src, p_src, True)
        corners_t = limb_polygons(a_t, b_t, s_tgt, const["fit_inc"])
        corners_s = limb_polygons(a_s, b_s, s_src, const["fit_inc"])
        # A zero-length limb has a degenerate polygon (empty mask, singular fit).
        limb_ok_t = limb_ok_t & s_tgt_ok[:, None] & ((b_t - a_t).abs().sum(-1) > 0)
        limb_ok_s = limb_ok_s & s_src_ok[:, None]
    limb_w = (limb_ok_t & limb_ok_s).unsqueeze(-1).expand(-1, -1, 4)

    pts_t = torch.cat([_pad(tgt[:, torso][:, None], n_pts), tgt[:, head][:, None],
                       _pad(corners_t, n_pts)], 1)
    pts_s = torch.cat([_pad(src[:, torso][:, None], n_pts), src[:, head][:, None],
                       _pad(corners_s, n_pts)], 1)
    weights = torch.cat([_pad(both[:, torso][:, None], n_pts), both[:, head][:, None],
                         _pad(limb_w, n_pts)], 1)
    affines, fit_ok = fit_affine(pts_t, pts_s, weights, min_ratio, affine_fit)  # [B, K, ...]

    drawn = torch.cat([torch.ones_like(head_ok)[:, None], head_ok[:, None], limb_ok_t], 1)
    valid = drawn & fit_ok
    if part_masks == "original":
        limbs = rasterise_polygons(limb_polygons(a_t, b_t, s_tgt, const["mask_inc"]),
                                   height, width)  # [B, 8, H, W]
        head_sq = head_squares(tgt[:, head[: len(HEAD_JOINTS)]], head_t, s_tgt, height, width)
        torso_m = torch.ones(batch, 1, height, width, dtype=torch.bool, device=src.device)
        masks = torch.cat([torso_m, head_sq[:, None], limbs], 1) & drawn[..., None, None]
        return PartGeometry(masks, affines, valid)

    # "rect": oriented rectangles in the target frame; the torso's is infinite (whole image).
    head_centre = (tgt[:, head[: len(HEAD_JOINTS)]] * head_t[..., None]).sum(1) \
        / head_t.sum(-1).clamp_min(1)[:, None]
    x_axis = const["x_axis"].to(src.dtype).expand(batch, 1, 2)
    head_half = (HEAD_HALF_SIDE * s_tgt)[:, None]
    inf = torch.full_like(head_half, float("inf"))
    masks = rectangle_masks(
        torch.cat([torch.zeros_like(head_centre[:, None]), head_centre[:, None], c_t], 1),
        torch.cat([x_axis, x_axis, axis_t], 1),
        torch.cat([inf, head_half, hl_t], 1), torch.cat([inf, head_half, hw_t], 1),
        height, width)
    return PartGeometry(masks.mul_(valid[..., None, None]), affines, valid)
