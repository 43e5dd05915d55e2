"""L1 and masked L1 in [0, 1] units."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics.pixel import l1, masked_l1


def test_l1_values():
    real = np.zeros((2, 4, 4, 3), np.uint8)
    gen = real.copy()
    gen[1] = 255
    np.testing.assert_allclose(l1(real, gen), [0.0, 1.0])
    gen[1, :2] = 0  # half the pixels now agree
    np.testing.assert_allclose(l1(real, gen)[1], 0.5)


def test_masked_l1_only_counts_mask_pixels():
    real = np.zeros((2, 4, 4, 3), np.uint8)
    gen = np.full_like(real, 51)  # 0.2 everywhere
    gen[:, 0, 0] = 255  # outside the mask below: must not count
    mask = np.zeros((2, 4, 4), bool)
    mask[0, 2:, 2:] = True
    out = masked_l1(real, gen, mask)
    np.testing.assert_allclose(out[0], 0.2, atol=1e-7)
    assert np.isnan(out[1])  # empty mask: undefined, not 0


def test_identical_images_give_zero():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 8, 6, 3), dtype=np.uint8)
    assert (l1(x, x) == 0).all()
    assert (masked_l1(x, x, np.ones((3, 8, 6), bool)) == 0).all()


def test_shape_errors():
    with pytest.raises(ValueError, match="one shape"):
        l1(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 5, 3)))
    with pytest.raises(ValueError, match="mask shape"):
        masked_l1(np.zeros((1, 4, 4, 3)), np.zeros((1, 4, 4, 3)), np.ones((1, 4, 5), bool))
