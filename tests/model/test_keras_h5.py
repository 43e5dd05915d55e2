"""The authors' Keras generators convert to our paper-mode generator exactly
(files written by tests/support/keras_h5.py, independently of the loader)."""
from __future__ import annotations

import h5py
import pytest
import torch

from pipeline.core.config import ModelConfig
from pipeline.model.discriminator import Discriminator
from pipeline.model.generator import Generator
from pipeline.model.keras_h5 import (
    KerasFileError, convert_keras_generator, keras_order, keras_shapes, sha256_file,
)
from support.keras_h5 import (
    KerasGraph, discriminator_graph, generator_graph, keras_layer_order, randomise,
    write_generator_h5, write_keras_h5,
)

MARKET = ModelConfig(encoder_widths=(4, 8, 8, 8, 8, 8), decoder_widths=(8, 8, 8, 8, 4))
FASHION = ModelConfig(encoder_widths=(4, 8, 8, 8, 8, 8, 8), decoder_widths=(8, 8, 8, 8, 8, 4))


def inputs(b: int, h: int, w: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    kp = torch.stack([torch.rand(b, 18, generator=gen) * (w - 1),
                      torch.rand(b, 18, generator=gen) * (h - 1)], -1)
    kp[:, 4] = -1  # a missing joint
    return (torch.rand(b, 3, h, w, generator=gen) * 2 - 1, torch.rand(b, 18, h, w, generator=gen),
            torch.rand(b, 18, h, w, generator=gen), kp, kp.flip(0))


def source(cfg: ModelConfig, h: int, w: int) -> Generator:
    return randomise(Generator(cfg, h, w), seed=3).eval()


@pytest.mark.parametrize("full_model", [True, False], ids=["model.save", "save_weights"])
def test_market_file_converts_to_the_same_generator(tmp_path, full_model):
    G = source(MARKET, 128, 64)
    path = write_generator_h5(tmp_path / "generator.h5", G, full_model)
    conv = convert_keras_generator(path)
    assert (conv.image.height, conv.image.width) == (128, 64)  # Market's size for 6 levels
    assert conv.model == MARKET  # paper mode with the file's widths
    assert conv.info["source_sha256"] == sha256_file(path)
    ours, theirs = conv.generator.state_dict(), G.state_dict()
    assert ours.keys() == theirs.keys()  # every weight lands exactly once
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    with torch.no_grad():
        x = inputs(2, 128, 64)
        assert torch.allclose(conv.generator(*x).image, G(*x).image, atol=1e-6, rtol=0)


def test_deepfashion_seven_level_file(tmp_path):
    G = source(FASHION, 64, 64)
    conv = convert_keras_generator(write_generator_h5(tmp_path / "df.h5", G), 64, 64)
    assert conv.model == FASHION
    with torch.no_grad():
        x = inputs(1, 64, 64)
        assert torch.allclose(conv.generator(*x).image, G(*x).image, atol=1e-6, rtol=0)
    assert convert_keras_generator(tmp_path / "df.h5").image.height == 256  # the authors' size


def test_order_rule_matches_keras_container_order_at_paper_widths():
    """The loader's closed-form order equals Keras' depth order of the rebuilt graph, and its
    shapes are the issue's table (conv2d_1 (3,3,21,64), conv2d_13 (3,3,256,3), ...)."""
    for cfg, levels, h, w in ((ModelConfig(), 6, 128, 64),
                              (ModelConfig(encoder_widths=(64, 128, 256, 512, 512, 512, 512),
                                           decoder_widths=(512, 512, 512, 512, 256, 128)), 7, 256, 256)):
        G = Generator(cfg, h, w)
        layers = [l for l in keras_layer_order(generator_graph(G, KerasGraph())) if l.weights]
        state = G.state_dict()
        slots = keras_order(levels)
        assert len(layers) == len(slots) == 6 * levels - 5
        for layer, slot in zip(layers, slots):
            assert [tuple(a.shape) for _, a in layer.weights] == keras_shapes(state, slot), layer.name
    names = {l.name: [a.shape for _, a in l.weights]
             for l in keras_layer_order(generator_graph(Generator(ModelConfig(), 128, 64)))}
    assert names["conv2d_1"] == [(3, 3, 21, 64), (64,)]
    assert names["conv2d_7"] == [(3, 3, 18, 64), (64,)]
    assert names["conv2d_transpose_1"] == [(4, 4, 512, 1024)]
    assert names["instance_normalization_13"] == [(1,), (1,)]
    assert names["conv2d_13"] == [(3, 3, 256, 3), (3,)]


def _one_line_error(path, match: str) -> str:
    with pytest.raises(KerasFileError, match=match) as err:
        convert_keras_generator(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_file(tmp_path):
    path = write_generator_h5(tmp_path / "g.h5", source(MARKET, 128, 64))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _one_line_error(path, "truncated")


def test_not_hdf5_and_missing_file(tmp_path):
    (tmp_path / "x.h5").write_text("<html>quota exceeded</html>")
    _one_line_error(tmp_path / "x.h5", "not a readable HDF5")
    _one_line_error(tmp_path / "missing.h5", "not found")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("something")
    _one_line_error(tmp_path / "empty.h5", "no layer_names")


def test_discriminator_file(tmp_path):
    D = Discriminator(ModelConfig(disc_widths=(8, 8, 8, 8)))
    path = write_keras_h5(tmp_path / "d.h5", keras_layer_order(discriminator_graph(D)))
    _one_line_error(path, "discriminator")


def _market_layers():
    layers = keras_layer_order(generator_graph(source(MARKET, 128, 64)))
    return layers, [l for l in layers if l.weights]


def test_wrong_depth(tmp_path):
    layers, weighted = _market_layers()  # one weighted layer fewer: 30 is no 6L - 5
    path = write_keras_h5(tmp_path / "short.h5", [l for l in layers if l is not weighted[-3]])
    _one_line_error(path, "30 weighted layers")


def test_wrong_shape_names_the_layer(tmp_path):
    layers, weighted = _market_layers()
    name, kernel = weighted[2].weights[0]  # conv2d_2, the first appearance block
    weighted[2].weights[0] = (name, kernel[:, :, :3])
    msg = _one_line_error(write_keras_h5(tmp_path / "shape.h5", layers), "conv2d_2")
    assert "appearance.blocks.0.1" in msg and "(4, 4, 3, 8)" in msg


def test_layers_out_of_order(tmp_path):
    layers, weighted = _market_layers()  # conv2d_8 and instance_normalization_1 swapped
    i, j = layers.index(weighted[3]), layers.index(weighted[4])
    layers[i], layers[j] = layers[j], layers[i]
    _one_line_error(write_keras_h5(tmp_path / "swap.h5", layers), "weighted layer #3")


def test_no_warp_baseline_is_named(tmp_path):
    layers, weighted = _market_layers()  # its one encoder takes x_a, H(p_a) and H(p_b)
    name, kernel = weighted[0].weights[0]
    weighted[0].weights[0] = (name, kernel[:, :, :1].repeat(39, axis=2))
    _one_line_error(write_keras_h5(tmp_path / "baseline.h5", layers), "no-warp baseline")


def test_theano_backend_refused(tmp_path):
    layers = keras_layer_order(generator_graph(source(MARKET, 128, 64)))
    _one_line_error(write_keras_h5(tmp_path / "th.h5", layers, backend="theano"), "theano")
