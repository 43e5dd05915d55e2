"""LPIPS (AlexNet, v0.1) written from its definition (Zhang et al., CVPR 2018).

    d(x, y) = sum_l mean_{h,w} || w_l * (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|) ||^2

f_l: AlexNet ReLU outputs after conv1..conv5 (torchvision `alexnet().features` indices
1, 4, 7, 9, 11); |.| the L2 norm over channels (+1e-10); w_l >= 0 the learned per-channel
weights ("lin" layers, [1, C_l, 1, 1]). Inputs in [-1, 1], shifted and scaled per channel by
(-0.030, -0.088, -0.188) and (0.458, 0.448, 0.450) before AlexNet. Images at native size.

Weights: `lin_weights` is the LPIPS v0.1 AlexNet linear-layer file (`alex.pth` of the lpips
PyPI package: keys lin{0..4}.model.1.weight); when null we look for it inside an installed
`lpips` package (without importing it). `alexnet_weights` is torchvision's AlexNet ImageNet
state dict; when null, torchvision's cache/download. Anything missing -> (None, reason).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

RELU_INDICES = (1, 4, 7, 9, 11)
CHANNELS = (64, 192, 384, 256, 256)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    """uint8-valued float images x, y [B, 3, H, W] (0..255) -> distance [B]."""

    def __init__(self, features: nn.Module, lins: list[torch.Tensor], label: str = ""):
        super().__init__()
        if len(lins) != len(RELU_INDICES):
            raise ValueError(f"expected {len(RELU_INDICES)} linear layers, got {len(lins)}")
        self.features = features
        self.lins = nn.ParameterList([nn.Parameter(w.detach().float().reshape(1, -1, 1, 1), requires_grad=False) for w in lins])
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.label = label

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x / 127.5 - 1.0 - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in RELU_INDICES:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
                if len(out) == len(RELU_INDICES):
                    break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(x.shape[0], device=x.device)
        for w, fx, fy in zip(self.lins, self._taps(x), self._taps(y)):
            total = total + ((fx - fy) ** 2 * w).sum(1).mean(dim=(1, 2))
        return total


def read_lin_weights(path: str | Path) -> list[torch.Tensor]:
    """The five LPIPS linear layers from an lpips-format file, in layer order."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    found: dict[int, torch.Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"lin(\d)\.(?:model\.1\.)?weight", key)
        if m:
            found[int(m.group(1))] = value
    if sorted(found) != list(range(len(RELU_INDICES))):
        raise ValueError(f"{path}: expected keys lin0..lin4(.model.1).weight, found {sorted(state)[:8]}")
    lins = [found[i] for i in range(len(RELU_INDICES))]
    for i, (w, c) in enumerate(zip(lins, CHANNELS)):
        if w.numel() != c:
            raise ValueError(f"{path}: lin{i} has {w.numel()} weights, AlexNet layer has {c} channels")
    return lins


def packaged_lin_weights() -> Path | None:
    """alex.pth inside an installed `lpips` package, if any (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "weights" / "v0.1" / "alex.pth"
        if candidate.is_file():
            return candidate
    return None


def load_lpips(
    lin_weights: str | None,
    alexnet_weights: str | None = None,
    *,
    allow_download: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[LPIPS | None, str]:
    """(model, description) or (None, reason). Never raises for missing weights."""
    from torchvision.models import AlexNet_Weights, alexnet

    try:
        lin_path = Path(lin_weights).expanduser() if lin_weights else packaged_lin_weights()
        if lin_path is None:
            return None, "no LPIPS linear weights: evaluate.lpips_weights is null and the lpips package is not installed"
        if not lin_path.is_file():
            return None, f"LPIPS weights {str(lin_path)!r}: file not found"
        lins = read_lin_weights(lin_path)
        net = alexnet(weights=None)
        if alexnet_weights:
            apath = Path(alexnet_weights).expanduser()
            if not apath.is_file():
                return None, f"AlexNet weights {alexnet_weights!r}: file not found"
            state = torch.load(apath, map_location="cpu", weights_only=True)
            source = str(apath)
        elif allow_download:
            state = AlexNet_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
            source = "torchvision IMAGENET1K_V1"
        else:
            return None, "no AlexNet weights: evaluate.alexnet_weights is null and download disabled"
        net.load_state_dict(state)
    except Exception as exc:  # offline download, corrupt file: report, never invent numbers
        return None, f"LPIPS weights unavailable: {type(exc).__name__}: {exc}"
    model = LPIPS(net.features, lins, f"LPIPS v0.1 AlexNet ({lin_path}; AlexNet {source})")
    return model.to(device).eval(), model.label


@torch.no_grad()
def lpips_distance(real, generated, model: LPIPS, *, batch_size: int = 32, device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 [B, H, W, 3] pairs -> float64 [B]."""
    real, generated = np.asarray(real), np.asarray(generated)
    if real.shape != generated.shape:
        raise ValueError(f"shape mismatch: {real.shape} vs {generated.shape}")
    out = []
    for s in range(0, len(real), max(batch_size, 1)):
        x = torch.from_numpy(np.ascontiguousarray(real[s : s + batch_size])).to(device).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(np.ascontiguousarray(generated[s : s + batch_size])).to(device).permute(0, 3, 1, 2).float()
        out.append(model(x, y).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
