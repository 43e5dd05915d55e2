"""Convolutional building blocks shared by the generator and the discriminator.

All down/up-sampling convolutions are 4x4 with stride 2 and padding 1, so every block halves
(or doubles) height and width exactly (the original's zero-pad 1 + unpadded conv, and its
unpadded transposed conv cropped by 1, are the same maps). The decoder block can instead
upsample by nearest 2x resize followed by a 3x3 convolution (up_block(..., upsample="resize")),
which avoids the checkerboard artifacts of overlapping transposed-conv kernels.

The normalisation is model.norm (pipeline.model.norm: "sample" = the original's, "instance"
= ours). Convolutions followed by a normalisation never carry a bias (it would be removed
anyway); an un-normalised block conv has one only with bias=True (model.block_bias; the
original has none). Initialisation (model.init): "glorot" = Keras' glorot_uniform, the
original's; "normal" = N(0, 0.02), ours.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn

from pipeline.model.norm import SampleNorm, make_norm

LRELU_SLOPE = 0.2
INIT_STD = 0.02
INITS = ("glorot", "normal")


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_weights(module: nn.Module, mode: str = "normal") -> None:
    """Initialise one module (use with module.apply(initializer(mode))).

    Conv / transposed-conv weights: mode "normal" ~ N(0, 0.02); mode "glorot" ~ U(-a, a),
    a = sqrt(6 / (fan_in + fan_out)) with Keras' fans k*k*in and k*k*out (xavier_uniform_
    gives exactly that: for a transposed conv torch swaps in and out, and the sum is the
    same). Biases 0; normalisation gammas 1 and betas 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        if mode == "glorot":
            nn.init.xavier_uniform_(module.weight)
        elif mode == "normal":
            nn.init.normal_(module.weight, 0.0, INIT_STD)
        else:
            raise ValueError(f"model.init must be one of {INITS}, got {mode!r}")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, SampleNorm):
        module.reset_parameters()
    elif isinstance(module, nn.InstanceNorm2d) and module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def initializer(mode: str) -> Callable[[nn.Module], None]:
    """init_weights for model.init `mode`, for module.apply; bad mode -> ValueError."""
    if mode not in INITS:
        raise ValueError(f"model.init must be one of {INITS}, got {mode!r}")
    return partial(init_weights, mode=mode)


def down_block(in_ch: int, out_ch: int, norm: str | None = "sample",
               bias: bool = False) -> nn.Sequential:
    """Encoder block [B, in, h, w] -> [B, out, h/2, w/2]: LeakyReLU(0.2) -> 4x4/2 conv -> norm.

    norm None: no normalisation; the conv then has a bias when `bias` (else never)."""
    layers: list[nn.Module] = [
        nn.LeakyReLU(LRELU_SLOPE),
        nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=bias and norm is None),
    ]
    if norm is not None:
        layers.append(make_norm(norm, out_ch))
    return nn.Sequential(*layers)


UPSAMPLE_MODES = ("transpose", "resize")


def up_block(in_ch: int, out_ch: int, dropout: float = 0.0,
             upsample: str = "transpose", norm: str = "sample") -> nn.Sequential:
    """Decoder block [B, in, h, w] -> [B, out, 2h, 2w]: ReLU -> upsampling conv (no bias)
    -> norm (-> Dropout when dropout > 0).

    upsample "transpose": 4x4/2 transposed conv, as in the paper's U-Net.
    upsample "resize": nearest 2x upsample -> 3x3 conv (padding 1); every output pixel sees
    the same kernel taps, so there is no checkerboard pattern."""
    if upsample == "transpose":
        up: list[nn.Module] = [nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1,
                                                  bias=False)]
    elif upsample == "resize":
        # ReLU before the resize is equivalent (nearest copies values) and halves its work.
        up = [nn.Upsample(scale_factor=2, mode="nearest"),
              nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)]
    else:
        raise ValueError(f"up_block: upsample must be one of {UPSAMPLE_MODES}, "
                         f"got {upsample!r}")
    layers: list[nn.Module] = [nn.ReLU(), *up, make_norm(norm, out_ch)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def disc_block(in_ch: int, out_ch: int, norm: str | None = "sample") -> nn.Sequential:
    """Patch-head discriminator block [B, in, h, w] -> [B, out, h/2, w/2]:
    4x4/2 conv -> norm -> LeakyReLU; norm None: no normalisation and a conv bias instead.
    (The original head uses down_block's order, activation first.)"""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=norm is None)]
    if norm is not None:
        layers.append(make_norm(norm, out_ch))
    layers.append(nn.LeakyReLU(LRELU_SLOPE))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """A 3x3 conv (with bias) at full resolution, then down_blocks; the last has no norm,
    and a conv bias only with block_bias.

    forward: [B, in_ch, H, W] -> list of len(widths) maps, level l: [B, widths[l], H/2^l, W/2^l].
    """

    def __init__(self, in_ch: int, widths: tuple[int, ...], norm: str = "sample",
                 block_bias: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, widths[0], 3, padding=1)
        last = len(widths) - 2
        self.blocks = nn.ModuleList(
            down_block(widths[i], widths[i + 1], norm=None if i == last else norm,
                       bias=block_bias)
            for i in range(len(widths) - 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        for block in self.blocks:
            feats.append(block(feats[-1]))
        return feats


class OffsetHead(nn.Module):
    """Residual offset field from a level's affine-warped appearance and pose features.

    forward(warped [B, C_a, h, w], pose [B, C_p, h, w]) -> [B, 2, h, w] (normalised x, y).
    3x3 conv -> LeakyReLU -> 3x3 conv; the last conv starts at zero, so the offsets start at
    zero and the generator starts as the paper's model."""

    def __init__(self, in_ch: int, hidden: int):
        super().__init__()
        self.hidden = nn.Conv2d(in_ch, hidden, 3, padding=1)
        self.act = nn.LeakyReLU(LRELU_SLOPE)
        self.out = nn.Conv2d(hidden, 2, 3, padding=1)

    def reset_parameters(self) -> None:
        init_weights(self.hidden, "normal")  # its own init, whatever model.init says
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, warped: Tensor, pose: Tensor) -> Tensor:
        return self.out(self.act(self.hidden(torch.cat([warped, pose], 1))))
