"""The authors' released generators (pose-gan, Keras 2.0.8 `.h5`) as our paper-mode generator.

The file (Keras 2.0.8 engine/topology.py, save_weights_to_hdf5_group; Model.save puts the same
layout under a `model_weights/` group, Model.save_weights at the top level):

    [model_weights/]
        attrs layer_names, keras_version, backend
        <layer name>/              one group per layer of the model, weighted or not
            attrs weight_names     e.g. [b"conv2d_1/kernel:0", b"conv2d_1/bias:0"]; [] if none
            <weight name>          a dataset (the "/" in the name makes a subgroup)

`load_weights` (what pose-gan's test.py calls, by_name=False) reads `model_weights/` when the
top level has no `layer_names`, keeps the layers with weights in `layer_names` order and
assigns them BY POSITION to the model's weighted layers in its own `Model.layers` order.
That order is Keras' depth order (deepest first, ties by graph traversal), not creation
order, so it is rebuilt here for pose-gan's make_generator with L levels:

    the two 3x3 stems (appearance, pose)
    per level l = 1..L-1: the two 4x4 block convs (appearance, pose), then, below the
        coarsest level, the two norms: both encoders feed level l only through the
        coarsest skip's concatenation (their longest path), so their layers tie in depth,
        and the traversal visits the appearance encoder first (first input of that
        concatenation)
    the decoder blocks in order: transposed conv, norm
    the 3x3 head conv

i.e. 6L - 5 weighted layers (31 for Market's 6 levels, 37 for DeepFashion's 7). Every
layer's kind (weight names) and every shape is checked, and the widths are read from the file.
Conv2D kernels (kh, kw, in, out) and Conv2DTranspose kernels (kh, kw, out, in) both become
ours by transpose(3, 2, 0, 1) (no spatial flip: TensorFlow backend); keras-contrib's
InstanceNormalization(axis=None) has gamma and beta of shape (1,), our SampleNorm scalars.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pipeline.core.config import ImageConfig, ModelConfig
from pipeline.core.keypoints import NUM_JOINTS

# Image size the authors trained each depth at (pose-gan cmd.py): Market 128x64, DeepFashion 256x256.
TRAINED_SIZES = {6: (128, 64), 7: (256, 256)}
DISC_INPUT = 3 + NUM_JOINTS + 3 + NUM_JOINTS  # the discriminator's x_a, H(p_a), x_b, H(p_b)
BASELINE_INPUT = 3 + 2 * NUM_JOINTS           # the no-warp baseline's single encoder input
KINDS = {"conv": ("kernel", "bias"), "conv_nobias": ("kernel",),
         "conv_transpose": ("kernel",), "norm": ("gamma", "beta")}


class KerasFileError(ValueError):
    """A file that is not one of the authors' generators; the message names what differs."""


class KerasLayer(NamedTuple):
    name: str                        # the layer's Keras name, e.g. "conv2d_3"
    weights: list[tuple[str, np.ndarray]]  # (weight name, float32 array), the file's order


class Slot(NamedTuple):
    """One weighted layer of our generator in Keras' order: its kind and module path."""
    kind: str    # a KINDS key
    module: str  # our module's state-dict prefix, e.g. "appearance.blocks.0.1"


@dataclass(frozen=True)
class Converted:
    generator: torch.nn.Module
    model: ModelConfig
    image: ImageConfig
    info: dict  # source, source_sha256, keras_version, backend, layers


# --------------------------------------------------------------------------- reading


