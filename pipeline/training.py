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

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

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
from pipeline.gan_trainer import BATCH_KEYS, build_trainer
from pipeline.loss_history import LossHistory, write_plots

CHECKPOINT_DIR = "checkpoints"
GENERATOR_FILE = "generator.pt"
SMOOTH_STEPS = 100  # "smoothed" losses in the metrics JSON: mean over the last 100 steps
GRID_SAMPLES = 8


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


# --------------------------------------------------------------------------- the loop


# Train settings that may change between a run and its resumption without changing the run.
RESUMABLE_TRAIN_KEYS = ("steps", "checkpoint_every", "log_every", "sample_every", "num_workers", "device")


def run_fingerprint(params: Params, paths: PathsConfig) -> str:
    """Hash of everything that defines a training run: seed, image size, model, loss, the
    train settings (except the resumable ones above), the heatmap sigma, and the contents of
    the training pairs file and the keypoint table (the heatmaps and part geometry derive
    from the keypoints; new keypoints need not change the pairs). A checkpoint is resumed
    only under the same fingerprint, so raising train.steps continues a run while any other
    change starts afresh."""
    import hashlib

    from pipeline.config import to_dict

    train = {k: v for k, v in to_dict(params.train).items() if k not in RESUMABLE_TRAIN_KEYS}
    spec = {"seed": params.seed, "image": to_dict(params.image), "model": to_dict(params.model),
            "loss": to_dict(params.loss), "train": train, "sigma": params.heatmaps.sigma}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for data in (Path(paths.pairs), Path(paths.keypoints)):
        if data.is_file():
            digest.update(hashlib.sha256(data.read_bytes()).digest())
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
