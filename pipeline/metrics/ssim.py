"""Batched SSIM exactly as the Market-1501 papers compute it (see pipeline/metrics/__init__.py).

The reference is scikit-image's

    structural_similarity(real, gen, gaussian_weights=True, sigma=1.5,
                          use_sample_covariance=False, channel_axis=2,
                          data_range=gen.max() - gen.min())

i.e. Gaussian window (sigma 1.5, truncated at 3.5 sigma -> 11 taps), K1 = 0.01, K2 = 0.03,
the SSIM map averaged over the pixels at least 5 px from the border and over the 3 channels.
skimage filters the whole image ('reflect' borders) and then crops (win - 1) / 2 pixels;
the filter radius equals that crop, so no kept pixel ever reads a padded value and a 'valid'
convolution gives exactly the cropped map. The formula is symmetric in the two images, so
only data_range (taken from the GENERATED image, over all its channels) depends on which is
which.
"""
from __future__ import annotations

import numpy as np
import torch



def gaussian_taps(sigma: float = 1.5, truncate: float = 3.5, dtype=torch.float64) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter's 1-D kernel: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).to(dtype)


def as_nchw(images, dtype=torch.float64) -> torch.Tensor:
    """uint8 (or float, 0..255) [B, H, W, 3] numpy/tensor -> float [B, 3, H, W] tensor."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected images [B, H, W, 3], got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2).to(dtype)


def band_matrix(n: int, taps: torch.Tensor) -> torch.Tensor:
    """[n - k + 1, n] matrix whose rows are the taps slid along: a 'valid' 1-D filter."""
    k = taps.numel()
    m = torch.zeros(n - k + 1, n, dtype=taps.dtype, device=taps.device)
    rows = torch.arange(n - k + 1, device=taps.device)
    for i in range(k):
        m[rows, rows + i] = taps[i]
    return m


def valid_filter(images: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of [..., H, W] -> [..., H - k + 1, W - k + 1].

    Two matrix products with banded matrices, first along W as one large GEMM, then along H
    as a batched one; no transposed copies. On CPU this beats conv2d with 1-D kernels ~5x.
    """
    *lead, h, w = images.shape
    gh, gw = band_matrix(h, taps), band_matrix(w, taps)
    rows = images.reshape(-1, w) @ gw.T  # [N*H, W']
    out = torch.matmul(gh, rows.view(-1, h, gw.shape[0]))  # [N, H', W']
    return out.view(*lead, gh.shape[0], gw.shape[0])


def ssim_nchw(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: torch.Tensor,
    *,
    sigma: float = 1.5,
    truncate: float = 3.5,
    k1: float = 0.01,
    k2: float = 0.03,
    taps: torch.Tensor | None = None,
    cov_norm: float = 1.0,
    shift: float = 127.5,
) -> torch.Tensor:
    """SSIM of float images x, y [B, C, H, W] with per-image data_range [B] -> [B].

    Mean over channels and over the (H - 2r) x (W - 2r) valid pixels, r = filter radius.
    A data_range of 0 with identical constant images gives NaN, as in skimage.
    taps: the 1-D window (default: the Gaussian of sigma / truncate); cov_norm multiplies
    the (co)variances (skimage's NP / (NP - 1) for use_sample_covariance=True).
    """
    b, c, h, w = x.shape
    taps = (gaussian_taps(sigma, truncate, x.dtype) if taps is None else taps.to(x.dtype)).to(x.device)
    k = taps.numel()
    if h < k or w < k:
        raise ValueError(f"images of {h}x{w} are smaller than the {k}x{k} SSIM window")
    # Moments of images shifted by a constant: (co)variances do not change, and the smaller
    # magnitudes keep float32 cancellation in E[x^2] - E[x]^2 negligible.
    xc, yc = x - shift, y - shift
    stack = torch.stack([xc, yc, xc * xc, yc * yc, xc * yc], dim=0)  # [5, B, C, H, W]
    mx, my, mxx, myy, mxy = valid_filter(stack, taps).unbind(0)
    vx, vy, vxy = (cov_norm * (mxx - mx * mx), cov_norm * (myy - my * my), cov_norm * (mxy - mx * my))
    ux, uy = mx + shift, my + shift
    dr = data_range.to(x.dtype).view(b, 1, 1, 1)
    c1, c2 = (k1 * dr) ** 2, (k2 * dr) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return (num / den).mean(dim=(1, 2, 3))


def ssim(
    real,
    generated,
    *,
    chunk: int = 64,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Protocol SSIM per pair. real, generated: uint8 [B, H, W, 3] (RGB) -> float64 [B].

    data_range is max - min of each generated image (all channels). Pairs are processed in
    chunks of `chunk` to bound memory (the moment stack is 5x the input in `dtype`).
    """
    if real.shape != generated.shape:
        raise ValueError(f"shape mismatch: real {tuple(real.shape)} vs generated {tuple(generated.shape)}")
    out = []
    for s in range(0, real.shape[0], max(chunk, 1)):
        # Convert per chunk: the float copies stay small enough for the CPU caches.
        x = as_nchw(real[s : s + chunk], dtype).to(device)
        y = as_nchw(generated[s : s + chunk], dtype).to(device)
        flat = y.flatten(1)
        dr = flat.amax(1) - flat.amin(1)
        out.append(ssim_nchw(x, y, dr).cpu())
    if not out:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(out).to(torch.float64).numpy()


def ssim_variant(
    real,
    generated,
    *,
    sigma: float | None = 1.5,
    win_size: int | None = None,
    data_range: float | None = None,
    chunk: int = 64,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """skimage.metrics.structural_similarity per pair, batched, in float64, for the variants
    the paper families call (channel_axis=2):

      sigma=s        gaussian_weights=True, sigma=s, use_sample_covariance=False (ssim_256;
                     s=1.5 everywhere, 1.2 in PIDM's copy)
      win_size=n     the default uniform n x n window, use_sample_covariance=True (GFLA's
                     compare_ssim(data_range=1, win_size=51))

    real, generated: float or uint8 [B, H, W, 3] in any scale; data_range: a constant, or None
    for max - min of each generated image. -> float64 [B].
    """
    if real.shape != generated.shape:
        raise ValueError(f"shape mismatch: real {tuple(real.shape)} vs generated {tuple(generated.shape)}")
    if win_size is not None:
        taps, cov_norm = torch.full((win_size,), 1.0 / win_size, dtype=torch.float64), win_size ** 2 / (win_size ** 2 - 1.0)
    else:
        taps, cov_norm = gaussian_taps(sigma, 3.5, torch.float64), 1.0
    out = []
    for s in range(0, real.shape[0], max(chunk, 1)):
        x = as_nchw(real[s : s + chunk]).to(device)
        y = as_nchw(generated[s : s + chunk]).to(device)
        flat = y.flatten(1)
        dr = flat.amax(1) - flat.amin(1) if data_range is None else torch.full((len(y),), float(data_range), dtype=torch.float64)
        # Shift by the middle of the data: the cancellation in E[x^2] - E[x]^2 stays small at any scale.
        mid = 0.5 * float(torch.minimum(x.min(), y.min()) + torch.maximum(x.max(), y.max()))
        out.append(ssim_nchw(x, y, dr.to(device), taps=taps, cov_norm=cov_norm, shift=mid).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float64)
