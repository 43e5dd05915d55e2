"""Discriminator: patch output shape, conditioning on every input, init."""
from __future__ import annotations

import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.model.discriminator import Discriminator

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(disc_widths=(8, 16, 16, 32))



def inputs(batch: int, height: int, width: int):
    gen = torch.Generator().manual_seed(0)
    return (torch.rand(batch, 3, height, width, generator=gen) * 2 - 1,
            torch.rand(batch, 18, height, width, generator=gen),
            torch.rand(batch, 3, height, width, generator=gen) * 2 - 1,
            torch.rand(batch, 18, height, width, generator=gen))


@pytest.mark.parametrize("size,patches", [((128, 64), (7, 3)), ((256, 128), (15, 7))])
def test_patch_logits_shape(size, patches):
    disc = Discriminator(TINY)
    out = disc(*inputs(2, *size))
    assert out.shape == (2, 1, *patches)
    assert torch.isfinite(out).all()


def test_every_input_conditions_the_output():
    torch.manual_seed(0)
    disc = Discriminator(TINY)
    batch = inputs(1, 128, 64)
    for i in range(4):
        args = [t.clone().requires_grad_(j == i) for j, t in enumerate(batch)]
        disc(*args).sum().backward()
        assert args[i].grad.abs().sum() > 0


def test_paper_widths_and_init():
    disc = Discriminator(ModelConfig())
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 1]
    assert convs[0].in_channels == 42
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in disc.blocks[0])
    big = convs[3].weight
    assert abs(big.std().item() - 0.02) < 0.002 and abs(big.mean().item()) < 0.002
