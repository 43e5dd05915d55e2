"""pipeline.train.gan_trainer: one discriminator + generator step on the real networks (CPU, tiny)."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.data.pair_dataset import collate_pairs, load_pair_dataset
from pipeline.core.device import DeviceSetup, setup_device
from pipeline.train.gan_trainer import build_trainer, make_adam, split_batch
from support.tiny_data import H, W, build_tiny_data, tiny_params

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture
def dataset(tmp_path: Path):
    paths = build_tiny_data(tmp_path / "data")
    return load_pair_dataset(paths, H, W)


@pytest.fixture
def batch(dataset):
    return collate_pairs(dataset.__getitems__([0, 7]))


def _params(batches_per_step: int = 1, **model):
    params = tiny_params(batches_per_step=batches_per_step)
    return dataclasses.replace(params, model=dataclasses.replace(params.model, **model))


def test_generator_learns_a_fixed_batch(batch) -> None:
    params = _params(dropout=0.0)
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, lr=2e-3))
    torch.manual_seed(0)
    trainer = build_trainer(params, setup_device("cpu"))
    l1 = [trainer.step(batch)["g_l1"].item() for _ in range(30)]
    assert np.mean(l1[-3:]) < 0.6 * np.mean(l1[:3]), l1


@pytest.mark.parametrize("batches_per_step", [1, 3])
def test_step_reports_every_term_and_updates_both_networks(dataset, batches_per_step) -> None:
    torch.manual_seed(0)
    trainer = build_trainer(_params(batches_per_step), setup_device("cpu"))
    assert trainer.batches_per_step == batches_per_step
    g0 = [p.detach().clone() for p in trainer.G.parameters()]
    d0 = [p.detach().clone() for p in trainer.D.parameters()]
    terms = trainer.step(collate_pairs(dataset.__getitems__(list(range(2 * batches_per_step)))))
    assert {"g_adv", "g_total", "d", "d_real", "d_fake"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, trainer.D.parameters()))
    # D is a fixed function during the G step: its weights train again afterwards.
    assert all(p.requires_grad for p in trainer.D.parameters())
    assert trainer.all_finite()
    if batches_per_step == 3:
        with pytest.raises(ValueError, match="does not split into 3"):
            trainer.step(collate_pairs(dataset.__getitems__([0, 1])))


def _rows(seen: torch.Tensor, batch: dict) -> list[int]:
    """Pair indices (batch order) of the batch rows whose source image is among `seen`
    ([n, 3, H, W]); the test's pairs have distinct sources."""
    return [int(batch["index"][k]) for k in range(len(batch["index"]))
            if any(torch.equal(batch["xa"][k], s) for s in seen)]


def test_three_batches_per_step_use_three_distinct_chunks(dataset) -> None:
    """The original iteration: D real on pairs 0..B, D fake on G(pairs B..2B), G on 2B..3B."""
    b = 2
    order = [4, 0, 9, 2, 11, 6]  # six distinct pairs of six distinct source images
    batch = collate_pairs(dataset.__getitems__(order))
    assert len({dataset.pair_a[i] for i in order}) == 6
    torch.manual_seed(0)
    trainer = build_trainer(_params(3), setup_device("cpu"))
    calls: list[tuple[str, dict]] = []

    def record(name):
        def hook(module, args):
            calls.append((name, {"xa": args[0].detach().clone(), "hb": args[2 if name == "G" else 3].detach().clone(),
                                 "grad": torch.is_grad_enabled()}))
        return hook

    trainer.G.register_forward_pre_hook(record("G"))
    trainer.D.register_forward_pre_hook(record("D"))
    trainer.step(batch)
    names = [n for n, _ in calls]
    assert names == ["G", "D", "G", "D"], names  # frozen G, D step, G, D in the G step
    g_fake, d_step, g_train, d_frozen = (c for _, c in calls)
    assert not g_fake["grad"] and g_train["grad"]  # the D-fake chunk goes through G without grad
    assert d_step["xa"].shape[0] == 2 * b  # real and fake concatenated
    real = _rows(d_step["xa"][:b], batch)
    fake = _rows(g_fake["xa"], batch)
    assert torch.equal(d_step["xa"][b:], g_fake["xa"]) and torch.equal(d_step["hb"][b:], g_fake["hb"])
    gen = _rows(g_train["xa"], batch)
    assert torch.equal(d_frozen["xa"], g_train["xa"])
    assert real == order[:b] and fake == order[b:2 * b] and gen == order[2 * b:]
    assert len(set(real + fake + gen)) == 3 * b


