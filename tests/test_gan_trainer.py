"""pipeline.gan_trainer: one discriminator + generator step on the real networks (CPU, tiny)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data import collate_pairs, load_pair_dataset
from pipeline.device import DeviceSetup, setup_device
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


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_step_matches_float32(batch, amp_dtype, shared) -> None:
    """The CUDA AMP code path (autocast, GradScaler for float16, channels_last), run with
    CPU autocast: the first step's losses agree with float32, the weights stay float32, the
    scaler state is checkpointed and the VGG takes the networks' memory format."""
    params = tiny_params()
    params = dataclasses.replace(params, loss=dataclasses.replace(
        params.loss, nn_weight=0.01,
        vgg_weights=str(shared("weights/vgg19_features_caffe_rgb_fp16.pt"))))
    cpu = torch.device("cpu")
    amp = DeviceSetup(cpu, amp_dtype=amp_dtype, use_scaler=amp_dtype == torch.float16,
                      channels_last=True)
    torch.manual_seed(0)
    ref = build_trainer(params, DeviceSetup(cpu)).step(batch)
    torch.manual_seed(0)  # same init and dropout masks
    trainer = build_trainer(params, amp)
    conv = trainer.losses.vgg.body[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    terms = trainer.step(batch)
    assert set(terms) == set(ref)
    for key, value in terms.items():
        assert value.dtype == torch.float32 and torch.isfinite(value), key
        assert value.item() == pytest.approx(ref[key].item(), rel=0.05, abs=2e-3), key
    assert all(p.dtype == torch.float32 for p in trainer.G.parameters())
    state = trainer.state_dict()
    if amp.use_scaler:
        assert state["scaler"]["scale"] == trainer.scaler.get_scale() > 1
        other = build_trainer(params, amp)
        other.load_state_dict(state, params.train.lr, params.train.betas)
        assert other.scaler.get_scale() == trainer.scaler.get_scale()
    else:
        assert state["scaler"] == {}
