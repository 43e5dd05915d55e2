"""Discriminator: both heads' output shapes and kinds, the original head against a functional
transcription of method.md, its parameter count, conditioning on every input, init."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from pipeline.core.config import ModelConfig
from pipeline.model.discriminator import DISC_OUTPUT, Discriminator
from pipeline.model.norm import SampleNorm

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(disc_widths=(8, 16, 16, 32))


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(TINY, **changes)


def inputs(batch: int, height: int, width: int):
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(batch, 3, height, width, generator=gen) * 2 - 1,
            torch.rand(batch, 18, height, width, generator=gen),
            torch.rand(batch, 3, height, width, generator=gen) * 2 - 1,
            torch.rand(batch, 18, height, width, generator=gen))


@pytest.mark.parametrize("norm", ["sample", "instance"])
@pytest.mark.parametrize("head,size,patches", [
    ("patch", (128, 64), (7, 3)), ("patch", (256, 128), (15, 7)),
    ("original", (128, 64), (3, 1)), ("original", (256, 128), (7, 3)),
])
def test_output_shape_and_kind(head, size, patches, norm):
    torch.manual_seed(0)
    disc = Discriminator(tiny(disc_head=head, norm=norm))
    out = disc(*inputs(2, *size))
    assert out.shape == (2, 1, *patches) and torch.isfinite(out).all()
    assert disc.output == DISC_OUTPUT[head]
    if head == "original":
        assert disc.output == "prob" and ((out > 0) & (out < 1)).all()
    else:
        assert disc.output == "logit" and (out < 0).any()  # raw logits, not probabilities


def _keras_sample_norm(x, gamma, beta):
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = (x - mean).square().mean(dim=(1, 2, 3), keepdim=True).sqrt() + 1e-3
    return (x - mean) / std * gamma + beta


def test_original_head_equals_method_md_transcription():
    """method.md: 4x4/2 conv with bias, no padding; blocks LeakyReLU(0.2) -> zero-pad 1 ->
    4x4/2 conv without bias -> norm; LeakyReLU -> pad 1 -> 4x4/2 conv to 1, no bias -> sigmoid.
    Re-computed with functional ops from the module's weights."""
    torch.manual_seed(0)
    disc = Discriminator(tiny(disc_head="original", norm="sample")).eval()
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in disc.modules() if isinstance(m, SampleNorm)]
    assert len(convs) == 5 and len(norms) == 3
    with torch.no_grad():  # non-trivial affines, so a misplaced norm would show
        for i, n in enumerate(norms):
            n.weight.fill_(1.0 + 0.3 * i)
            n.bias.fill_(0.1 * i - 0.2)
    xa, ha, x, hb = inputs(2, 128, 64)
    with torch.no_grad():
        y = F.conv2d(torch.cat([xa, ha, x, hb], 1), convs[0].weight, convs[0].bias, stride=2)
        for conv, norm in zip(convs[1:4], norms):
            y = F.conv2d(F.pad(F.leaky_relu(y, 0.2), (1, 1, 1, 1)), conv.weight, stride=2)
            y = _keras_sample_norm(y, norm.weight, norm.bias)
        y = torch.sigmoid(F.conv2d(F.pad(F.leaky_relu(y, 0.2), (1, 1, 1, 1)), convs[4].weight,
                                   stride=2))
        torch.testing.assert_close(disc(xa, ha, x, hb), y, rtol=1e-5, atol=1e-6)


def test_original_head_parameters():
    disc = Discriminator(ModelConfig(disc_head="original", norm="sample"))
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert convs[0].in_channels == 42 and convs[0].padding == (0, 0)
    assert convs[0].bias is not None and all(c.bias is None for c in convs[1:])
    # method.md: 42 -> 64 conv with bias; 64 -> 128 -> 256 -> 512 convs without bias, each
    # followed by a norm with one scalar gamma and beta; 512 -> 1 conv without bias.
    expected = (42 * 64 * 16 + 64) + (64 * 128 + 128 * 256 + 256 * 512) * 16 + 3 * 2 + 512 * 16
    assert expected == 2_803_782
    assert sum(p.numel() for p in disc.parameters()) == expected


@pytest.mark.parametrize("head", ["original", "patch"])
def test_every_input_conditions_the_output(head):
    torch.manual_seed(0)
    disc = Discriminator(tiny(disc_head=head))
    batch = inputs(1, 128, 64)
    for i in range(4):
        args = [t.clone().requires_grad_(j == i) for j, t in enumerate(batch)]
        disc(*args).sum().backward()
        assert args[i].grad.abs().sum() > 0


def test_original_probabilities_are_float32_under_autocast():
    disc = Discriminator(tiny(disc_head="original"))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = disc(*inputs(2, 128, 64))
    assert out.dtype == torch.float32 and ((out > 0) & (out < 1)).all()


def test_patch_head_layers_and_normal_init():
    disc = Discriminator(ModelConfig(disc_head="patch", norm="instance", init="normal"))
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert convs[0].in_channels == 42
    assert [c.bias is not None for c in convs] == [True, False, False, False, True]
    assert convs[-1].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in disc.blocks[0])
    big = convs[3].weight
    assert abs(big.std().item() - 0.02) < 0.002 and abs(big.mean().item()) < 0.002


def test_bad_head():
    with pytest.raises(ValueError, match="disc_head"):
        Discriminator(tiny(disc_head="sim"))
