"""Part geometry for the deformable skip connections: body-part masks and affines.

For a source pose (the appearance image) and a target pose (the pose to generate), each body
part gets a binary mask drawn on the TARGET pose and an affine transform mapping a target
pixel (x, y, 1) to the source pixel (x, y) its appearance should be taken from.

Parts (mode "parts", K = 10), see method.md "Deformable skip connections":
    0 torso  whole-image mask; affine = least squares over R-hip, L-hip, L-shoulder, R-shoulder
    1 head   axis-aligned square (half side 0.4 s) around the mean of the head joints present;
             affine over the head joints present in both poses plus both shoulders
    2-9      R/L thigh, R/L shin, R/L upper arm, R/L forearm: a rectangle along the segment,
             0.1 of its length behind the first joint, 0.1 (thigh, upper arm) or 0.5 (shin,
             forearm) beyond the second, half width 0.2 s; affine over its 4 corners
with s = sqrt((|Rhip-Rsho|^2 + |Lhip-Lsho|^2) / 2) the body scale of each pose.
Mode "global" (K = 1): whole-image mask and one least-squares affine over every joint
present in both poses (identity when that fit is impossible).

Everything is batched torch on the keypoints' device (float32): all B*K least-squares fits
are solved at once in closed form, masks come from vectorised distances in each part's
rectangle frame. No per-sample loops and no host synchronisation, so it runs inside a
training step at negligible cost (see bench/bench_geometry.py).

Keypoints: float [B, 18, 2] as (x, y) pixels of the model's input resolution (pixel at row i,
column j has x = j, y = i), OpenPose-18 order (pipeline.keypoints.JOINTS), -1 when missing.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import torch
from torch import Tensor

from pipeline.keypoints import J, NUM_JOINTS

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
# Smallest accepted ratio of the two principal variances of a fit's point cloud (in either
# pose): below it the points are (nearly) collinear, the fit is singular and the part missing.
MIN_SPREAD_RATIO = 1e-3
_EPS = 1e-6


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
    out["x_axis"] = torch.tensor([1.0, 0.0]).to(device)
    return out


def joints_present(kp: Tensor) -> Tensor:
    """[B, 18, 2] -> bool [B, 18]: joints whose coordinates are not -1."""
    return (kp[..., 0] >= 0) & (kp[..., 1] >= 0)


def body_scale(kp: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
    """Body scale s [B] (see module doc) and whether it is defined [B] bool.

    With one hip-shoulder side missing the other side alone gives s; with both missing s is
    undefined (and the parts sized by it are missing)."""
    sides = _constants(kp.device)["sides"]
    d2 = (kp[:, sides[:, 0]] - kp[:, sides[:, 1]]).square().sum(-1)  # [B, 2]
    ok = present[:, sides[:, 0]] & present[:, sides[:, 1]]  # [B, 2]
    n = ok.sum(-1)
    s = ((d2 * ok).sum(-1) / n.clamp_min(1)).sqrt()
    return s, (n > 0) & (s > _EPS)


def _spread_ratio(cov: Tensor) -> Tensor:
    """Ratio smallest/largest eigenvalue of symmetric 2x2 matrices [..., 2, 2] -> [...]."""
    half_tr = (cov[..., 0, 0] + cov[..., 1, 1]) / 2
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] * cov[..., 1, 0]
    root = (half_tr.square() - det).clamp_min(0).sqrt()
    return (half_tr - root) / (half_tr + root).clamp_min(_EPS)


def fit_affine(tgt: Tensor, src: Tensor, weight: Tensor,
               min_ratio: float = MIN_SPREAD_RATIO) -> tuple[Tensor, Tensor]:
    """Weighted least-squares affines mapping tgt points onto src points, batched.

    tgt, src: [..., N, 2]; weight: [..., N] (0 drops a point). Returns (A [..., 2, 3], ok [...]).
    Solved in centred form: A_lin = Cov(src, tgt) Cov(tgt)^-1 (a closed-form 2x2 inverse, the
    normal equations without the translation column), t = mean_src - A_lin mean_tgt. A fit
    needs >= 3 points and non-collinear point clouds in both poses (spread ratio >= min_ratio,
    scale-free); otherwise ok is False and A is the identity.
    """
    w = weight.to(tgt.dtype)
    sw = w.sum(-1)
    wn = (w / sw.clamp_min(_EPS).unsqueeze(-1)).unsqueeze(-1)  # [..., N, 1]
    mt = (wn * tgt).sum(-2, keepdim=True)
    ms = (wn * src).sum(-2, keepdim=True)
    dt, ds = tgt - mt, src - ms
    cov_t = (wn * dt).transpose(-1, -2) @ dt  # [..., 2, 2]
    cov_s = (wn * ds).transpose(-1, -2) @ ds
    cross = (wn * ds).transpose(-1, -2) @ dt  # [..., 2, 2]  sum w ds dt^T
    ok = (((w > 0).sum(-1) >= 3) & (_spread_ratio(cov_t) >= min_ratio) & (_spread_ratio(cov_s) >= min_ratio)
          & (cov_t.diagonal(dim1=-2, dim2=-1).sum(-1) > _EPS))
    det = cov_t[..., 0, 0] * cov_t[..., 1, 1] - cov_t[..., 0, 1] * cov_t[..., 1, 0]
    det = torch.where(ok, det, torch.ones_like(det))  # finite everywhere, discarded when not ok
    adj = torch.stack([cov_t[..., 1, 1], -cov_t[..., 0, 1],
                       -cov_t[..., 1, 0], cov_t[..., 0, 0]], -1).unflatten(-1, (2, 2))
    lin = cross @ adj / det[..., None, None]
    shift = ms.squeeze(-2) - (lin @ mt.transpose(-1, -2)).squeeze(-1)
    affine = torch.cat([lin, shift.unsqueeze(-1)], -1)
    eye = torch.eye(2, 3, dtype=tgt.dtype, device=tgt.device).expand_as(affine)
    return torch.where(ok[..., None, None], affine, eye), ok


def _limb_frames(kp: Tensor, present: Tensor, s: Tensor, s_ok: Tensor, borrow_mirror: bool):
    """Limb rectangles of one pose, in LIMBS order.

    Returns centre [B, 8, 2], unit axis [B, 8, 2], half length [B, 8], half width [B, 8],
    corners [B, 8, 4, 2] and ok [B, 8]. With borrow_mirror, a limb whose joints are missing
    uses its L<->R twin's joints (the source-pose rule)."""
    const = _constants(kp.device)
    a_idx, b_idx, ext = const["limb_a"], const["limb_b"], const["limb_ext"]
    a, b = kp[:, a_idx], kp[:, b_idx]  # [B, 8, 2]
    ok = present[:, a_idx] & present[:, b_idx]
    if borrow_mirror:
        mirror = const["mirror"]
        use_twin = ~ok & ok[:, mirror]
        a = torch.where(use_twin[..., None], a[:, mirror], a)
        b = torch.where(use_twin[..., None], b[:, mirror], b)
        ok = ok | use_twin
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
                  mode: str = "parts", min_ratio: float = MIN_SPREAD_RATIO) -> PartGeometry:
    """Masks [B, K, H, W], affines [B, K, 2, 3] (target -> source pixels), valid [B, K].

    kp_src, kp_tgt: [B, 18, 2] (x, y) pixels, -1 missing. mode "parts" (K = 10) or "global"
    (K = 1); "none" means no warping and is handled by the generator. Invalid parts (missing
    in the target, or a singular fit) have an empty mask and an identity affine.
    """
    if kp_src.shape != kp_tgt.shape or kp_src.ndim != 3 or kp_src.shape[1:] != (NUM_JOINTS, 2):
        raise ValueError(f"part_geometry: expected keypoints [B, {NUM_JOINTS}, 2] for both poses, "
                         f"got {tuple(kp_src.shape)} and {tuple(kp_tgt.shape)}")
    # float32 even inside a mixed-precision step: half-precision matmuls would cost pixels.
    with torch.autocast(kp_src.device.type, enabled=False):
        return _part_geometry(kp_src.float(), kp_tgt.float(), height, width, mode, min_ratio)


