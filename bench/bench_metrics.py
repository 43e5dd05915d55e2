"""Evaluation throughput: batched SSIM + mask-SSIM (ours) vs a per-pair scikit-image loop,
and the cost per pair of the network metrics (torch-fidelity Inception, lpips LPIPS).

    python -m bench.bench_metrics [--pairs 2000] [--loop-pairs 300] [--threads N] [--pose-weights FILE]
                                  [--deep-pairs 64] [--device cpu|cuda]

Pairs are 128x64 crops: the 55 Deformable GAN user-study pairs of ../shared (tiled) with the
canonical test keypoints as targets, or random images and random poses when ../shared is
absent. Also prints SSIM / mask-SSIM of the original Deformable GAN outputs on the user
study (masks from YOLO keypoints detected on the real targets). The Inception and LPIPS
weights are resolved offline (pipeline.core.weights); where absent, seeded random weights of the
same graphs stand in (the timing is the same, the values mean nothing). Prints figures,
asserts nothing.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from skimage.draw import disk, polygon
from skimage.metrics import structural_similarity
from skimage.morphology import dilation, erosion

from pipeline.metrics.masks import PROTOCOL_LIMBS, apply_masks, person_masks
from pipeline.metrics.ssim import ssim

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
H, W = 128, 64


def skimage_ssim(real: np.ndarray, gen: np.ndarray) -> float:
    return structural_similarity(real, gen, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 channel_axis=2, data_range=float(gen.max()) - float(gen.min()))


def skimage_mask(kp: np.ndarray) -> np.ndarray:
    """The per-image drawing the original script did, with scikit-image primitives."""
    m = np.zeros((H, W), bool)
    ok = (kp >= 0).all(1)
    for f, t in PROTOCOL_LIMBS:
        if ok[f] and ok[t]:
            p, q = kp[f][::-1].astype(np.float64), kp[t][::-1].astype(np.float64)
            d = p - q
            if np.hypot(*d) > 0:
                n = 4.0 * np.array([-d[1], d[0]]) / np.hypot(*d)
                c = np.array([p + n, p - n, q - n, q + n])
                m[polygon(c[:, 0], c[:, 1], shape=(H, W))] = True
    for j in np.nonzero(ok)[0]:
        m[disk((kp[j, 1], kp[j, 0]), 4, shape=(H, W))] = True
    square = np.ones((5, 5), bool)
    return erosion(dilation(m, square), square)


def load_data(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    import cv2

    study = SHARED / "data/deformable-gan-userstudy"
    ann = SHARED / "data/market1501-annotations/market-annotation-test.csv"
    if study.is_dir() and ann.is_file():
        from pipeline.core.keypoints import read_annotation_csv

        read = lambda sub: np.stack([cv2.imread(str(study / sub / f"{i}.jpg"))[..., ::-1] for i in range(55)])
        real, gen = read("real"), read("generated")
        idx = np.arange(n) % 55
        _, kp = read_annotation_csv(ann)
        return real[idx], gen[idx], kp[:n], "user-study pairs (tiled) + canonical test keypoints"
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)
    gen = np.clip(real.astype(int) + rng.integers(-60, 60, real.shape), 0, 255).astype(np.uint8)
    kp = rng.uniform(0, 1, (n, 18, 2)) * [W, H]
    return real, gen, kp, "random images and poses (../shared absent)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--loop-pairs", type=int, default=300, help="pairs timed for the scikit-image loop")
    ap.add_argument("--pose-weights", default=str(SHARED / "weights/yolo11n-pose.pt"))
    ap.add_argument("--deep-pairs", type=int, default=64, help="pairs timed for Inception / LPIPS (0: skip)")
    ap.add_argument("--device", default=None, help="device for Inception / LPIPS (default: cuda if present)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's); 1 is faster on a busy machine")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    real, gen, kp, source = load_data(args.pairs)
    print(f"data: {args.pairs} pairs of {H}x{W}, {source}; torch threads {torch.get_num_threads()}")

    t = time.perf_counter()
    s = ssim(real, gen)
    m = person_masks(kp, H, W)
    ms = ssim(apply_masks(real, m), apply_masks(gen, m))
    ours = time.perf_counter() - t
    print(f"ours (torch, batched): SSIM + mask-SSIM {args.pairs / ours:8.1f} pairs/s ({ours:.2f} s)")

    n = min(args.loop_pairs, args.pairs)
    t = time.perf_counter()
    ref_s, ref_ms = [], []
    with np.errstate(invalid="ignore"):  # a target without joints: empty mask, NaN like ours
        for r, g, k in zip(real[:n], gen[:n], kp[:n]):
            ref_s.append(skimage_ssim(r, g))
            mk = skimage_mask(k)[..., None].astype(np.uint8)
            ref_ms.append(skimage_ssim(r * mk, g * mk))
    loop = time.perf_counter() - t
    print(f"scikit-image loop:     SSIM + mask-SSIM {n / loop:8.1f} pairs/s ({loop:.2f} s for {n})")
    print(f"speed-up: {(args.pairs / ours) / (n / loop):.2f}x; max |diff| SSIM {np.nanmax(np.abs(s[:n] - ref_s)):.2e}, "
          f"mask-SSIM {np.nanmax(np.abs(ms[:n] - ref_ms)):.2e}")

    if args.deep_pairs > 0:
        per_pair_ssim = ours / args.pairs
        deep_metrics(real[: args.deep_pairs], gen[: args.deep_pairs], args.device, per_pair_ssim)

    weights = Path(args.pose_weights)
    study = SHARED / "data/deformable-gan-userstudy"
    if weights.is_file() and study.is_dir():
        from pipeline.core.config import EvaluateConfig
        from pipeline.metrics.scoring import score_folders

        cfg = EvaluateConfig(inception_weights="/nonexistent", lpips_weights="/nonexistent", pose_weights=str(weights))
        summary, _ = score_folders(study / "real", study / "generated", cfg=cfg, detect_keypoints=True, allow_download=False)
        print(f"user study (55 original Deformable GAN outputs): SSIM {summary['ssim']:.4f}, "
              f"mask-SSIM {summary['mask_ssim']:.4f} (masks from YOLO keypoints of the real targets), "
              f"L1 {summary['l1']:.4f}, DS {summary['ds']:.4f}, PCKh {summary['pckh']:.4f}")
    else:
        print("user study: skipped (../shared weights or images absent)")


def _offline(spec: str, param: str, make_random) -> tuple[str, str]:
    """(local file, label): the resolved weights, else a random stand-in written by make_random."""
    from pipeline.core import weights

    try:
        return str(weights.resolve(spec, param, allow_download=False)), spec
    except FileNotFoundError:
        return str(make_random()), f"random {spec} (timing only)"


def deep_metrics(real: np.ndarray, gen: np.ndarray, device: str | None, per_pair_ssim: float) -> None:
    """Per-image Inception and per-pair LPIPS cost; the evaluate stage runs Inception on 7
    images per test pair (model: target, generated, masked; copy_source: source, masked;
    real: target, masked)."""
    import tempfile

    import torch
    from torchvision.models import alexnet

    from pipeline.metrics import inception, lpips

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    n = len(real)
    with tempfile.TemporaryDirectory() as tmp:
        inc_path, inc_label = _offline("inception_fid", "evaluate.inception_weights",
                                       lambda: inception.write_random_weights(Path(tmp) / "inception.pth"))
        alex_path, alex_label = _offline("alexnet", "evaluate.alexnet_weights",
                                         lambda: _random_alexnet(Path(tmp) / "alexnet.pth", alexnet))
        ext, info = inception.load_inception(inc_path, allow_download=False, device=device)
        model, linfo = lpips.load_lpips("lpips_alex", alex_path, allow_download=False, device=device)
    for name, net, why in (("Inception", ext, info), ("LPIPS", model, linfo)):
        if net is None:
            print(f"{name}: skipped ({why})")
    if ext is not None:
        inception.inception_outputs(real[:2], ext, batch_size=2, device=device)  # warm-up
        sync()
        t = time.perf_counter()
        inception.inception_outputs(real, ext, batch_size=32, device=device)
        sync()
        per_image = (time.perf_counter() - t) / n
        print(f"Inception ({inc_label}, {device}): {1e3 * per_image:.1f} ms/image; x7 per evaluated pair = "
              f"{7e3 * per_image:.1f} ms/pair ({7 * per_image / per_pair_ssim:.0f}x SSIM + mask-SSIM)")
    if model is not None:
        lpips.lpips_distance(real[:2], gen[:2], model, batch_size=2, device=device)
        sync()
        t = time.perf_counter()
        lpips.lpips_distance(real, gen, model, batch_size=32, device=device)
        sync()
        per_pair = (time.perf_counter() - t) / n
        print(f"LPIPS (AlexNet {alex_label}, {device}): {1e3 * per_pair:.2f} ms/pair "
              f"({per_pair / per_pair_ssim:.1f}x SSIM + mask-SSIM)")


def _random_alexnet(path: Path, alexnet) -> Path:
    import torch

    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), path)
    return path


if __name__ == "__main__":
    main()
