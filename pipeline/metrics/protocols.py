"""The evaluation protocols of the pose-transfer paper families, as small declarative recipes.

Every family scored its table with its own script; the numbers are comparable only when
computed the same way (real set of FID, Inception network, padding / resizing, SSIM window,
which images enter which metric). A Recipe states those choices; ProtocolScorer applies one
to (real target, generated) batches. Sources read (public repositories):

  defgan        Deformable GAN / PATN / XingGAN on Market-1501: the 2018 protocol that
                pipeline.metrics.scoring computes (the flat keys of metrics/eval.json)
  patn-fashion  PATN tool/getMetrics_fashion.py (also ADGAN): each 176-wide image padded
                with white to 256x256 (addBounding, 40 px a side) before SSIM and IS
  gfla-*        GFLA script/metrics.py: FID against the training images with torchvision's
                ImageNet Inception (pipeline.metrics.imagenet_inception), full batches of
                64 only; LPIPS v0.1 AlexNet over full batches of 64; mask-LPIPS (Market):
                the target's person mask times both images in [-1, 1], batches of 64;
                ssim = compare_ssim(data_range=1, win_size=51) on images / 255; ssim_256
                = the 2018 SSIM
  dptn-*        DPTN metrics/metrics.py: GFLA's script, but LPIPS one pair at a time (no
                pair dropped) and, on DeepFashion, SSIM on images padded white to 256x256
  pidm-fashion  PIDM utils/metrics.py: FID and LPIPS on images cv2.resize'd (bilinear, on
                float32) to 176x256, batches of 64; ssim_256 with sigma 1.2; SSIM at the
                images' own size
  cfld-fashion  CFLD models/metrics.py + pose_transfer_test.py: generated images resized
                bicubic with antialias to 256x176 and truncated to uint8, targets and
                training images resized by PIL bicubic; every image counts

Keys are each family's own names (ssim means the windowed-51 SSIM in gfla/dptn/pidm/cfld,
the 2018 Gaussian SSIM in patn-fashion). Images arrive as uint8 RGB [B, H, W, 3]; target
keypoints as [B, 18, 2] (x, y) pixels, -1 missing.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch

from pipeline.metrics import imagenet_inception, inception, masks, ssim

Resize = Literal["none", "cv2_linear", "bicubic_aa_uint8", "pil_bicubic"]


@dataclass(frozen=True)
class Recipe:
    """One family's scoring script, as data. Metric names: ssim, ssim_256, lpips,
    mask_lpips, fid, is (the TF-2015 Inception score, PATN)."""

    name: str
    follows: str  # repository and script
    dataset: Literal["market1501", "deepfashion", "any"]
    metrics: tuple[str, ...]
    pad_width: int | None = None  # white-pad narrower images, centred, to this width ...
    pad_metrics: tuple[str, ...] = ()  # ... for these metrics (and their FID real set)
    size: tuple[int, int] | None = None  # (h, w) images are resized to ...
    resized_metrics: tuple[str, ...] = ()  # ... for these metrics
    generated_resize: Resize = "none"
    target_resize: Resize = "none"  # targets and the FID real set
    fid_real: Literal["targets", "train"] = "train"
    inception: Literal["imagenet", "tf2015"] = "imagenet"
    fid_batch: int | None = 64  # FID: full batches only (each set); None = every image
    lpips_batch: int | None = 64  # LPIPS: full batches of pairs only; None or 1 = every pair
    mask_lpips_batch: int | None = 64
    ssim_sigma: float = 1.5  # ssim_256's Gaussian (the 2018 protocol's; PIDM 1.2)
    ssim_window: int = 51  # ssim's uniform window (data_range 1, sample covariance) ...
    ssim_is_2018: bool = False  # ... unless `ssim` is the 2018 Gaussian SSIM (PATN)

    def real_view(self) -> dict[str, Any]:
        """What the FID real set's statistics depend on (the cache key's recipe part)."""
        return {"inception": self.inception, "fid_batch": self.fid_batch,
                "pad_width": self.pad_width if "fid" in self.pad_metrics else None,
                "size": self.size if "fid" in self.resized_metrics else None,
                "resize": self.target_resize if "fid" in self.resized_metrics else "none"}


GFLA = "RenYurui/Global-Flow-Local-Attention script/metrics.py"
DPTN = "PangzeCheung/Dual-task-Pose-Transformer-Network metrics/metrics.py"
RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("defgan", "AliaksandrSiarohin/pose-gan; tengteng95/Pose-Transfer tool/getMetrics_market.py",
           "any", ("ssim", "mask_ssim", "is", "mask_is", "fid"), fid_real="targets", inception="tf2015",
           fid_batch=None, lpips_batch=None, mask_lpips_batch=None),
    Recipe("patn-fashion", "tengteng95/Pose-Transfer tool/getMetrics_fashion.py", "deepfashion",
           ("ssim", "is"), pad_width=256, pad_metrics=("ssim", "is"), ssim_is_2018=True, fid_real="targets",
           inception="tf2015", fid_batch=None, lpips_batch=None, mask_lpips_batch=None),
    Recipe("gfla-market", GFLA, "market1501", ("fid", "lpips", "mask_lpips", "ssim", "ssim_256")),
    Recipe("gfla-fashion", GFLA, "deepfashion", ("fid", "lpips", "ssim", "ssim_256"), pad_width=256,
           pad_metrics=("fid", "lpips", "ssim", "ssim_256")),
    Recipe("dptn-market", DPTN, "market1501", ("fid", "lpips", "mask_lpips", "ssim", "ssim_256"),
           lpips_batch=None),
    Recipe("dptn-fashion", DPTN, "deepfashion", ("fid", "lpips", "ssim", "ssim_256"), pad_width=256,
           pad_metrics=("ssim", "ssim_256"), lpips_batch=None),
    Recipe("pidm-fashion", "ankanbhunia/PIDM utils/metrics.py", "deepfashion", ("fid", "lpips", "ssim", "ssim_256"),
           size=(256, 176), resized_metrics=("fid", "lpips"), generated_resize="cv2_linear",
           target_resize="cv2_linear", ssim_sigma=1.2),
    Recipe("cfld-fashion", "YanzuoLu/CFLD models/metrics.py, pose_transfer_test.py", "deepfashion",
           ("fid", "lpips", "ssim", "ssim_256"), size=(256, 176),
           resized_metrics=("fid", "lpips", "ssim", "ssim_256"), generated_resize="bicubic_aa_uint8",
           target_resize="pil_bicubic", fid_batch=None, lpips_batch=None),
)}
BUILTIN = "defgan"  # computed by pipeline.metrics.scoring.Scorer (the flat keys)


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown protocol {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[name]


# --------------------------------------------------------------------------- rules


def kept(n: int, batch: int | None) -> int:
    """How many of n items a script that runs only full batches uses: floor(n / batch) *
    batch; all of them when batch is None or 1, or when n < batch (the scripts then shrink
    the batch to n)."""
    if not batch or batch <= 1 or n < batch:
        return n
    return n - n % batch


def pad_white(images: np.ndarray, width: int) -> np.ndarray:
    """uint8 [B, H, W, 3] -> [B, H, width, 3]: centred on white (PATN addBounding, DPTN
    pad_256: 176 -> 40 + 176 + 40). Images at least `width` wide are returned as they are."""
    w = images.shape[2]
    if w >= width:
        return images
    left = (width - w) // 2
    out = np.full((*images.shape[:2], width, 3), 255, dtype=images.dtype)
    out[:, :, left:left + w] = images
    return out


def resize(images: np.ndarray, size: tuple[int, int], how: Resize) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32 [B, h, w, 3] in 0..255, the way a script brought images
    to (h, w):
      cv2_linear        cv2.resize(img.astype(float32), (w, h)) (PIDM; no rounding after)
      bicubic_aa_uint8  F.interpolate(x / 255, bicubic, antialias) * 255, clamped and truncated
                        to uint8 (CFLD's generated images)
      pil_bicubic       PIL Image.resize((w, h), BICUBIC) (CFLD's torchvision Resize on PIL)
    Same-size images are copied unchanged by all three."""
    h, w = size
    if how == "none" or images.shape[1:3] == (h, w):
        return images.astype(np.float32)
    if how == "cv2_linear":
        import cv2

        return np.stack([cv2.resize(im.astype(np.float32), (w, h)) for im in images])
    if how == "bicubic_aa_uint8":
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True) * 255.0
        return x.clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy().astype(np.float32)
    if how == "pil_bicubic":
        from PIL import Image

        return np.stack([np.asarray(Image.fromarray(im).resize((w, h), Image.BICUBIC)) for im in images]).astype(np.float32)
    raise ValueError(f"unknown resize {how!r}")


