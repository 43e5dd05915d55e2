"""Write h5 files laid out as Keras 2.0.8 writes pose-gan's models, from our paper-mode networks.

Written independently of pipeline.model.keras_h5: the layer graph of pose-gan's
make_generator (conditional_gan.py: encoder, concatenate_skips, decoder) is rebuilt here layer
by layer in creation order, every layer auto-named as Keras names it (conv2d_1, leaky_re_lu_3,
...), its weights placed by hand from our module of the same role (the issue's table:
conv2d_1 = appearance.stem, ...), and the file's layer order comes from a re-implementation
of Keras 2.0.8's Container ordering (engine/topology.py: depth from the outputs by a
post-order traversal, deepest first, ties by first visit), not from the loader's rule.
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn


class KLayer:
    """One Keras layer with a single inbound node: name, inputs, weights (name, array)."""

    def __init__(self, name: str, inputs: list["KLayer"], weights: list[tuple[str, np.ndarray]]):
        self.name, self.inputs, self.weights = name, inputs, weights


class KerasGraph:
    """Creates layers with Keras 2's automatic names (class name in snake case + a counter
    per prefix, counted over the whole session as Keras does)."""

    def __init__(self):
        self.counts: dict[str, int] = defaultdict(int)

    def layer(self, cls: str, inputs: list[KLayer], weights: dict[str, np.ndarray] | None = None
              ) -> KLayer:
        # Keras' _to_snake_case: Conv2DTranspose -> conv2d_transpose, LeakyReLU -> leaky_re_lu
        prefix = re.sub("([a-z])([A-Z])", r"\1_\2",
                        re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", cls)).lower()
        self.counts[prefix] += 1
        name = f"{prefix}_{self.counts[prefix]}"
        return KLayer(name, inputs, [(f"{name}/{k}:0", v) for k, v in (weights or {}).items()])

    def input(self) -> KLayer:
        self.counts["input"] += 1
        return KLayer(f"input_{self.counts['input']}", [], [])


def _kernel(conv: nn.Module) -> np.ndarray:
    """Our kernel as Keras stores it: Conv2d (out, in, kh, kw) -> (kh, kw, in, out);
    ConvTranspose2d (in, out, kh, kw) -> (kh, kw, out, in)."""
    return np.ascontiguousarray(conv.weight.detach().float().numpy().transpose(2, 3, 1, 0))


def _conv(g: KerasGraph, cls: str, conv: nn.Module, x: KLayer) -> KLayer:
    weights = {"kernel": _kernel(conv)}
    if conv.bias is not None:
        weights["bias"] = conv.bias.detach().float().numpy().copy()
    return g.layer(cls, [x], weights)


def _norm(g: KerasGraph, norm: nn.Module, x: KLayer) -> KLayer:
    return g.layer("InstanceNormalization", [x], {
        "gamma": norm.weight.detach().float().numpy().reshape(1).copy(),
        "beta": norm.bias.detach().float().numpy().reshape(1).copy()})


def _encoder(g: KerasGraph, enc, inputs: list[KLayer]) -> list[KLayer]:
    """pose-gan encoder(): Concatenate (when several inputs), 3x3 conv, then blocks
    LeakyReLU -> ZeroPadding2D -> Conv2D (-> InstanceNormalization except the last)."""
    out = g.layer("Concatenate", inputs) if len(inputs) > 1 else inputs[0]
    out = _conv(g, "Conv2D", enc.stem, out)
    levels = [out]
    for block in enc.blocks:
        out = g.layer("LeakyReLU", [out])
        out = g.layer("ZeroPadding2D", [out])
        out = _conv(g, "Conv2D", block[1], out)
        if len(block) > 2:
            out = _norm(g, block[2], out)
        levels.append(out)
    return levels


def generator_graph(G: nn.Module, g: KerasGraph | None = None) -> list[KLayer]:
    """make_generator(warp_skip='mask', use_input_pose=True, disc_type='call') as layers;
    returns the model's outputs [input_img, input_pose, out, output_pose]."""
    g = g or KerasGraph()
    # Created in make_generator's order; output_img and bg_img feed no output.
    input_img, output_pose, _output_img, _bg_img = g.input(), g.input(), g.input(), g.input()
    warp = [g.input(), g.input()]  # (10, 8) affines, (10, H, W) masks
    input_pose = g.input()
    app = _encoder(g, G.appearance, [input_img, input_pose])
    pose = _encoder(g, G.pose, [output_pose])
    skips = []
    for i, (sk_app, sk_pose) in enumerate(zip(app, pose)):
        if i < 4:
            sk_app = g.layer("AffineTransformLayer", [sk_app] + warp)
        skips.append(g.layer("Concatenate", [sk_app, sk_pose]))
    skips = skips[::-1]
    out = None
    for i, block in enumerate(G.decoder):  # block(..., down=False): ReLU, transposed conv, crop, norm
        x = skips[0] if i == 0 else g.layer("Concatenate", [out, skips[i]])
        out = g.layer("Activation", [x])
        out = _conv(g, "Conv2DTranspose", block[1], out)
        out = g.layer("Cropping2D", [out])
        out = _norm(g, block[2], out)
        if i < 3:
            out = g.layer("Dropout", [out])
    out = g.layer("Concatenate", [out, skips[len(G.decoder)]])
    out = g.layer("Activation", [out])
    out = _conv(g, "Conv2D", G.head[1], out)
    out = g.layer("Activation", [out])
    return [input_img, input_pose, out, output_pose]


