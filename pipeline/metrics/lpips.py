"""LPIPS v0.1 with AlexNet (Zhang et al., CVPR 2018) through the `lpips` package.

The network is the package's own lpips.LPIPS(net='alex', version='0.1'): its scaling layer,
AlexNet ReLU taps, unit-normalised features and learned linear layers. We only supply the
weights, so the package never reaches the network: it is built with a random trunk and no
linear weights (pnet_rand=True, pretrained=False), then given
  evaluate.alexnet_weights  torchvision's AlexNet state dict (features.* keys) -> net.slice*
  evaluate.lpips_weights    the LPIPS v0.1 AlexNet linear layers (lin{0..4}.model.1.weight,
                            the package's weights/v0.1/alex.pth)
both resolved by pipeline.core.weights (names "alexnet", "lpips_alex", or local files). Anything
missing -> (None, reason), never a made-up number. Inputs: uint8 RGB pairs at native size,
mapped to [-1, 1] as the package expects.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

LIN_KEYS = tuple(f"lin{i}.model.1.weight" for i in range(5))


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a state dict")
    return state


def build_lpips(alexnet_state: dict[str, torch.Tensor], lin_state: dict[str, torch.Tensor]) -> nn.Module:
    """The package's LPIPS (alex, v0.1) with the given trunk and linear-layer weights.

    alexnet_state: torchvision alexnet() keys (features.0.weight ...); lin_state: LIN_KEYS.
    Raises ValueError naming the missing keys, RuntimeError on shape mismatches."""
    import lpips as lp

    with warnings.catch_warnings():  # the package still passes torchvision's old `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lp.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
    state = model.state_dict()
    trunk = {k: f"features.{k.split('.', 2)[2]}" for k in state if k.startswith("net.")}  # net.slice1.0.weight
    missing = sorted(v for v in trunk.values() if v not in alexnet_state)
    if missing:
        raise ValueError(f"AlexNet weights lack {missing[:3]} (expected torchvision's alexnet() state dict)")
    lin_missing = [k for k in LIN_KEYS if k not in lin_state]
    if lin_missing:
        raise ValueError(f"LPIPS weights lack {lin_missing[:3]} (expected the lpips package's v0.1 alex.pth)")
    state.update({k: alexnet_state[v] for k, v in trunk.items()})
    for i, key in enumerate(LIN_KEYS):  # the package registers each linear layer twice
        state[key] = state[f"lins.{i}.model.1.weight"] = lin_state[key]
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def load_lpips(
    lin_spec: str | None,
    alexnet_spec: str | None,
    *,
    allow_download: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module | None, str]:
    """(model, description) or (None, reason); never raises for missing weights.

    lin_spec / alexnet_spec: pipeline.core.weights names ("lpips_alex" / "alexnet") or local
    files; None = LPIPS not computed."""
    for spec, param in ((lin_spec, "evaluate.lpips_weights"), (alexnet_spec, "evaluate.alexnet_weights")):
        if not spec:
            return None, f"{param} is null: LPIPS not computed"
    try:
        from pipeline.core import weights  # interface 1 (pipeline/core/weights.py)

        lin_path = weights.resolve(lin_spec, "evaluate.lpips_weights", allow_download=allow_download)
        alex_path = weights.resolve(alexnet_spec, "evaluate.alexnet_weights", allow_download=allow_download)
        model = build_lpips(_load_state(alex_path), _load_state(lin_path))
    except FileNotFoundError as exc:  # pipeline.core.weights.WeightsError: one line already
        return None, str(exc)
    except Exception as exc:  # wrong layout, corrupt file: report, never invent numbers
        return None, f"LPIPS weights unusable: {type(exc).__name__}: {exc}"
    return model.to(device), f"lpips {_version()} LPIPS v0.1 AlexNet (linear layers {lin_path}; AlexNet {alex_path})"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lpips")
    except PackageNotFoundError:
        return "?"


@torch.no_grad()
def lpips_distance(real, generated, model: nn.Module, *, batch_size: int = 32,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """uint8 [B, H, W, 3] pairs -> float64 [B] (the package's distance, inputs in [-1, 1])."""
    real, generated = np.asarray(real), np.asarray(generated)
    if real.shape != generated.shape:
        raise ValueError(f"shape mismatch: {real.shape} vs {generated.shape}")

    def to_unit(a: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(a)).to(device).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0

    out = []
    for s in range(0, len(real), max(batch_size, 1)):
        d = model(to_unit(real[s : s + batch_size]), to_unit(generated[s : s + batch_size]))
        out.append(d.reshape(-1).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)