def prepare(images: np.ndarray, rec: Recipe, metric: str, role: Literal["generated", "target"]) -> np.ndarray:
    """The images one metric of the recipe sees: float32 [B, h, w, 3] in 0..255."""
    images = np.asarray(images)
    if rec.pad_width and metric in rec.pad_metrics:
        images = pad_white(images, rec.pad_width)
    if rec.size and metric in rec.resized_metrics:
        return resize(images, rec.size, rec.generated_resize if role == "generated" else rec.target_resize)
    return images.astype(np.float32)


def unit(images: np.ndarray) -> np.ndarray:
    """float32 0..255 -> float32 0..1, as `.astype(np.float32) / 255.0` in the scripts."""
    return (images / np.float32(255.0)).astype(np.float32)


# --------------------------------------------------------------------------- FID real set


@dataclass
class Reference:
    """Statistics of the FID real set (float64 mean [D], covariance [D, D]) and its size."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    cached: bool = False


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    s = fid_features_to_statistics(torch.from_numpy(np.ascontiguousarray(features, np.float64)))
    return s["mu"], s["sigma"]


def file_digest(paths: Sequence[Path]) -> str:
    """sha256 over the names and contents of the files, in order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0")
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()


# The memo key of LPIPS on images used as they are (prep_key (None, None) on both sides).
UNPREPARED_LPIPS = ("lpips", ((None, None), (None, None)))


