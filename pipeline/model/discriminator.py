"""The Deformable GAN discriminator: a conditional PatchGAN on appearance, pose and image.

Input cat(x_a, H(p_a), x, H(p_b)) = 3 + 18 + 3 + 18 = 42 channels. It judges realism and
pose/appearance consistency at once. Two heads (model.disc_head), both with widths
disc_widths (w_0, ..., w_{n-1}) and normalisation model.norm:

  "original" (the pose-gan code, disc_type 'call'): 4x4/2 conv to w_0 with bias and NO
      padding; blocks LeakyReLU(0.2) -> pad 1 -> 4x4/2 conv (no bias) -> norm to w_1 ...
      w_{n-1}; LeakyReLU -> pad 1 -> 4x4/2 conv to 1 channel (no bias, no norm) -> sigmoid.
      Output: probabilities, 3 x 1 patches at 128 x 64 (7 x 3 at 256 x 128).
  "patch" (ours): blocks 4x4/2 conv -> norm -> LeakyReLU (the first without norm, with a
      bias), then a 4x4 stride-1 conv with bias to one channel. Output: raw logits, 7 x 3
      patches at 128 x 64 (15 x 7 at 256 x 128).

Discriminator.output says which ("prob" or "logit"); the GAN losses take it
(pipeline.model.losses.LossComputer(cfg, disc_output=...)).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.core.config import ModelConfig
from pipeline.core.keypoints import NUM_JOINTS
from pipeline.model.blocks import disc_block, down_block, initializer

IN_CHANNELS = 2 * (3 + NUM_JOINTS)
DISC_HEADS = ("original", "patch")
# What each head's forward returns, as LossComputer's disc_output names it.
DISC_OUTPUT = {"original": "prob", "patch": "logit"}


def _original_layers(widths: tuple[int, ...], norm: str) -> tuple[list[nn.Module], nn.Module]:
    """(blocks, last layer) of the original head."""
    blocks: list[nn.Module] = [nn.Conv2d(IN_CHANNELS, widths[0], 4, stride=2)]  # unpadded
    blocks += [down_block(widths[i], widths[i + 1], norm=norm) for i in range(len(widths) - 1)]
    return blocks, down_block(widths[-1], 1, norm=None, bias=False)


def _patch_layers(widths: tuple[int, ...], norm: str) -> tuple[list[nn.Module], nn.Module]:
    """(blocks, last layer) of the patch head."""
    chans = (IN_CHANNELS,) + widths
    blocks: list[nn.Module] = [
        disc_block(chans[i], chans[i + 1], norm=norm if i > 0 else None)
        for i in range(len(widths))
    ]
    return blocks, nn.Conv2d(widths[-1], 1, 4, padding=1)


class Discriminator(nn.Module):
    """Discriminator(cfg); forward(xa, ha, x, hb) -> [B, 1, h', w'] probabilities ("original"
    head, float32) or logits ("patch" head).

    xa, x [B, 3, H, W] in [-1, 1]; ha, hb [B, 18, H, W]. With n = len(disc_widths):
    "original": h' = floor((H / 2 - 1) / 2^n), w' likewise (3 x 1 at 128 x 64 with n = 4);
    "patch": h' = H / 2^n - 1, w' = W / 2^n - 1 (7 x 3 at 128 x 64).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = tuple(cfg.disc_widths)
        if not widths:
            raise ValueError("Discriminator: model.disc_widths must not be empty")
        if cfg.disc_head not in DISC_HEADS:
            raise ValueError(f"Discriminator: model.disc_head must be one of {DISC_HEADS}, "
                             f"got {cfg.disc_head!r}")
        build = _original_layers if cfg.disc_head == "original" else _patch_layers
        blocks, last = build(widths, cfg.norm)
        self.blocks, self.out = nn.Sequential(*blocks), last
        self.output = DISC_OUTPUT[cfg.disc_head]
        self.apply(initializer(cfg.init))

    def forward(self, xa: Tensor, ha: Tensor, x: Tensor, hb: Tensor) -> Tensor:
        out = self.out(self.blocks(torch.cat([xa, ha, x, hb], 1)))
        if self.output == "prob":
            # float32: under autocast a low-precision sigmoid rounds p to 0 or 1, and the
            # loss's log(p + 1e-7) / log(1 - p + 1e-7) would then lose its gradient.
            with torch.autocast(out.device.type, enabled=False):
                out = torch.sigmoid(out.float())
        return out
