"""Frozen VGG19 feature extractor for the nearest-neighbour and perceptual losses.

Layer names follow the VGG paper (block b, convolution i inside the block) and map onto
the indices of ``torchvision.models.vgg19().features``, so torchvision state dicts load
as they are:

    block 1:  0 conv1_1   1 relu1_1   2 conv1_2   3 relu1_2   4 pool1
    block 2:  5 conv2_1   6 relu2_1   7 conv2_2   8 relu2_2   9 pool2
    block 3: 10 conv3_1  11 relu3_1  12 conv3_2  13 relu3_2  14 conv3_3  15 relu3_3
             16 conv3_4  17 relu3_4  18 pool3
    block 4: 19 conv4_1  20 relu4_1  21 conv4_2  22 relu4_2  23 conv4_3  24 relu4_3
             25 conv4_4  26 relu4_4  27 pool4
    block 5: 28 conv5_1  29 relu5_1  30 conv5_2  31 relu5_2  32 conv5_3  33 relu5_3
             34 conv5_4  35 relu5_4  36 pool5

Weights (``weights``: a pipeline.core.weights name or a local file, resolved by
pipeline.core.weights.resolve with param "loss.vgg_weights"): a state dict for
``vgg19().features`` (keys ``0.weight`` ... ``34.bias``; a full torchvision VGG19 state
dict with ``features.``/``classifier.`` keys is also accepted), possibly float16.

- ``"vgg19_keras"``: Keras' ``VGG19(weights='imagenet')`` no-top h5, the converted Oxford
  caffe weights the original code loaded, converted once by keras_h5_to_features_state
  (first convolution flipped to RGB input), e.g. ../shared/weights/vgg19_features_caffe_rgb_fp16.pt.
- ``"vgg19_torchvision"`` (alias ``"imagenet"``): torchvision's IMAGENET1K_V1.

Input conventions (``forward`` always takes RGB images in [-1, 1]):

- ``"imagenet"``: RGB in [0, 1], minus the ImageNet mean (0.485, 0.456, 0.406), divided by
  the std (0.229, 0.224, 0.225). The default for the torchvision weights.
- ``"caffe_rgb"``: RGB in 0..255 minus (123.68, 116.779, 103.939), no std: the Oxford/Keras
  weights with an RGB first convolution. The default for every other file.
- ``"pose_gan"``: RGB in 0..255 minus (103.939, 116.779, 123.68) in R, G, B order. The
  original subtracted Keras' BGR-ordered mean from the RGB image and then flipped to BGR
  for its BGR weights; with our RGB-input weights that is this function.
- ``"caffe_bgr"``: caffe_rgb with the channels reversed, for weights whose first
  convolution expects BGR input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.core import weights

# Channel widths of VGG19 ("configuration E"); "M" is a 2x2 max pool closing a block.
_VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)

CONVENTIONS = ("imagenet", "caffe_rgb", "caffe_bgr", "pose_gan")
TORCHVISION_NAMES = ("imagenet", "vgg19_torchvision")  # weights whose default is "imagenet"
PARAM = "loss.vgg_weights"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)


def _layer_names() -> list[str]:
    """Names of the modules of vgg19().features, in index order (see module docstring)."""
    names, block, conv = [], 1, 0
    for item in _VGG19_CFG:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 0
        else:
            conv += 1
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
    return names


LAYER_NAMES: tuple[str, ...] = tuple(_layer_names())
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}
# Every parameter key of vgg19().features: "<index>.weight" / "<index>.bias" of each conv.
_ALL_KEYS = frozenset(
    f"{i}.{p}"
    for i, n in enumerate(LAYER_NAMES)
    if n.startswith("conv")
    for p in ("weight", "bias")
)


def _build_features(depth: int) -> nn.Sequential:
    """The first ``depth`` modules of vgg19().features, with the same indices.

    ReLUs are not in-place: an in-place ReLU would overwrite a captured conv output
    (e.g. conv1_2) before the caller sees it.
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers[:depth])


