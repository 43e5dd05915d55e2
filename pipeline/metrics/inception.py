"""Inception-v3 metrics: FID, IS and mask-IS (definitions in pipeline/metrics/__init__.py).

Two weight files are understood, told apart by the classifier size:
  * the FID Inception ("pt_inception-2015-12-05", 1008 classes): the TensorFlow graph every
    FID/IS number since 2017 used, ported to torchvision's module names (the file
    pytorch-fid downloads). It differs from torchvision's network in four blocks: average
    pools in Mixed_5b-5d, 6b-6e and 7b exclude the padding, and Mixed_7c pools with a max;
    we rebuild that. Numbers comparable to the papers need this file.
  * torchvision's ImageNet inception_v3 state dict (1000 classes). Usable, but its FID/IS are
    NOT comparable with published ones (different training, different classes).
Inputs: uint8 RGB resized to 299x299 (bilinear, align_corners=False, on 0..255 values), then
mapped to [-1, 1]; both networks expect that range.

`load_inception` never invents a number: without a usable file (and no download) it returns
(None, reason) and the scorer reports the metric as null with that reason.
"""
from __future__ import annotations

import functools
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # name in torch hub's cache
INPUT_SIZE = 299


# --------------------------------------------------------------------------- network


def _avg_no_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_same(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _forward_a(self, x: torch.Tensor, pool: Callable) -> list[torch.Tensor]:
    b5 = self.branch5x5_2(self.branch5x5_1(x))
    b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return [self.branch1x1(x), b5, b3, self.branch_pool(pool(x))]


def _forward_c(self, x: torch.Tensor, pool: Callable) -> list[torch.Tensor]:
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = x
    for name in ("branch7x7dbl_1", "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5"):
        d = getattr(self, name)(d)
    return [self.branch1x1(x), b7, d, self.branch_pool(pool(x))]


def _forward_e(self, x: torch.Tensor, pool: Callable) -> list[torch.Tensor]:
    b3 = self.branch3x3_1(x)
    b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
    return [self.branch1x1(x), b3, d, self.branch_pool(pool(x))]


def build_inception(num_classes: int = 1008, fid_variant: bool = True) -> nn.Module:
    """torchvision Inception3 (no aux head, no input transform), optionally with the FID
    graph's pooling in its Inception blocks. Weights uninitialised: load a state dict."""
    from torchvision.models.inception import Inception3

    net = Inception3(num_classes=num_classes, aux_logits=False, transform_input=False, init_weights=False)
    if fid_variant:
        patches = {
            ("Mixed_5b", "Mixed_5c", "Mixed_5d"): (_forward_a, _avg_no_pad),
            ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"): (_forward_c, _avg_no_pad),
            ("Mixed_7b",): (_forward_e, _avg_no_pad),
            ("Mixed_7c",): (_forward_e, _max_same),
        }
        for names, (fn, pool) in patches.items():
            for name in names:
                block = getattr(net, name)
                block._forward = types.MethodType(functools.partial(fn, pool=pool), block)
    return net.eval()


class InceptionExtractor(nn.Module):
    """uint8-valued float images [N, 3, H, W] (0..255, RGB) -> (pool3 [N, 2048], logits [N, C])."""

    def __init__(self, net: nn.Module, label: str):
        super().__init__()
        self.net = net
        self.label = label

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = x / 127.5 - 1.0
        net = self.net
        for name in (
            "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
            "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
            "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
        ):
            x = getattr(net, name)(x)
        pool = torch.flatten(net.avgpool(x), 1)
        return pool, net.fc(pool)


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or "fc.weight" not in obj:
        raise ValueError(f"{path}: not an Inception-v3 state dict (no 'fc.weight')")
    return {k: v for k, v in obj.items() if not k.startswith("AuxLogits.")}


def inception_from_state_dict(state: dict[str, torch.Tensor], source: str) -> InceptionExtractor:
    """Build the matching network for a state dict (1008 classes -> FID graph)."""
    classes = int(state["fc.weight"].shape[0])
    fid = classes == 1008
    net = build_inception(classes, fid_variant=fid)
    net.load_state_dict(state, strict=True)
    kind = "FID Inception (pt_inception-2015-12-05)" if fid else f"torchvision ImageNet Inception-v3 ({classes} classes; not comparable with published FID/IS)"
    return InceptionExtractor(net, f"{kind} from {source}")


def load_inception(
    weights: str | None, *, allow_download: bool = True, device: str | torch.device = "cpu"
) -> tuple[InceptionExtractor | None, str]:
    """(extractor, description) or (None, reason). Never raises for missing weights.

    weights: a local state-dict file; None = the FID file in torch hub's cache if present,
    else torchvision's IMAGENET1K_V1 weights (cache or download when allowed).
    """
    try:
        if weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                return None, f"inception weights {weights!r}: file not found"
            ext = inception_from_state_dict(_state_dict_from_file(path), str(path))
        else:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE
            if cached.is_file():
                ext = inception_from_state_dict(_state_dict_from_file(cached), str(cached))
            elif not allow_download:
                return None, "no inception weights: evaluate.inception_weights is null, none cached, download disabled"
            else:
                from torchvision.models import Inception_V3_Weights

                state = Inception_V3_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
                state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
                ext = inception_from_state_dict(state, "torchvision IMAGENET1K_V1")
    except Exception as exc:  # offline download, corrupt file: report, never invent numbers
        return None, f"inception weights unavailable: {type(exc).__name__}: {exc}"
    return ext.to(device).eval(), ext.label


# --------------------------------------------------------------------------- features


@torch.no_grad()
def inception_outputs(
    images, net: nn.Module, *, batch_size: int = 32, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W, 3] RGB -> (features float64 [N, D], logits float64 [N, C]).

    `net` maps float [n, 3, H, W] in 0..255 to (features, logits): an InceptionExtractor,
    or any module with that contract (e.g. a tiny one in tests).
    """
    images = np.asarray(images)
    feats, logits = [], []
    for s in range(0, len(images), max(batch_size, 1)):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device)
        f, lg = net(x.permute(0, 3, 1, 2).float())
        feats.append(f.double().cpu().numpy())
        logits.append(lg.double().cpu().numpy())
    if not feats:
        return np.zeros((0, 0)), np.zeros((0, 0))
    return np.concatenate(feats), np.concatenate(logits)


# --------------------------------------------------------------------------- the math


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"mismatched statistics: {mu1.shape}/{mu2.shape}, {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Singular product (e.g. fewer samples than dimensions): regularise, as is standard.
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def fid_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FID between two feature sets [N, D] (N >= 2 each)."""
    if len(real) < 2 or len(generated) < 2:
        raise ValueError("FID needs at least 2 images in each set")
    stats = [(f.mean(0), np.cov(f, rowvar=False)) for f in (np.asarray(real, np.float64), np.asarray(generated, np.float64))]
    return frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) per split; (mean, std) over `splits` equal splits
    (fewer when there are fewer images), p = softmax(logits)."""
    logits = np.asarray(logits, np.float64)
    if len(logits) == 0:
        raise ValueError("inception score of no images")
    logp = logits - logits.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    scores = []
    for part in np.array_split(logp, min(splits, len(logp))):
        p = np.exp(part)
        log_py = np.log(p.mean(0) + 1e-300)
        kl = (p * (part - log_py)).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
