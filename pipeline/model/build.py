"""The networks by name, and the one way a generator is run on a batch.

model.generator names the architecture (the seam for another generator); every caller
(training, validation, evaluation, repose, the demo) builds through build_generator and
runs through run_generator, so the input order lives in one place.
"""
from __future__ import annotations

from typing import Callable, Mapping

from torch import Tensor, nn

from pipeline.core.config import ModelConfig
from pipeline.model.discriminator import Discriminator
from pipeline.model.generator import Generator, GeneratorOutput

# The generator's inputs, in its forward's order: x_a [B, 3, H, W] in [-1, 1], h_a and h_b
# [B, 18, H, W] heatmaps, kp_a and kp_b [B, 18, 2] (x, y) pixels, -1 missing.
GEN_KEYS = ("xa", "ha", "hb", "kpa", "kpb")

GENERATORS: dict[str, Callable[[ModelConfig, int, int], nn.Module]] = {"deformable": Generator}
DISCRIMINATORS: dict[str, Callable[[ModelConfig], nn.Module]] = {"deformable": Discriminator}


def build_generator(cfg: ModelConfig, height: int, width: int) -> nn.Module:
    """The generator model.generator names, for H x W images."""
    return GENERATORS[cfg.generator](cfg, height, width)


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    return DISCRIMINATORS[cfg.generator](cfg)


def run_generator(G: nn.Module, batch: Mapping[str, Tensor]) -> GeneratorOutput:
    """G on a batch dict holding GEN_KEYS (on G's device) -> GeneratorOutput(image, offsets)."""
    return G(*(batch[k] for k in GEN_KEYS))
