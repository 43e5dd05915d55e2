"""Batched affine fits between point sets: least squares, and the original's normalised DLT.

The original code fits every part transform with scikit-image 0.13's
``estimate_transform('affine', src=target_points, dst=source_points)``. That is a total
least-squares (direct linear transform) estimate: both point sets are centred and scaled so
that their RMS distance to the centroid is sqrt(2), the 2N x 7 system
``[x y 1 0 0 0 X; 0 0 0 x y 1 Y] v = 0`` is solved by the right singular vector of its smallest
singular value, the affine is ``-v[:6] / v[6]`` and the normalisation is undone. With more
than three points it is NOT ordinary least squares. (scikit-image 0.26 computes the same for
affines: same 'rms' normalisation, same system; it only adds a failure on v[6] ~ 0.)

Here that smallest singular vector is found in closed form, batched, without any
torch.linalg decomposition (those synchronise CUDA with the host): in centred coordinates
the translation columns decouple, and the smallest eigenvalue lam of A^T A is the smallest
root of a cubic (the Schur complement of the two 2x2 point-covariance blocks S), solved by
the trigonometric formula and polished by Newton steps; the normalised linear part is then
K (S - lam I)^-1 with K = sum q p^T. Runs in float64 (the fits are tiny; float64 keeps the
near-degenerate cases exact to well under 1e-3 px).

Shapes: tgt, src [..., N, 2] (x, y); weight [..., N] (0 drops a point, else 1).
Returns (affine [..., 2, 3] mapping tgt (x, y, 1) -> src (x, y), ok [...] bool); where not ok
the affine is the identity.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

# Smallest accepted ratio of the two principal variances of a fit's point cloud (in either
# pose): below it the points are (nearly) collinear, the fit is singular and the part missing.
# Ours (lstsq) drops such near-degenerate parts; the original dropped only fits whose matrix
# was exactly singular, so the DLT keeps everything float64 still solves exactly.
MIN_SPREAD_RATIO = 1e-3
DLT_MIN_SPREAD_RATIO = 1e-9
_EPS = 1e-6
NEWTON_STEPS = 3


def _spread_ratio(cov: Tensor) -> Tensor:
    """Ratio smallest/largest eigenvalue of symmetric 2x2 matrices [..., 2, 2] -> [...]."""
    half_tr = (cov[..., 0, 0] + cov[..., 1, 1]) / 2
    det = cov[..., 0, 0] * cov[..., 1, 1] - cov[..., 0, 1] * cov[..., 1, 0]
    root = (half_tr.square() - det).clamp_min(0).sqrt()
    return (half_tr - root) / (half_tr + root).clamp_min(_EPS)


def _adj2(m: Tensor) -> Tensor:
    """Adjugate of 2x2 matrices [..., 2, 2] (inverse times determinant)."""
    return torch.stack([m[..., 1, 1], -m[..., 0, 1], -m[..., 1, 0], m[..., 0, 0]],
                       -1).unflatten(-1, (2, 2))


def _det2(m: Tensor) -> Tensor:
    return m[..., 0, 0] * m[..., 1, 1] - m[..., 0, 1] * m[..., 1, 0]


def _moments(tgt: Tensor, src: Tensor, weight: Tensor):
    """Weighted means, centred clouds and the fit preconditions shared by both fits."""
    w = weight.to(tgt.dtype)
    sw = w.sum(-1)
    wn = (w / sw.clamp_min(_EPS).unsqueeze(-1)).unsqueeze(-1)  # [..., N, 1]
    mt = (wn * tgt).sum(-2, keepdim=True)
    ms = (wn * src).sum(-2, keepdim=True)
    dt, ds = (tgt - mt) * (w > 0).unsqueeze(-1), (src - ms) * (w > 0).unsqueeze(-1)
    cov_t = (wn * dt).transpose(-1, -2) @ dt  # [..., 2, 2]
    cov_s = (wn * ds).transpose(-1, -2) @ ds
    return w, sw, mt, ms, dt, ds, cov_t, cov_s


def _preconditions(w, cov_t, cov_s, min_ratio):
    return (((w > 0).sum(-1) >= 3) & (_spread_ratio(cov_t) >= min_ratio)
            & (_spread_ratio(cov_s) >= min_ratio)
            & (cov_t.diagonal(dim1=-2, dim2=-1).sum(-1) > _EPS)
            & (cov_s.diagonal(dim1=-2, dim2=-1).sum(-1) > _EPS))


def _assemble(lin: Tensor, mt: Tensor, ms: Tensor, ok: Tensor) -> Tensor:
    shift = ms.squeeze(-2) - (lin @ mt.transpose(-1, -2)).squeeze(-1)
    affine = torch.cat([lin, shift.unsqueeze(-1)], -1)
    ok = ok & torch.isfinite(affine).flatten(-2).all(-1)
    eye = torch.eye(2, 3, dtype=lin.dtype, device=lin.device).expand_as(affine)
    return torch.where(ok[..., None, None], affine, eye), ok


def fit_affine_lstsq(tgt: Tensor, src: Tensor, weight: Tensor,
                     min_ratio: float = MIN_SPREAD_RATIO) -> tuple[Tensor, Tensor]:
    """Weighted ordinary least squares (minimises the source-side residual), in centred form:
    A_lin = Cov(src, tgt) Cov(tgt)^-1 (closed-form 2x2 inverse), t = mean_src - A_lin mean_tgt."""
    w, _, mt, ms, dt, ds, cov_t, cov_s = _moments(tgt, src, weight)
    wn = (w / w.sum(-1).clamp_min(_EPS).unsqueeze(-1)).unsqueeze(-1)
    cross = (wn * ds).transpose(-1, -2) @ dt  # [..., 2, 2]  sum w ds dt^T
    ok = _preconditions(w, cov_t, cov_s, min_ratio)
    det = torch.where(ok, _det2(cov_t), torch.ones_like(cov_t[..., 0, 0]))
    lin = cross @ _adj2(cov_t) / det[..., None, None]
    return _assemble(lin, mt, ms, ok)


def _smallest_cubic_root(b: Tensor, c: Tensor, d: Tensor, upper: Tensor) -> Tensor:
    """Smallest root of lam^3 + b lam^2 + c lam + d (three real roots), clamped to [0, upper]
    (where the DLT's root lies): trigonometric formula, then Newton polishing."""
    p = c - b.square() / 3
    q = 2 * b.pow(3) / 27 - b * c / 3 + d
    p_neg = p.clamp_max(-1e-300)
    arg = (3 * q / (2 * p_neg) * torch.sqrt(-3 / p_neg)).clamp(-1, 1)
    lam = 2 * torch.sqrt(-p_neg / 3) * torch.cos(torch.acos(arg) / 3 - 4 * math.pi / 3) - b / 3
    lam = torch.minimum(lam.clamp_min(0), upper)
    for _ in range(NEWTON_STEPS):
        f = ((lam + b) * lam + c) * lam + d
        df = (3 * lam + 2 * b) * lam + c
        step = torch.where(df != 0, f / df, torch.zeros_like(f))
        lam = torch.minimum((lam - step).clamp_min(0), upper)
    return lam


def fit_affine_dlt(tgt: Tensor, src: Tensor, weight: Tensor,
                   min_ratio: float = DLT_MIN_SPREAD_RATIO) -> tuple[Tensor, Tensor]:
    """scikit-image 0.13's estimate_transform('affine', src=tgt, dst=src), batched (module doc)."""
    out_dtype = torch.promote_types(tgt.dtype, torch.float32)
    tgt, src = tgt.double(), src.double()
    w, sw, mt, ms, dt, ds, cov_t, cov_s = _moments(tgt, src, weight)
    ok = _preconditions(w, cov_t, cov_s, min_ratio)
    # Normalisation: RMS distance to the centroid -> sqrt(2), i.e. scale sqrt(2 / tr Cov).
    sigma_t = torch.sqrt(2 / cov_t.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(_EPS))
    sigma_s = torch.sqrt(2 / cov_s.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(_EPS))
    p = dt * sigma_t[..., None, None]  # normalised target points, weight-masked [..., N, 2]
    q = ds * sigma_s[..., None, None]
    s_mat = p.transpose(-1, -2) @ p  # sum p p^T   [..., 2, 2] (trace 2n)
    k_mat = q.transpose(-1, -2) @ p  # sum q p^T   [..., 2, 2]
    n = (w > 0).sum(-1).to(tgt.dtype)
    s = 2 * n  # sum |q|^2
    tr_s, det_s = s_mat[..., 0, 0] + s_mat[..., 1, 1], _det2(s_mat)
    k_sq = k_mat.square().sum((-1, -2))
    k_adj_k = (k_mat @ _adj2(s_mat) * k_mat).sum((-1, -2))  # tr(K adj(S) K^T)
    # det(A^T A - lam) = det(S - lam)^2 (s - lam - tr(K (S - lam)^-1 K^T)); times
    # det(S - lam) the second factor is the cubic below (sign flipped to be monic).
    b = -(s + tr_s)
    c = s * tr_s + det_s - k_sq
    d = k_adj_k - s * det_s
    s_min = tr_s / 2 - ((tr_s / 2).square() - det_s).clamp_min(0).sqrt()
    lam = _smallest_cubic_root(b, c, d, s_min)
    eye2 = torch.eye(2, dtype=tgt.dtype, device=tgt.device)
    shifted = s_mat - lam[..., None, None] * eye2
    det = _det2(shifted)
    ok = ok & (det.abs() > 1e-12 * det_s.abs().clamp_min(_EPS))
    det = torch.where(ok, det, torch.ones_like(det))
    lin_norm = k_mat @ _adj2(shifted) / det[..., None, None]  # K (S - lam)^-1
    lin = lin_norm * (sigma_t / sigma_s)[..., None, None]
    affine, ok = _assemble(lin, mt, ms, ok)
    return affine.to(out_dtype), ok
