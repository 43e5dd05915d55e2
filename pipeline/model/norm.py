"""Normalisation layers, chosen by model.norm.

"sample" is what the original code used: keras-contrib's InstanceNormalization() with its
default axis=None. Despite the name it normalises each sample over ALL of its C x H x W
values at once, divides by (std + 1e-3) (epsilon on the std, population std), and has one
scalar gamma and one scalar beta per layer:

    y = (x - mean_chw(x)) / (std_chw(x) + 1e-3) * gamma + beta

"instance" is per-channel instance norm with per-channel affine (nn.InstanceNorm2d), ours.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

NORMS = ("sample", "instance")
SAMPLE_NORM_EPS = 1e-3  # keras-contrib's default epsilon
# The variance is clamped to this before the square root: sqrt has an infinite gradient at
# 0 (a constant map), and the clamp changes the std by at most 1e-6, far below the epsilon.
_VAR_FLOOR = 1e-12


def _moments(x: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Per-sample mean and population variance of x over dims, keepdim."""
    if x.is_cuda:  # one fused (Welford) reduction
        var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        return mean, var
    # On CPU var_mean is a scalar loop (~5x a whole normalisation); two vectorised passes.
    mean = x.mean(dim=dims, keepdim=True)
    return mean, (x - mean).square_().mean(dim=dims, keepdim=True)


class _SampleNormFn(torch.autograd.Function):
    """y = (x - m) * a + beta with a = gamma / (std + eps), m and std over every non-batch
    dim. Hand-written backward (two reductions, two elementwise passes), ~4x cheaper than
    autograd through var_mean; everything in `stat` (float32, or float64 for doubles).

    With g = dL/dy, N values per sample, S1 = sum g, S2 = sum g (x - m):
      dL/dx = a (g - S1 / N) - gamma S2 / ((std + eps)^2 N std) (x - m),
      dL/dgamma = sum_b S2 / (std + eps),  dL/dbeta = sum_b S1.
    """

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        dims = tuple(range(1, x.dim()))
        stat = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(x.device.type, enabled=False):
            mean, var = _moments(x.to(stat), dims)
            std = var.clamp_min(_VAR_FLOOR).sqrt()
            a = gamma.to(stat) / (std + eps)
            out = torch.addcmul(beta.to(stat) - mean * a, x, a)  # in `stat` for low-precision x
        ctx.save_for_backward(x, gamma, mean, std, var >= _VAR_FLOOR)
        ctx.eps, ctx.dims = eps, dims
        return out.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, gamma, mean, std, live = ctx.saved_tensors
        dims, n = ctx.dims, x[0].numel()
        with torch.autocast(x.device.type, enabled=False):
            g = grad.to(mean.dtype)
            centred = x.to(mean.dtype) - mean
            s1 = g.sum(dims, keepdim=True)
            s2 = (centred * g).sum(dims, keepdim=True)
            denom = std + ctx.eps
            gam = gamma.to(mean.dtype)
            a = gam / denom
            # The std's own gradient; none where the variance was clamped (a constant map).
            c1 = torch.where(live, -gam * s2 / (denom.square() * n * std), 0.0)
            dx = torch.addcmul(-a * s1 / n, centred, c1).addcmul_(g, a)
            dgamma = (s2 / denom).sum().to(gamma.dtype)
            dbeta = s1.sum().to(gamma.dtype)
        return dx.to(x.dtype), dgamma, dbeta, None


class SampleNorm(nn.Module):
    """keras-contrib InstanceNormalization(axis=None): [B, C, H, W] -> same shape and dtype.

    The statistics and the affine are computed in float32 whatever the input dtype (safe
    under autocast); the result is cast back to x's dtype. Any memory format: the reduction
    is over every non-batch dimension and the output keeps x's layout.
    """

    def __init__(self, eps: float = SAMPLE_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(()))  # gamma: one scalar per layer
        self.bias = nn.Parameter(torch.zeros(()))   # beta: one scalar per layer

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ValueError(f"SampleNorm: expected [B, ...] input, got {tuple(x.shape)}")
        return _SampleNormFn.apply(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def make_norm(kind: str, channels: int) -> nn.Module:
    """The normalisation layer for model.norm `kind` over `channels` feature maps."""
    if kind == "sample":
        return SampleNorm()
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"model.norm must be one of {NORMS}, got {kind!r}")
