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

Weights and input conventions (``forward`` always takes images in [-1, 1]):

- ``"imagenet"``: torchvision's VGG19_Weights.IMAGENET1K_V1 (downloaded by torchvision
  into $TORCH_HOME when online). Convention ``"imagenet"``: RGB in [0, 1], minus the
  ImageNet mean (0.485, 0.456, 0.406), divided by the std (0.229, 0.224, 0.225).
- a local path: a state dict for ``vgg19().features`` (keys ``0.weight`` ... ``34.bias``;
  a full torchvision VGG19 state dict with ``features.``/``classifier.`` keys is also
  accepted), possibly float16. Default convention ``"caffe_rgb"``: RGB in 0..255 minus
  (123.68, 116.779, 103.939), no std -- the original Oxford/Keras weights, e.g.
  ../shared/weights/vgg19_features_caffe_rgb_fp16.pt. ``"caffe_bgr"`` is the same with
  the channels reversed, for weights whose first convolution expects BGR input.
"""
from __future__ import annotations

import socket
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

# Channel widths of VGG19 ("configuration E"); "M" is a 2x2 max pool closing a block.
_VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
    512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)

CONVENTIONS = ("imagenet", "caffe_rgb", "caffe_bgr")
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


def _load_local(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG19 weights not found: {path}. Set loss.vgg_weights in params.yaml to a local "
            "state dict for torchvision vgg19().features (e.g. "
            "../shared/weights/vgg19_features_caffe_rgb_fp16.pt) or to 'imagenet'."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types; name the file
        raise ValueError(f"{path}: cannot read VGG19 weights as a state dict: {exc}") from exc
    return _features_state(state, str(path))


def _load_imagenet(timeout: float) -> dict[str, Tensor]:
    """torchvision's ImageNet VGG19 (cached in $TORCH_HOME, else downloaded)."""
    from torchvision.models import VGG19_Weights

    previous = socket.getdefaulttimeout()
    # torch.hub opens the URL without a timeout; bound it so an offline machine fails fast.
    socket.setdefaulttimeout(timeout)
    try:
        state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        raise RuntimeError(
            "could not obtain torchvision's ImageNet VGG19 weights "
            f"({VGG19_Weights.IMAGENET1K_V1.url}): {exc}. Offline? Set loss.vgg_weights in "
            "params.yaml to a local state dict for vgg19().features, e.g. "
            "../shared/weights/vgg19_features_caffe_rgb_fp16.pt."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    return _features_state(state, "torchvision VGG19_Weights.IMAGENET1K_V1")


class VGG19Features(nn.Module):
    """Frozen VGG19 returning the activations of the requested layers.

    Args:
        weights: "imagenet" (torchvision download) or a path to a vgg19().features state dict.
        layers: layer names, e.g. ("relu1_2", "relu2_2"); only the modules up to the
            deepest one are kept.
        convention: input preprocessing, one of CONVENTIONS; None picks "imagenet" for
            weights="imagenet" and "caffe_rgb" for a local file.
        download_timeout: seconds per network operation when fetching "imagenet".

    forward(x [B, 3, H, W] in [-1, 1]) -> {name: [B, C_name, H / 2^k, W / 2^k]}.
    Always in eval mode with requires_grad False on every parameter; gradients still flow
    to the input (the generator's output).
    """

    def __init__(
        self,
        weights: str,
        layers: Sequence[str],
        convention: str | None = None,
        download_timeout: float = 30.0,
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
            convention = "imagenet" if weights == "imagenet" else "caffe_rgb"
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

        if weights == "imagenet":
            state = _load_imagenet(download_timeout)
        else:
            state = _load_local(Path(weights))
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
        else:
            scale, shift = torch.full((3,), 127.5), 127.5 - torch.tensor(_CAFFE_MEAN_RGB)
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
