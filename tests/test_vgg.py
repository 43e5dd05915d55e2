"""VGG19Features: layer map, loading rules, conventions, freezing (real weights from ../shared)."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import shared_path
from pipeline.model.vgg import LAYER_INDEX, LAYER_NAMES, VGG19Features

VGG_FILE = "weights/vgg19_features_caffe_rgb_fp16.pt"

# (channels, downsampling factor) of each named layer of VGG19.
EXPECTED = {
    "relu1_1": (64, 1), "conv1_2": (64, 1), "relu1_2": (64, 1), "pool1": (64, 2),
    "relu2_2": (128, 2), "relu3_4": (256, 4), "conv4_1": (512, 8), "relu4_4": (512, 8),
    "relu5_4": (512, 16), "pool5": (512, 32),
}


@pytest.fixture(scope="module")
def vgg_all():
    return VGG19Features(str(shared_path(VGG_FILE)), list(EXPECTED))


def test_layer_map_matches_torchvision_indices():
    assert len(LAYER_NAMES) == 37
    assert LAYER_INDEX["conv1_1"] == 0 and LAYER_INDEX["relu1_2"] == 3 and LAYER_INDEX["pool1"] == 4
    assert LAYER_INDEX["relu2_2"] == 8 and LAYER_INDEX["relu3_4"] == 17
    assert LAYER_INDEX["relu4_4"] == 26 and LAYER_INDEX["conv5_4"] == 34
    assert LAYER_INDEX["pool5"] == 36


def test_shapes_of_each_layer(vgg_all):
    x = torch.rand(2, 3, 64, 32) * 2 - 1
    with torch.no_grad():
        out = vgg_all(x)
    assert set(out) == set(EXPECTED)
    for name, (channels, factor) in EXPECTED.items():
        assert out[name].shape == (2, channels, 64 // factor, 32 // factor), name


def test_keeps_only_layers_up_to_deepest():
    vgg = VGG19Features(str(shared_path(VGG_FILE)), ["relu2_2", "relu1_2"])
    assert len(vgg.body) == LAYER_INDEX["relu2_2"] + 1
    assert set(vgg(torch.zeros(1, 3, 8, 8))) == {"relu1_2", "relu2_2"}


def test_conv_output_not_clobbered_by_relu(vgg_all):
    # conv1_2 is captured before the ReLU: it must keep its negative values.
    x = torch.rand(1, 3, 64, 32) * 2 - 1
    with torch.no_grad():
        out = vgg_all(x)
    assert (out["conv1_2"] < 0).any()
    torch.testing.assert_close(out["relu1_2"], out["conv1_2"].clamp_min(0))


def test_frozen_eval_and_grad_flows_to_input(vgg_all):
    assert all(not p.requires_grad for p in vgg_all.parameters())
    vgg_all.train()
    assert not vgg_all.training and not any(m.training for m in vgg_all.modules())
    x = (torch.rand(1, 3, 64, 32) * 2 - 1).requires_grad_(True)
    vgg_all(x)["relu2_2"].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg_all.parameters())


def test_real_photo_features_finite_and_plausible(vgg_all):
    photo = sorted(shared_path("data/market1501-sample").glob("*.jpg"))[0]
    rgb = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        out = vgg_all(x)
    for name, feat in out.items():
        assert torch.isfinite(feat).all(), name
    # A trained network responds to a photo: deep ReLU maps are sparse but not dead.
    active = (out["relu3_4"] > 0).float().mean()
    assert 0.01 < active < 0.9


def test_constant_image_gives_constant_conv1_1_inside(vgg_all):
    vgg = VGG19Features(str(shared_path(VGG_FILE)), ["conv1_1"])
    x = torch.full((1, 3, 12, 10), 0.3)
    with torch.no_grad():
        inner = vgg(x)["conv1_1"][0, :, 1:-1, 1:-1]
    spread = inner.amax(dim=(1, 2)) - inner.amin(dim=(1, 2))
    assert spread.max() < 1e-3 * (1 + inner.abs().max())
    assert inner.abs().max() > 0  # not trivially zero


def _probe_state(tmp_path, extra=None, prefix=""):
    """A conv1_1 whose first three channels copy the input pixel: exposes preprocessing."""
    weight = torch.zeros(64, 3, 3, 3)
    for c in range(3):
        weight[c, c, 1, 1] = 1.0
    state = {f"{prefix}0.weight": weight.half(), f"{prefix}0.bias": torch.zeros(64).half()}
    state.update(extra or {})
    path = tmp_path / "probe.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "convention, expected",
    [
        ("caffe_rgb", lambda v: 255 * v - torch.tensor([123.68, 116.779, 103.939])),
        ("caffe_bgr", lambda v: (255 * v - torch.tensor([123.68, 116.779, 103.939])).flip(0)),
        (
            "imagenet",
            lambda v: (v - torch.tensor([0.485, 0.456, 0.406]))
            / torch.tensor([0.229, 0.224, 0.225]),
        ),
    ],
)
def test_input_conventions(tmp_path, convention, expected):
    vgg = VGG19Features(str(_probe_state(tmp_path)), ["conv1_1"], convention=convention)
    rgb01 = torch.tensor([0.1, 0.5, 0.9])
    x = (rgb01 * 2 - 1).view(1, 3, 1, 1).expand(1, 3, 5, 5)
    got = vgg(x)["conv1_1"][0, :3, 2, 2]
    torch.testing.assert_close(got, expected(rgb01), rtol=1e-5, atol=1e-3)


def test_default_convention_for_a_file_is_caffe_rgb(tmp_path):
    assert VGG19Features(str(_probe_state(tmp_path)), ["conv1_1"]).convention == "caffe_rgb"


def test_full_torchvision_checkpoint_accepted(tmp_path):
    extra = {"classifier.0.weight": torch.zeros(2, 2)}
    path = _probe_state(tmp_path, extra=extra, prefix="features.")
    vgg = VGG19Features(str(path), ["relu1_1"])
    assert vgg.body[0].weight.dtype == torch.float32


def test_missing_file_names_path_and_setting(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="loss.vgg_weights") as info:
        VGG19Features(str(missing), ["relu1_2"])
    assert str(missing) in str(info.value)


def test_unexpected_and_missing_keys_are_named(tmp_path):
    bad = _probe_state(tmp_path, extra={"1.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys.*1\.weight"):
        VGG19Features(str(bad), ["conv1_1"])
    short = _probe_state(tmp_path)  # only conv1_1
    with pytest.raises(ValueError, match=r"lack keys.*2\.weight"):
        VGG19Features(str(short), ["relu1_2"])


def test_shape_mismatch_and_unknown_layer(tmp_path):
    path = tmp_path / "wrong.pt"
    torch.save({"0.weight": torch.zeros(64, 1, 3, 3), "0.bias": torch.zeros(64)}, path)
    with pytest.raises(ValueError, match="do not fit"):
        VGG19Features(str(path), ["conv1_1"])
    with pytest.raises(ValueError, match="unknown layer"):
        VGG19Features(str(path), ["relu9_9"])


def test_imagenet_offline_raises_clear_error(tmp_path, monkeypatch):
    # Empty torch hub cache and no network: the download must fail fast and say what to set.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(RuntimeError, match="loss.vgg_weights"):
        VGG19Features("imagenet", ["relu1_2"])
