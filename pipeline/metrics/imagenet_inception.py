"""Pool3 features of torchvision's ImageNet Inception v3, as GFLA / DPTN / PIDM / CFLD compute FID.

Those scripts (GFLA script/inception.py, copied by DPTN and PIDM; CFLD models/metrics.py) take
torchvision's `inception_v3(pretrained=True)` (IMAGENET1K_V1, not the 2015 TF graph of
pipeline/metrics/inception.py) and run, on float images in [0, 1]:
  1. F.interpolate(x, (299, 299), mode='bilinear')  (align_corners=False, no antialias)
  2. per channel c: x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5, ImageNet mean / std: the
     formula of torchvision's transform_input, applied to [0, 1] images as they did
  3. the trunk Conv2d_1a .. Mixed_7c with the two max-pools, global average pool -> [N, 2048]
The network is torchvision's own; only those steps are written here. Weights resolve through
pipeline.core.weights ("inception_v3_imagenet" or a local state dict of torchvision's
inception_v3()); without them `load_imagenet_inception` gives (None, reason).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
         "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
         "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _inception3() -> nn.Module:
    from torchvision.models.inception import Inception3

    # The layout of the published file (aux classifier included), never initialised: weights follow.
    return Inception3(num_classes=1000, aux_logits=True, transform_input=False, init_weights=False)


class ImagenetPool3(nn.Module):
    """float [N, 3, H, W] in [0, 1] -> pool3 features float32 [N, 2048]."""

    def __init__(self, state: dict[str, torch.Tensor]):
        super().__init__()
        net = _inception3()
        net.load_state_dict(state, strict=True)
        self.trunk = nn.Sequential(*(getattr(net, name) for name in TRUNK), nn.AdaptiveAvgPool2d(1))
        self.register_buffer("scale", torch.tensor(STD).view(1, 3, 1, 1) / 0.5)
        self.register_buffer("shift", (torch.tensor(MEAN).view(1, 3, 1, 1) - 0.5) / 0.5)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = x * self.scale + self.shift
        return self.trunk(x).flatten(1)  # [N, 2048, 1, 1] -> [N, 2048]


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights in the published layout, for tests and offline timing only (He-normal
    convolutions keep activations alive through 94 layers)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in _inception3().state_dict().items():
        if key.endswith("conv.weight") or key.endswith("fc.weight"):
            value = torch.randn(value.shape, generator=gen) * (2.0 / value[0].numel()) ** 0.5
        state[key] = value.clone()
    return state


def load_imagenet_inception(spec: str | None, *, allow_download: bool = True,
                            device: str | torch.device = "cpu") -> tuple[nn.Module | None, str]:
    """(ImagenetPool3, description) or (None, reason); never raises for missing weights."""
    if not spec:
        return None, "evaluate.imagenet_inception_weights is null: torchvision-Inception FID not computed"
    try:
        from pipeline.core import weights  # interface 1 (pipeline/core/weights.py)

        path = weights.resolve(spec, "evaluate.imagenet_inception_weights", allow_download=allow_download)
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path}: not a state dict")
        net = ImagenetPool3(state)
    except FileNotFoundError as exc:  # WeightsError: one line already
        return None, str(exc)
    except Exception as exc:  # wrong layout, corrupt file: report, never invent numbers
        return None, (f"evaluate.imagenet_inception_weights {spec!r} unusable: "
                      f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    return net.to(device), f"torchvision inception_v3 IMAGENET1K_V1 from {path}"


@torch.no_grad()
def pool3(images: np.ndarray, net: nn.Module, *, batch_size: int = 64,
          device: str | torch.device = "cpu") -> np.ndarray:
    """float [N, H, W, 3] in [0, 1] -> float64 [N, 2048] (the scripts keep float64 arrays)."""
    out = []
    for s in range(0, len(images), max(batch_size, 1)):
        x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size], np.float32))
        out.append(net(x.permute(0, 3, 1, 2).to(device)).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2048))
