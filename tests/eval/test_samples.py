"""The sample grid (pipeline/eval/samples.py): the evaluation grid and the training samples."""
from __future__ import annotations

import numpy as np

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
