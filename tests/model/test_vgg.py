"""VGG19Features: layer map, loading rules, conventions, freezing (real weights from ../shared);
the Keras h5 converter on files written in Keras' layout; the pose_gan convention."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import shared_path
from pipeline.core import weights
from pipeline.model.vgg import (
    LAYER_INDEX, LAYER_NAMES, VGG19Features, _keras_convs, keras_h5_to_features_state,
)
from pipeline.core.weights import WeightsError
from support.http_files import serve

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
        ("pose_gan", lambda v: 255 * v - torch.tensor([103.939, 116.779, 123.68])),
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


def test_torchvision_offline_raises_one_line(tmp_path, monkeypatch):
    # Empty cache, no weights folder, downloads pointed at a closed port (conftest):
    # one line naming the param and the file, no download attempt reaching the network.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("DEFORMABLE_GAN_WEIGHTS", raising=False)
    with pytest.raises(WeightsError) as info:
        VGG19Features("imagenet", ["relu1_2"])
    message = str(info.value)
    assert "\n" not in message
    assert "loss.vgg_weights" in message and "vgg19-dcbb9e9d.pth" in message


def test_vgg19_keras_name_finds_the_shared_copy(monkeypatch):
    folder = shared_path(VGG_FILE).parent
    monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS", str(folder))
    vgg = VGG19Features("vgg19_keras", ["conv1_1"])
    assert vgg.convention == "caffe_rgb"
    reference = torch.load(folder / Path(VGG_FILE).name, weights_only=True)
    torch.testing.assert_close(vgg.body[0].weight, reference["0.weight"].float())


# --------------------------------------------------------------------------- Keras h5


def keras_layer_names() -> list[str]:
    """Every layer of Keras' VGG19(include_top=False), in model order."""
    names = ["input_1"]
    for block, convs in enumerate((2, 2, 4, 4, 4), start=1):
        names += [f"block{block}_conv{i}" for i in range(1, convs + 1)] + [f"block{block}_pool"]
    return names


