"""One GAN iteration: generator, discriminator, their Adam optimisers, the losses and AMP.

GanTrainer.step(batch) runs one discriminator step then one generator step (the paper's
schedule) and returns the detached loss terms. G and D may be DistributedDataParallel
wrappers; build_trainer() makes them from the params.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, nn

from pipeline.checkpoint import unwrap
from pipeline.config import Params
from pipeline.device import DeviceSetup, DistInfo

BATCH_KEYS = ("xa", "xb", "ha", "hb", "kpa", "kpb")


class GanTrainer:
    """Generator, discriminator, their optimisers, the loss and the AMP scaler.

    step(batch) runs one D step and one G step and returns the detached loss terms
    (g_* from LossComputer.generator plus g_total, d_* from .discriminator).
    G and D may be DistributedDataParallel wrappers.
    """

    def __init__(self, G: nn.Module, D: nn.Module, losses: nn.Module, setup: DeviceSetup,
                 lr: float, betas: tuple[float, float]):
        self.G, self.D, self.losses, self.setup = G, D, losses, setup
        self.opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=tuple(betas))
        self.opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=tuple(betas))
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

    def step(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        b = self.to_device(batch)
        xa, xb, ha, hb = b["xa"], b["xb"], b["ha"], b["hb"]
        with self.setup.autocast():
            fake = self.G(xa, ha, hb, b["kpa"], b["kpb"])
        image, offsets = fake.image, fake.offsets

        # D step: real and fake in one batch (instance norm is per sample, so this equals
        # two passes) -> a single DDP forward per backward.
        with self.setup.autocast():
            logits = self.D(torch.cat([xa, xa]), torch.cat([ha, ha]),
                            torch.cat([xb, image.detach()]), torch.cat([hb, hb]))
            real_logits, fake_logits = logits.chunk(2)
            d_total, d_terms = self.losses.discriminator(real_logits, fake_logits)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(d_total).backward()
        self.scaler.step(self.opt_d)

        # G step.
        with self._d_frozen(), self.setup.autocast():
            g_logits = self.D(xa, ha, image, hb)
            g_total, g_terms = self.losses.generator(image, xb, g_logits, offsets)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g_total).backward()
        self.scaler.step(self.opt_g)
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


def build_trainer(params: Params, setup: DeviceSetup, info: DistInfo = DistInfo()) -> GanTrainer:
    """Generator, discriminator (DDP-wrapped when distributed), losses and optimisers."""
    from pipeline.model.discriminator import Discriminator
    from pipeline.model.generator import Generator
    from pipeline.model.losses import LossComputer

    G = setup.prepare(Generator(params.model, params.image.height, params.image.width))
    D = setup.prepare(Discriminator(params.model))
    # The VGG gets the networks' memory format too: its input (generated and real images)
    # is channels_last on CUDA, and a contiguous weight would be re-laid out at every conv.
    losses = setup.prepare(LossComputer(params.loss))
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [setup.device.index] if setup.is_cuda else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    return GanTrainer(G, D, losses, setup, params.train.lr, params.train.betas)
