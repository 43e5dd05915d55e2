"""The GAN training loop: seeded, resumable, optionally distributed (DDP), tracked in MLflow.

One iteration = one discriminator step then one generator step (non-saturating GAN loss
plus the configured reconstruction terms, via LossComputer), Adam for both.

Reproducibility: the run is seeded from params.seed, the data order is a pure function of
(seed, step) (pipeline.data.InfiniteSampler), and checkpoints store every RNG state, so on
CPU a run resumed from a checkpoint produces exactly the losses of an uninterrupted run.

Outputs (rank 0): <models>/checkpoints/{last,prev}.pt, <models>/generator.pt, the metrics
JSON (paths.train_metrics) and the loss CSV (paths.train_plots); MLflow gets params,
losses, images/s and sample grids.
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from pipeline.checkpoint import (
    check_model_meta,
    latest_checkpoint,
    model_meta,
    restore_rng,
    capture_rng,
    save_checkpoint,
    save_generator,
    unwrap,
)
from pipeline.config import Params, PathsConfig
from pipeline.device import DeviceSetup, DistInfo, dist_from_env, distributed, setup_device

CHECKPOINT_DIR = "checkpoints"
GENERATOR_FILE = "generator.pt"
SMOOTH_STEPS = 100  # "smoothed" losses in the metrics JSON: mean over the last 100 steps
GRID_SAMPLES = 8
BATCH_KEYS = ("xa", "xb", "ha", "hb", "kpa", "kpb")


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN/inf; the message names the step and the offending terms."""


@dataclass
class TrainResult:
    steps: int                      # last completed step
    completed: bool                 # reached train.steps (False when stopped early)
    final_losses: dict[str, float]  # the last step's losses
    smoothed_losses: dict[str, float]
    images_per_sec: float
    run_id: str | None = None
    generator_path: Path | None = None
    checkpoint_path: Path | None = None
    history: dict[str, list[float]] = field(default_factory=dict)  # per-step losses


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- one GAN step


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


# --------------------------------------------------------------------------- loss history


class LossHistory:
    """Per-step loss values, one row per step, columns fixed at the first step."""

    def __init__(self, names: list[str] | None = None, values: Tensor | None = None):
        self.names: list[str] = list(names or [])
        self.rows: list[list[float]] = values.tolist() if values is not None else []

    def append(self, terms: Mapping[str, float]) -> None:
        if not self.names:
            self.names = list(terms)
        self.rows.append([float(terms.get(n, math.nan)) for n in self.names])

    def __len__(self) -> int:
        return len(self.rows)

    def mean_last(self, n: int) -> dict[str, float]:
        if not self.rows:
            return {}
        tail = np.asarray(self.rows[-n:], dtype=np.float64)
        return dict(zip(self.names, tail.mean(axis=0).tolist()))

    def last(self) -> dict[str, float]:
        return dict(zip(self.names, self.rows[-1])) if self.rows else {}

    def as_dict(self) -> dict[str, list[float]]:
        cols = np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.names))
        return {n: cols[:, i].tolist() for i, n in enumerate(self.names)}

    def state(self) -> dict[str, Any]:
        values = torch.tensor(self.rows, dtype=torch.float64).reshape(len(self.rows), len(self.names))
        return {"names": list(self.names), "values": values}

    def window_means(self, every: int) -> tuple[list[int], np.ndarray]:
        """(window end steps, [n_windows, n_terms] means) over windows of `every` steps."""
        arr = np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.names))
        if len(arr) == 0:
            return [], np.zeros((0, len(self.names)))
        ends = list(range(every, len(arr) + 1, every))
        if not ends or ends[-1] != len(arr):
            ends.append(len(arr))
        starts = [0] + ends[:-1]
        return ends, np.stack([arr[s:e].mean(axis=0) for s, e in zip(starts, ends)])


# --------------------------------------------------------------------------- sample grids