def _text(value) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_keras_weights(path: str | Path) -> tuple[list[KerasLayer], dict]:
    """The weighted layers of a Keras 2 weights file, in its `layer_names` order, and its
    attributes (keras_version, backend). Unreadable or non-Keras files -> KerasFileError."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise KerasFileError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise KerasFileError(f"{path}: not a readable HDF5 file (truncated, or not a Keras "
                             f".h5): {exc}") from None
    with f:
        group = f
        if "layer_names" not in f.attrs and "model_weights" in f:  # a Model.save file
            group = f["model_weights"]
        if "layer_names" not in group.attrs:
            raise KerasFileError(f"{path}: no Keras weights in it (no layer_names attribute at "
                                 "the top level or in model_weights/)")
        attrs = {k: _text(group.attrs[k]) for k in ("keras_version", "backend") if k in group.attrs}
        layers = []
        for name in map(_text, group.attrs["layer_names"]):
            try:
                g = group[name]
                names = [_text(n) for n in g.attrs.get("weight_names", [])]
                weights = [(n, np.asarray(g[n], dtype=np.float32)) for n in names]
            except (KeyError, OSError, TypeError, ValueError) as exc:  # truncated: fails here, not at open
                raise KerasFileError(f"{path}: layer {name!r} cannot be read (truncated or "
                                     f"damaged file): {exc}") from None
            if weights:
                layers.append(KerasLayer(name, weights))
    return layers, attrs


# --------------------------------------------------------------------------- our side


def keras_order(levels: int) -> list[Slot]:
    """Our generator's weighted layers in the Keras model's order (module docstring)."""
    slots = [Slot("conv", "appearance.stem"), Slot("conv", "pose.stem")]
    for i in range(levels - 1):  # block i makes level i + 1; the last block has no norm
        slots += [Slot("conv_nobias", f"{enc}.blocks.{i}.1") for enc in ("appearance", "pose")]
        if i < levels - 2:
            slots += [Slot("norm", f"{enc}.blocks.{i}.2") for enc in ("appearance", "pose")]
    for i in range(levels - 1):
        slots += [Slot("conv_transpose", f"decoder.{i}.1"), Slot("norm", f"decoder.{i}.2")]
    return slots + [Slot("conv", "head.1")]


def keras_shapes(state: dict[str, torch.Tensor], slot: Slot) -> list[tuple[int, ...]]:
    """The shapes the Keras layer of `slot` has, from our parameters: kernels permuted
    back (ours.permute(2, 3, 1, 0)), norm scalars as (1,)."""
    if slot.kind == "norm":
        return [(1,), (1,)]
    out = [tuple(state[f"{slot.module}.weight"].permute(2, 3, 1, 0).shape)]
    return out + ([tuple(state[f"{slot.module}.bias"].shape)] if slot.kind == "conv" else [])


def to_ours(slot: Slot, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """One Keras layer's weights -> our state-dict entries."""
    if slot.kind == "norm":
        gamma, beta = arrays
        return {f"{slot.module}.weight": torch.from_numpy(gamma).reshape(()),
                f"{slot.module}.bias": torch.from_numpy(beta).reshape(())}
    out = {f"{slot.module}.weight": torch.from_numpy(arrays[0]).permute(3, 2, 0, 1).contiguous()}
    if slot.kind == "conv":
        out[f"{slot.module}.bias"] = torch.from_numpy(arrays[1])
    return out


# --------------------------------------------------------------------------- matching


def _kernel(layers: list[KerasLayer], k: int, slot: Slot, source: Path) -> np.ndarray:
    arr = layers[k].weights[0][1]
    if arr.ndim != 4:
        raise KerasFileError(f"{source}: weighted layer #{k} {layers[k].name!r} has a weight of "
                             f"shape {arr.shape} where a convolution kernel was expected "
                             f"({slot.module})")
    return arr


