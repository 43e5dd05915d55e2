"""The Deformable GAN generator: two encoders and a U-Net decoder with deformable skips.

    appearance encoder  cat(x_a, H(p_a))  [B, 21, H, W] -> levels H, H/2, ..., H/2^(L-1)
    pose encoder        H(p_b)            [B, 18, H, W] -> the same levels
    decoder             starts from both coarsest maps; at every finer level it upsamples and
                        concatenates the appearance skip (warped at the WARPED_LEVELS finest
                        levels) and the pose skip of that resolution; 3x3 conv -> tanh.

Warping (cfg.warp): "parts" uses the 10 part masks/affines of pipeline.model.geometry,
"global" one whole-image affine, "none" passes the appearance skips unwarped. With
cfg.offsets, every warped level also gets a learned residual offset field (OffsetHead, zero at
init) predicted from the affine-warped appearance and the pose features; the level is then
re-warped with the affines plus that offset. With warp "none" and offsets on, the offsets act
on the identity warp (a purely learned flow). Decoder upsampling (cfg.upsample): "transpose"
is the paper's 4x4 stride-2 transposed convolution; "resize" is a nearest 2x upsample followed
by a 3x3 convolution, which avoids checkerboard artifacts (see pipeline.model.blocks.up_block).

Layers (pipeline.model.blocks): normalisation cfg.norm ("sample" = the original's
keras-contrib InstanceNormalization(axis=None), "instance" = per-channel InstanceNorm2d);
cfg.block_bias (false = the original: no bias on any 4x4 block conv, the last encoder block
included; the 3x3 stem and head convs keep theirs); init cfg.init ("glorot" = Keras'
glorot_uniform, "normal" = N(0, 0.02)). With the defaults (offsets off, warp "parts",
upsample "transpose", norm "sample", block_bias false, init "glorot") this is the paper's
generator: 61,109,085 parameters at the paper's widths.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from pipeline.core.config import ModelConfig
from pipeline.core.keypoints import NUM_JOINTS
from pipeline.model.blocks import UPSAMPLE_MODES, Encoder, OffsetHead, initializer, up_block
from pipeline.model.geometry import part_geometry
from pipeline.model.warp import (
    affine_to_grid_theta, resize_masks, resize_masks_nearest, warp_parts, warp_parts_nearest,
)

WARPED_LEVELS = 4  # the four finest resolutions (H, H/2, H/4, H/8) get deformed skips
DROPOUT_BLOCKS = 3  # dropout in the first three decoder blocks
OFFSET_HIDDEN_MAX = 64


class GeneratorOutput(NamedTuple):
    image: Tensor          # [B, 3, H, W] in [-1, 1]
    offsets: list[Tensor]  # per warped level, finest first: [B, 2, H/2^l, W/2^l]; [] when off


class Generator(nn.Module):
    """Generator(cfg, height, width); forward(xa, ha, hb, kpa, kpb) -> GeneratorOutput.

    xa [B, 3, H, W] in [-1, 1]; ha, hb [B, 18, H, W] heatmaps; kpa, kpb [B, 18, 2] (x, y)
    pixels at H x W, -1 missing. H and W must be divisible by 2^(len(encoder_widths) - 1).
    """

    def __init__(self, cfg: ModelConfig, height: int, width: int):
        super().__init__()
        enc, dec = tuple(cfg.encoder_widths), tuple(cfg.decoder_widths)
        n_levels = len(enc)
        if n_levels < 2 or len(dec) != n_levels - 1:
            raise ValueError(f"Generator: decoder_widths needs len(encoder_widths) - 1 = "
                             f"{n_levels - 1} entries, got {len(dec)} ({dec} vs {enc})")
        factor = 2 ** (n_levels - 1)
        if height % factor or width % factor:
            raise ValueError(f"Generator: image size {height}x{width} must be divisible by "
                             f"{factor} (2^(len(encoder_widths) - 1))")
        if cfg.warp not in ("none", "global", "parts") or cfg.warp_agg not in ("max", "avg"):
            raise ValueError(f"Generator: bad warp {cfg.warp!r} / warp_agg {cfg.warp_agg!r}")
        if cfg.upsample not in UPSAMPLE_MODES:
            raise ValueError(f"Generator: bad upsample {cfg.upsample!r}, "
                             f"expected one of {UPSAMPLE_MODES}")
        if cfg.offsets and cfg.warp_sampling == "nearest":
            raise ValueError("Generator: model.offsets needs model.warp_sampling 'bilinear' "
                             "(nearest sampling has no gradient with respect to the offsets)")
        init = initializer(cfg.init)  # checks model.init before anything is built
        self.cfg, self.height, self.width = cfg, height, width
        self.n_warped = min(WARPED_LEVELS, n_levels)
        self.appearance = Encoder(3 + NUM_JOINTS, enc, cfg.norm, cfg.block_bias)
        self.pose = Encoder(NUM_JOINTS, enc, cfg.norm, cfg.block_bias)
        # Decoder block i produces level n_levels-2-i and is followed by that level's skips.
        ins = [2 * enc[-1]] + [dec[i - 1] + 2 * enc[n_levels - 1 - i] for i in range(1, len(dec))]
        self.decoder = nn.ModuleList(
            up_block(ins[i], dec[i], cfg.dropout if i < DROPOUT_BLOCKS else 0.0, cfg.upsample,
                     cfg.norm)
            for i in range(len(dec))
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(dec[-1] + 2 * enc[0], 3, 3, padding=1),
                                  nn.Tanh())
        self.offset_heads = nn.ModuleList(
            OffsetHead(2 * enc[l], min(enc[l], OFFSET_HIDDEN_MAX)) for l in range(self.n_warped)
        ) if cfg.offsets else nn.ModuleList()
        self.apply(init)
        for head in self.offset_heads:  # their own init (zero offsets at start)
            head.reset_parameters()

    def _warp_setup(self, kpa: Tensor, kpb: Tensor, height: int, width: int):
        """(transform [B, K, 2, 3], masks [B, K, H, W], valid [B, K]) for the configured warp,
        or None when the skips pass unwarped. The transform is the normalised theta for
        bilinear sampling, the pixel affine for the original's nearest sampling."""
        mode, sampling = self.cfg.warp, self.cfg.warp_sampling
        if sampling not in ("nearest", "bilinear"):
            raise ValueError(f"Generator: model.warp_sampling must be 'nearest' or 'bilinear', "
                             f"got {sampling!r}")
        if mode == "none" and not self.cfg.offsets:
            return None
        if mode == "none":  # identity warp, whole image: the offsets are the whole flow
            b = kpa.shape[0]
            theta = torch.eye(2, 3, device=kpa.device).expand(b, 1, 2, 3)
            masks = torch.ones(b, 1, height, width, device=kpa.device)
            return theta, masks, torch.ones(b, 1, dtype=torch.bool, device=kpa.device)
        geo = part_geometry(kpa, kpb, height, width, mode=mode, affine_fit=self.cfg.affine_fit,
                            part_masks=self.cfg.part_masks)
        if sampling == "nearest":
            return geo.affines, geo.masks, geo.valid
        return affine_to_grid_theta(geo.affines, height, width), geo.masks, geo.valid

    def forward(self, xa: Tensor, ha: Tensor, hb: Tensor, kpa: Tensor, kpb: Tensor
                ) -> GeneratorOutput:
        height, width = xa.shape[-2:]
        b = xa.shape[0]
        expected = {"xa": (b, 3, height, width), "ha": (b, NUM_JOINTS, height, width),
                    "hb": (b, NUM_JOINTS, height, width), "kpa": (b, NUM_JOINTS, 2),
                    "kpb": (b, NUM_JOINTS, 2)}
        for name, tensor in zip(expected, (xa, ha, hb, kpa, kpb)):
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(f"Generator.forward: {name} has shape {tuple(tensor.shape)}, "
                                 f"expected {expected[name]}")
        app = self.appearance(torch.cat([xa, ha], 1))
        pose = self.pose(hb)
        setup = self._warp_setup(kpa, kpb, height, width)
        offsets: list[Tensor] = []
        if setup is not None:
            theta, masks, valid = setup
            agg = self.cfg.warp_agg
            for level in range(self.n_warped):
                feat = app[level]
                if self.cfg.warp_sampling == "nearest":  # theta: pixel affines here
                    level_masks = resize_masks_nearest(masks, *feat.shape[-2:])
                    app[level] = warp_parts_nearest(feat, theta, level_masks, valid, agg,
                                                    height / feat.shape[-2])
                    continue
                level_masks = resize_masks(masks, *feat.shape[-2:])  # once, used by both warps
                warped = warp_parts(feat, theta, level_masks, valid, agg)
                if self.cfg.offsets:
                    offset = self.offset_heads[level](warped, pose[level])
                    warped = warp_parts(feat, theta, level_masks, valid, agg, offset)
                    offsets.append(offset)
                app[level] = warped
        x = torch.cat([app[-1], pose[-1]], 1)
        for i, block in enumerate(self.decoder):
            level = len(app) - 2 - i
            x = torch.cat([block(x), app[level], pose[level]], 1)
        return GeneratorOutput(self.head(x), offsets)