def write_keras_h5(path, kernels: dict, full_model: bool = False):
    """Write Keras 2's HDF5 weights layout: one group per layer (under model_weights/ for
    a whole saved model), the root listing `layer_names`, each group listing its datasets
    in `weight_names` ("<layer>/kernel:0", "<layer>/bias:0"), stored at
    <group>/<layer>/kernel:0. kernels: {keras conv name: (kernel [3, 3, in, out], bias)}."""
    names = keras_layer_names()
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        if full_model:
            f.attrs["model_config"] = b'{"class_name": "Model"}'
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        for name in names:
            group = root.create_group(name)
            if name not in kernels:
                group.attrs["weight_names"] = np.array([], dtype="S1")
                continue
            kernel, bias = kernels[name]
            wnames = [f"{name}/kernel:0", f"{name}/bias:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in wnames])
            group.create_dataset(wnames[0], data=kernel)
            group.create_dataset(wnames[1], data=bias)
    return path


def keras_kernels_from_rgb_state(state: dict) -> dict:
    """Our RGB vgg19().features state -> the Keras file's BGR channels_last kernels."""
    out = {}
    for layer, index, _, _ in _keras_convs():
        weight = state[f"{index}.weight"]
        if index == 0:
            weight = weight.flip(1)  # the Keras file's first conv reads BGR
        out[layer] = (weight.permute(2, 3, 1, 0).numpy(), state[f"{index}.bias"].numpy())
    return out


@pytest.fixture(scope="module")
def fake_keras(tmp_path_factory):
    """A Keras-layout VGG19 h5: random float32 block-1 weights, float16 zeros deeper (the
    converter accepts any float dtype; zeros keep the file small to write)."""
    rng = np.random.default_rng(0)
    kernels = {}
    for layer, _, cin, cout in _keras_convs():
        if layer.startswith("block1"):
            k = rng.normal(0, 0.05, (3, 3, cin, cout)).astype(np.float32)
            b = rng.normal(0, 0.5, cout).astype(np.float32)
        else:
            k, b = np.zeros((3, 3, cin, cout), np.float16), np.zeros(cout, np.float16)
        kernels[layer] = (k, b)
    path = tmp_path_factory.mktemp("keras") / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return write_keras_h5(path, kernels), kernels


def _correlate_same(x, kernel, bias):
    """Keras/TF Conv2D(padding='same') on channels_last x [H, W, C]: a correlation."""
    h, w, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.broadcast_to(bias, (h, w, bias.shape[0])).astype(np.float64).copy()
    for dy in range(3):
        for dx in range(3):
            out += padded[dy:dy + h, dx:dx + w] @ kernel[dy, dx].astype(np.float64)
    return out


def half(kernels: dict) -> dict:
    """float16 datasets: the shared copy's values are float16, so this is lossless."""
    return {k: (w.astype(np.float16), b.astype(np.float16)) for k, (w, b) in kernels.items()}


def test_converter_keys_shapes_and_values_match_the_shared_copy(tmp_path):
    reference = torch.load(shared_path(VGG_FILE), map_location="cpu", weights_only=True)
    rgb = {k: v.float() for k, v in reference.items()}
    for full_model in (False, True):
        path = write_keras_h5(tmp_path / f"vgg{full_model}.h5",
                              half(keras_kernels_from_rgb_state(rgb)), full_model=full_model)
        converted = keras_h5_to_features_state(path)
        assert list(converted) == list(reference)  # 0.weight ... 34.bias, same order
        for key, value in reference.items():
            assert converted[key].shape == value.shape, key
            assert converted[key].dtype == torch.float32
            torch.testing.assert_close(converted[key], value.float(), rtol=0, atol=0)


def test_converted_features_equal_keras_correlation(fake_keras, tmp_path):
    path, kernels = fake_keras
    state = keras_h5_to_features_state(path)
    torch.save(state, tmp_path / "converted.pt")
    vgg = VGG19Features(str(tmp_path / "converted.pt"), ["conv1_1", "conv1_2"],
                        convention="caffe_rgb")
    x = torch.rand(1, 3, 6, 5) * 2 - 1
    with torch.no_grad():
        out = vgg(x)
    # Keras side: RGB 0..255 minus the caffe mean, channels_last, flipped to BGR.
    rgb = (x[0].permute(1, 2, 0).double().numpy() + 1) * 127.5 - np.array([123.68, 116.779, 103.939])
    conv1 = _correlate_same(rgb[..., ::-1], *kernels["block1_conv1"])
    conv2 = _correlate_same(np.maximum(conv1, 0), *kernels["block1_conv2"])
    got1 = out["conv1_1"][0].permute(1, 2, 0).double().numpy()
    got2 = out["conv1_2"][0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got1, conv1, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(got2, conv2, rtol=1e-4, atol=1e-3)


def test_converter_rejects_a_foreign_h5(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_group("dense_1")
    with pytest.raises(ValueError, match="no layer block1_conv1"):
        keras_h5_to_features_state(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        keras_h5_to_features_state(tmp_path / "junk.h5")


def test_vgg19_keras_downloaded_converted_and_cached(fake_keras, tmp_path, monkeypatch):
    """resolve("vgg19_keras") end to end: h5 from a 127.0.0.1 server, converted once."""
    path, _ = fake_keras
    data = path.read_bytes()
    entry = weights.REGISTRY["vgg19_keras"]
    monkeypatch.setitem(weights.REGISTRY, "vgg19_keras", dataclasses.replace(
        entry, checksum="md5:" + hashlib.md5(data).hexdigest()))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DEFORMABLE_GAN_WEIGHTS", raising=False)
    with serve({entry.file: data}) as (base, hits):
        monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS_URL", base)
        # the converter is the caller's (model knowledge): pipeline.model.vgg passes it
        first = weights.resolve("vgg19_keras", "loss.vgg_weights", convert=keras_h5_to_features_state)
        second = weights.resolve("vgg19_keras", "loss.vgg_weights", convert=keras_h5_to_features_state)
    assert first == second == weights.cache_dir() / entry.result
    assert hits == {f"/{entry.file}": 1}
    assert (weights.cache_dir() / entry.file).is_file()  # the h5 is kept beside it
    saved = torch.load(first, weights_only=True)
    expected = keras_h5_to_features_state(path)
    assert saved.keys() == expected.keys()
    torch.testing.assert_close(saved["0.weight"], expected["0.weight"])


# --------------------------------------------------------------------------- pose_gan


def test_pose_gan_equals_the_original_preprocessing_on_bgr_weights(tmp_path):
    """Ours: RGB weights, RGB*255 minus (103.939, 116.779, 123.68). The original: the same
    mean subtracted from the RGB image, then flipped to BGR, into BGR-input weights."""
    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(64, 3, 3, 3, generator=g) * 0.05, torch.randn(64, generator=g)
    torch.save({"0.weight": weight, "0.bias": bias}, tmp_path / "rgb.pt")
    vgg = VGG19Features(str(tmp_path / "rgb.pt"), ["conv1_1"], convention="pose_gan")
    x = torch.rand(2, 3, 7, 5, generator=g) * 2 - 1
    with torch.no_grad():
        ours = vgg(x)["conv1_1"]
    image = (x + 1) * 127.5 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    original = F.conv2d(image.flip(1), weight.flip(1), bias, padding=1)
    torch.testing.assert_close(ours, original, rtol=1e-5, atol=1e-3)