def _features_state(state: dict, source: str) -> dict[str, Tensor]:
    """Normalise a loaded state dict to vgg19().features keys; reject foreign keys."""
    if not isinstance(state, dict):
        raise ValueError(
            f"{source}: expected a state dict (mapping of tensors), got {type(state).__name__}"
        )
    if any(k.startswith("features.") for k in state):
        # A full torchvision VGG19 checkpoint: keep the convolutional part only.
        state = {
            k[len("features."):]: v for k, v in state.items() if not k.startswith("classifier.")
        }
    unexpected = sorted(set(state) - _ALL_KEYS)
    if unexpected:
        raise ValueError(
            f"{source}: unexpected keys for vgg19().features: {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''} (expected 0.weight ... 34.bias)"
        )
    return {k: v.float() for k, v in state.items()}


def _load_file(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types; name the file
        raise ValueError(f"{path}: cannot read VGG19 weights as a state dict: {exc}") from exc
    return _features_state(state, str(path))


def load_weights(spec: str, allow_download: bool = True) -> dict[str, Tensor]:
    """vgg19().features state dict (float32) for a weights name or a local file.

    Raises pipeline.core.weights.WeightsError (a FileNotFoundError, one line naming
    loss.vgg_weights) when nothing can be found or fetched, ValueError for a bad file."""
    return _load_file(weights.resolve(spec, PARAM, allow_download=allow_download,
                                      convert=keras_h5_to_features_state))


# --------------------------------------------------------------------------- Keras h5


def _keras_convs() -> list[tuple[str, int, int, int]]:
    """(Keras layer name, vgg19().features index, in channels, out channels) per conv."""
    out, channels, index, block, conv = [], 3, 0, 1, 0
    for item in _VGG19_CFG:
        if item == "M":
            index, block, conv = index + 1, block + 1, 0
            continue
        conv += 1
        out.append((f"block{block}_conv{conv}", index, channels, int(item)))
        index, channels = index + 2, int(item)  # conv + ReLU
    return out


def _kernel_and_bias(group, layer: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The [3, 3, in, out] kernel and [out] bias of one Keras layer group.

    Keras 2 lists a layer's datasets in the group attribute weight_names (e.g.
    "block1_conv1/kernel:0"; Keras 1 files say "block1_conv1_W_1:0"): the 4-D one is the
    kernel, the 1-D one the bias.
    """
    import h5py

    names = group.attrs.get("weight_names")
    if names is not None:
        arrays = [np.asarray(group[n.decode() if isinstance(n, bytes) else str(n)]) for n in names]
    else:  # no attribute: every dataset below the group
        arrays = []
        group.visititems(lambda _, obj: arrays.append(np.asarray(obj))
                         if isinstance(obj, h5py.Dataset) else None)
    kernels = [a for a in arrays if a.ndim == 4]
    biases = [a for a in arrays if a.ndim == 1]
    if len(kernels) != 1 or len(biases) != 1:
        raise ValueError(f"{source}: layer {layer} should hold one 4-D kernel and one bias, "
                         f"found shapes {[a.shape for a in arrays]}")
    return kernels[0], biases[0]


def keras_h5_to_features_state(path: str | Path) -> dict[str, Tensor]:
    """Keras VGG19 (no top) h5 -> float32 state dict for torchvision vgg19().features.

    Keras stores channels_last kernels [3, 3, in, out] for BGR input; TF's conv2d is a
    cross-correlation like torch's, so each kernel is only transposed to [out, in, 3, 3]
    (no spatial flip). The first convolution's input channels are reversed, BGR -> RGB,
    giving the "caffe_rgb" weights (the layout of vgg19_features_caffe_rgb_fp16.pt).
    Weights-only files keep one group per layer at the top level; full-model files keep
    them under model_weights/.
    """
    import h5py

    path = Path(path)
    state: dict[str, Tensor] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer, index, cin, cout in _keras_convs():
            if layer not in root:
                raise ValueError(f"{path}: no layer {layer} (not a Keras VGG19 weights file?)")
            kernel, bias = _kernel_and_bias(root[layer], layer, str(path))
            if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
                raise ValueError(f"{path}: {layer} has kernel {kernel.shape} and bias "
                                 f"{bias.shape}, expected (3, 3, {cin}, {cout}) and ({cout},)")
            weight = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            if index == 0:
                weight = weight.flip(1)  # BGR -> RGB input channels
            state[f"{index}.weight"] = weight.float().contiguous()
            state[f"{index}.bias"] = torch.from_numpy(np.asarray(bias)).float()
    return state


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the activations of the requested layers.

    Args:
        weights: a pipeline.core.weights name ("vgg19_keras", "vgg19_torchvision" / "imagenet")
            or a local vgg19().features state dict; resolved as loss.vgg_weights.
        layers: layer names, e.g. ("relu1_2", "relu2_2"); only the modules up to the
            deepest one are kept.
        convention: input preprocessing, one of CONVENTIONS; None picks "imagenet" for
            the torchvision weights and "caffe_rgb" for anything else.
        allow_download: whether missing registered weights may be downloaded.

    forward(x [B, 3, H, W] in [-1, 1]) -> {name: [B, C_name, H / 2^k, W / 2^k]}.
    Always in eval mode with requires_grad False on every parameter; gradients still flow
    to the input (the generator's output).
    """

    def __init__(
        self,
        weights: str,
        layers: Sequence[str],
        convention: str | None = None,
        allow_download: bool = True,
    ) -> None:
        super().__init__()
        layers = tuple(dict.fromkeys(layers))  # unique, order kept
        if not layers:
            raise ValueError("VGG19Features: no layers requested")
        unknown = [name for name in layers if name not in LAYER_INDEX]
        if unknown:
            raise ValueError(
                f"VGG19Features: unknown layer name(s) {unknown}; valid: {list(LAYER_NAMES)}"
            )
        if convention is None:
            convention = "imagenet" if weights in TORCHVISION_NAMES else "caffe_rgb"
        if convention not in CONVENTIONS:
            raise ValueError(
                f"VGG19Features: convention {convention!r} not one of {list(CONVENTIONS)}"
            )
        self.layers = layers
        self.weights = weights
        self.convention = convention
        self._capture = {LAYER_INDEX[name]: name for name in layers}
        depth = max(self._capture) + 1
        self.body = _build_features(depth)

        state = load_weights(weights, allow_download)
        needed = set(self.body.state_dict())
        missing = sorted(needed - set(state), key=lambda k: (int(k.split(".")[0]), k))
        if missing:
            raise ValueError(
                f"{weights}: VGG19 weights lack keys needed up to {LAYER_NAMES[depth - 1]}: "
                f"{missing}"
            )
        try:
            # Keys of deeper layers than requested are valid but unused.
            self.body.load_state_dict({k: state[k] for k in needed})
        except RuntimeError as exc:  # shape mismatch
            raise ValueError(
                f"{weights}: VGG19 weights do not fit vgg19().features: {exc}"
            ) from exc
        self.body.requires_grad_(False)

        # [-1, 1] -> network input as x * scale + shift, per channel.
        if convention == "imagenet":
            mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
            scale, shift = 0.5 / std, (0.5 - mean) / std
        else:  # caffe: 0..255 minus a per-channel mean; pose_gan has the R and B means swapped
            mean = _CAFFE_MEAN_RGB[::-1] if convention == "pose_gan" else _CAFFE_MEAN_RGB
            scale, shift = torch.full((3,), 127.5), 127.5 - torch.tensor(mean)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)
        self._bgr = convention == "caffe_bgr"
        super().train(False)

    def train(self, mode: bool = True) -> "VGG19Features":
        """Stay in eval mode whatever the caller asks: this network is never trained."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19Features expects [B, 3, H, W] images, got {tuple(x.shape)}")
        h = x * self.scale + self.shift
        if self._bgr:
            h = h.flip(1)
        out: dict[str, Tensor] = {}
        for index, module in enumerate(self.body):
            h = module(h)
            name = self._capture.get(index)
            if name is not None:
                out[name] = h
        return out