def _part_geometry(src: Tensor, tgt: Tensor, height: int, width: int, mode: str,
                   min_ratio: float) -> PartGeometry:
    p_src, p_tgt = joints_present(src), joints_present(tgt)
    both = p_src & p_tgt
    batch = src.shape[0]
    if mode == "global":
        affine, _ = fit_affine(tgt, src, both, min_ratio)  # identity when not fittable
        valid = torch.ones(batch, 1, dtype=torch.bool, device=src.device)
        ones = torch.ones(batch, 1, height, width, device=src.device)
        return PartGeometry(ones, affine.unsqueeze(1), valid)
    if mode != "parts":
        raise ValueError(f"part_geometry: mode must be 'parts' or 'global', got {mode!r}")

    s_src, s_src_ok = body_scale(src, p_src)
    s_tgt, s_tgt_ok = body_scale(tgt, p_tgt)
    n_pts = len(HEAD_JOINTS) + len(SHOULDERS)  # the largest point set (head); others padded

    # Torso: the four hip/shoulder joints present in both poses.
    const = _constants(src.device)
    torso = const["torso"]
    torso_w = both[:, torso]

    # Head: square on the target around its head joints; fit on head joints + shoulders.
    head = const["head"]
    head_w = both[:, head]
    head_t = p_tgt[:, head[: len(HEAD_JOINTS)]]  # [B, 5]
    head_n = head_t.sum(-1)
    head_centre = (tgt[:, head[: len(HEAD_JOINTS)]] * head_t[..., None]).sum(1) \
        / head_n.clamp_min(1)[:, None]
    head_ok = (head_n > 0) & s_tgt_ok

    # Limbs: rectangles in both poses (source borrows the mirrored limb when missing).
    c_t, axis_t, hl_t, hw_t, corners_t, limb_ok_t = _limb_frames(tgt, p_tgt, s_tgt, s_tgt_ok, False)
    _, _, _, _, corners_s, limb_ok_s = _limb_frames(src, p_src, s_src, s_src_ok, True)
    limb_w = (limb_ok_t & limb_ok_s).unsqueeze(-1).expand(-1, -1, 4)

    def pad(x: Tensor) -> Tensor:  # [B, P, n, ...] -> [B, P, n_pts, ...] with zeros
        extra = n_pts - x.shape[2]
        return torch.cat([x, x.new_zeros(x.shape[:2] + (extra,) + x.shape[3:])], 2)

    pts_t = torch.cat([pad(tgt[:, torso][:, None]), tgt[:, head][:, None], pad(corners_t)], 1)
    pts_s = torch.cat([pad(src[:, torso][:, None]), src[:, head][:, None], pad(corners_s)], 1)
    weights = torch.cat([pad(torso_w[:, None]), head_w[:, None], pad(limb_w)], 1)
    affines, fit_ok = fit_affine(pts_t, pts_s, weights, min_ratio)  # [B, K, 2, 3], [B, K]

    present_t = torch.cat([torch.ones_like(head_ok)[:, None], head_ok[:, None], limb_ok_t], 1)
    valid = present_t & fit_ok

    # Masks: oriented rectangles in the target frame; the torso's is infinite (whole image).
    x_axis = const["x_axis"].expand(batch, 1, 2)
    head_half = (HEAD_HALF_SIDE * s_tgt)[:, None]
    inf = torch.full_like(head_half, float("inf"))
    masks = rectangle_masks(
        torch.cat([torch.zeros_like(head_centre[:, None]), head_centre[:, None], c_t], 1),
        torch.cat([x_axis, x_axis, axis_t], 1),
        torch.cat([inf, head_half, hl_t], 1), torch.cat([inf, head_half, hw_t], 1),
        height, width)
    return PartGeometry(masks.mul_(valid[..., None, None]), affines, valid)