@pytest.mark.parametrize("batches_per_step", [1, 3])
def test_no_gradient_from_the_d_step_reaches_g(dataset, batches_per_step) -> None:
    torch.manual_seed(0)
    trainer = build_trainer(_params(batches_per_step, dropout=0.5), setup_device("cpu"))
    b = trainer.to_device(collate_pairs(dataset.__getitems__(list(range(2 * batches_per_step)))))
    if batches_per_step == 3:
        real, d_src, _ = split_batch(b, 3)
        fake = trainer.frozen_fake(d_src)
        assert not fake.requires_grad
        # G stays in train mode: dropout draws new masks, as Keras ran the frozen G.
        assert trainer.G.training and not torch.equal(fake, trainer.frozen_fake(d_src))
    else:
        real = d_src = b
        fake = trainer._generate(b).image.detach()
    trainer.discriminator_step(real, d_src, fake)
    assert all(p.grad is None for p in trainer.G.parameters())
    assert all(p.requires_grad for p in trainer.G.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.D.parameters())


def test_loss_reads_probabilities_for_the_original_head_and_logits_for_patch() -> None:
    assert build_trainer(_params(disc_head="original"), setup_device("cpu")).losses.disc_output == "prob"
    assert build_trainer(_params(disc_head="patch"), setup_device("cpu")).losses.disc_output == "logit"


def _adam_reference(w, grads, lr, betas, eps=1e-8):
    """Adam (Kingma & Ba, torch's bias-corrected form) in float64 NumPy."""
    w, m, v = w.astype(np.float64), np.zeros_like(w, np.float64), np.zeros_like(w, np.float64)
    for t, g in enumerate(grads, 1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        mhat, vhat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
        w = w - lr * mhat / (np.sqrt(vhat) + eps)
    return w


def test_fused_and_foreach_adam_match_the_loop_and_a_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 32, 4, 4), (64,), (1, 7)]
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) * 10 ** -k for s in shapes] for k in range(4)]
    lr, betas = 2e-4, (0.5, 0.999)
    out = {}
    for impl in ("loop", "foreach", "fused", "auto"):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = make_adam(params, lr, betas, CPU, impl)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        out[impl] = [p.detach() for p in params]
    assert make_adam([torch.nn.Parameter(torch.zeros(1))], lr, betas, CPU).defaults["fused"]
    for impl in ("foreach", "fused", "auto"):
        for a, b in zip(out[impl], out["loop"]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
    for k, t in enumerate(init):
        ref = _adam_reference(t.numpy(), [g[k].numpy() for g in grads], lr, betas)
        np.testing.assert_allclose(out["fused"][k].numpy(), ref, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="unknown Adam"):
        make_adam(init, lr, betas, CPU, "sgd")


def _snapshot(trainer) -> tuple[dict, torch.Tensor]:
    """The checkpoint round trip: serialised and read back with weights_only=True."""
    buf = io.BytesIO()
    torch.save(trainer.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True), torch.get_rng_state()


def test_resume_with_bf16_autocast_on_cpu_is_exact(dataset) -> None:
    """bf16 autocast + fused Adam on CPU, the original iteration: a trainer restored from a
    state dict (and the RNG state) takes exactly the steps the original takes next."""
    params = _params(3)
    amp = DeviceSetup(CPU, amp_dtype=torch.bfloat16)
    batches = [collate_pairs(dataset.__getitems__([(6 * s + k) % len(dataset) for k in range(6)]))
               for s in range(4)]
    torch.manual_seed(0)
    first = build_trainer(params, amp)
    assert first.opt_g.defaults["fused"]
    for b in batches[:2]:
        first.step(b)
    state, rng = _snapshot(first)
    want = [first.step(b) for b in batches[2:]]

    torch.manual_seed(1)  # another initialisation, replaced by the state dict
    second = build_trainer(params, amp)
    second.load_state_dict(state, params.train.lr, params.train.betas)
    torch.set_rng_state(rng)
    got = [second.step(b) for b in batches[2:]]
    for w, g in zip(want, got):
        assert set(w) == set(g)
        for key in w:
            assert torch.equal(w[key], g[key]), key
    for a, b in zip(first.G.state_dict().values(), second.G.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(first.opt_d.state_dict()["state"].values(), second.opt_d.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_step_matches_float32(batch, amp_dtype, shared) -> None:
    """The CUDA AMP code path (autocast, GradScaler for float16, channels_last), run with
    CPU autocast: the first step's losses agree with float32, the weights stay float32, the
    scaler state is checkpointed and the VGG takes the networks' memory format."""
    params = _params()
    params = dataclasses.replace(params, loss=dataclasses.replace(
        params.loss, nn_weight=0.01,
        vgg_weights=str(shared("weights/vgg19_features_caffe_rgb_fp16.pt"))))
    amp = DeviceSetup(CPU, amp_dtype=amp_dtype, use_scaler=amp_dtype == torch.float16,
                      channels_last=True)
    torch.manual_seed(0)
    ref = build_trainer(params, DeviceSetup(CPU)).step(batch)
    torch.manual_seed(0)  # same init and dropout masks
    trainer = build_trainer(params, amp)
    if amp.use_scaler:
        # The default first scale (2^16) overflows D's float16 gradients here, so the first
        # D step would be skipped (GradScaler's normal start) and G meet another D than
        # the float32 run's. A smaller first scale keeps the two runs comparable.
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
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