def sample_grid(xa: Tensor, hb: Tensor, fake: Tensor, xb: Tensor) -> np.ndarray:
    """Rows of [source | target pose (max over heatmaps) | generated | real target].

    xa, fake, xb: [N, 3, H, W] in [-1, 1]; hb: [N, 18, H, W] in [0, 1].
    Returns uint8 [N * H, 4 * W, 3] RGB.
    """
    pose = hb.float().amax(dim=1, keepdim=True).clamp(0, 1).mul(2).sub(1).expand(-1, 3, -1, -1)
    panels = torch.stack([xa.float(), pose, fake.float(), xb.float()], dim=1)  # [N, 4, 3, H, W]
    n, k, c, h, w = panels.shape
    img = panels.permute(0, 3, 1, 4, 2).reshape(n * h, k * w, c)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def render_samples(G: nn.Module, batch: Mapping[str, Tensor], setup: DeviceSetup) -> np.ndarray:
    """Generate a fixed batch with G in eval mode (no dropout, no RNG use) -> sample_grid."""
    g = unwrap(G)
    was_training = g.training
    g.eval()
    try:
        b = {k: batch[k].to(setup.device) for k in BATCH_KEYS}
        with setup.autocast():
            fake = g(b["xa"], b["ha"], b["hb"], b["kpa"], b["kpb"]).image
    finally:
        g.train(was_training)
    return sample_grid(b["xa"], b["hb"], fake, b["xb"])


# --------------------------------------------------------------------------- outputs


def write_metrics(path: str | Path, result: TrainResult, batch_size: int, world_size: int) -> None:
    """The DVC metrics JSON."""
    payload = {
        "steps": result.steps,
        "batch_size": batch_size,
        "world_size": world_size,
        "images_per_sec": round(result.images_per_sec, 3),
        "final": result.final_losses,
        "smoothed": result.smoothed_losses,
        "run_id": result.run_id,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=True) + "\n")


def write_plots(path: str | Path, history: LossHistory, every: int) -> None:
    """The DVC plots CSV: step, then one column per loss term (means over `every` steps)."""
    import pandas as pd

    steps, means = history.window_means(max(1, every))
    frame = pd.DataFrame(means, columns=history.names)
    frame.insert(0, "step", steps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, float_format="%.6g")


# --------------------------------------------------------------------------- the loop


# Train settings that may change between a run and its resumption without changing the run.
RESUMABLE_TRAIN_KEYS = ("steps", "checkpoint_every", "log_every", "sample_every", "num_workers", "device")


def run_fingerprint(params: Params, paths: PathsConfig) -> str:
    """Hash of everything that defines a training run: seed, image size, model, loss, the
    train settings (except the resumable ones above), the heatmap sigma and the training
    pairs file. A checkpoint is resumed only under the same fingerprint, so raising
    train.steps continues a run while any other change starts afresh."""
    import hashlib

    from pipeline.config import to_dict

    train = {k: v for k, v in to_dict(params.train).items() if k not in RESUMABLE_TRAIN_KEYS}
    spec = {"seed": params.seed, "image": to_dict(params.image), "model": to_dict(params.model),
            "loss": to_dict(params.loss), "train": train, "sigma": params.heatmaps.sigma}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    pairs = Path(paths.pairs)
    if pairs.is_file():
        digest.update(pairs.read_bytes())
    return digest.hexdigest()


def _reduce_terms(terms: Mapping[str, Tensor], names: list[str], info: DistInfo) -> dict[str, float]:
    """Loss terms -> floats, averaged over ranks (one sync per step). A NaN on any rank
    becomes NaN on all, so every rank stops at the same step."""
    keys = names or list(terms)
    vec = torch.stack([terms[k].detach().float().reshape(()) for k in keys])
    if info.enabled:
        import torch.distributed as dist

        vec = vec.cpu() if dist.get_backend() == "gloo" else vec
        dist.all_reduce(vec)
        vec = vec / info.world_size
    return dict(zip(keys, vec.tolist()))


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def _gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    state = capture_rng()
    if not info.enabled:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


def build_trainer(params: Params, setup: DeviceSetup, info: DistInfo = DistInfo()) -> GanTrainer:
    """Generator, discriminator (DDP-wrapped when distributed), losses and optimisers."""
    from pipeline.model.discriminator import Discriminator
    from pipeline.model.generator import Generator
    from pipeline.model.losses import LossComputer

    G = setup.prepare(Generator(params.model, params.image.height, params.image.width))
    D = setup.prepare(Discriminator(params.model))
    losses = LossComputer(params.loss).to(setup.device)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [setup.device.index] if setup.is_cuda else None
        G, D = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    return GanTrainer(G, D, losses, setup, params.train.lr, params.train.betas)


