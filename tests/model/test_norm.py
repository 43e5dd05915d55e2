"""Normalisation: SampleNorm against a NumPy transcription of keras-contrib's
InstanceNormalization(axis=None); memory formats, autocast, gradients, make_norm."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.model.norm import SampleNorm, make_norm

pytestmark = pytest.mark.usefixtures("one_thread")


def keras_contrib_reference(x: np.ndarray, gamma: float, beta: float,
                            epsilon: float = 1e-3) -> np.ndarray:
    """keras-contrib InstanceNormalization.call with axis=None, written from its formula:
    the reduction axes are every axis but the batch axis, K.std is the population std, the
    epsilon is added to the std, and gamma/beta have shape (1,)."""
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True)) + epsilon
    return (x - mean) / std * gamma + beta


def random_input(shape, seed, loc=0.0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale + loc


@pytest.mark.parametrize("shape,loc,scale", [
    ((2, 8, 16, 8), 0.0, 1.0), ((3, 5, 7, 3), 4.0, 0.3), ((1, 64, 4, 2), -1.0, 10.0),
    ((2, 3, 1, 1), 0.0, 1e-3),  # tiny spread: the std + 1e-3 epsilon matters
])
def test_equals_keras_contrib_formula(shape, loc, scale):
    norm = SampleNorm()
    with torch.no_grad():
        norm.weight.fill_(1.7)
        norm.bias.fill_(-0.4)
    x = random_input(shape, seed=sum(shape), loc=loc, scale=scale)
    expected = keras_contrib_reference(x.double().numpy(), 1.7, -0.4)
    with torch.no_grad():
        out = norm(x)
    assert out.dtype == torch.float32 and out.shape == x.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-4)


def test_one_scalar_gamma_and_beta_initialised_to_one_and_zero():
    norm = SampleNorm()
    params = dict(norm.named_parameters())
    assert set(params) == {"weight", "bias"}
    assert all(p.numel() == 1 for p in params.values())
    assert norm.weight.item() == 1.0 and norm.bias.item() == 0.0
    # Default affine: zero mean and (almost) unit population std per sample.
    x = random_input((3, 6, 8, 4), seed=1, loc=2.0, scale=5.0)
    with torch.no_grad():
        y = norm(x)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(1, 2, 3), correction=0), torch.full((3,), 5 / 5.001),
                               atol=2e-3, rtol=0)


def test_statistics_span_channels_not_per_channel():
    # Channels with different means keep their offsets after SampleNorm (one mean over
    # C x H x W), unlike per-channel instance norm which removes them.
    x = torch.cat([torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8) + 5], 1)
    with torch.no_grad():
        sample = SampleNorm()(x).mean(dim=(2, 3))
        instance = make_norm("instance", 2)(x).mean(dim=(2, 3))
    assert sample[0, 1] - sample[0, 0] > 1.5
    assert instance.abs().max() < 1e-5


def _torch_formula(x, gamma, beta, eps=1e-3):
    """The keras-contrib formula in plain torch ops, for autograd's reference gradients."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = (x - mean).square().mean(dim=(1, 2, 3), keepdim=True).sqrt() + eps
    return (x - mean) / std * gamma + beta


def test_gradients_match_float64_autograd_of_the_formula():
    norm = SampleNorm().double()
    with torch.no_grad():
        norm.weight.fill_(0.8)
        norm.bias.fill_(0.3)
    x = random_input((2, 3, 4, 5), seed=2, loc=1.0).double().requires_grad_(True)
    assert torch.autograd.gradcheck(norm, (x,), eps=1e-6, atol=1e-5)
    # Every gradient (x, gamma, beta) of the float32 layer, channels_last included, against
    # autograd through the formula in float64.
    x64 = random_input((3, 6, 5, 4), seed=5, loc=-2.0, scale=3.0).double()
    upstream = random_input((3, 6, 5, 4), seed=6).double()
    gamma = torch.tensor(1.4, dtype=torch.float64, requires_grad=True)
    beta = torch.tensor(-0.5, dtype=torch.float64, requires_grad=True)
    x_ref = x64.clone().requires_grad_(True)
    (_torch_formula(x_ref, gamma, beta) * upstream).sum().backward()
    for layout in (torch.contiguous_format, torch.channels_last):
        norm = SampleNorm()
        with torch.no_grad():
            norm.weight.fill_(1.4)
            norm.bias.fill_(-0.5)
        x32 = x64.float().to(memory_format=layout).requires_grad_(True)
        (norm(x32) * upstream.float()).sum().backward()
        torch.testing.assert_close(x32.grad.double(), x_ref.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm.weight.grad.double(), gamma.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(norm.bias.grad.double(), beta.grad, rtol=1e-4, atol=1e-5)
    # A constant map (zero variance) still has finite gradients.
    const = torch.full((1, 2, 3, 3), 0.5, requires_grad=True)
    SampleNorm()(const).sum().backward()
    assert torch.isfinite(const.grad).all()


def test_channels_last_keeps_layout_and_values():
    x = random_input((2, 16, 8, 4), seed=3)
    norm = SampleNorm()
    with torch.no_grad():
        ref = norm(x)
        cl = norm(x.to(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, ref)


def test_autocast_computes_statistics_in_float32():
    # A common offset of 40 std: a bf16 mean (step 0.25 there) would shift the output by up
    # to ~0.1 (0.09 here); float32 statistics leave only the output's bf16 rounding (< 0.01).
    x = random_input((2, 8, 8, 4), seed=4, loc=40.0, scale=1.0).bfloat16()
    expected = keras_contrib_reference(x.double().numpy(), 1.0, 0.0)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SampleNorm()(x)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
    np.testing.assert_allclose(out.detach().float().numpy(), expected, rtol=0, atol=0.03)


def test_make_norm_kinds():
    assert isinstance(make_norm("sample", 8), SampleNorm)
    inst = make_norm("instance", 8)
    assert isinstance(inst, torch.nn.InstanceNorm2d) and inst.affine
    assert inst.weight.shape == (8,)
    with pytest.raises(ValueError, match="model.norm"):
        make_norm("batch", 8)
