"""Generator: shapes for every warp mode, gradients, offsets, paper-model equivalence,
resize-conv decoder upsampling, the original's layers (norm, block bias, init, size)."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pipeline.core.config import ConfigError, ModelConfig, from_dict
from pipeline.model.blocks import up_block
from pipeline.model.generator import Generator, GeneratorOutput
from pipeline.model.norm import SampleNorm

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ModelConfig(encoder_widths=(8, 16, 16, 32, 32, 32), decoder_widths=(32, 32, 16, 16, 8),
                   disc_widths=(8, 16, 16, 32))
OFFSETS = {"offsets": True, "warp_sampling": "bilinear"}  # learned offsets need bilinear
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
    gen = Generator(tiny(warp=warp, **(OFFSETS if offsets else {})), 128, 64)
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
@pytest.mark.parametrize("norm", ["sample", "instance"])
def test_output_shape_256x128(agg, norm):
    gen = Generator(tiny(warp_agg=agg, norm=norm, **OFFSETS), 256, 128)
    out = gen(*inputs(1, 256, 128))
    assert out.image.shape == (1, 3, 256, 128)
    assert out.offsets[0].shape == (1, 2, 256, 128)


def test_gradients_reach_both_encoders_and_offset_heads():
    torch.manual_seed(0)
    gen = Generator(tiny(dropout=0.0, **OFFSETS), 128, 64)
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
    with_offsets = Generator(tiny(**OFFSETS), 128, 64).eval()
    paper = Generator(tiny(warp_sampling="bilinear"), 128, 64).eval()
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
    # The original's count (method.md / issue 7); ours (per-channel norm, biases) for reference.
    gen = Generator(ModelConfig(offsets=False, norm="sample", block_bias=False), 128, 64)
    assert sum(p.numel() for p in gen.parameters()) == 61_109_085
    ours = Generator(ModelConfig(offsets=False, norm="instance", block_bias=True), 128, 64)
    assert sum(p.numel() for p in ours.parameters()) == 61_119_555
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
@pytest.mark.parametrize("norm", ["sample", "instance"])
def test_resize_upsample_output_shapes(height, width, norm):
    torch.manual_seed(0)
    gen = Generator(tiny(upsample="resize", norm=norm, **OFFSETS), height, width)
    # every decoder block is ReLU -> nearest 2x -> 3x3 conv -> norm (no transposed conv)
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
    gen = Generator(tiny(upsample="resize", dropout=0.0, **OFFSETS), 128, 64)
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


# --------------------------------------------------------------------------- original's layers


def _convs(gen: Generator):
    """(name, module) of every conv / transposed conv outside the offset heads."""
    return [(n, m) for n, m in gen.named_modules()
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))
            and not n.startswith("offset_heads")]


@pytest.mark.parametrize("block_bias", [False, True])
def test_block_bias(block_bias):
    gen = Generator(tiny(block_bias=block_bias), 128, 64)
    with_bias = {n for n, m in _convs(gen) if m.bias is not None}
    stems_and_head = {"appearance.stem", "pose.stem", "head.1"}
    # The last encoder block is the only 4x4 conv without a norm after it.
    last = {"appearance.blocks.4.1", "pose.blocks.4.1"}
    assert with_bias == (stems_and_head | last if block_bias else stems_and_head)
    assert all(m.kernel_size == (3, 3) for n, m in _convs(gen) if n in stems_and_head)


@pytest.mark.parametrize("norm,kind", [("sample", SampleNorm),
                                       ("instance", torch.nn.InstanceNorm2d)])
def test_norm_choice(norm, kind):
    gen = Generator(tiny(norm=norm), 128, 64)
    norms = [m for m in gen.modules() if isinstance(m, (SampleNorm, torch.nn.InstanceNorm2d))]
    # 4 normalised blocks per encoder (the last has none) + one per decoder block.
    assert len(norms) == 2 * 4 + 5 and all(isinstance(m, kind) for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gen.modules())


def test_glorot_init_matches_keras_fans():
    torch.manual_seed(0)
    gen = Generator(ModelConfig(init="glorot", **OFFSETS), 128, 64)
    for name, conv in _convs(gen):
        w = conv.weight
        k = w.shape[2] * w.shape[3]
        if isinstance(conv, torch.nn.ConvTranspose2d):
            in_ch, out_ch = w.shape[:2]  # torch [in, out, k, k]; Keras kernel (k, k, out, in)
            fan_in, fan_out = k * out_ch, k * in_ch
        else:
            out_ch, in_ch = w.shape[:2]  # torch [out, in, k, k]; Keras kernel (k, k, in, out)
            fan_in, fan_out = k * in_ch, k * out_ch
        bound = math.sqrt(6 / (fan_in + fan_out))
        assert w.abs().max().item() <= bound * (1 + 1e-6), name  # float32 rounding
        if w.numel() > 10_000:  # U(-a, a) has std a / sqrt(3) and mean 0
            assert abs(w.std().item() / (bound / math.sqrt(3)) - 1) < 0.03, name
            assert abs(w.mean().item()) < 0.02 * bound, name
        if conv.bias is not None:
            assert (conv.bias == 0).all(), name
    for norm in (m for m in gen.modules() if isinstance(m, SampleNorm)):
        assert norm.weight.item() == 1.0 and norm.bias.item() == 0.0
    # The offset heads keep their own init: N(0, 0.02) hidden conv, zero output conv.
    for head in gen.offset_heads:
        assert (head.out.weight == 0).all() and (head.out.bias == 0).all()
    big = gen.offset_heads[0].hidden.weight
    assert abs(big.std().item() - 0.02) < 0.002


def test_normal_init():
    torch.manual_seed(0)
    gen = Generator(ModelConfig(init="normal", norm="instance"), 128, 64)
    w = gen.decoder[0][1].weight  # a 1024 -> 512 transposed conv
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    norms = [m for m in gen.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in norms)


def test_layer_options_validation():
    with pytest.raises(ValueError, match="warp_sampling"):
        Generator(tiny(offsets=True, warp_sampling="nearest"), 128, 64)
    with pytest.raises(ValueError, match="model.norm"):
        Generator(tiny(norm="batch"), 128, 64)
    with pytest.raises(ValueError, match="model.init"):
        Generator(tiny(init="kaiming"), 128, 64)
    for field, bad in (("norm", "batch"), ("init", "kaiming"), ("block_bias", "yes")):
        with pytest.raises(ConfigError, match=field):
            from_dict(ModelConfig, {field: bad})
