"""Generator: shapes for every warp mode, gradients, offsets, paper-model equivalence,
resize-conv decoder upsampling."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.config import ConfigError, ModelConfig, from_dict
from pipeline.model.blocks import up_block
from pipeline.model.generator import Generator, GeneratorOutput

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(encoder_widths=(8, 16, 16, 32, 32, 32), decoder_widths=(32, 32, 16, 16, 8),
                   disc_widths=(8, 16, 16, 32))
# A frontal pose at 128 x 64, (x, y), OpenPose-18 order.
POSE = torch.tensor([
    [32, 14], [32, 26], [24, 26], [21, 42], [20, 57], [40, 26], [43, 42], [44, 57],
    [27, 62], [26, 86], [26, 110], [37, 62], [38, 86], [38, 110],
    [30, 12], [34, 12], [28, 13], [36, 13],
], dtype=torch.float32)



def inputs(batch: int, height: int, width: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([width / 64, height / 128])
    kpa = (POSE * scale).expand(batch, -1, -1).clone()
    kpb = kpa + torch.randn(batch, 18, 2, generator=gen) * 3 + torch.tensor([4.0, -2.0])
    kpb[:, 4] = -1  # a missing target wrist
    xa = torch.rand(batch, 3, height, width, generator=gen) * 2 - 1
    ha = torch.rand(batch, 18, height, width, generator=gen)
    hb = torch.rand(batch, 18, height, width, generator=gen)
    return xa, ha, hb, kpa, kpb


def tiny(**changes) -> ModelConfig:
    return dataclasses.replace(TINY, **changes)


@pytest.mark.parametrize("warp", ["none", "global", "parts"])
@pytest.mark.parametrize("offsets", [False, True])
def test_output_shapes_all_modes(warp, offsets):
    torch.manual_seed(0)
    gen = Generator(tiny(warp=warp, offsets=offsets), 128, 64)
    out = gen(*inputs(2, 128, 64))
    assert isinstance(out, GeneratorOutput)
    assert out.image.shape == (2, 3, 128, 64)
    assert out.image.abs().max() <= 1 and torch.isfinite(out.image).all()
    if offsets:
        assert [tuple(o.shape) for o in out.offsets] == [
            (2, 2, 128, 64), (2, 2, 64, 32), (2, 2, 32, 16), (2, 2, 16, 8)]
        assert all((o == 0).all() for o in out.offsets)  # zero-initialised heads
    else:
        assert out.offsets == []


@pytest.mark.parametrize("agg", ["max", "avg"])
def test_output_shape_256x128(agg):
    gen = Generator(tiny(warp_agg=agg), 256, 128)
    out = gen(*inputs(1, 256, 128))
    assert out.image.shape == (1, 3, 256, 128)
    assert out.offsets[0].shape == (1, 2, 256, 128)


def test_gradients_reach_both_encoders_and_offset_heads():
    torch.manual_seed(0)
    gen = Generator(tiny(dropout=0.0), 128, 64)
    opt = torch.optim.SGD(gen.parameters(), lr=0.5)

    def step():
        opt.zero_grad()
        out = gen(*inputs(1, 128, 64))
        (out.image.square().mean() + sum(o.square().mean() for o in out.offsets)).backward()

    step()
    assert gen.appearance.stem.weight.grad.abs().sum() > 0
    assert gen.pose.stem.weight.grad.abs().sum() > 0
    for head in gen.offset_heads:  # zero-init last conv still receives a gradient
        assert head.out.weight.grad.abs().sum() > 0
    opt.step()
    step()  # now the last convs are non-zero: the gradient reaches the heads' first convs
    for head in gen.offset_heads:
        assert head.out.weight.abs().sum() > 0
        assert head.hidden.weight.grad.abs().sum() > 0


def test_zero_offsets_equal_offsets_disabled_model():
    torch.manual_seed(0)
    with_offsets = Generator(tiny(offsets=True), 128, 64).eval()
    paper = Generator(tiny(offsets=False), 128, 64).eval()
    missing, unexpected = paper.load_state_dict(with_offsets.state_dict(), strict=False)
    assert not missing and unexpected and all(k.startswith("offset_heads") for k in unexpected)
    batch = inputs(2, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(with_offsets(*batch).image, paper(*batch).image)


def test_target_pose_keypoints_steer_the_warp():
    batch = inputs(1, 128, 64)
    xa, ha, hb, kpa, kpb = batch
    moved = kpb + torch.tensor([6.0, 0.0])
    for warp, expect_change in (("parts", True), ("global", True), ("none", False)):
        torch.manual_seed(0)
        gen = Generator(tiny(warp=warp, offsets=False), 128, 64).eval()
        with torch.no_grad():
            a = gen(xa, ha, hb, kpa, kpb).image
            b = gen(xa, ha, hb, kpa, moved).image
        assert (not torch.allclose(a, b)) == expect_change, warp


def test_paper_widths_parameter_count_and_dropout_blocks():
    gen = Generator(ModelConfig(offsets=False), 128, 64)
    n = sum(p.numel() for p in gen.parameters())
    assert 40e6 < n < 90e6  # two 6-level encoders + 5-block U-Net decoder at 512 wide
    drops = [any(isinstance(m, torch.nn.Dropout) for m in block) for block in gen.decoder]
    assert drops == [True, True, True, False, False]


def test_channels_last_and_cpu_autocast():
    torch.manual_seed(0)
    gen = Generator(tiny(), 128, 64).eval()
    batch = inputs(1, 128, 64)
    with torch.no_grad():
        ref = gen(*batch).image
        gen_cl = gen.to(memory_format=torch.channels_last)
        images = [t.to(memory_format=torch.channels_last) for t in batch[:3]]
        torch.testing.assert_close(gen_cl(*images, *batch[3:]).image, ref, atol=1e-4, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = gen(*batch)
    assert low.image.shape == ref.shape and torch.isfinite(low.image).all()
    assert (low.image.float() - ref).abs().mean() < 0.05


def test_bad_configuration_errors():
    with pytest.raises(ValueError, match="divisible"):
        Generator(TINY, 100, 64)
    with pytest.raises(ValueError, match="decoder_widths"):
        Generator(tiny(decoder_widths=(8, 8)), 128, 64)
    xa, ha, hb, kpa, kpb = inputs(1, 128, 64)
    with pytest.raises(ValueError, match="kpb"):
        Generator(TINY, 128, 64)(xa, ha, hb, kpa, kpb[:, :17])


@pytest.mark.parametrize("height,width", [(128, 64), (256, 128)])
def test_resize_upsample_output_shapes(height, width):
    torch.manual_seed(0)
    gen = Generator(tiny(upsample="resize"), height, width)
    # every decoder block is ReLU -> nearest 2x -> 3x3 conv -> IN (no transposed conv)
    for block in gen.decoder:
        assert isinstance(block[1], torch.nn.Upsample) and block[1].mode == "nearest"
        assert isinstance(block[2], torch.nn.Conv2d) and block[2].kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in gen.modules())
    out = gen(*inputs(2, height, width))
    assert out.image.shape == (2, 3, height, width)
    assert out.image.abs().max() <= 1 and torch.isfinite(out.image).all()
    assert out.offsets[0].shape == (2, 2, height, width)


def test_resize_upsample_gradients_flow():
    torch.manual_seed(0)
    gen = Generator(tiny(upsample="resize", dropout=0.0), 128, 64)
    gen(*inputs(1, 128, 64)).image.square().mean().backward()
    for block in gen.decoder:
        assert block[2].weight.grad.abs().sum() > 0  # every resize conv learns
    assert gen.appearance.stem.weight.grad.abs().sum() > 0
    assert gen.pose.stem.weight.grad.abs().sum() > 0


def test_resize_block_has_no_checkerboard_on_constant_input():
    # A constant map through ReLU -> 4x4/2 transposed conv gives a period-2 pattern (kernel
    # taps overlap unevenly); the resize conv is exactly constant away from the border.
    torch.manual_seed(0)
    x = torch.ones(1, 4, 8, 8)
    for mode, periodic in (("transpose", True), ("resize", False)):
        conv = up_block(4, 4, upsample=mode)[:-1]  # up to the conv, before instance norm
        with torch.no_grad():
            y = conv(x)[..., 2:-2, 2:-2]
        assert y.shape[-2:] == (12, 12)
        assert (y.std(dim=(-2, -1)) > 1e-4).any().item() == periodic, mode


def test_upsample_config_validation():
    assert ModelConfig().upsample == "transpose"
    assert from_dict(ModelConfig, {"upsample": "resize"}).upsample == "resize"
    with pytest.raises(ConfigError, match="upsample"):
        from_dict(ModelConfig, {"upsample": "bilinear"})
    with pytest.raises(ValueError, match="upsample"):
        Generator(tiny(upsample="pixelshuffle"), 128, 64)
    with pytest.raises(ValueError, match="upsample"):
        up_block(4, 4, upsample="bilinear")
