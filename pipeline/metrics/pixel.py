"""Pixel metrics: L1 and masked L1, in [0, 1] intensity units (see metrics/__init__.py)."""
from __future__ import annotations

import numpy as np
import torch


def _pair(real, generated) -> tuple[torch.Tensor, torch.Tensor]:
    r = torch.as_tensor(np.asarray(real)).to(torch.float32)
    g = torch.as_tensor(np.asarray(generated)).to(torch.float32)
    if r.shape != g.shape or r.ndim != 4:
        raise ValueError(f"expected two [B, H, W, C] batches of one shape, got {tuple(r.shape)} and {tuple(g.shape)}")
    return r, g


def l1(real, generated) -> np.ndarray:
    """mean |real - generated| / 255 over pixels and channels. uint8 [B, H, W, 3] -> float64 [B]."""
    r, g = _pair(real, generated)
    return ((r - g).abs().mean(dim=(1, 2, 3)) / 255.0).double().numpy()


def masked_l1(real, generated, masks) -> np.ndarray:
    """sum over mask of |real - generated| / 255, divided by (mask pixels x channels).

    masks: bool [B, H, W]. float64 [B]; NaN for an empty mask.
    """
    r, g = _pair(real, generated)
    m = torch.as_tensor(masks.cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks))
    if m.shape != r.shape[:3]:
        raise ValueError(f"mask shape {tuple(m.shape)} does not match images {tuple(r.shape)}")
    m = m.to(torch.float32).unsqueeze(-1)
    total = ((r - g).abs() * m).sum(dim=(1, 2, 3)) / 255.0
    area = m.sum(dim=(1, 2, 3)) * r.shape[-1]
    out = (total.double() / area.double()).numpy()
    out[area.numpy() == 0] = np.nan
    return out
