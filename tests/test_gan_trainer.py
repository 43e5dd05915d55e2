"""pipeline.gan_trainer: one discriminator + generator step on the real networks (CPU, tiny)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data import collate_pairs, load_pair_dataset
from pipeline.device import setup_device
from pipeline.gan_trainer import build_trainer
from test_data import H, W, build_tiny_data, tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def batch(tmp_path: Path):
    paths = build_tiny_data(tmp_path / "data")
    ds = load_pair_dataset(paths.pairs, paths.manifest, paths.keypoints, paths.heatmaps,
                           paths.dataset, H, W)
    return collate_pairs(ds.__getitems__([0, 7]))


def test_generator_learns_a_fixed_batch(batch) -> None:
    params = tiny_params()
    params = dataclasses.replace(params, model=dataclasses.replace(params.model, dropout=0.0),
                                 train=dataclasses.replace(params.train, lr=2e-3))
    torch.manual_seed(0)
    trainer = build_trainer(params, setup_device("cpu"))
    l1 = [trainer.step(batch)["g_l1"].item() for _ in range(30)]
    assert np.mean(l1[-3:]) < 0.6 * np.mean(l1[:3]), l1


def test_step_reports_every_term_and_updates_both_networks(batch) -> None:
    torch.manual_seed(0)
    trainer = build_trainer(tiny_params(), setup_device("cpu"))
    g0 = [p.detach().clone() for p in trainer.G.parameters()]
    d0 = [p.detach().clone() for p in trainer.D.parameters()]
    terms = trainer.step(batch)
    assert {"g_adv", "g_total", "d", "d_real", "d_fake"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, trainer.D.parameters()))
    # D is a fixed function during the G step: its weights train again afterwards.
    assert all(p.requires_grad for p in trainer.D.parameters())
    assert trainer.all_finite()
