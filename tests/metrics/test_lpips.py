"""LPIPS through the lpips package: equal to the package's reference call with the same
weights, its properties, and the null path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.models import alexnet

from pipeline.metrics.lpips import load_lpips, lpips_distance


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """(packaged v0.1 linear layers, a seeded random torchvision AlexNet state dict file)."""
    import lpips

    lin = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    torch.manual_seed(0)
    alex = tmp_path_factory.mktemp("lpips") / "alexnet_random.pth"
    torch.save(alexnet(weights=None).state_dict(), alex)
    return lin, alex


def images(seed: int, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 128, 64, 3), dtype=np.uint8)


def test_equals_the_package_reference_call(weight_files, monkeypatch):
    import lpips
    import lpips.pretrained_networks as pn

    lin, alex = weight_files
    model, label = load_lpips(str(lin), str(alex))
    assert model is not None, label
    assert "LPIPS v0.1 AlexNet" in label
    real, gen = images(0), images(1)
    ours = lpips_distance(real, gen, model, batch_size=2)

    # The reference: the package builds its own trunk from "pretrained" torchvision AlexNet
    # (here: the same state dict) and reads the linear layers itself from model_path.
    trunk = alexnet(weights=None)
    trunk.load_state_dict(torch.load(alex, weights_only=True))
    monkeypatch.setattr(pn.tv, "alexnet", lambda *a, **k: trunk)
    ref = lpips.LPIPS(net="alex", version="0.1", model_path=str(lin), verbose=False)
    to_unit = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        expected = ref(to_unit(real), to_unit(gen)).reshape(-1).double().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    assert ours.shape == (3,) and (ours > 0).all()


def test_distance_properties(weight_files):
    model, _ = load_lpips(*map(str, weight_files))
    a, b = images(2), images(3)
    d_ab = lpips_distance(a, b, model)
    assert np.allclose(lpips_distance(a, a, model), 0.0, atol=1e-6)
    np.testing.assert_allclose(lpips_distance(b, a, model), d_ab, rtol=1e-5)  # symmetric
    near = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)
    assert (lpips_distance(a, near, model) < d_ab).all()
    with pytest.raises(ValueError, match="shape mismatch"):
        lpips_distance(a, b[:2], model)


def test_null_path(weight_files, tmp_path):
    lin, alex = map(str, weight_files)
    for args, param in (((None, alex), "evaluate.lpips_weights"), ((lin, None), "evaluate.alexnet_weights")):
        model, reason = load_lpips(*args)
        assert model is None and reason == f"{param} is null: LPIPS not computed"
    model, reason = load_lpips(str(tmp_path / "nope.pth"), alex, allow_download=False)
    assert model is None and "nope.pth" in reason and "\n" not in reason
    bad = tmp_path / "bad.pth"
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, bad)
    model, reason = load_lpips(str(bad), alex)
    assert model is None and "lin1.model.1.weight" in reason
    model, reason = load_lpips(lin, str(bad))  # not an AlexNet state dict
    assert model is None and "features.0.weight" in reason
    wrong = tmp_path / "wrong.pth"  # right keys, wrong sizes
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, 7, 1, 1) for i in range(5)}, wrong)
    model, reason = load_lpips(str(wrong), alex)
    assert model is None and "size mismatch" in reason
