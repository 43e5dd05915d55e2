"""IS / FID maths against independent transcriptions, and the torch-fidelity Inception loader
(random weights of the same graph in the library's layout; the null path)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from pipeline.metrics.inception import (
    NUM_CLASSES,
    fid_from_features,
    inception_outputs,
    inception_score,
    load_inception,
    write_random_weights,
)


def openai_inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """A NumPy transcription of the OpenAI improved-GAN inception_score on softmax outputs:
    splits [i*N//splits, (i+1)*N//splits), KL(p(y|x) || p(y)) per split, exp of its mean."""
    e = np.exp(logits - logits.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    n, scores = len(preds), []
    for i in range(splits):
        part = preds[i * n // splits:(i + 1) * n // splits]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The TTUR formula with scipy's matrix square root."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = np.real(linalg.sqrtm(s1 @ s2))
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


class TinyFeatures(nn.Module):
    """A small random network with the extractor contract: uint8 images -> (features, logits)."""

    def __init__(self, dim: int = 6, classes: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, dim, 3)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x):
        f = self.conv(x / 255.0).mean(dim=(2, 3))
        return f, self.fc(f)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    return write_random_weights(tmp_path_factory.mktemp("inception") / "inception_random.pth", seed=0)


def test_inception_score_known_cases():
    assert inception_score(np.zeros((30, 7)))[0] == pytest.approx(1.0)  # uniform predictions
    confident = np.eye(5)[np.arange(50) % 5] * 60.0  # 5 classes, evenly used in every split, certain
    mean, std = inception_score(confident, splits=10)
    assert mean == pytest.approx(5.0, rel=1e-6) and std < 1e-6
    assert inception_score(np.eye(3)[[0] * 20] * 60.0)[0] == pytest.approx(1.0)  # one class only
    with pytest.raises(ValueError, match="no images"):
        inception_score(np.zeros((0, 3)))


@pytest.mark.parametrize("n", [10, 23, 57])
def test_inception_score_equals_the_openai_code_unshuffled(n):
    logits = np.random.default_rng(n).normal(scale=3.0, size=(n, 11)).astype(np.float32)
    got = inception_score(logits)
    expected = openai_inception_score(logits.astype(np.float64))
    assert got == pytest.approx(expected, rel=1e-9)
    if n > 10:  # order matters (no shuffling): reversing the images changes the splits
        assert inception_score(logits[::-1])[1] != pytest.approx(got[1], rel=1e-6)


def test_fid_known_cases_and_scipy_reference():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(200, 4))
    assert abs(fid_from_features(f, f)) < 1e-8
    assert fid_from_features(f, f + 3.0) == pytest.approx(4 * 9.0, rel=1e-6)  # only the mean moved
    g = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4)) + 0.5
    assert fid_from_features(f, g) == pytest.approx(scipy_fid(g, f), rel=1e-8)
    # Diagonal covariances: ||mu1 - mu2||^2 + sum (sqrt v1 - sqrt v2)^2, from large samples.
    a = rng.normal(size=(20000, 3)) * [1.0, 2.0, 3.0]
    b = rng.normal(size=(20000, 3)) * [2.0, 1.0, 1.0] + [1.0, 0.0, -2.0]
    assert fid_from_features(a, b) == pytest.approx(1 + 4 + 1 + 1 + 4, rel=0.03)
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(f[:1], f)


def test_outputs_with_an_injected_network_batch_consistently():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (7, 16, 12, 3), dtype=np.uint8)
    net = TinyFeatures().eval()
    f1, l1 = inception_outputs(images, net, batch_size=3)
    f2, l2 = inception_outputs(images, net, batch_size=7)
    assert f1.shape == (7, 6) and l1.shape == (7, 4) and f1.dtype == np.float32
    np.testing.assert_allclose(f1, f2, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        inception_outputs(images.astype(np.float32), net)


def test_loads_the_library_extractor_with_unbiased_logits(random_weights):
    ext, label = load_inception(str(random_weights))
    assert ext is not None, label
    assert "torch-fidelity" in label and str(random_weights) in label
    images = np.random.default_rng(0).integers(0, 256, (3, 128, 64, 3), dtype=np.uint8)
    feats, logits = inception_outputs(images, ext, batch_size=2)
    assert feats.shape == (3, 2048) and logits.shape == (3, NUM_CLASSES)
    assert np.isfinite(feats).all() and feats.std() > 1e-3 and logits.std() > 0.5  # weights alive
    state = torch.load(random_weights, weights_only=True)
    fc = state["fc.weight"].double().numpy()
    np.testing.assert_allclose(logits, feats.astype(np.float64) @ fc.T, rtol=1e-4, atol=1e-4)  # no bias


def test_null_path_without_weights(tmp_path):
    net, reason = load_inception(None)
    assert net is None and "evaluate.inception_weights is null" in reason
    net, reason = load_inception(str(tmp_path / "missing.pth"), allow_download=False)
    assert net is None and "missing.pth" in reason and "\n" not in reason
    bad = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(1)}, bad)
    net, reason = load_inception(str(bad))
    assert net is None and "fc.weight" in reason
    imagenet = tmp_path / "torchvision_inception.pth"  # a 1000-class classifier: another network
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, imagenet)
    net, reason = load_inception(str(imagenet))
    assert net is None and "(1000, 2048)" in reason