def train(
    params: Params,
    paths: PathsConfig | None = None,
    *,
    resume: bool = True,
    stop_after: int | None = None,
    dataset: Any | None = None,
    track: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume training) the generator and discriminator.

    paths: where inputs/outputs are (default params.paths; stages override it from argv).
    resume: continue from <models>/checkpoints/last.pt when present (its model config must
        match params.model / params.image, else CheckpointError).
    stop_after: stop after this step without the end-of-training outputs, as an
        interrupted run would (for tests and time-boxed runs).
    dataset: a ready PairDataset (default: opened from the stage outputs in `paths`).
    track: log to MLflow (rank 0 only).
    Runs under torchrun as DistributedDataParallel (batch_size is per process).
    """
    paths = paths or params.paths
    setup = setup_device(params.train.device, params.train.amp)
    with distributed(setup.device, dist_from_env()) as info:
        return _train(params, paths, setup, info, resume, stop_after, dataset, track, progress)


def _train(params: Params, paths: PathsConfig, setup: DeviceSetup, info: DistInfo, resume: bool,
           stop_after: int | None, dataset: Any | None, track: bool, progress: bool) -> TrainResult:
    from pipeline.data import build_loader, collate_pairs, load_pair_dataset
    from pipeline.tracking import start_run

    tc = params.train
    if tc.steps < 1 or tc.batch_size < 1:
        raise ValueError(f"train.steps and train.batch_size must be >= 1 (got {tc.steps}, {tc.batch_size})")
    models_dir = Path(paths.models)
    ckpt_dir = models_dir / CHECKPOINT_DIR
    if dataset is None:
        dataset = load_pair_dataset(paths.pairs, paths.manifest, paths.keypoints, paths.heatmaps,
                                    paths.dataset, params.image.height, params.image.width, "train")

    seed_everything(params.seed)
    trainer = build_trainer(params, setup, info)
    # Per-rank RNG streams (dropout) after the identical initialisation on every rank.
    seed_everything(params.seed + info.rank)

    step, history, run_id, timing = 0, LossHistory(), None, {"seconds": 0.0, "images": 0}
    fingerprint = run_fingerprint(params, paths)
    found = latest_checkpoint(ckpt_dir) if resume else None
    if found is not None and found[1].get("fingerprint") != fingerprint:
        # Checkpoints persist across DVC runs: one written under other params or data (e.g.
        # before `dvc exp run -S loss.nn_weight=...`) must not be continued as if it were ours.
        import warnings

        warnings.warn(f"{found[0]}: written by a run with other params or data; starting afresh "
                      "(it is replaced at the first checkpoint)")
        found, resume = None, False
    ckpt_path: Path | None = None
    if found is not None:
        ckpt_path, state = found
        check_model_meta(state["model_meta"], params.model, params.image, ckpt_path)
        trainer.load_state_dict(state, tc.lr, tc.betas)
        step = int(state["step"])
        history = LossHistory(state["history"]["names"], state["history"]["values"])
        run_id, timing = state.get("run_id"), dict(state.get("timing", timing))
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            restore_rng(rngs[info.rank])
        else:
            import warnings

            warnings.warn(f"{ckpt_path}: saved by {len(rngs)} process(es), resuming with "
                          f"{info.world_size}: data order and RNG streams differ from the original run")
            seed_everything(params.seed + info.rank + step)
        del state
    del found
    stale = not resume  # an old run's checkpoints go at our first save, not before

    fixed = collate_pairs(dataset.__getitems__(list(range(min(GRID_SAMPLES, len(dataset))))))
    loader = build_loader(dataset, tc.batch_size, tc.num_workers, seed=params.seed,
                          start=step * tc.batch_size, rank=info.rank, world_size=info.world_size,
                          pin_memory=setup.is_cuda)
    images_per_step = tc.batch_size * info.world_size

    def checkpoint(at: int) -> Path:
        """Collective: all ranks gather RNG states; rank 0 writes; barrier afterwards."""
        if not trainer.all_finite():
            raise NonFiniteLossError(f"step {at}: non-finite weights; not checkpointing "
                                     f"(last good checkpoint kept in {ckpt_dir})")
        rngs = _gather_rng(info)
        nonlocal stale
        path = ckpt_dir / "last.pt"
        if info.is_main:
            if stale:
                for old in ckpt_dir.glob("*.pt"):
                    old.unlink()
                stale = False
            save_checkpoint(ckpt_dir, {
                **trainer.state_dict(),
                "step": at,
                "model_meta": model_meta(params.model, params.image),
                "rng": rngs,
                "sampler": {"seed": params.seed, "position": at * tc.batch_size,
                            "batch_size": tc.batch_size, "world_size": info.world_size},
                "history": history.state(),
                "run_id": tracker.run_id,
                "timing": dict(timing),
                "fingerprint": fingerprint,
            })
        _barrier(info)
        return path

    with start_run(params.tracking, params, run_id=run_id, enabled=track and info.is_main) as tracker:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, initial=step, disable=not (progress and info.is_main),
                   desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
        t0, start_step = time.perf_counter(), step
        t_win, win_step = t0, step  # progress-bar / MLflow throughput window
        batches = iter(loader)
        last_saved = step if ckpt_path is not None else -1
        try:
            while step < tc.steps and (stop_after is None or step < stop_after):
                batch = next(batches)
                terms = trainer.step(batch)
                values = _reduce_terms(terms, history.names, info)
                step += 1
                bad = {k: v for k, v in values.items() if not math.isfinite(v)}
                if bad:
                    where = f"{ckpt_path} (step {last_saved})" if last_saved >= 0 else "none written yet"
                    raise NonFiniteLossError(
                        f"non-finite loss at step {step}: "
                        + ", ".join(f"{k}={v}" for k, v in values.items())
                        + f"; stopped. Non-finite terms: {sorted(bad)}. Last good checkpoint: {where}"
                    )
                history.append(values)
                bar.update(1)
                if step % tc.log_every == 0 or step == tc.steps:
                    now = time.perf_counter()
                    ips = images_per_step * (step - win_step) / max(now - t_win, 1e-9)
                    t_win, win_step = now, step
                    bar.set_postfix({**{k: f"{v:.3g}" for k, v in history.mean_last(tc.log_every).items()
                                        if k in ("g_total", "d")}, "img/s": f"{ips:.1f}"})
                    tracker.log_metrics({**{f"loss/{k}": v for k, v in history.mean_last(tc.log_every).items()},
                                         "images_per_sec": ips}, step=step)
                if info.is_main and tracker.active and (step % tc.sample_every == 0 or step == tc.steps):
                    tracker.log_image(render_samples(trainer.G, fixed, setup), f"samples/step_{step:07d}.png")
                if step % tc.checkpoint_every == 0 or step == tc.steps:
                    elapsed = time.perf_counter() - t0
                    timing = {"seconds": timing["seconds"] + elapsed,
                              "images": timing["images"] + (step - start_step) * images_per_step}
                    t0, start_step = time.perf_counter(), step
                    ckpt_path, last_saved = checkpoint(step), step
        finally:
            bar.close()
            del batches  # stop loader workers

        elapsed = time.perf_counter() - t0
        seconds = timing["seconds"] + elapsed
        images = timing["images"] + (step - start_step) * images_per_step
        ips = images / seconds if seconds > 0 else 0.0
        completed = step >= tc.steps
        result = TrainResult(
            steps=step, completed=completed, final_losses=history.last(),
            smoothed_losses=history.mean_last(SMOOTH_STEPS), images_per_sec=ips,
            run_id=tracker.run_id, checkpoint_path=ckpt_path, history=history.as_dict(),
        )
        if completed and info.is_main:
            from pipeline.tracking import git_revision

            result.generator_path = save_generator(
                models_dir / GENERATOR_FILE, trainer.G, params.model, params.image,
                {"step": step, "run_id": tracker.run_id, "git_revision": git_revision(),
                 "seed": params.seed, "sigma": params.heatmaps.sigma,
                 "loss": history.mean_last(SMOOTH_STEPS)},
            )
            write_metrics(paths.train_metrics, result, tc.batch_size, info.world_size)
            write_plots(paths.train_plots, history, tc.log_every)
            tracker.log_metrics({**{f"final/{k}": v for k, v in result.smoothed_losses.items()},
                                 "images_per_sec_mean": ips}, step=step)
        _barrier(info)
        return result
