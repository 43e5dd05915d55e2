"""Convolutional building blocks shared by the generator and the discriminator.

All down/up-sampling convolutions are 4x4 with stride 2 and padding 1, so every block halves
(or doubles) height and width exactly. The decoder block can instead upsample by nearest 2x
resize followed by a 3x3 convolution (up_block(..., upsample="resize")), which avoids the
checkerboard artifacts of overlapping transposed-conv kernels. Convolutions followed by
instance normalisation carry no bias (the normalisation removes it anyway).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

LRELU_SLOPE = 0.2
INIT_STD = 0.02


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def init_weights(module: nn.Module) -> None:
    """DCGAN-style init, applied with module.apply: conv weights ~ N(0, 0.02), biases 0,
    affine instance-norm scales 1 and shifts 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, INIT_STD)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.InstanceNorm2d) and module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def down_block(in_ch: int, out_ch: int, norm: bool = True) -> nn.Sequential:
    """Encoder block [B, in, h, w] -> [B, out, h/2, w/2]: LeakyReLU(0.2) -> 4x4/2 conv -> IN."""
    layers: list[nn.Module] = [
        nn.LeakyReLU(LRELU_SLOPE),
        nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=not norm),
    ]
    if norm:
        layers.append(nn.InstanceNorm2d(out_ch, affine=True))
    return nn.Sequential(*layers)


UPSAMPLE_MODES = ("transpose", "resize")


def up_block(in_ch: int, out_ch: int, dropout: float = 0.0,
             upsample: str = "transpose") -> nn.Sequential:
    """Decoder block [B, in, h, w] -> [B, out, 2h, 2w]: ReLU -> upsampling conv -> IN
    (-> Dropout when dropout > 0).

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
    layers: list[nn.Module] = [nn.ReLU(), *up, nn.InstanceNorm2d(out_ch, affine=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def disc_block(in_ch: int, out_ch: int, norm: bool = True) -> nn.Sequential:
    """Discriminator block [B, in, h, w] -> [B, out, h/2, w/2]: 4x4/2 conv -> IN -> LeakyReLU."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.InstanceNorm2d(out_ch, affine=True))
    layers.append(nn.LeakyReLU(LRELU_SLOPE))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """A 3x3 conv at full resolution, then down_blocks (no norm on the last).

    forward: [B, in_ch, H, W] -> list of len(widths) maps, level l: [B, widths[l], H/2^l, W/2^l].
    """

    def __init__(self, in_ch: int, widths: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Conv2d(in_ch, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(
            down_block(widths[i], widths[i + 1], norm=i + 2 < len(widths))
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
        init_weights(self.hidden)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, warped: Tensor, pose: Tensor) -> Tensor:
        return self.out(self.act(self.hidden(torch.cat([warped, pose], 1))))
