"""FID / IS math, the Inception loaders (file formats, null path) and feature extraction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.metrics.inception import (
    build_inception,
    fid_from_features,
    frechet_distance,
    inception_outputs,
    inception_score,
    load_inception,
)


class TinyFeatures(nn.Module):
    """A small random network with the extractor contract: 0..255 images -> (features, logits)."""

    def __init__(self, dim: int = 6, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, dim, 3)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        f = self.conv(x / 255.0).mean(dim=(2, 3))
        return f, self.fc(f)


def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 5))
    cov = a @ a.T + np.eye(5)
    mu = rng.normal(size=5)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-8


def test_frechet_closed_form_for_diagonal_covariances():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, abs=1e-9)


def test_fid_from_features_of_one_set_is_zero_and_grows_with_shift():
    f = np.random.default_rng(1).normal(size=(200, 4))
    assert abs(fid_from_features(f, f)) < 1e-8
    assert fid_from_features(f, f + 3.0) == pytest.approx(4 * 9.0, rel=1e-6)  # only the mean moved
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(f[:1], f)


def test_inception_score_bounds():
    assert inception_score(np.zeros((30, 7)))[0] == pytest.approx(1.0)  # uniform predictions
    confident = np.eye(5)[np.arange(50) % 5] * 60.0  # 5 classes, evenly used, certain
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(5.0, rel=1e-6) and std < 1e-6
    assert inception_score(np.eye(3)[[0] * 20] * 60.0)[0] == pytest.approx(1.0)  # one class only


def test_outputs_with_an_injected_network_batch_consistently():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (7, 16, 12, 3), dtype=np.uint8)
    net = TinyFeatures().eval()
    f1, l1 = inception_outputs(images, net, batch_size=3)
    f2, l2 = inception_outputs(images, net, batch_size=7)
    assert f1.shape == (7, 6) and l1.shape == (7, 4) and f1.dtype == np.float64
    np.testing.assert_allclose(f1, f2, atol=1e-5)
    # FID of a set against itself is 0, against other images it is positive.
    other = inception_outputs(255 - images, net)[0]
    assert abs(fid_from_features(f1, f1)) < 1e-6 and fid_from_features(f1, other) > 0


def test_null_path_without_weights(tmp_path):
    net, reason = load_inception(str(tmp_path / "missing.pth"))
    assert net is None and "file not found" in reason
    net, reason = load_inception(None, allow_download=False)
    assert net is None and "download disabled" in reason
    bad = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(1)}, bad)
    net, reason = load_inception(str(bad))
    assert net is None and "fc.weight" in reason


@pytest.mark.parametrize("classes", [1008, 1000])
def test_loads_fid_and_torchvision_state_dicts(tmp_path, classes):
    torch.manual_seed(0)
    src = build_inception(classes, fid_variant=classes == 1008)
    for p in src.parameters():  # give BatchNorm-free random weights a sane scale
        nn.init.normal_(p, std=0.02)
    state = dict(src.state_dict())
    if classes == 1000:  # torchvision files carry the auxiliary head: it must be ignored
        state["AuxLogits.fc.weight"] = torch.zeros(classes, 768)
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    ext, label = load_inception(str(path))
    assert ext is not None, label
    assert ("FID Inception" in label) == (classes == 1008)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 16, 3), dtype=np.uint8)
    feats, logits = inception_outputs(images, ext, batch_size=2)
    assert feats.shape == (2, 2048) and logits.shape == (2, classes)
    assert np.isfinite(feats).all()


def test_fid_variant_pools_differently():
    fid = build_inception(10, fid_variant=True)
    plain = build_inception(10, fid_variant=False)
    plain.load_state_dict(fid.state_dict())
    x = torch.randn(1, 2048, 8, 8)
    with torch.no_grad():  # Mixed_7c: max pool instead of average pool in the pool branch
        assert not torch.allclose(fid.Mixed_7c(x), plain.Mixed_7c(x))
        y = torch.randn(1, 288, 35, 35)
        a, b = fid.Mixed_6b(fid.Mixed_6a(y)), plain.Mixed_6b(plain.Mixed_6a(y))
        assert not torch.allclose(a, b)  # padding excluded from the averages at the border
        assert torch.allclose(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-5)