def infer_widths(layers: list[KerasLayer], source: Path) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(levels, encoder widths, decoder widths) of the generator the file holds; a file of
    another shape (a discriminator, the no-warp baseline, another depth) -> KerasFileError."""
    n = len(layers)
    if not n:
        raise KerasFileError(f"{source}: no layer in it has weights")
    first = layers[0].weights[0][1]
    if first.ndim == 4 and first.shape[:3] == (4, 4, DISC_INPUT):
        raise KerasFileError(f"{source}: this is a discriminator (first layer {layers[0].name!r}: "
                             f"a 4x4 conv on {DISC_INPUT} channels), not a generator")
    if first.ndim == 4 and first.shape[2] == BASELINE_INPUT:
        raise KerasFileError(f"{source}: this is the no-warp baseline generator (one encoder on "
                             f"{BASELINE_INPUT} channels); our generator has the two encoders "
                             "of the deformable models")
    if (n + 5) % 6 or n < 7:
        raise KerasFileError(
            f"{source}: {n} weighted layers; a Deformable GAN generator with L levels has 6L - 5 "
            f"(31 for Market-1501's 6 levels, 37 for DeepFashion's 7)")
    levels = (n + 5) // 6
    slots = keras_order(levels)
    widths = {}
    for k, slot in enumerate(slots):
        if slot.kind in ("conv", "conv_nobias"):
            widths[slot.module] = _kernel(layers, k, slot, source).shape[3]  # (kh, kw, in, out)
        elif slot.kind == "conv_transpose":
            widths[slot.module] = _kernel(layers, k, slot, source).shape[2]  # (kh, kw, out, in)
    enc = (widths["appearance.stem"],) + tuple(widths[f"appearance.blocks.{i}.1"]
                                               for i in range(levels - 1))
    dec = tuple(widths[f"decoder.{i}.1"] for i in range(levels - 1))
    return levels, enc, dec


def match_layers(layers: list[KerasLayer], slots: list[Slot], state: dict[str, torch.Tensor],
                 source: Path) -> dict[str, torch.Tensor]:
    """Assign the file's layers to our slots by position (as load_weights does), checking
    each layer's weight names and shapes; every state-dict entry exactly once."""
    if len(layers) != len(slots):
        raise KerasFileError(f"{source}: {len(layers)} weighted layers, the generator has "
                             f"{len(slots)}")
    out: dict[str, torch.Tensor] = {}
    for k, (layer, slot) in enumerate(zip(layers, slots)):
        names = [n.rsplit("/", 1)[-1].split(":")[0] for n, _ in layer.weights]
        shapes = [a.shape for _, a in layer.weights]
        want_names, want_shapes = list(KINDS[slot.kind]), keras_shapes(state, slot)
        if names != want_names or shapes != want_shapes:
            found = ", ".join(f"{n} {s}" for n, s in zip(names, shapes))
            wanted = ", ".join(f"{n} {s}" for n, s in zip(want_names, want_shapes))
            raise KerasFileError(f"{source}: weighted layer #{k} {layer.name!r} has [{found}], "
                                 f"expected [{wanted}] ({slot.module})")
        for key, value in to_ours(slot, [a for _, a in layer.weights]).items():
            if key in out:
                raise AssertionError(f"{key} assigned twice")  # keras_order is wrong
            out[key] = value
    missing = set(state) - set(out)
    if missing:
        raise AssertionError(f"not assigned: {sorted(missing)}")  # keras_order is wrong
    return out


# --------------------------------------------------------------------------- conversion


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_keras_generator(path: str | Path, height: int | None = None,
                            width: int | None = None) -> Converted:
    """An authors' generator .h5 -> our paper-mode generator (ModelConfig's defaults, the
    original's settings, with the file's widths) holding its weights, in eval mode.
    height x width: the image size (default: the size the authors trained that depth at,
    TRAINED_SIZES)."""
    from pipeline.model.build import build_generator

    source = Path(path)
    layers, attrs = read_keras_weights(source)
    if attrs.get("backend", "tensorflow") != "tensorflow":
        raise KerasFileError(f"{source}: saved with the {attrs['backend']!r} backend; only "
                             "TensorFlow-backend files (the authors') are supported")
    levels, enc, dec = infer_widths(layers, source)
    if height is None or width is None:
        if levels not in TRAINED_SIZES:
            raise KerasFileError(f"{source}: a {levels}-level generator; give the image size "
                                 "(--height, --width)")
        height, width = TRAINED_SIZES[levels]
    cfg = ModelConfig(encoder_widths=enc, decoder_widths=dec)
    try:
        G = build_generator(cfg, height, width)
    except ValueError as exc:
        raise KerasFileError(f"{source}: {exc}") from None
    state = G.state_dict()
    G.load_state_dict(match_layers(layers, keras_order(levels), state, source))
    info = {"source": str(source), "source_sha256": sha256_file(source),
            "source_format": "keras h5 (pose-gan make_generator)",
            "keras_version": attrs.get("keras_version"), "backend": attrs.get("backend"),
            "keras_layers": [layer.name for layer in layers]}
    return Converted(G.eval(), cfg, ImageConfig(height=height, width=width), info)