def discriminator_graph(D: nn.Module, g: KerasGraph | None = None) -> list[KLayer]:
    """make_discriminator(disc_type='call') for our original-head discriminator: a 4x4/2
    conv with bias on the 42 input channels, blocks (LeakyReLU, pad, conv, norm), a last block
    to one channel without norm, sigmoid, flatten."""
    g = g or KerasGraph()
    inputs = [g.input() for _ in range(4)]
    out = _conv(g, "Conv2D", D.blocks[0], g.layer("Concatenate", inputs))
    for block in [*D.blocks[1:], D.out]:  # LeakyReLU, pad, conv (, norm)
        out = _conv(g, "Conv2D", block[1], g.layer("ZeroPadding2D", [g.layer("LeakyReLU", [out])]))
        if len(block) > 2:
            out = _norm(g, block[2], out)
    return [g.layer("Flatten", [g.layer("Activation", [out])])]


def keras_layer_order(outputs: list[KLayer]) -> list[KLayer]:
    """Container.layers of Keras 2.0.8 for these outputs (engine/topology.py, Container
    __init__): a post-order traversal from the outputs records each layer's first visit;
    depths are propagated in reverse post order (a node is one deeper than its deepest
    consumer); layers are listed by decreasing depth, ties by first visit."""
    first_visit: dict[KLayer, int] = {}
    post_order: list[KLayer] = []
    finished: set[KLayer] = set()

    def visit(layer: KLayer) -> None:
        if layer in finished:
            return
        first_visit.setdefault(layer, len(first_visit))
        for x in layer.inputs:
            visit(x)
        finished.add(layer)
        post_order.append(layer)

    for x in outputs:
        visit(x)
    depth: dict[KLayer, int] = {}
    for layer in reversed(post_order):
        d = depth.setdefault(layer, 0)
        for x in layer.inputs:
            depth[x] = max(depth.get(x, 0), d + 1)
    return sorted(depth, key=lambda layer: (-depth[layer], first_visit[layer]))


def write_keras_h5(path: str | Path, layers: list[KLayer], full_model: bool = True,
                   backend: str = "tensorflow") -> Path:
    """save_weights_to_hdf5_group's layout: layer_names (every layer, in order), one group
    per layer with weight_names and its datasets; under model_weights/ with the model's
    attributes for a full-model save (Model.save), at the top level for save_weights."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        if full_model:
            f.attrs["keras_version"] = b"2.0.8"
            f.attrs["backend"] = backend.encode()
            f.attrs["model_config"] = b'{"class_name": "Model", "config": {}}'
            group = f.create_group("model_weights")
        else:
            group = f
        group.attrs["layer_names"] = [layer.name.encode("utf8") for layer in layers]
        group.attrs["backend"] = backend.encode()
        group.attrs["keras_version"] = b"2.0.8"
        for layer in layers:
            g = group.create_group(layer.name)
            g.attrs["weight_names"] = [n.encode("utf8") for n, _ in layer.weights]
            for name, value in layer.weights:
                g.create_dataset(name, data=value.astype(np.float32))
    return path


def write_generator_h5(path: str | Path, G: nn.Module, full_model: bool = True) -> Path:
    """Our paper-mode generator G as the authors' generator file."""
    return write_keras_h5(path, keras_layer_order(generator_graph(G)), full_model)


def randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere (biases and norm scalars too, which init leaves at 0/1),
    so a weight put in the wrong place changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.dim() == 0:    # a norm's gamma or beta: around 1
                p.copy_(1 + 0.5 * noise)
            elif p.dim() == 1:  # a bias
                p.copy_(0.1 * noise)
            else:               # a kernel: keep its init's scale
                p.copy_(noise * p.std())
    return module
