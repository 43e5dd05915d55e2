"""Score generated images against their real targets: per-pair metrics and the summary.

Entry points
  * score_batch(real, generated, kp_target)  per-pair arrays for one in-memory batch;
  * Scorer                                    accumulates batches (per-pair rows plus the
                                              Inception features FID/IS need) -> summary;
  * score_folders(real_dir, generated_dir)    the standalone scorer over two folders.
Metric definitions: pipeline/metrics/__init__.py. A metric that cannot be computed (no
weights, no keypoints) is None in the summary with a `<metric>_reason` string.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from pipeline.core.device import select_device
from pipeline.core.config import EvaluateConfig, PoseConfig
from pipeline.core.keypoints import KP_COLUMNS, keypoints_array, present, read_annotation_csv, scale_keypoints
from pipeline.metrics import detection, inception, lpips, masks, pixel, ssim
from pipeline.core.images import IMAGE_SUFFIXES, decode_image

FID_REFERENCE = "the real targets of the evaluated pairs (uint8 RGB, TF1-bilinear resized to 299x299 by torch-fidelity)"
NO_KEYPOINTS = "no target keypoints (pass --keypoints, or --detect-keypoints)"


@dataclass
class Models:
    """Networks loaded once per run; None where unavailable, with the reason in *_info."""

    inception: torch.nn.Module | None = None  # uint8 [n, 3, H, W] -> (pool3 [n, D], logits [n, C])
    inception_info: str = "not requested"
    lpips: torch.nn.Module | None = None  # the lpips package's LPIPS: [-1, 1] x, y -> [n, 1, 1, 1]
    lpips_info: str = "not requested"
    detector: Any = None  # pipeline.data.pose.PoseModel
    detector_info: str = "not requested"
    imagenet_inception: torch.nn.Module | None = None  # torchvision's (protocols): [0, 1] -> [n, 2048]
    imagenet_inception_info: str = "not requested"
    pose_cfg: PoseConfig = field(default_factory=PoseConfig)
    device: str = "cpu"


def load_models(
    cfg: EvaluateConfig,
    pose_cfg: PoseConfig | None = None,
    *,
    use_inception: bool = True,
    use_lpips: bool = True,
    use_detector: bool = True,
    allow_download: bool = True,
    device: str | None = None,
) -> Models:
    """Load what cfg points at, every file resolved by pipeline.core.weights (a name or a local
    path). Missing weights never raise: the metric becomes None with the reason."""
    pose_cfg = pose_cfg or PoseConfig()
    device = device or str(select_device("auto"))
    m = Models(pose_cfg=pose_cfg, device=device)
    if use_inception:
        m.inception, m.inception_info = inception.load_inception(
            cfg.inception_weights, allow_download=allow_download, device=device
        )
    if use_lpips:
        m.lpips, m.lpips_info = lpips.load_lpips(
            cfg.lpips_weights, cfg.alexnet_weights, allow_download=allow_download, device=device
        )
    if use_detector:
        m.detector, m.detector_info = _load_detector(cfg, pose_cfg, allow_download, device)
    from pipeline.metrics import imagenet_inception, protocol_set

    if use_inception and protocol_set.needs_imagenet(cfg.protocol):
        m.imagenet_inception, m.imagenet_inception_info = imagenet_inception.load_imagenet_inception(
            cfg.imagenet_inception_weights, allow_download=allow_download, device=device)
    return m


def _load_detector(cfg: EvaluateConfig, pose_cfg: PoseConfig, allow_download: bool, device: str) -> tuple[Any, str]:
    """(PoseModel, description) or (None, reason): evaluate.pose_weights, else pose.weights."""
    spec, param = (cfg.pose_weights, "evaluate.pose_weights") if cfg.pose_weights else (pose_cfg.weights, "pose.weights")
    if not spec:
        return None, f"{param} is null: DS / PCKh not computed"
    try:
        from pipeline.core import weights  # interface 1 (pipeline/core/weights.py)

        path = weights.resolve(spec, param, allow_download=allow_download)
        det = detection.load_detector(str(path), "cuda:0" if device == "cuda" else device)
    except FileNotFoundError as exc:  # pipeline.core.weights.WeightsError: one line already
        return None, str(exc)
    except Exception as exc:  # unreadable file, not a pose model: report, never invent numbers
        return None, f"{param} {spec!r} unavailable: {type(exc).__name__}: {exc}"
    return det, f"ultralytics YOLO pose {det.label} (not the papers' SSD)"


# --------------------------------------------------------------------------- one batch


def score_batch(
    real,
    generated,
    kp_target=None,
    *,
    models: Models | None = None,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """Per-pair metrics of one batch.

    real, generated: uint8 [B, H, W, 3] RGB; kp_target: [B, 18, >=2] (x, y) pixels of the
    real images, -1 missing, or None. Returns float64/int64 arrays [B]: ssim, l1, and when
    kp_target is given mask_ssim, masked_l1 (NaN for images without any joint); lpips and ds
    when those models are loaded; pckh_correct / pckh_total with a detector and keypoints.
    """
    real, generated = np.asarray(real), np.asarray(generated)
    if real.shape != generated.shape or real.ndim != 4 or real.shape[-1] != 3:
        raise ValueError(f"expected real and generated uint8 [B, H, W, 3] of one shape, got {real.shape} and {generated.shape}")
    models = models or Models()
    b, h, w = real.shape[:3]
    out: dict[str, np.ndarray] = {
        "ssim": ssim.ssim(real, generated, device=models.device),
        "l1": pixel.l1(real, generated),
    }
    if kp_target is not None:
        kp = np.asarray(kp_target, dtype=np.float64)[..., :2]
        if kp.shape != (b, 18, 2):
            raise ValueError(f"kp_target: expected [{b}, 18, 2], got {kp.shape}")
        m = masks.person_masks(kp, h, w)
        real_m, gen_m = masks.apply_masks(real, m), masks.apply_masks(generated, m)
        has = present(kp).any(1)
        out["mask_ssim"] = np.where(has, ssim.ssim(real_m, gen_m, device=models.device), np.nan)
        out["masked_l1"] = pixel.masked_l1(real, generated, m)
    if models.lpips is not None:
        out["lpips"] = lpips.lpips_distance(real, generated, models.lpips, batch_size=batch_size, device=models.device)
    if models.detector is not None:
        score, kp_gen = detection.detect(generated, models.detector, models.pose_cfg)
        out["ds"] = score
        if kp_target is not None:
            out["pckh_correct"], out["pckh_total"] = detection.pckh(kp_gen, kp_target)
    return out


# --------------------------------------------------------------------------- accumulation


class Scorer:
    """Accumulates batches; `result()` gives (summary dict, per-pair DataFrame).

    FID uses the real targets of the added pairs as its reference set; IS / mask-IS use the
    generated and the masked generated images. Only Inception outputs are kept, per batch
    (float32: [N, 2048] features, [N, C] logits), never the images.

    reference: another Scorer that is given the same real targets (same batches, same order);
    FID then uses its real-target features instead of running Inception on them again.
    Passing the real images themselves as `generated` (the same array) reuses their outputs,
    also those of the reference when it was given the batch first.
    """

    def __init__(self, models: Models, *, batch_size: int = 32, real_pckh: bool = False,
                 reference: Scorer | None = None):
        self.models = models
        self.batch_size = batch_size
        self.real_pckh = real_pckh
        self.reference = reference
        self.rows: list[pd.DataFrame] = []
        self.feats: dict[str, list[np.ndarray]] = {"real": [], "gen": []}
        self.logits: dict[str, list[np.ndarray]] = {"gen": [], "gen_masked": []}
        self.real_hits = [0, 0]
        self.had_keypoints = False
        self.last_real: tuple[np.ndarray, np.ndarray] | None = None  # Inception outputs of the last targets

    def add(self, names: Sequence[str], real, generated, kp_target=None, *, generated_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        real, generated = np.asarray(real), np.asarray(generated)
        per = score_batch(real, generated, kp_target, models=self.models, batch_size=self.batch_size)
        table = pd.DataFrame({"name": list(names), "generated": list(generated_names or names), **per})
        if kp_target is not None:
            self.had_keypoints = True
            table["has_keypoints"] = present(np.asarray(kp_target)[..., :2]).any(1)
        self.rows.append(table)
        if self.models.inception is not None:
            real_out = None
            if self.reference is None:
                real_out = self.last_real = self._inception(real)
                self.feats["real"].append(real_out[0])
            elif generated is real:  # the reference scored these targets first (this batch)
                real_out = self.reference.last_real
            f, lg = real_out if generated is real and real_out is not None else self._inception(generated)
            self.feats["gen"].append(f)
            self.logits["gen"].append(lg)
            if kp_target is not None:
                m = masks.person_masks(np.asarray(kp_target)[..., :2], *real.shape[1:3])
                self.logits["gen_masked"].append(self._inception(masks.apply_masks(generated, m))[1])
        if self.real_pckh and self.models.detector is not None and kp_target is not None:
            _, kp_real = detection.detect(real, self.models.detector, self.models.pose_cfg)
            c, t = detection.pckh(kp_real, kp_target)
            self.real_hits[0] += int(c.sum())
            self.real_hits[1] += int(t.sum())
        return per

    def _inception(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 (pool3 [n, D], unbiased logits [n, C]) of uint8 images [n, H, W, 3]."""
        return inception.inception_outputs(images, self.models.inception, batch_size=self.batch_size,
                                           device=self.models.device)

    def result(self) -> tuple[dict[str, Any], pd.DataFrame]:
        table = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame()
        s: dict[str, Any] = {"n_pairs": int(len(table))}
        no_pairs = "no pairs scored"
        _put(s, "ssim", _mean(table, "ssim"), no_pairs)
        _put(s, "l1", _mean(table, "l1"), no_pairs)
        for key in ("mask_ssim", "masked_l1"):
            _put(s, key, _mean(table, key), NO_KEYPOINTS if not self.had_keypoints else "no pair has target keypoints")
        if self.had_keypoints:
            s["n_pairs_with_keypoints"] = int(table["has_keypoints"].sum())
        _put(s, "lpips", _mean(table, "lpips"), self.models.lpips_info)
        _put(s, "ds", _mean(table, "ds"), self.models.detector_info)
        if self.models.detector is None:
            no_pckh = self.models.detector_info
        elif not self.had_keypoints:
            no_pckh = NO_KEYPOINTS
        else:
            no_pckh = "no target has the 2 head points (nose, neck, eyes, ears) PCKh's head size needs"
        if "pckh_total" in table and table["pckh_total"].sum() > 0:
            s["pckh"] = float(table["pckh_correct"].sum() / table["pckh_total"].sum())
        else:
            _put(s, "pckh", None, no_pckh)
        if self.real_pckh:
            _put(s, "pckh_real", self.real_hits[0] / self.real_hits[1] if self.real_hits[1] else None, no_pckh)
        self._inception_summary(s)
        return s, table

    def _inception_summary(self, s: dict[str, Any]) -> None:
        reason = self.models.inception_info if self.models.inception is None else None
        if reason is None and not self.feats["gen"]:
            reason = "no pairs scored"
        s.update({"fid": None, "is": None, "is_std": None, "mask_is": None, "mask_is_std": None})
        if reason is not None:
            for key in ("fid", "is", "mask_is"):
                s[f"{key}_reason"] = reason
            return
        ref = self.reference if self.reference is not None else self
        real, gen = np.concatenate(ref.feats["real"]), np.concatenate(self.feats["gen"])
        try:
            s["fid"] = inception.fid_from_features(real, gen)
        except ValueError as exc:
            s["fid_reason"] = str(exc)
        s["is"], s["is_std"] = inception.inception_score(np.concatenate(self.logits["gen"]))
        if self.logits["gen_masked"]:
            s["mask_is"], s["mask_is_std"] = inception.inception_score(np.concatenate(self.logits["gen_masked"]))
        else:
            s["mask_is_reason"] = NO_KEYPOINTS
        s["fid_reference"] = FID_REFERENCE
        s["inception"] = self.models.inception_info