def prep_key(rec: Recipe, metric: str, role: Literal["generated", "target"], shape: Sequence[int]) -> tuple:
    """What prepare() does to images of shape [B, H, W, 3] for this metric: equal keys give
    equal images (a pad that changes nothing and a resize to the images' own size are no-ops),
    so protocols that see the same images share one computation."""
    h, w = int(shape[1]), int(shape[2])
    pad = rec.pad_width if rec.pad_width and metric in rec.pad_metrics and w < rec.pad_width else None
    how = rec.generated_resize if role == "generated" else rec.target_resize
    size = None
    if rec.size and metric in rec.resized_metrics and how != "none" and tuple(rec.size) != (h, pad or w):
        size = (tuple(rec.size), how)
    return pad, size


def _real_features(paths: Sequence[Path], rec: Recipe, net: torch.nn.Module, read: Callable[[Path], np.ndarray],
                   n: int, chunk: int, device: str | torch.device) -> np.ndarray:
    """Inception features float64 [n, D] of the first n files, prepared as the recipe's FID
    prepares its real set."""
    feats = []
    for s in range(0, n, chunk):
        part = np.stack([read(p) for p in paths[s:min(s + chunk, n)]])
        feats.append(imagenet_inception.pool3(unit(prepare(part, rec, "fid", "target")), net,
                                              batch_size=rec.fid_batch or 64, device=device))
    if not feats:
        raise ValueError("the FID real set is empty")
    return np.concatenate(feats)


def reference_stats_for(
    paths: Sequence[Path],
    recs: Sequence[Recipe],
    net: torch.nn.Module,
    net_id: str,
    cache_dir: str | Path | None,
    *,
    read: Callable[[Path], np.ndarray],
    read_id: str = "",
    chunk: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, Reference]:
    """FID statistics of the real set (e.g. the training images) for each recipe, the files
    in the given order, read with `read` (uint8 RGB; read_id names what it does beyond
    decoding), prepared as each recipe's FID prepares its real set.

    Cached as <cache_dir>/fid-<key>.npz, key = the files (names and contents), the recipe's
    real-set choices, read_id and net_id (which network / weights): a second evaluation reads
    the file and runs no Inception pass. Recipes whose real sets are the same images share
    one Inception pass (their batch-drop rules only cut the features differently)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("the FID real set is empty")
    digest = file_digest(paths)
    out: dict[str, Reference] = {}
    todo: dict[tuple, list[tuple[Recipe, Path | None]]] = {}
    shape = None
    for rec in recs:
        key = hashlib.sha256(json.dumps({"files": digest, "recipe": rec.real_view(), "net": net_id,
                                         **({"read": read_id} if read_id else {})},
                                        sort_keys=True).encode()).hexdigest()[:24]
        cache = Path(cache_dir) / f"fid-{key}.npz" if cache_dir else None
        if cache is not None and cache.is_file():
            with np.load(cache) as f:
                out[rec.name] = Reference(f["mu"], f["sigma"], int(f["n"]), cached=True)
            continue
        shape = shape or (1, *read(paths[0]).shape)
        todo.setdefault(prep_key(rec, "fid", "target", shape), []).append((rec, cache))
    for group in todo.values():
        n_max = max(kept(len(paths), rec.fid_batch) for rec, _ in group)
        feats = _real_features(paths, group[0][0], net, read, n_max, chunk, device)
        for rec, cache in group:
            n = kept(len(paths), rec.fid_batch)
            mu, sigma = _stats(feats[:n])
            if cache is not None:
                _write_stats(cache, mu, sigma, n)
            out[rec.name] = Reference(mu, sigma, n)
    return out


def reference_stats(paths: Sequence[Path], rec: Recipe, net: torch.nn.Module, net_id: str,
                    cache_dir: str | Path | None, **kwargs: Any) -> Reference:
    """reference_stats_for one recipe."""
    return reference_stats_for(paths, [rec], net, net_id, cache_dir, **kwargs)[rec.name]


def _write_stats(cache: Path, mu: np.ndarray, sigma: np.ndarray, n: int) -> None:
    from pipeline.core.fsutil import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: np.savez would append .npz to a name
            np.savez(fh, mu=mu, sigma=sigma, n=n)

    atomic_write(cache, write)


def fid(reference: Reference, generated: np.ndarray) -> float:
    """torch-fidelity's Frechet distance between the real set's statistics and those of the
    generated features [N, D] (np.cov, float64, as the scripts)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    mu, sigma = _stats(generated)
    out = fid_statistics_to_metric({"mu": mu, "sigma": sigma}, {"mu": reference.mu, "sigma": reference.sigma},
                                   verbose=False)
    return float(out[KEY_METRIC_FID])


