"""Training losses: adversarial, nearest-neighbour (NN), perceptual, offset smoothness, L1.

See method.md "Losses". Every loss returns a float32 scalar, whatever the input dtype, so
the sums stay stable under mixed precision.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.core.config import LossConfig
from pipeline.model.vgg import VGG19Features

# The NN loss layer. method.md says "conv1_2"; the authors' Keras model took VGG19's
# block1_conv2 output, and Keras convolutions there carry activation="relu", so what they
# compared is the rectified output, i.e. relu1_2 in torchvision terms.
NN_LAYER = "relu1_2"


# --------------------------------------------------------------------------- GAN
#
# The GAN terms follow what the discriminator outputs (Discriminator.output):
#   "prob"  (model.disc_head original): sigmoid probabilities p, the original's losses
#           D: -mean log(p_real + 1e-7) - mean log(1 - p_fake + 1e-7); G: -mean log(p_fake + 1e-7)
#   "logit" (model.disc_head patch): the same non-saturating loss on logits x, written
#           overflow-free with softplus(-x) = -log sigmoid(x).
# Both are computed in float32 whatever the input dtype (no low-precision log).

DISC_OUTPUTS = ("prob", "logit")  # per model.disc_head: discriminator.DISC_OUTPUT
PROB_EPS = 1e-7  # the original's epsilon inside the logs


def _check_output(output: str) -> str:
    if output not in DISC_OUTPUTS:
        raise ValueError(f"GAN loss: disc_output must be one of {DISC_OUTPUTS}, got {output!r}")
    return output


def _d_terms(real_out: Tensor, fake_out: Tensor, output: str) -> tuple[Tensor, Tensor]:
    real, fake = real_out.float(), fake_out.float()
    if output == "prob":
        return -torch.log(real + PROB_EPS).mean(), -torch.log(1 - fake + PROB_EPS).mean()
    return F.softplus(-real).mean(), F.softplus(fake).mean()


def d_loss(real_out: Tensor, fake_out: Tensor, output: str = "logit") -> Tensor:
    """Discriminator loss d_real + d_fake on D's outputs (probabilities or logits, see
    above), a float32 scalar."""
    d_real, d_fake = _d_terms(real_out, fake_out, _check_output(output))
    return d_real + d_fake


def g_adv_loss(fake_out: Tensor, output: str = "logit") -> Tensor:
    """Non-saturating generator loss -log D(G(z)) on D's outputs, a float32 scalar:
    -mean log(p + 1e-7) for probabilities, softplus(-x).mean() for logits."""
    fake = fake_out.float()
    if _check_output(output) == "prob":
        return -torch.log(fake + PROB_EPS).mean()
    return F.softplus(-fake).mean()


# --------------------------------------------------------------------------- NN loss


def nn_loss(gen_feat: Tensor, real_feat: Tensor, window: int) -> Tensor:
    """Nearest-neighbour loss between feature maps [B, C, H, W] (method.md).

    For each pixel p of gen_feat: min over offsets d in the window x window neighbourhood
    of sum_c |real(p + d) - gen(p)|; offsets landing outside the image are skipped (not
    matched against padding). Averaged over pixels and batch.

    How: the minimum is found without autograd, keeping a running [B, H, W] minimum and
    argmin over the offsets (one [B, C, h, w] temporary at a time), then the chosen
    neighbours are gathered and the distance recomputed once with autograd. The gradient
    of a min is the gradient of its argmin, so value and gradient are those of the direct
    formula, yet autograd stores a single [B, C, H, W] difference instead of window^2
    (an unfold/shifted-copies version holds window^2 copies in forward and backward).
    """
    if gen_feat.shape != real_feat.shape or gen_feat.dim() != 4:
        raise ValueError(
            f"nn_loss: expected two [B, C, H, W] maps of the same shape, got "
            f"{tuple(gen_feat.shape)} and {tuple(real_feat.shape)}"
        )
    if window < 1 or window % 2 == 0:
        raise ValueError(f"nn_loss: window must be a positive odd integer, got {window}")
    gen, real = gen_feat.float(), real_feat.float()
    b, c, h, w = gen.shape
    r = window // 2
    with torch.no_grad():
        best = torch.full((b, h, w), float("inf"), device=gen.device)
        best_shift = torch.zeros((b, h, w), dtype=torch.long, device=gen.device)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                # Pixels p whose neighbour p + (dy, dx) is inside the image.
                y0, y1 = max(0, -dy), min(h, h - dy)
                x0, x1 = max(0, -dx), min(w, w - dx)
                if y0 >= y1 or x0 >= x1:
                    continue
                neighbour = real[:, :, y0 + dy:y1 + dy, x0 + dx:x1 + dx]
                dist = (neighbour - gen[:, :, y0:y1, x0:x1]).abs_().sum(1)
                region, shifts = best[:, y0:y1, x0:x1], best_shift[:, y0:y1, x0:x1]
                better = dist < region  # strict: ties keep the earlier offset
                region.copy_(torch.where(better, dist, region))
                shifts.masked_fill_(better, dy * w + dx)
        # Flat index of each pixel's chosen neighbour.
        index = torch.arange(h * w, device=gen.device).view(1, h * w) + best_shift.view(b, h * w)
    matched = real.flatten(2).gather(2, index.unsqueeze(1).expand(b, c, h * w))
    return (matched - gen.flatten(2)).abs().sum(1).mean()


# --------------------------------------------------------------------------- others


def perceptual_loss(
    gen_feats: Mapping[str, Tensor], real_feats: Mapping[str, Tensor], layers: Sequence[str]
) -> Tensor:
    """Sum over layers of the mean L1 between feature maps, in float32."""
    if not layers:
        raise ValueError("perceptual_loss: no layers given")
    missing = [name for name in layers if name not in gen_feats or name not in real_feats]
    if missing:
        raise KeyError(f"perceptual_loss: features missing for layer(s) {missing}")
    return sum(F.l1_loss(gen_feats[n].float(), real_feats[n].float()) for n in layers)


def offset_smoothness(offsets: Sequence[Tensor]) -> Tensor:
    """Total variation of offset fields [B, 2, h, w]: mean |d/dy| + mean |d/dx| per level,
    averaged over levels.

    0 for an empty list. A field of width or height 1 contributes only its other direction.
    """
    if len(offsets) == 0:
        return torch.zeros(())
    terms = []
    for field in offsets:
        if field.dim() != 4:
            raise ValueError(
                f"offset_smoothness: expected [B, 2, h, w] fields, got {tuple(field.shape)}"
            )
        f = field.float()
        tv = f.new_zeros(())
        if f.shape[2] > 1:
            tv = tv + (f[:, :, 1:] - f[:, :, :-1]).abs().mean()
        if f.shape[3] > 1:
            tv = tv + (f[:, :, :, 1:] - f[:, :, :, :-1]).abs().mean()
        terms.append(tv)
    return torch.stack(terms).mean()


# --------------------------------------------------------------------------- combined


class LossComputer(nn.Module):
    """All training losses from a LossConfig, holding the (single) frozen VGG19.

    The VGG is built only if nn_weight > 0 or perceptual_weight > 0, with just the layers
    those losses read (NN_LAYER and loss.perceptual_layers). Move it with .to(device).

    A component is active when its weight is > 0. The returned dicts hold the unweighted,
    detached components (for logging); the total is sum(weight * component).

    disc_output: what the discriminator returns, "prob" (model.disc_head original) or
    "logit" (patch), i.e. Discriminator.output; the GAN terms follow it.
    """

    def __init__(self, cfg: LossConfig, disc_output: str = "logit") -> None:
        super().__init__()
        self.cfg = cfg
        self.disc_output = _check_output(disc_output)
        config_weights = {
            "g_adv": ("gan_weight", cfg.gan_weight),
            "nn": ("nn_weight", cfg.nn_weight),
            "perceptual": ("perceptual_weight", cfg.perceptual_weight),
            "offset_smooth": ("offset_smooth_weight", cfg.offset_smooth_weight),
            "l1": ("l1_weight", cfg.l1_weight),
        }
        for field_name, weight in config_weights.values():
            if weight < 0:
                raise ValueError(f"loss.{field_name} must be >= 0, got {weight}")
        # Active components and their weights, in a fixed order.
        self.weights: dict[str, float] = {
            key: weight for key, (_, weight) in config_weights.items() if weight > 0
        }
        layers: list[str] = []
        if "nn" in self.weights:
            layers.append(NN_LAYER)
        if "perceptual" in self.weights:
            if not cfg.perceptual_layers:
                raise ValueError("loss.perceptual_weight > 0 but loss.perceptual_layers is empty")
            layers += list(cfg.perceptual_layers)
        self.vgg: VGG19Features | None = None
        if layers:
            self.vgg = VGG19Features(cfg.vgg_weights, layers, convention=cfg.vgg_convention)

    def generator(
        self, fake: Tensor, real: Tensor, fake_logits: Tensor, offsets: Sequence[Tensor] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Generator loss. fake, real: [B, 3, H, W] in [-1, 1]; fake_logits: D(fake), any
        shape (probabilities or logits, as disc_output says); offsets: learned offset
        fields [B, 2, h, w] per level (may be empty).

        Returns (total float32 scalar, {name: detached component}).
        """
        parts: dict[str, Tensor] = {}
        if "g_adv" in self.weights:
            parts["g_adv"] = g_adv_loss(fake_logits, self.disc_output)
        if self.vgg is not None:
            # One VGG pass over fake and real together; real features carry no gradient.
            feats = self.vgg(torch.cat([fake, real.detach()], 0))
            n = fake.shape[0]
            fake_f = {k: v[:n] for k, v in feats.items()}
            real_f = {k: v[n:].detach() for k, v in feats.items()}
            if "nn" in self.weights:
                parts["nn"] = nn_loss(fake_f[NN_LAYER], real_f[NN_LAYER], self.cfg.nn_window)
            if "perceptual" in self.weights:
                parts["perceptual"] = perceptual_loss(fake_f, real_f, self.cfg.perceptual_layers)
        if "offset_smooth" in self.weights:
            parts["offset_smooth"] = offset_smoothness(offsets).to(fake.device)
        if "l1" in self.weights:
            parts["l1"] = F.l1_loss(fake.float(), real.float())
        total = fake.new_zeros((), dtype=torch.float32)
        for key, value in parts.items():
            total = total + self.weights[key] * value
        return total, {k: v.detach() for k, v in parts.items()}

    def discriminator(
        self, real_logits: Tensor, fake_logits: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Discriminator loss d_real + d_fake (unweighted; pass fake_logits of a detached fake).
        Inputs are D's outputs, probabilities or logits as disc_output says.

        Returns (total float32 scalar, {"d_real", "d_fake", "d"} detached).
        """
        d_real, d_fake = _d_terms(real_logits, fake_logits, self.disc_output)
        total = d_real + d_fake
        return total, {"d_real": d_real.detach(), "d_fake": d_fake.detach(), "d": total.detach()}
