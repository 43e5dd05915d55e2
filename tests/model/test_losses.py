"""Training losses: NN loss against a naive reference, GAN values (logits and the original's
probabilities), TV, LossComputer wiring."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from conftest import shared_path
from pipeline.core.config import LossConfig
from pipeline.model.losses import (
    NN_LAYER,
    LossComputer,
    d_loss,
    g_adv_loss,
    nn_loss,
    offset_smoothness,
    perceptual_loss,
)

VGG_FILE = "weights/vgg19_features_caffe_rgb_fp16.pt"


def naive_nn_loss(gen: torch.Tensor, real: torch.Tensor, window: int) -> torch.Tensor:
    """Direct formula: every shifted copy of real (inf outside the image), min over offsets."""
    b, c, h, w = gen.shape
    r = window // 2
    padded = F.pad(real, (r, r, r, r), value=float("nan"))
    dists = []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = padded[:, :, r + dy:r + dy + h, r + dx:r + dx + w]
            d = (shifted - gen).abs().sum(1)
            dists.append(torch.where(torch.isnan(d), torch.full_like(d, float("inf")), d))
    return torch.stack(dists).min(0).values.mean()


def structured(b=2, c=4, h=12, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys = torch.linspace(0, 3, h).view(1, 1, h, 1)
    xs = torch.linspace(0, 5, w).view(1, 1, 1, w)
    phase = torch.rand(b, c, 1, 1, generator=g) * 6
    return torch.sin(xs * 2 + ys + phase) + 0.5 * torch.cos(3 * ys - xs + phase)


# --------------------------------------------------------------------------- NN loss


def test_nn_zero_for_identical_inputs():
    x = torch.randn(2, 8, 9, 7)
    assert nn_loss(x, x.clone(), 3).item() == 0.0


@pytest.mark.parametrize("window", [1, 3, 5])
@pytest.mark.parametrize("shape", [(2, 5, 9, 7), (1, 3, 4, 3), (3, 2, 1, 6)])
def test_nn_equals_naive_reference(window, shape):
    g = torch.Generator().manual_seed(window * 100 + sum(shape))
    gen, real = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    expected = naive_nn_loss(gen, real, window)
    torch.testing.assert_close(nn_loss(gen, real, window), expected, rtol=1e-5, atol=1e-5)


def test_nn_window_one_is_channel_summed_l1():
    gen, real = torch.randn(2, 6, 8, 5), torch.randn(2, 6, 8, 5)
    torch.testing.assert_close(nn_loss(gen, real, 1), (gen - real).abs().sum(1).mean())


@pytest.mark.parametrize("dy, dx", [(0, 1), (1, 0), (-1, -1)])
def test_nn_forgives_a_one_pixel_shift(dy, dx):
    real = structured(h=16, w=12)
    gen = torch.roll(real, shifts=(dy, dx), dims=(2, 3))
    l1 = (gen - real).abs().sum(1).mean()
    nn3 = nn_loss(gen, real, 3)
    # Only the wrapped-around border row/column can mismatch.
    assert nn3 < 0.25 * l1
    assert nn_loss(gen, real, 5) <= nn3 + 1e-6


def test_nn_gradient_matches_naive_and_reaches_gen():
    g = torch.Generator().manual_seed(3)
    gen = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
    real = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
    a = gen.clone().requires_grad_(True)
    b = gen.clone().requires_grad_(True)
    nn_loss(a, real, 3).backward()
    naive_nn_loss(b, real, 3).backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    torch.testing.assert_close(a.grad, b.grad)


def test_nn_half_precision_input_computes_in_float32():
    gen, real = torch.randn(1, 4, 6, 5), torch.randn(1, 4, 6, 5)
    out = nn_loss(gen.half(), real.half(), 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, naive_nn_loss(gen.half().float(), real.half().float(), 3))


def test_nn_rejects_bad_input():
    with pytest.raises(ValueError, match="odd"):
        nn_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3), 2)
    with pytest.raises(ValueError, match="same shape"):
        nn_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 4), 3)


# --------------------------------------------------------------------------- other losses


def test_gan_losses_at_known_logits():
    zero = torch.zeros(4)
    assert d_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert g_adv_loss(zero).item() == pytest.approx(math.log(2))
    # Confident, correct D: ~0; fooled G: ~|logit|, finite even far from 0 and from fp16.
    big = torch.full((3,), 60.0, dtype=torch.float16)
    assert d_loss(big, -big).item() == pytest.approx(0.0, abs=1e-6)
    assert g_adv_loss(-big).item() == pytest.approx(60.0, rel=1e-4)
    assert g_adv_loss(-big).dtype == torch.float32
    x = torch.tensor([1.0, -2.0])
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(2.0))) / 2
    assert g_adv_loss(x).item() == pytest.approx(expected)


def test_gan_losses_on_probabilities_follow_the_original():
    # gan.py (pinned): D: -mean log(p_real + 1e-7) - mean log(1 - p_fake + 1e-7);
    # G: -mean log(p_fake + 1e-7).
    p_real, p_fake = torch.tensor([0.9, 0.6, 1.0]), torch.tensor([0.2, 0.0, 0.7])
    expected_d = (-sum(math.log(p + 1e-7) for p in (0.9, 0.6, 1.0)) / 3
                  - sum(math.log(1 - p + 1e-7) for p in (0.2, 0.0, 0.7)) / 3)
    assert d_loss(p_real, p_fake, "prob").item() == pytest.approx(expected_d, rel=1e-6)
    expected_g = -sum(math.log(p + 1e-7) for p in (0.2, 0.0, 0.7)) / 3
    assert g_adv_loss(p_fake, "prob").item() == pytest.approx(expected_g, rel=1e-6)
    # p = 0 is finite thanks to the epsilon: -log(1e-7); half inputs give float32 losses.
    zero = torch.zeros(2, dtype=torch.float16)
    assert g_adv_loss(zero, "prob").item() == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert g_adv_loss(zero, "prob").dtype == torch.float32
    assert d_loss(zero, zero, "prob").dtype == torch.float32
    with pytest.raises(ValueError, match="disc_output"):
        g_adv_loss(zero, "probability")


def test_probability_and_logit_losses_agree_away_from_saturation():
    logits = torch.linspace(-4, 4, 9)
    probs = torch.sigmoid(logits)
    torch.testing.assert_close(d_loss(probs, probs.flip(0), "prob"),
                               d_loss(logits, logits.flip(0), "logit"), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(g_adv_loss(probs, "prob"), g_adv_loss(logits), rtol=1e-4, atol=1e-5)


def test_offset_smoothness():
    assert offset_smoothness([]).item() == 0.0
    constant = torch.full((2, 2, 6, 5), 0.7)
    assert offset_smoothness([constant, constant[:, :, :3, :3]]).item() == 0.0
    ramp = (0.25 * torch.arange(5.0)).view(1, 1, 1, 5).expand(2, 2, 6, 5)  # d/dx = 0.25, d/dy = 0
    assert offset_smoothness([ramp]).item() == pytest.approx(0.25)
    assert offset_smoothness([ramp, constant]).item() == pytest.approx(0.125)  # mean over levels
    noisy = torch.randn(1, 2, 4, 4, requires_grad=True)
    value = offset_smoothness([noisy])
    value.backward()
    assert value.item() > 0 and noisy.grad.abs().sum() > 0


def test_perceptual_loss_sums_layer_means():
    gen = {"a": torch.zeros(1, 2, 4, 4), "b": torch.ones(1, 3, 2, 2)}
    real = {"a": torch.full((1, 2, 4, 4), 2.0), "b": torch.ones(1, 3, 2, 2) * 0.5}
    assert perceptual_loss(gen, real, ["a", "b"]).item() == pytest.approx(2.5)
    assert perceptual_loss(gen, real, ["b"]).item() == pytest.approx(0.5)
    with pytest.raises(KeyError, match="c"):
        perceptual_loss(gen, real, ["c"])


# --------------------------------------------------------------------------- LossComputer


def _inputs(b=2, h=32, w=16):
    g = torch.Generator().manual_seed(0)
    fake = (torch.rand(b, 3, h, w, generator=g) * 2 - 1).requires_grad_(True)
    real = torch.rand(b, 3, h, w, generator=g) * 2 - 1
    logits = torch.randn(b, 1, 4, 2, generator=g)
    offsets = [torch.randn(b, 2, h // s, w // s, generator=g, requires_grad=True) for s in (1, 2)]
    return fake, real, logits, offsets


def test_loss_computer_all_terms_with_local_vgg():
    cfg = LossConfig(
        gan_weight=1.0, nn_weight=0.01, nn_window=3, perceptual_weight=0.5,
        perceptual_layers=("relu1_2", "relu2_2"), offset_smooth_weight=0.1, l1_weight=2.0,
        vgg_weights=str(shared_path(VGG_FILE)),
    )
    losses = LossComputer(cfg)
    assert losses.vgg is not None and set(losses.vgg.layers) == {NN_LAYER, "relu1_2", "relu2_2"}
    fake, real, logits, offsets = _inputs()
    total, parts = losses.generator(fake, real, logits, offsets)
    assert set(parts) == {"g_adv", "nn", "perceptual", "offset_smooth", "l1"}
    assert torch.isfinite(total) and total.dim() == 0 and total.dtype == torch.float32
    assert all(torch.isfinite(v) and not v.requires_grad for v in parts.values())
    weighted = (parts["g_adv"] + 0.01 * parts["nn"] + 0.5 * parts["perceptual"]
                + 0.1 * parts["offset_smooth"] + 2.0 * parts["l1"])
    torch.testing.assert_close(total.detach(), weighted)
    # The NN term is the free function on the VGG features of the two images.
    with torch.no_grad():
        feats = losses.vgg(torch.cat([fake, real]))
    torch.testing.assert_close(parts["nn"], nn_loss(feats[NN_LAYER][:2], feats[NN_LAYER][2:], 3))
    total.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(o.grad is not None for o in offsets)
    assert all(p.grad is None for p in losses.vgg.parameters())


def test_loss_computer_builds_vgg_only_when_needed(tmp_path):
    absent = str(tmp_path / "absent.pt")  # would raise FileNotFoundError if it were loaded
    cfg = LossConfig(nn_weight=0.0, perceptual_weight=0.0, l1_weight=1.0,
                     offset_smooth_weight=0.01, vgg_weights=absent)
    losses = LossComputer(cfg)
    assert losses.vgg is None
    fake, real, logits, offsets = _inputs()
    total, parts = losses.generator(fake, real, logits, offsets)
    assert set(parts) == {"g_adv", "offset_smooth", "l1"}
    assert torch.isfinite(total)
    with pytest.raises(FileNotFoundError, match="loss.vgg_weights"):
        LossComputer(replace(cfg, nn_weight=0.01))


def test_loss_computer_nn_only_loads_nn_layer():
    cfg = LossConfig(
        gan_weight=0.0, nn_weight=1.0, offset_smooth_weight=0.0,
        vgg_weights=str(shared_path(VGG_FILE)),
    )
    losses = LossComputer(cfg)
    assert losses.vgg.layers == (NN_LAYER,) and len(losses.vgg.body) == 4
    fake, real, logits, _ = _inputs()
    total, parts = losses.generator(fake, real.clone(), logits, [])
    assert set(parts) == {"nn"} and total.item() > 0
    same, _ = losses.generator(real, real, logits, [])
    assert same.item() == pytest.approx(0.0, abs=1e-3)


def test_loss_computer_discriminator():
    losses = LossComputer(LossConfig(nn_weight=0.0))
    total, parts = losses.discriminator(torch.zeros(3, 1), torch.zeros(3, 1))
    assert set(parts) == {"d_real", "d_fake", "d"}
    assert parts["d_real"].item() == pytest.approx(math.log(2))
    assert total.item() == pytest.approx(2 * math.log(2)) == parts["d"].item()


def test_loss_computer_on_probabilities():
    losses = LossComputer(LossConfig(nn_weight=0.0, offset_smooth_weight=0.0), "prob")
    assert losses.disc_output == "prob"
    p_real, p_fake = torch.full((2, 1, 3, 1), 0.8), torch.full((2, 1, 3, 1), 0.25)
    total, parts = losses.discriminator(p_real, p_fake)
    assert parts["d_real"].item() == pytest.approx(-math.log(0.8 + 1e-7), rel=1e-6)
    assert parts["d_fake"].item() == pytest.approx(-math.log(0.75 + 1e-7), rel=1e-6)
    fake, real, _, _ = _inputs()
    total, parts = losses.generator(fake, real, p_fake.requires_grad_(True))
    assert parts["g_adv"].item() == pytest.approx(-math.log(0.25 + 1e-7), rel=1e-6)
    total.backward()
    assert p_fake.grad is not None and (p_fake.grad < 0).all()  # G wants p_fake up
    assert LossComputer(LossConfig(nn_weight=0.0)).disc_output == "logit"  # the default
    with pytest.raises(ValueError, match="disc_output"):
        LossComputer(LossConfig(nn_weight=0.0), "original")


def test_loss_computer_rejects_negative_weight():
    with pytest.raises(ValueError, match="loss.l1_weight"):
        LossComputer(LossConfig(nn_weight=0.0, l1_weight=-1.0))
