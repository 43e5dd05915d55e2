"""The sample grid (pipeline/eval/samples.py): the evaluation grid and the training samples."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.eval.samples import sample_grid


def test_sample_grid_layout():
    rng = np.random.default_rng(0)
    src, gen, real = (rng.integers(0, 255, (2, 32, 16, 3), dtype=np.uint8) for _ in range(3))
    kp = np.full((2, 18, 2), -1.0, np.float32)
    kp[:, 1], kp[:, 2] = (8, 4), (8, 20)  # neck and right shoulder: one limb
    grid = sample_grid(src, kp, gen, real)
    assert grid.shape == (64, 64, 3)
    np.testing.assert_array_equal(grid[32:64, 0:16], src[1])
    np.testing.assert_array_equal(grid[0:32, 32:48], gen[0])
    np.testing.assert_array_equal(grid[32:64, 48:64], real[1])
    skeleton = grid[0:32, 16:32]
    assert skeleton[12, 8].any() and not skeleton[28:, :].any()  # limb drawn, background black


def test_uint8_rules_round_and_the_originals_truncation():
    import torch

    from pipeline.eval.samples import real_to_uint8, to_uint8

    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.rand(2, 3, 8, 4, generator=gen) * 2 - 1,
                   torch.tensor([-1.0, 1.0, 0.0, 1 / 255 - 1]).reshape(1, 1, 1, 4).expand(2, 3, 1, 4)], 2)
    ref = x.permute(0, 2, 3, 1).numpy()  # what the original's float32 generator output is
    np.testing.assert_array_equal(to_uint8(x, "truncate"), (255 * ((ref + 1) / 2.0)).astype(np.uint8))
    np.testing.assert_array_equal(to_uint8(x), np.round((ref + 1) * 127.5).astype(np.uint8))
    assert (to_uint8(x, "truncate") <= to_uint8(x)).all()
    # Real images: the loader's v / 127.5 - 1 and the original's float64 round trip of v.
    v = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, 3)
    loaded = torch.from_numpy(v.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
    np.testing.assert_array_equal(real_to_uint8(loaded), v)
    original = (255 * ((((v.astype(np.float64) / 255 - 0.5) * 2) + 1) / 2.0)).astype(np.uint8)
    np.testing.assert_array_equal(real_to_uint8(loaded, "truncate"), original)
    assert (original != v).sum() == 20 * 3
    with pytest.raises(ValueError, match="evaluate.uint8"):
        to_uint8(x, "nearest")
