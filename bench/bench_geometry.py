"""Benchmark the part geometry and its share of a generator training step.

    python -m bench.bench_geometry [--batch 8] [--repeats 20] [--threads N] [--skip-generator]

Prints:
1. part_geometry + affine_to_grid_theta per batch (B x 128 x 64) in batched torch, against a
   straightforward per-sample numpy implementation of the same geometry written below, and
   how closely the two agree (affines, validity, masks).
2. Part warps forward + backward at the paper widths, batch B, the four warped levels:
   the old dense bilinear warp, the new sparse one (issue 9), the original's nearest warp;
   geometry in paper mode (dlt fit, original masks) beside ours (lstsq, rect).
3. A generator forward + backward at the paper widths (offsets on, bilinear) on the same
   batch, the geometry's share of it (target: < 5%), and the share of the part warps.
Pose pairs are real Market-1501 test pairs when ../shared is present, jittered synthetic
poses otherwise. Figures only, nothing asserted.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.core.config import ModelConfig
from pipeline.core.keypoints import J, read_annotation_csv
from pipeline.model.generator import Generator
from pipeline.model.geometry import (
    BEHIND, HEAD_HALF_SIDE, HEAD_JOINTS, LIMB_HALF_WIDTH, LIMB_MIRROR, LIMBS,
    MIN_SPREAD_RATIO, NUM_PARTS, SHOULDERS, TORSO_JOINTS, part_geometry,
)
from pipeline.model.warp import (
    affine_to_grid_theta, resize_masks, resize_masks_nearest, warp_parts, warp_parts_nearest,
)

H, W = 128, 64
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market1501-annotations"


# --------------------------------------------------------------------------- numpy reference


def _np_fit(tgt: np.ndarray, src: np.ndarray) -> np.ndarray | None:
    """Least-squares affine (lstsq on [x y 1]) tgt -> src, None when singular."""
    if len(tgt) < 3:
        return None
    for pts in (tgt, src):
        eig = np.linalg.eigvalsh(np.cov(pts.T, bias=True))
        if eig[-1] <= 1e-6 or eig[0] / eig[-1] < MIN_SPREAD_RATIO:
            return None
    design = np.hstack([tgt, np.ones((len(tgt), 1))])
    sol, *_ = np.linalg.lstsq(design, src, rcond=None)
    return sol.T


def _np_scale(kp: np.ndarray, ok: np.ndarray) -> float | None:
    sides = [(J["r_hip"], J["r_shoulder"]), (J["l_hip"], J["l_shoulder"])]
    d2 = [np.sum((kp[a] - kp[b]) ** 2) for a, b in sides if ok[a] and ok[b]]
    s = float(np.sqrt(np.mean(d2))) if d2 else 0.0
    return s if s > 1e-6 else None


def _np_rect(a, b, ext, s):
    """Corners and (centre, axis, half length, half width) of a limb rectangle, or None."""
    length = np.linalg.norm(b - a)
    if s is None or length <= 1e-6:
        return None
    axis = (b - a) / length
    normal = np.array([-axis[1], axis[0]])
    start, end = a - BEHIND * length * axis, b + ext * length * axis
    hw = LIMB_HALF_WIDTH * s
    corners = np.array([start - hw * normal, start + hw * normal, end + hw * normal,
                        end - hw * normal])
    return corners, ((start + end) / 2, axis, (1 + ext + BEHIND) * length / 2, hw)


def _np_mask(centre, axis, half_len, half_w):
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    d = np.stack([xs - centre[0], ys - centre[1]], -1)
    along = np.abs(d @ axis)
    across = np.abs(d @ np.array([-axis[1], axis[0]]))
    return ((along <= half_len + 1e-4) & (across <= half_w + 1e-4)).astype(np.float32)


def numpy_geometry(src: np.ndarray, tgt: np.ndarray):
    """One pair [18, 2] -> masks [10, H, W], affines [10, 2, 3], valid [10], per part in loops."""
    ok_s, ok_t = (src >= 0).all(1), (tgt >= 0).all(1)
    masks = np.zeros((NUM_PARTS, H, W), np.float32)
    affines = np.tile(np.eye(2, 3), (NUM_PARTS, 1, 1))
    valid = np.zeros(NUM_PARTS, bool)
    s_s, s_t = _np_scale(src, ok_s), _np_scale(tgt, ok_t)

    def put(k, fit, mask):
        if fit is not None:
            affines[k], valid[k], masks[k] = fit, True, mask

    both = [j for j in TORSO_JOINTS if ok_s[j] and ok_t[j]]
    put(0, _np_fit(tgt[both], src[both]), np.ones((H, W), np.float32))
    head_t = [j for j in HEAD_JOINTS if ok_t[j]]
    if head_t and s_t is not None:
        pts = [j for j in HEAD_JOINTS + SHOULDERS if ok_s[j] and ok_t[j]]
        half = HEAD_HALF_SIDE * s_t
        put(1, _np_fit(tgt[pts], src[pts]),
            _np_mask(tgt[head_t].mean(0), np.array([1.0, 0.0]), half, half))
    for i, (a, b, ext) in enumerate(LIMBS):
        if not (ok_t[a] and ok_t[b]):
            continue
        sa, sb = a, b
        if not (ok_s[a] and ok_s[b]):
            sa, sb, _ = LIMBS[LIMB_MIRROR[i]]
            if not (ok_s[sa] and ok_s[sb]):
                continue
        rect_t = _np_rect(tgt[a], tgt[b], ext, s_t)
        rect_s = _np_rect(src[sa], src[sb], ext, s_s)
        if rect_t is None or rect_s is None:
            continue
        put(2 + i, _np_fit(rect_t[0], rect_s[0]), _np_mask(*rect_t[1]))
    return masks, affines, valid


def numpy_theta(affines: np.ndarray) -> np.ndarray:
    to_pix = np.array([[W / 2, 0, (W - 1) / 2], [0, H / 2, (H - 1) / 2], [0, 0, 1]])
    to_norm = np.array([[2 / W, 0, 1 / W - 1], [0, 2 / H, 1 / H - 1]])
    full = np.concatenate([affines, np.tile([[0.0, 0.0, 1.0]], (len(affines), 1, 1))], 1)
    return to_norm @ full @ to_pix


# --------------------------------------------------------------------------- inputs


def pose_pairs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, str]:
    rng = np.random.default_rng(seed)
    test_csv = SHARED / "market-annotation-test.csv"
    pairs_csv = SHARED / "market-pairs-test.csv"
    if test_csv.is_file() and pairs_csv.is_file():
        names, kp = read_annotation_csv(test_csv)
        index = {n: i for i, n in enumerate(names)}
        rows = [line.split(",") for line in pairs_csv.read_text().splitlines()[1:] if line]
        pick = rng.choice(len(rows), batch, replace=False)
        src = np.stack([kp[index[rows[i][0]]] for i in pick])
        tgt = np.stack([kp[index[rows[i][1]]] for i in pick])
        origin = "real Market-1501 test pairs"
    else:
        base = np.array([[32, 14], [32, 26], [24, 26], [21, 42], [20, 57], [40, 26], [43, 42],
                         [44, 57], [27, 62], [26, 86], [26, 110], [37, 62], [38, 86], [38, 110],
                         [30, 12], [34, 12], [28, 13], [36, 13]], np.float32)
        src = base + rng.normal(0, 3, (batch, 18, 2)).astype(np.float32)
        tgt = base + rng.normal(0, 3, (batch, 18, 2)).astype(np.float32)
        src[rng.random((batch, 18)) < 0.1] = -1
        tgt[rng.random((batch, 18)) < 0.1] = -1
        origin = "synthetic jittered poses (../shared absent)"
    return torch.from_numpy(src), torch.from_numpy(tgt), origin


def timed(fn, repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def torch_geometry(src: torch.Tensor, tgt: torch.Tensor, affine_fit: str = "lstsq",
                   part_masks: str = "rect"):
    geo = part_geometry(src, tgt, H, W, affine_fit=affine_fit, part_masks=part_masks)
    return geo, affine_to_grid_theta(geo.affines, H, W)


def bench_warps(geo, theta, batch: int, repeats: int) -> None:
    """Forward + backward of one part warp per level (paper widths, the four warped
    levels): the dense bilinear warp (every part over the whole map, the old code), the
    sparse one (parts sampled where their masks are), and the original's nearest warp."""
    widths = ModelConfig().encoder_widths[:4]
    feats = [torch.randn(batch, c, H >> l, W >> l, requires_grad=True)
             for l, c in enumerate(widths)]
    offs = [torch.zeros(batch, 2, H >> l, W >> l, requires_grad=True) for l in range(4)]

    def run(kind: str, level: int):
        feat = feats[level]
        if kind == "nearest":
            masks = resize_masks_nearest(geo.masks, *feat.shape[-2:])
            out = warp_parts_nearest(feat, geo.affines, masks, geo.valid, "max", float(2 ** level))
        else:
            masks = resize_masks(geo.masks, *feat.shape[-2:])
            out = warp_parts(feat, theta, masks, geo.valid, "max", offs[level],
                             sparse=kind == "sparse")
        out.mean().backward()

    print(f"part warps, forward+backward, batch {batch}, max over 10 parts (+ offsets for "
          f"bilinear), ms:")
    totals = {"dense": 0.0, "sparse": 0.0, "nearest": 0.0}
    for level, c in enumerate(widths):
        row = {kind: timed(lambda: run(kind, level), repeats) for kind in totals}
        for kind in totals:
            totals[kind] += row[kind]
        print(f"  level {level} ({c:3d} ch, {H >> level:3d}x{W >> level:2d}): bilinear dense (old) "
              f"{row['dense'] * 1e3:7.1f}, sparse (new) {row['sparse'] * 1e3:7.1f} "
              f"({row['dense'] / row['sparse']:.1f}x), nearest {row['nearest'] * 1e3:7.1f}")
    print(f"  all four levels: dense {totals['dense'] * 1e3:.0f} ms, sparse "
          f"{totals['sparse'] * 1e3:.0f} ms ({totals['dense'] / totals['sparse']:.1f}x faster), "
          f"nearest {totals['nearest'] * 1e3:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-generator", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0 = torch default); 1 gives stable "
                             "figures on a machine shared with other jobs")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    src, tgt, origin = pose_pairs(args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, B={args.batch}, "
          f"{H}x{W}, {origin}")

    t_torch = timed(lambda: torch_geometry(src, tgt), args.repeats)
    src_np, tgt_np = src.numpy().astype(np.float64), tgt.numpy().astype(np.float64)

    def run_numpy():
        out = [numpy_geometry(s, t) for s, t in zip(src_np, tgt_np)]
        return out, [numpy_theta(o[1]) for o in out]

    t_numpy = timed(run_numpy, max(3, args.repeats // 4))
    t_paper = timed(lambda: torch_geometry(src, tgt, "dlt", "original"), args.repeats)
    print(f"geometry + theta, paper mode (dlt fit, original masks): {t_paper * 1e3:8.2f} ms / batch")
    print(f"geometry + theta, ours (lstsq, rect), torch batched : {t_torch * 1e3:8.2f} ms / batch")
    print(f"geometry + theta, numpy per-pair: {t_numpy * 1e3:8.2f} ms / batch "
          f"({t_numpy / t_torch:.1f}x slower)")

    geo, theta = torch_geometry(src, tgt)
    ref, ref_theta = run_numpy()
    valid_np = np.stack([r[2] for r in ref])
    print(f"agreement: valid parts identical: {bool((geo.valid.numpy() == valid_np).all())} "
          f"({int(valid_np.sum())}/{valid_np.size} valid)")
    aff_err = np.abs(geo.affines.numpy() - np.stack([r[1] for r in ref])).max()
    th_err = np.abs(theta.numpy() - np.stack(ref_theta)).max()
    mask_diff = (geo.masks.numpy() != np.stack([r[0] for r in ref])).mean()
    print(f"agreement: max |affine diff| {aff_err:.2e} px, max |theta diff| {th_err:.2e}, "
          f"mask pixels differing {mask_diff * 100:.4f}%")

    paper_geo, paper_theta = torch_geometry(src, tgt, "dlt", "original")
    bench_warps(paper_geo, paper_theta, args.batch, max(2, args.repeats // 10))
    if args.skip_generator:
        return
    gen = Generator(ModelConfig(offsets=True, warp_sampling="bilinear"), H, W)
    batch = args.batch
    xa = torch.rand(batch, 3, H, W) * 2 - 1
    ha, hb = torch.rand(batch, 18, H, W), torch.rand(batch, 18, H, W)

    def step():
        gen.zero_grad(set_to_none=True)
        out = gen(xa, ha, hb, src, tgt)
        (out.image.mean() + sum(o.square().mean() for o in out.offsets)).backward()

    # The deformable skips themselves: two warps per level (affine, then affine + offset),
    # forward + backward, on feature maps of the paper's widths at the four finest levels.
    geo, theta = torch_geometry(src, tgt)
    feats = [torch.randn(batch, c, H >> l, W >> l, requires_grad=True)
             for l, c in enumerate(ModelConfig().encoder_widths[:4])]
    offs = [torch.zeros(batch, 2, H >> l, W >> l, requires_grad=True) for l in range(4)]

    def skips():
        total = 0
        for feat, off in zip(feats, offs):
            masks = resize_masks(geo.masks, *feat.shape[-2:])
            total = total + warp_parts(feat, theta, masks, geo.valid, "max").mean()
            total = total + warp_parts(feat, theta, masks, geo.valid, "max", off).mean()
        total.backward()

    t_skips = timed(skips, max(3, args.repeats // 4))
    t_step = timed(step, max(1, args.repeats // 10))
    n_params = sum(p.numel() for p in gen.parameters())
    print(f"generator forward+backward (paper widths, offsets on, {n_params / 1e6:.1f}M "
          f"params): {t_step * 1e3:.0f} ms / batch")
    print(f"geometry share of a generator step: {t_torch / t_step * 100:.2f}% (target < 5%)")
    print(f"deformable skips (8 part warps, fwd+bwd): {t_skips * 1e3:.0f} ms / batch, "
          f"{t_skips / t_step * 100:.1f}% of the generator step")


if __name__ == "__main__":
    main()
