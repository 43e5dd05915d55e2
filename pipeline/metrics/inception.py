"""Inception-v3 metrics FID, IS and mask-IS through torch-fidelity (definitions in
pipeline/metrics/__init__.py).

The network is torch-fidelity's FeatureExtractorInceptionV3: the 2015 TensorFlow Inception
graph the FID/IS papers (and the Deformable GAN's OpenAI IS code) ran, with TF1's bilinear
resize to 299x299 and (x - 128) / 128 scaling inside. We ask it for two outputs per image:
  '2048'             pool3 features            -> FID
  'logits_unbiased'  logits without the fc bias -> IS / mask-IS (as the OpenAI code did)
The maths is the library's too (metric_fid / metric_isc), called on the features we keep per
batch: FID from float64 statistics, IS over 10 unshuffled splits with the OpenAI boundaries
i*N//splits.

Weights: evaluate.inception_weights is a pipeline.core.weights name ("inception_fid", the
library's own converted TF file) or a local file in the same state-dict layout. Without it
(offline, null, wrong layout) `load_inception` returns (None, reason): never a made-up number.

Injected networks (tests) follow the same contract: uint8 [n, 3, H, W] -> (features, logits).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

FEATURES = ("2048", "logits_unbiased")
EXTRACTOR_NAME = "inception-v3-compat"  # the name torch-fidelity registers it under
SPLITS = 10
NUM_CLASSES = 1008  # the 2015 graph's classifier (1000 ImageNet classes + 8 unused)
POOL_DIM = 2048


# --------------------------------------------------------------------------- loading


def check_state_dict(path: str | Path) -> None:
    """Raise ValueError unless `path` is a plain tensor state dict with the 2015 graph's
    classifier. Loaded with weights_only=True, so the library's own (unrestricted) load
    only ever reads a file that is known to hold nothing but tensors."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != (NUM_CLASSES, POOL_DIM):
        got = "no 'fc.weight'" if fc is None else f"fc.weight {tuple(fc.shape)}"
        raise ValueError(f"{path}: not torch-fidelity's Inception state dict "
                         f"(needs fc.weight [{NUM_CLASSES}, {POOL_DIM}]; {got})")


def load_inception(
    spec: str | None, *, allow_download: bool = True, device: str | torch.device = "cpu"
) -> tuple[nn.Module | None, str]:
    """(extractor, description) or (None, reason); never raises for missing weights.

    spec: a pipeline.core.weights name ("inception_fid") or a local file; None = not computed.
    """
    if not spec:
        return None, "evaluate.inception_weights is null: FID / IS not computed"
    try:
        from pipeline.core import weights  # interface 1 (pipeline/core/weights.py)

        path = weights.resolve(spec, "evaluate.inception_weights", allow_download=allow_download)
        check_state_dict(path)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        net = FeatureExtractorInceptionV3(EXTRACTOR_NAME, list(FEATURES), feature_extractor_weights_path=str(path))
    except FileNotFoundError as exc:  # pipeline.core.weights.WeightsError: one line already
        return None, str(exc)
    except Exception as exc:  # wrong layout, corrupt file: report, never invent numbers
        return None, f"evaluate.inception_weights {spec!r} unusable: {type(exc).__name__}: {exc}"
    return net.to(device).eval(), f"torch-fidelity InceptionV3 (TF 2015 graph) from {path}"


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random (seeded) weights of the same graph in torch-fidelity's state-dict layout: for
    tests and offline timing only (its FID / IS mean nothing). The key layout is
    torchvision's Inception3 with a 1008-way classifier, which the library loads strictly.
    Scales keep activations alive: He-normal convs, logits of a few units, a non-zero fc bias
    (so using the biased logits by mistake changes IS)."""
    from torchvision.models.inception import Inception3

    gen = torch.Generator().manual_seed(seed)
    net = Inception3(num_classes=NUM_CLASSES, aux_logits=False, transform_input=False, init_weights=False)
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            value = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
        elif key == "fc.weight":
            value = torch.randn(value.shape, generator=gen) * 0.3
        elif key == "fc.bias":
            value = torch.randn(value.shape, generator=gen) * 2.0
        state[key] = value.clone()
    return state


def write_random_weights(path: str | Path, seed: int = 0) -> Path:
    path = Path(path)
    torch.save(random_state_dict(seed), path)
    return path


# --------------------------------------------------------------------------- features


@torch.no_grad()
def inception_outputs(
    images, net: nn.Module, *, batch_size: int = 32, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W, 3] RGB -> (pool3 features float32 [N, D], unbiased logits float32 [N, C])."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"inception_outputs: expected uint8 images, got {images.dtype}")
    feats, logits = [], []
    for s in range(0, len(images), max(batch_size, 1)):
        x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device)
        f, lg = net(x.permute(0, 3, 1, 2))
        feats.append(f.float().cpu().numpy())
        logits.append(lg.float().cpu().numpy())
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(feats), np.concatenate(logits)


# --------------------------------------------------------------------------- the maths (the library's)


def fid_from_features(real: np.ndarray, generated: np.ndarray) -> float:
    """FID between two feature sets [N, D] (N >= 2 each), float64 statistics, by
    torch-fidelity's fid_features_to_statistics / fid_statistics_to_metric (generated
    first, as its calculate_metrics orders input1 / input2)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    if len(real) < 2 or len(generated) < 2:
        raise ValueError("FID needs at least 2 images in each set")
    stats = [fid_features_to_statistics(torch.from_numpy(np.ascontiguousarray(f, np.float64))) for f in (generated, real)]
    return float(fid_statistics_to_metric(stats[0], stats[1], verbose=False)[KEY_METRIC_FID])


def inception_score(logits: np.ndarray, splits: int = SPLITS) -> tuple[float, float]:
    """(mean, std) of exp(E KL(p(y|x) || p(y))) over `splits` unshuffled splits (fewer when
    there are fewer images), by torch-fidelity's isc_features_to_metric."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    logits = np.ascontiguousarray(logits)
    if len(logits) == 0:
        raise ValueError("inception score of no images")
    out = isc_features_to_metric(torch.from_numpy(logits), splits=min(splits, len(logits)), shuffle=False)
    return float(out[KEY_METRIC_ISC_MEAN]), float(out[KEY_METRIC_ISC_STD])