def _mean(table: pd.DataFrame, key: str) -> float | None:
    if key not in table or table[key].notna().sum() == 0:
        return None
    return float(np.nanmean(table[key].to_numpy(np.float64)))


def _put(s: dict[str, Any], key: str, value: float | None, reason: str) -> None:
    s[key] = value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        s[key] = None
        s[f"{key}_reason"] = reason


# --------------------------------------------------------------------------- folders


def list_images(folder: str | Path) -> dict[str, Path]:
    """{file stem: path} of the images in a folder; two files with one stem is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            if p.stem in found:
                raise ValueError(f"{folder}: both {found[p.stem].name} and {p.name} have the name {p.stem!r}")
            found[p.stem] = p
    if not found:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def match_folders(real_dir: str | Path, generated_dir: str | Path) -> list[tuple[Path, Path]]:
    """(real, generated) path pairs matched by file stem, in sorted order.

    Raises ValueError listing the names present in only one folder.
    """
    real, gen = list_images(real_dir), list_images(generated_dir)
    only_real, only_gen = sorted(set(real) - set(gen)), sorted(set(gen) - set(real))
    if only_real or only_gen:
        def show(names: list[str]) -> str:
            return ", ".join(names[:10]) + (f" ... ({len(names)} in all)" if len(names) > 10 else "")

        parts = []
        if only_real:
            parts.append(f"only in {real_dir}: {show(only_real)}")
        if only_gen:
            parts.append(f"only in {generated_dir}: {show(only_gen)}")
        raise ValueError("real and generated folders do not match; " + "; ".join(parts))
    return [(real[k], gen[k]) for k in _natural(real)]


def _natural(names) -> list[str]:
    """Numbers in numeric order (2 before 10), otherwise plain string order."""
    return sorted(names, key=lambda n: (0, int(n), "") if n.isdigit() else (1, 0, n))


def load_pairs(pairs: Sequence[tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray, list[int], list[str]]:
    """Decode matched pairs -> (real, generated) uint8 [B, H, W, 3], the indices of the pairs
    kept and one line per pair skipped because a file is unreadable (truncated, corrupt...).
    Sizes must agree (ValueError naming the file)."""
    real, gen, kept, skipped = [], [], [], []
    for i, (rp, gp) in enumerate(pairs):
        (r, r_err), (g, g_err) = decode_image(rp), decode_image(gp)
        if r is None or g is None:
            skipped.append(r_err or g_err)
            continue
        r, g = cv2.cvtColor(r, cv2.COLOR_BGR2RGB), cv2.cvtColor(g, cv2.COLOR_BGR2RGB)
        if r.shape != g.shape:
            raise ValueError(f"{gp}: size {g.shape[1]}x{g.shape[0]} differs from its real target {rp} ({r.shape[1]}x{r.shape[0]})")
        if real and r.shape != real[0].shape:
            raise ValueError(f"{rp}: size {r.shape[1]}x{r.shape[0]} differs from {pairs[kept[0]][0]} ({real[0].shape[1]}x{real[0].shape[0]})")
        real.append(r)
        gen.append(g)
        kept.append(i)
    if not real:
        return np.zeros((0, 0, 0, 3), np.uint8), np.zeros((0, 0, 0, 3), np.uint8), kept, skipped
    return np.stack(real), np.stack(gen), kept, skipped


def load_keypoints(path: str | Path, names: Sequence[str], image_hw: tuple[int, int]) -> np.ndarray:
    """Target keypoints [N, 18, 2] (x, y) for real file names; rows of -1 for names absent.

    path: a keypoint-table Parquet (scaled from its width/height to image_hw when they
    differ) or a canonical annotation CSV (taken as pixels of the images as they are).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: keypoint file not found")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
        missing = [c for c in ("name", *KP_COLUMNS) if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: not a keypoint table, missing columns {missing[:4]}")
        kp = keypoints_array(table)[..., :2]
        if {"width", "height"} <= set(table.columns):
            wh = table[["width", "height"]].to_numpy(np.float32)
            known = (wh > 0).all(1)
            scaled = scale_keypoints(kp, np.where(known[:, None], wh, [image_hw[1], image_hw[0]]), image_hw)
            kp = np.where(known[:, None, None], scaled, kp)
        lookup = dict(zip(table["name"].astype(str), kp))
    elif path.suffix in (".csv", ".txt"):
        csv_names, kp = read_annotation_csv(path)
        lookup = dict(zip(csv_names, kp))
    else:
        raise ValueError(f"{path}: keypoints must be a keypoint-table .parquet or a canonical annotation .csv")
    out = np.full((len(names), 18, 2), -1.0, dtype=np.float32)
    for i, n in enumerate(names):
        if n in lookup:
            out[i] = lookup[n]
    return out


def _protocol_set(cfg: EvaluateConfig, models: Models):
    """The ProtocolSet of cfg.protocol, its FID real set the folder cfg.fid_real."""
    from pipeline.metrics import protocol_set

    files = protocol_set.folder_files(cfg.fid_real) if cfg.fid_real else None
    return protocol_set.ProtocolSet(cfg.protocol, protocol_set.nets_from_models(models), files,
                                    cache_dir=cfg.fid_stats, batch_size=cfg.batch_size)


def score_folders(
    real_dir: str | Path,
    generated_dir: str | Path,
    keypoints: str | Path | None = None,
    cfg: EvaluateConfig | None = None,
    *,
    pose_cfg: PoseConfig | None = None,
    detect_keypoints: bool = False,
    real_pckh: bool = False,
    models: Models | None = None,
    allow_download: bool = True,
    chunk: int = 512,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score the generated images of one folder against the same-named real targets.

    keypoints: target keypoints file keyed by the REAL file names (see load_keypoints).
    Without it and with detect_keypoints, the pose model's keypoints on the real targets are
    used for the masks and PCKh (said so in the summary's keypoints_source).
    cfg.protocol: the protocols scored besides the 2018 one (summary["protocols"]); their
    FID real set is the folder cfg.fid_real (the training images).
    Returns (summary, per-pair table).
    """
    cfg = cfg or EvaluateConfig()
    pose_cfg = pose_cfg or PoseConfig()
    pairs = match_folders(real_dir, generated_dir)
    if cfg.max_pairs is not None:
        pairs = pairs[: cfg.max_pairs]
    if models is None:
        models = load_models(cfg, pose_cfg, allow_download=allow_download)
    if keypoints is None and detect_keypoints and models.detector is None:
        raise RuntimeError(f"--detect-keypoints needs the pose model: {models.detector_info}")
    scorer = Scorer(models, batch_size=cfg.batch_size, real_pckh=real_pckh and keypoints is not None)
    extra = _protocol_set(cfg, models)
    source, skipped, image_size = "none", [], None
    for s in range(0, len(pairs), chunk):
        real, gen, kept, bad = load_pairs(pairs[s : s + chunk])
        skipped += bad  # recorded in the summary, named; the rest is scored
        if not kept:
            continue
        part = [pairs[s + i] for i in kept]
        image_size = image_size or list(real.shape[1:3])
        names = [rp.name for rp, _ in part]
        kp = None
        if keypoints is not None:
            kp = load_keypoints(keypoints, names, real.shape[1:3])
            source = f"target keypoints from {keypoints}"
        elif detect_keypoints:
            _, det = detection.detect(real, models.detector, pose_cfg)
            kp = det[..., :2]
            source = f"detected on the real targets by {models.detector.label} (fallback, not annotations)"
        per = scorer.add(names, real, gen, kp, generated_names=[gp.name for _, gp in part])
        extra.add(real, gen, kp, lpips=per.get("lpips"))  # the 2018 LPIPS serves unprepared protocols
    if image_size is None:
        raise ValueError(f"{generated_dir}: no readable pair to score ({skipped[0]})")
    summary, table = scorer.result()
    if extra:
        summary["protocols"] = extra.result()
    summary["keypoints_source"] = source
    summary["image_size"] = image_size
    summary["skipped"] = skipped
    summary["real_dir"], summary["generated_dir"] = str(real_dir), str(generated_dir)
    return summary, table
