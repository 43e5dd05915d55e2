"""One GAN iteration: generator, discriminator, their Adam optimisers, the losses and AMP.

GanTrainer.step(batch) runs one discriminator step then one generator step (the paper's
schedule) and returns the detached loss terms. With batches_per_step 3 (the original's
iteration, method.md "Training iteration") the batch holds 3 * B pairs split in three
chunks: D is updated on chunk 1 as real and on G(chunk 2) as fake (G frozen: no_grad, in
train mode so dropout is on, as Keras ran it), then G on chunk 3 with D frozen. With 1, one
batch of B pairs serves all three terms and G runs once. G and D may be
DistributedDataParallel wrappers; build_trainer() makes them from the params.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterable, Iterator, Mapping

import torch
from torch import Tensor, nn

from pipeline.model.checkpoint import unwrap
from pipeline.core.config import Params
from pipeline.core.device import DeviceSetup, DistInfo, adam_implementation
from pipeline.model.build import run_generator

BATCH_KEYS = ("xa", "xb", "ha", "hb", "kpa", "kpb")
ADAM_IMPLS = ("auto", "fused", "foreach", "loop")


def make_adam(params: Iterable[Tensor], lr: float, betas: tuple[float, float],
              device: torch.device, impl: str = "auto") -> torch.optim.Adam:
    """Adam with the given implementation: "auto" = fused where the device has the kernel,
    else foreach; "loop" = the per-parameter for-loop (torch's CPU default; the bench's
    baseline). All give the same update up to float rounding."""
    if impl not in ADAM_IMPLS:
        raise ValueError(f"unknown Adam implementation {impl!r}; use one of {ADAM_IMPLS}")
    if impl == "auto":
        impl = adam_implementation(device)
    kind = {"fused": dict(fused=True), "foreach": dict(foreach=True),
            "loop": dict(foreach=False, fused=False)}[impl]
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), **kind)


def split_batch(batch: Mapping[str, Tensor], parts: int) -> list[dict[str, Tensor]]:
    """[parts * B, ...] tensors -> `parts` dicts of [B, ...] views (in batch order)."""
    n = next(iter(batch.values())).shape[0]
    if n % parts:
        raise ValueError(f"a batch of {n} pairs does not split into {parts} equal chunks "
                         f"(train.batches_per_step {parts}: the loader's batch must be {parts} * batch_size)")
    return [{k: v[i * (n // parts):(i + 1) * (n // parts)] for k, v in batch.items()} for i in range(parts)]


class GanTrainer:
    """Generator, discriminator, their optimisers, the loss and the AMP scaler.

    step(batch) runs one D step and one G step and returns the detached loss terms
    (g_* from LossComputer.generator plus g_total, d_* from .discriminator).
    batch: BATCH_KEYS tensors of batches_per_step * B pairs (xa/xb [N, 3, H, W],
    ha/hb [N, 18, H, W], kpa/kpb [N, 18, 2]); other keys are ignored.
    G and D may be DistributedDataParallel wrappers.
    """

    def __init__(self, G: nn.Module, D: nn.Module, losses: nn.Module, setup: DeviceSetup,
                 lr: float, betas: tuple[float, float], batches_per_step: int = 1,
                 adam: str = "auto"):
        if batches_per_step not in (1, 3):
            raise ValueError(f"train.batches_per_step must be 1 or 3, got {batches_per_step!r}")
        self.G, self.D, self.losses, self.setup = G, D, losses, setup
        self.batches_per_step = batches_per_step
        self.opt_g = make_adam(G.parameters(), lr, betas, setup.device, adam)
        self.opt_d = make_adam(D.parameters(), lr, betas, setup.device, adam)
        self.scaler = setup.grad_scaler()

    def to_device(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        dev, cl = self.setup.device, self.setup.channels_last
        out = {}
        for key in BATCH_KEYS:
            t = batch[key].to(dev, non_blocking=True)
            if cl and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            out[key] = t
        return out

    @contextlib.contextmanager
    def _d_frozen(self) -> Iterator[None]:
        """D as a fixed function during the G step: no weight grads, no DDP grad sync."""
        params = list(self.D.parameters())
        for p in params:
            p.requires_grad_(False)
        sync = self.D.no_sync() if hasattr(self.D, "no_sync") else contextlib.nullcontext()
        try:
            with sync:
                yield
        finally:
            for p in params:
                p.requires_grad_(True)

    def frozen_fake(self, src: Mapping[str, Tensor]) -> Tensor:
        """G(src) as a constant for the D step: no graph, G left in its (train) mode."""
        with torch.no_grad(), self.setup.autocast():
            return run_generator(unwrap(self.G), src).image

    def discriminator_step(self, real: Mapping[str, Tensor], fake_src: Mapping[str, Tensor],
                           fake_image: Tensor) -> dict[str, Tensor]:
        """Update D on `real`'s pairs as real and on (fake_src's pose pair, fake_image) as
        fake. fake_image must carry no graph into G (detached or from frozen_fake)."""
        # Real and fake in one batch (the norms are per sample, so this equals two passes):
        # a single DDP forward per backward.
        with self.setup.autocast():
            out = self.D(torch.cat([real["xa"], fake_src["xa"]]), torch.cat([real["ha"], fake_src["ha"]]),
                         torch.cat([real["xb"], fake_image]), torch.cat([real["hb"], fake_src["hb"]]))
            real_out, fake_out = out.split([real["xa"].shape[0], fake_image.shape[0]])
            d_total, d_terms = self.losses.discriminator(real_out, fake_out)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(d_total).backward()
        self.scaler.step(self.opt_d)
        return d_terms

    def generator_step(self, src: Mapping[str, Tensor], fake: Any) -> tuple[Tensor, dict[str, Tensor]]:
        """Update G on its output `fake` (GeneratorOutput of G(src), with graph), D frozen."""
        with self._d_frozen(), self.setup.autocast():
            g_out = self.D(src["xa"], src["ha"], fake.image, src["hb"])
            g_total, g_terms = self.losses.generator(fake.image, src["xb"], g_out, fake.offsets)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g_total).backward()
        self.scaler.step(self.opt_g)
        return g_total, g_terms

    def _generate(self, src: Mapping[str, Tensor]) -> Any:
        with self.setup.autocast():
            return run_generator(self.G, src)

    def step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        b = self.to_device(batch)
        if self.batches_per_step == 1:
            fake = self._generate(b)
            d_terms = self.discriminator_step(b, b, fake.image.detach())
            g_total, g_terms = self.generator_step(b, fake)
        else:
            real, d_src, g_src = split_batch(b, 3)
            d_terms = self.discriminator_step(real, d_src, self.frozen_fake(d_src))
            g_total, g_terms = self.generator_step(g_src, self._generate(g_src))
        self.scaler.update()

        terms = {f"g_{k}" if not k.startswith("g_") else k: v for k, v in g_terms.items()}
        terms["g_total"] = g_total.detach()
        terms.update({k if k.startswith("d") else f"d_{k}": v for k, v in d_terms.items()})
        return terms

    def state_dict(self) -> dict[str, Any]:
        return {
            "G": unwrap(self.G).state_dict(),
            "D": unwrap(self.D).state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], lr: float, betas: tuple[float, float]) -> None:
        """Restore weights and optimiser states; lr/betas come from the current params."""
        unwrap(self.G).load_state_dict(state["G"])
        unwrap(self.D).load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr, tuple(betas)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def all_finite(self) -> bool:
        """True when every weight of G and D is finite (checked before each checkpoint)."""
        return all(bool(torch.isfinite(p).all()) for m in (self.G, self.D) for p in m.parameters())


def build_trainer(params: Params, setup: DeviceSetup, info: DistInfo = DistInfo(),
                  adam: str = "auto") -> GanTrainer:
    """Generator, discriminator (DDP-wrapped when distributed), losses and optimisers.
    The loss reads D's output as sigmoid probabilities for model.disc_head original, else
    as logits."""
    from pipeline.model.build import build_discriminator, build_generator
    from pipeline.model.discriminator import DISC_OUTPUT
    from pipeline.model.losses import LossComputer

    G = setup.prepare(build_generator(params.model, params.image.height, params.image.width))
    D = setup.prepare(build_discriminator(params.model))
    # The VGG gets the networks' memory format too: its input (generated and real images)
    # is channels_last on CUDA, and a contiguous weight would be re-laid out at every conv.
    losses = setup.prepare(LossComputer(params.loss, disc_output=DISC_OUTPUT[params.model.disc_head]))
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [setup.device.index] if setup.is_cuda else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    return GanTrainer(G, D, losses, setup, params.train.lr, params.train.betas,
                      params.train.batches_per_step, adam)
