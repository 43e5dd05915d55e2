"""LPIPS from its definition: properties with random weights, weight files, the null path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import alexnet

from pipeline.metrics.lpips import CHANNELS, LPIPS, load_lpips, lpips_distance, read_lin_weights


def random_model() -> LPIPS:
    torch.manual_seed(0)
    lins = [torch.rand(1, c, 1, 1) for c in CHANNELS]
    return LPIPS(alexnet(weights=None).features, lins).eval()


def test_distance_properties():
    model = random_model()
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    d_ab = lpips_distance(a, b, model, batch_size=2)
    assert d_ab.shape == (3,) and (d_ab > 0).all()
    assert np.allclose(lpips_distance(a, a, model), 0.0, atol=1e-6)
    np.testing.assert_allclose(lpips_distance(b, a, model), d_ab, rtol=1e-5)  # symmetric
    near = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    assert (lpips_distance(a, near, model) < d_ab).all()


def test_weight_files_and_null_path(tmp_path):
    lins = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(CHANNELS)}
    lin_path = tmp_path / "alex.pth"
    torch.save(lins, lin_path)
    assert [w.numel() for w in read_lin_weights(lin_path)] == list(CHANNELS)
    alex_path = tmp_path / "alexnet.pth"
    torch.save(alexnet(weights=None).state_dict(), alex_path)
    model, label = load_lpips(str(lin_path), str(alex_path))
    assert model is not None and "LPIPS v0.1" in label

    model, reason = load_lpips(str(tmp_path / "nope.pth"), str(alex_path))
    assert model is None and "not found" in reason
    model, reason = load_lpips(str(lin_path), None, allow_download=False)
    assert model is None and "download disabled" in reason
    bad = tmp_path / "bad.pth"
    torch.save({"lin0.model.1.weight": torch.rand(1, 5, 1, 1)}, bad)
    with pytest.raises(ValueError, match="lin0..lin4"):
        read_lin_weights(bad)
    model, reason = load_lpips(str(bad), str(alex_path))
    assert model is None and "lin0..lin4" in reason
