"""The Deformable GAN discriminator: a conditional PatchGAN on appearance, pose and image.

Input cat(x_a, H(p_a), x, H(p_b)) = 3 + 18 + 3 + 18 = 42 channels; strided 4x4 conv blocks
(disc_widths, the first without normalisation), then a 4x4 stride-1 conv to one channel of
raw patch logits. It judges realism and pose/appearance consistency at once.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline.config import ModelConfig
from pipeline.keypoints import NUM_JOINTS
from pipeline.model.blocks import disc_block, init_weights

IN_CHANNELS = 2 * (3 + NUM_JOINTS)


class Discriminator(nn.Module):
    """Discriminator(cfg); forward(xa, ha, x, hb) -> logits [B, 1, h', w'].

    xa, x [B, 3, H, W] in [-1, 1]; ha, hb [B, 18, H, W]. With n = len(disc_widths) blocks,
    h' = H / 2^n - 1 and w' = W / 2^n - 1 (7 x 3 patches at 128 x 64 with four blocks).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = tuple(cfg.disc_widths)
        if not widths:
            raise ValueError("Discriminator: disc_widths must not be empty")
        chans = (IN_CHANNELS,) + widths
        self.blocks = nn.Sequential(
            *(disc_block(chans[i], chans[i + 1], norm=i > 0) for i in range(len(widths)))
        )
        self.out = nn.Conv2d(widths[-1], 1, 4, padding=1)
        self.apply(init_weights)

    def forward(self, xa: Tensor, ha: Tensor, x: Tensor, hb: Tensor) -> Tensor:
        return self.out(self.blocks(torch.cat([xa, ha, x, hb], 1)))
