"""Generating fixed batches with the generator during training: eval-mode forward passes,
uint8 conversion, and the sample grids logged to MLflow (one row per identity).

Nothing here draws from a random generator, so generating samples or validation images in
the middle of a run leaves the training RNG streams (and an exact resume) untouched.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.model.checkpoint import unwrap
from pipeline.core.device import DeviceSetup
from pipeline.model.build import GEN_KEYS, run_generator

GRID_ROWS = 8


GRID_TITLES = ("source", "target pose", "generated", "target")

# --------------------------------------------------------------------------- generation


@torch.no_grad()
def generate(G: nn.Module, batch: Mapping[str, Tensor], setup: DeviceSetup) -> Tensor:
    """G(x_a, h_a, h_b, kp_a, kp_b) for a CPU batch, in eval mode (no dropout), no grad,
    under the setup's autocast; G's train/eval mode is restored afterwards.
    Returns the generated images [B, 3, H, W] in [-1, 1] on setup.device."""
    g = unwrap(G)  # no DDP wrapper: a rank-0-only forward must not enter a collective
    was_training = g.training
    g.eval()
    try:
        b = {k: batch[k].to(setup.device) for k in GEN_KEYS}
        with setup.autocast():
            return run_generator(g, b).image
    finally:
        g.train(was_training)


UINT8_RULES = ("round", "truncate")
# What the original's test.py saved for a loaded pixel value v: it reads images as float64
# (v / 255 - 0.5) * 2 and writes (255 * ((x + 1) / 2.0)).astype(uint8), which truncates
# 20 of the 256 values to v - 1 (1, 2, 5, 9, ...). Its own code, evaluated once.
_ORIGINAL_REAL = (255 * ((((np.arange(256) / 255 - 0.5) * 2) + 1) / 2.0)).astype(np.uint8)


def _check_rule(rule: str) -> None:
    if rule not in UINT8_RULES:
        raise ValueError(f"evaluate.uint8 must be one of {UINT8_RULES}, got {rule!r}")


def to_uint8(x: Tensor, rule: str = "round") -> np.ndarray:
    """Generated images [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3] RGB: what the evaluate
    stage's PNGs hold and validation scores (evaluate.uint8). round: (x + 1) * 127.5 to the
    nearest integer (ours); truncate: the original's (255 * ((x + 1) / 2.0)).astype(uint8) in
    float32, its generator's output type (half a grey level darker on average)."""
    _check_rule(rule)
    x = x.detach().float().clamp(-1, 1)
    q = (255 * ((x + 1) / 2.0)).floor() if rule == "truncate" else ((x + 1) * 127.5).round()
    return q.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def real_to_uint8(x: Tensor, rule: str = "round") -> np.ndarray:
    """Loaded images [B, 3, H, W] (pixel v as v / 127.5 - 1) -> uint8 [B, H, W, 3] RGB.
    round: v itself; truncate: what the original saved for its sources and targets
    (_ORIGINAL_REAL[v]), which its SSIM and IS were computed on."""
    v = to_uint8(x)
    _check_rule(rule)
    return _ORIGINAL_REAL[v] if rule == "truncate" else v


# --------------------------------------------------------------------------- grid rows


def first_per_identity(ids: Sequence[Any], k: int = GRID_ROWS) -> np.ndarray:
    """Positions of the first entry of each distinct id, in order of appearance, at most k.

    ids: [N] one id per pair. Returns int64 [min(k, distinct ids)]."""
    ids = np.asarray(ids)
    if len(ids) == 0 or k <= 0:
        return np.zeros(0, np.int64)
    _, first = np.unique(ids, return_index=True)
    return np.sort(first)[:k].astype(np.int64)


def pair_identities(dataset: Any, indices: Sequence[int]) -> np.ndarray:
    """Person id of the source image of each pair index: the dataset's own ids (a
    PairDataset's person_ids, decided by pipeline.datasets from the names), vectorised.
    indices: [P]. Returns int64 [P]."""
    indices = np.asarray(indices, dtype=np.int64)
    return np.asarray(dataset.person_ids)[np.asarray(dataset.pair_a)[indices]]


def grid_pairs(dataset: Any, candidates: Sequence[int] | None = None, k: int = GRID_ROWS,
               scan: int = 4096) -> list[int]:
    """Pair indices for the sample grid: the first pair of each of up to k distinct person
    ids among `candidates` (default: the dataset's first `scan` pairs, in order)."""
    if candidates is None:
        candidates = np.arange(min(len(dataset), scan))
    candidates = np.asarray(candidates, dtype=np.int64)
    pos = first_per_identity(pair_identities(dataset, candidates), k)
    return candidates[pos].tolist()


# --------------------------------------------------------------------------- grids


def sample_grid(sources: np.ndarray, kp_target: np.ndarray, generated: np.ndarray,
                real: np.ndarray) -> np.ndarray:
    """Rows of (source | target pose skeleton | generated | real target), the columns of
    GRID_TITLES: the evaluation grid and the training samples alike.

    sources, generated, real: uint8 [N, H, W, 3] RGB; kp_target: [N, 18, 2] pixels at H x W.
    Returns uint8 [N * H, 4 * W, 3] RGB.
    """
    from pipeline.data.preview import draw_skeleton

    if len(sources) == 0:
        raise ValueError("sample_grid: no pairs to draw")
    n, h, w, _ = sources.shape
    skel = np.stack([draw_skeleton(np.zeros((h, w, 3), np.uint8), k) for k in kp_target])
    panels = np.stack([sources, skel, generated, real], axis=1)  # [N, 4, H, W, 3]
    return np.ascontiguousarray(panels.transpose(0, 2, 1, 3, 4).reshape(n * h, 4 * w, 3))


def render_samples(G: nn.Module, batch: Mapping[str, Tensor], setup: DeviceSetup) -> np.ndarray:
    """Generate a fixed CPU batch in eval mode -> the titled sample_grid
    (uint8 [TITLE_H + N * H, 4 * W, 3] RGB)."""
    from pipeline.data.preview import with_titles

    fake = generate(G, batch, setup)
    grid = sample_grid(to_uint8(batch["xa"]), batch["kpb"].numpy(), to_uint8(fake), to_uint8(batch["xb"]))
    return with_titles(grid, GRID_TITLES, batch["xa"].shape[-1])