# --------------------------------------------------------------------------- scoring


@dataclass
class Nets:
    """Networks a recipe may need; None with the reason where unavailable."""

    imagenet: torch.nn.Module | None = None  # float [n, 3, H, W] in [0, 1] -> [n, 2048]
    imagenet_info: str = "not requested"
    tf2015: torch.nn.Module | None = None  # uint8 [n, 3, H, W] -> (pool3, unbiased logits)
    tf2015_info: str = "not requested"
    lpips: torch.nn.Module | None = None  # the lpips package's LPIPS, inputs in [-1, 1]
    lpips_info: str = "not requested"
    device: str = "cpu"


class ProtocolScorer:
    """Accumulates batches of one recipe; result() -> {metric: value, metric_reason, counts}.

    reference: the FID real set's statistics, or a string saying why there is none. Per-pair
    values are kept in pair order, so the batch rules drop the same trailing pairs as the
    scripts do on a folder listed in that order."""

    def __init__(self, rec: Recipe, nets: Nets, reference: Reference | str | None = None, batch_size: int = 32):
        self.rec, self.nets, self.reference, self.batch_size = rec, nets, reference, batch_size
        self.per_pair: dict[str, list[np.ndarray]] = {m: [] for m in rec.metrics if m not in ("fid", "is")}
        self.features: list[np.ndarray] = []
        self.logits: list[np.ndarray] = []
        self.errors: dict[str, str] = {}  # metric -> why it cannot be computed on these images

    def add(self, real, generated, kp_target=None, memo: dict | None = None) -> None:
        """One batch: uint8 [B, H, W, 3] targets and generated images, target keypoints
        [B, 18, 2] or None. memo: shared by the protocols scoring this batch (ProtocolSet),
        so a computation on the same prepared images runs once for all of them."""
        rec, nets = self.rec, self.nets
        real, generated = np.asarray(real), np.asarray(generated)
        memo = {} if memo is None else memo
        keys = {m: (prep_key(rec, m, "target", real.shape), prep_key(rec, m, "generated", generated.shape))
                for m in rec.metrics}
        for metric in ("ssim", "ssim_256"):
            if metric in self.per_pair and metric not in self.errors:
                try:
                    self.per_pair[metric].append(_once(memo, ("ssim", self._ssim_variant(metric), keys[metric]),
                                                       lambda: self._ssim(metric, real, generated)))
                except ValueError as exc:  # images smaller than the window (skimage refuses too)
                    self.errors[metric] = f"{rec.name} {metric}: {exc}"
        if "lpips" in self.per_pair and nets.lpips is not None:
            self.per_pair["lpips"].append(_once(memo, ("lpips", keys["lpips"]), lambda: self._lpips(
                prepare(real, rec, "lpips", "target"), prepare(generated, rec, "lpips", "generated"))))
        if "mask_lpips" in self.per_pair and nets.lpips is not None and kp_target is not None:
            def masked():
                m = masks.person_masks(np.asarray(kp_target)[..., :2], *real.shape[1:3]).numpy()
                return self._lpips(real.astype(np.float32), generated.astype(np.float32), m)
            self.per_pair["mask_lpips"].append(_once(memo, ("mask_lpips",), masked))
        if "fid" in rec.metrics and nets.imagenet is not None:
            self.features.append(_once(memo, ("fid", keys["fid"][1]), lambda: imagenet_inception.pool3(
                unit(prepare(generated, rec, "fid", "generated")), nets.imagenet, batch_size=self.batch_size,
                device=nets.device)))
        if "is" in rec.metrics and nets.tf2015 is not None:
            self.logits.append(_once(memo, ("is", keys["is"][1]), lambda: inception.inception_outputs(
                prepare(generated, rec, "is", "generated").astype(np.uint8),  # padding keeps uint8 values
                nets.tf2015, batch_size=self.batch_size, device=nets.device)[1]))

    def _ssim_variant(self, metric: str) -> tuple:
        if metric == "ssim" and not self.rec.ssim_is_2018:
            return "window", self.rec.ssim_window
        return "gaussian", self.rec.ssim_sigma

    def _ssim(self, metric: str, real: np.ndarray, generated: np.ndarray) -> np.ndarray:
        rec = self.rec
        r, g = (unit(prepare(x, rec, metric, role)) for x, role in ((real, "target"), (generated, "generated")))
        if metric == "ssim" and not rec.ssim_is_2018:
            return ssim.ssim_variant(r, g, sigma=None, win_size=rec.ssim_window, data_range=1.0, device=self.nets.device)
        # The 2018 SSIM on img * 255.0 (float32 of the scripts' float32 / 255 images).
        return ssim.ssim_variant(r * np.float32(255.0), g * np.float32(255.0), sigma=rec.ssim_sigma, device=self.nets.device)

    @torch.no_grad()
    def _lpips(self, r: np.ndarray, g: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """LPIPS of float32 0..255 pairs mapped by x / 127.5 - 1, times the mask if any."""
        out = []
        for s in range(0, len(r), max(self.batch_size, 1)):
            x, y = (torch.from_numpy(np.ascontiguousarray(a[s:s + self.batch_size] / np.float32(127.5) - np.float32(1.0)))
                    for a in (r, g))
            if mask is not None:
                m = torch.from_numpy(mask[s:s + self.batch_size, :, :, None].astype(np.float32))
                x, y = x * m, y * m
            d = self.nets.lpips(y.permute(0, 3, 1, 2).to(self.nets.device), x.permute(0, 3, 1, 2).to(self.nets.device))
            out.append(d.reshape(-1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def result(self) -> dict[str, Any]:
        rec, s = self.rec, {}
        batches = {"lpips": rec.lpips_batch, "mask_lpips": rec.mask_lpips_batch}
        for metric, parts in self.per_pair.items():
            values = np.concatenate(parts) if parts else np.zeros(0)
            n = kept(len(values), batches.get(metric))
            s[metric] = float(values[:n].mean()) if n else None
            if n:
                s[f"{metric}_pairs"] = int(n)
            else:
                s[f"{metric}_reason"] = self._reason(metric)
        if "fid" in rec.metrics:
            self._fid(s)
        if "is" in rec.metrics:
            if self.logits:
                s["is"], s["is_std"] = inception.inception_score(np.concatenate(self.logits))
            else:
                s["is"], s["is_reason"] = None, self.nets.tf2015_info
        return s

    def _reason(self, metric: str) -> str:
        if metric in self.errors:
            return self.errors[metric]
        if metric in ("lpips", "mask_lpips") and self.nets.lpips is None:
            return self.nets.lpips_info
        if metric == "mask_lpips":
            return "no target keypoints"
        return "no pairs scored"

    def _fid(self, s: dict[str, Any]) -> None:
        s["fid"] = None
        if self.nets.imagenet is None:
            s["fid_reason"] = self.nets.imagenet_info
        elif not isinstance(self.reference, Reference):
            s["fid_reason"] = self.reference or "no FID real set given"
        else:
            feats = np.concatenate(self.features) if self.features else np.zeros((0, 2048))
            n = kept(len(feats), self.rec.fid_batch)
            s["fid_images"], s["fid_real_images"] = int(n), int(self.reference.n)
            if n < 2:
                s["fid_reason"] = "FID needs at least 2 generated images"
            else:
                s["fid"] = fid(self.reference, feats[:n])


def _once(memo: dict, key: tuple, compute: Callable[[], Any]) -> Any:
    """memo[key], computed on first use."""
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def describe() -> list[dict[str, Any]]:
    """Every recipe as plain data (for the details JSON and the README)."""
    return [asdict(r) for r in RECIPES.values()]
