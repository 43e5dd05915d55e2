"""Protocol SSIM: batched torch version == scikit-image's protocol call."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from pipeline.metrics.ssim import gaussian_taps, ssim


def reference(real: np.ndarray, gen: np.ndarray) -> np.ndarray:
    """The papers' call, one pair at a time (data range of the GENERATED image)."""
    return np.array([
        structural_similarity(r, g, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              channel_axis=2, data_range=float(g.max()) - float(g.min()))
        for r, g in zip(real, gen)
    ])


def noisy_pair(rng, b, h, w):
    real = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    noise = rng.integers(-70, 70, real.shape)
    gen = np.clip(real.astype(np.int64) + noise, 0, 255).astype(np.uint8)
    gen[0] = (gen[0] // 2) + 40  # a generated image with a narrower data range
    return real, gen


@pytest.mark.parametrize("hw", [(128, 64), (11, 11), (31, 17), (40, 90)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_skimage_on_random_images(hw, dtype):
    real, gen = noisy_pair(np.random.default_rng(hw[0] * 7 + hw[1]), 5, *hw)
    ours = ssim(real, gen, dtype=dtype, chunk=2)  # chunk < batch: chunking is exercised
    np.testing.assert_allclose(ours, reference(real, gen), atol=1e-4, rtol=0)
    if dtype == torch.float64:
        np.testing.assert_allclose(ours, reference(real, gen), atol=1e-10, rtol=0)


def test_data_range_comes_from_the_generated_image():
    real, gen = noisy_pair(np.random.default_rng(3), 3, 32, 32)
    swapped = ssim(gen, real)  # now the "generated" image is the real one: a different range
    assert not np.allclose(swapped[0], ssim(real, gen)[0])
    np.testing.assert_allclose(swapped, reference(gen, real), atol=1e-4)


def test_identical_images_score_one():
    real, _ = noisy_pair(np.random.default_rng(1), 4, 24, 20)
    np.testing.assert_allclose(ssim(real, real), 1.0, atol=1e-6)


def test_kernel_is_scipys_gaussian():
    taps = gaussian_taps(1.5, 3.5)
    assert taps.numel() == 11 and abs(float(taps.sum()) - 1) < 1e-12
    assert int(taps.argmax()) == 5 and torch.allclose(taps, taps.flip(0))


def test_bad_shapes_are_rejected():
    a = np.zeros((2, 20, 20, 3), np.uint8)
    with pytest.raises(ValueError, match="shape mismatch"):
        ssim(a, np.zeros((2, 20, 21, 3), np.uint8))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        ssim(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 20, 3), np.uint8))


def test_matches_skimage_on_userstudy_images(shared):
    folder = shared("data/deformable-gan-userstudy")
    ids = range(0, 55, 3)
    load = lambda sub: np.stack([cv2.imread(str(folder / sub / f"{i}.jpg"))[..., ::-1] for i in ids])
    real, gen = load("real"), load("generated")
    ref = reference(real, gen)
    np.testing.assert_allclose(ssim(real, gen), ref, atol=1e-4, rtol=0)
    assert 0.1 < ref.mean() < 0.6  # Deformable GAN outputs: SSIM ~0.3 on Market
