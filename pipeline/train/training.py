"""The GAN training loop: seeded, resumable, optionally distributed (DDP), tracked in MLflow.

One iteration = one discriminator step then one generator step (GanTrainer.step, fed one
loader batch of train.batch_size * trainer.batches_per_step pairs). Around it, in order:
the loss check, the progress / MLflow log, the sample grid, validation (best.pt), the
checkpoint; each is a small piece (pipeline.train.hooks, pipeline.train.run_state).

Reproducibility: the run is seeded from params.seed, the data order is a pure function of
(seed, step) (pipeline.data.pair_dataset.InfiniteSampler), and checkpoints store every RNG state, so on
CPU a run resumed from a checkpoint produces exactly the losses of an uninterrupted run.
Validation and sample grids draw no random numbers, so they do not change the training.

Outputs (rank 0): <models>/checkpoints/{last,prev}.pt, <models>/generator.pt (the last
step), <models>/best.pt (best validation train.select_by, else the last step), the metrics
JSON (paths.train_metrics), the loss CSV (paths.train_plots) and the validation CSV
(paths.train_validation); MLflow gets params, losses, images/s, val/* by step and sample
grids. images/s counts generator-update images: train.batch_size per process per step
(the loader reads batches_per_step times as many).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from torch import Tensor

from pipeline.model.checkpoint import save_generator
from pipeline.core.config import Params, PathsConfig
from pipeline.core.fsutil import folder_lock, write_json
from pipeline.core.device import DeviceSetup, DistInfo, dist_from_env, distributed, setup_device
from pipeline.train.gan_trainer import build_trainer
from pipeline.train.loss_history import write_plots
from pipeline.train.run_state import (  # noqa: F401 - re-exported: the training API
    CHECKPOINT_DIR,
    RESUMABLE_TRAIN_KEYS,
    NonFiniteLossError,
    RunState,
    barrier,
    resume_or_start,
    run_fingerprint,
    seed_everything,
)
from pipeline.train.hooks import (
    BEST_FILE,  # noqa: F401 - re-exported
    ProgressLog,
    SampleLog,
    ValidationHook,
    generator_meta,
    val_summary,
    validation_skip_reason,
)
from pipeline.train.validation import ValidationHistory

GENERATOR_FILE = "generator.pt"
SMOOTH_STEPS = 100  # "smoothed" losses in the metrics JSON: mean over the last 100 steps


@dataclass
class TrainResult:
    steps: int                      # last completed step
    completed: bool                 # reached train.steps (False when stopped early)
    final_losses: dict[str, float]  # the last step's losses
    smoothed_losses: dict[str, float]
    images_per_sec: float           # generator-update images (train.batch_size per process per step)
    run_id: str | None = None
    generator_path: Path | None = None
    best_path: Path | None = None
    checkpoint_path: Path | None = None
    history: dict[str, list[float]] = field(default_factory=dict)  # per-step losses
    validation: list[dict[str, float]] = field(default_factory=list)  # {"step", "ssim", ...}
    best: dict[str, Any] = field(default_factory=dict)  # {"metric", "value", "step"}
    validation_fraction: float = 0.0  # validation wall time / loop wall time


# --------------------------------------------------------------------------- outputs


def write_metrics(path: str | Path, result: TrainResult, params: Params, world_size: int,
                  extra: Mapping[str, Any] | None = None) -> None:
    """The DVC metrics JSON: numbers only, few enough that `dvc metrics show` fits a terminal
    (losses and validation scores are the plots and MLflow metrics; params, run id, world
    size and the validation's share of the time are in MLflow)."""
    payload = {
        "steps": result.steps,
        "images_per_sec": round(result.images_per_sec, 3),  # generator-update images / s
        **{k: v for k, v in dict(extra or {}).items() if k == "best"},  # {step, <select_by>}
    }
    write_json(path, payload, allow_nan=True)


# --------------------------------------------------------------------------- the loop


def _reduce_terms(terms: Mapping[str, Tensor], names: list[str], info: DistInfo) -> dict[str, float]:
    """Loss terms -> floats, averaged over ranks (one sync per step). A NaN on any rank
    becomes NaN on all, so every rank stops at the same step."""
    import torch

    keys = names or list(terms)
    vec = torch.stack([terms[k].detach().float().reshape(()) for k in keys])
    if info.enabled:
        import torch.distributed as dist

        vec = vec.cpu() if dist.get_backend() == "gloo" else vec
        dist.all_reduce(vec)
        vec = vec / info.world_size
    return dict(zip(keys, vec.tolist()))


def _check_finite(values: Mapping[str, float], step: int, last_good: str) -> None:
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: " + ", ".join(f"{k}={v}" for k, v in values.items())
            + f"; stopped. Non-finite terms: {bad}. Last good checkpoint: {last_good}")


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
    dataset: a ready training PairDataset (default: opened from the stage outputs in
        `paths`); validation always reads the test pairs of paths.pairs.
    track: log to MLflow (rank 0 only).
    Runs under torchrun as DistributedDataParallel (batch_size is per process).
    Rank 0 holds <models>/.train.lock throughout: another training on that folder gets
    FolderBusy (one line, exit 2 in the stage).
    """
    paths = paths or params.paths
    setup = setup_device(params.train.device, params.train.amp)
    env = dist_from_env()
    # Rank 0 owns the models folder: a second training on it (outside DVC, whose own lock
    # covers `dvc repro`) stops with one line instead of rotating away this one's checkpoints.
    owner = folder_lock(paths.models, "train") if env.rank == 0 else contextlib.nullcontext()
    with owner, distributed(setup.device, env) as info:
        return _train(params, paths, setup, info, resume, stop_after, dataset, track, progress)


def _train(params: Params, paths: PathsConfig, setup: DeviceSetup, info: DistInfo, resume: bool,
           stop_after: int | None, dataset: Any | None, track: bool, progress: bool) -> TrainResult:
    from pipeline.data.pair_dataset import build_loader, load_pair_dataset
    from pipeline.core.tracking import start_run
    from pipeline.train.validation import open_validation_set

    tc = params.train
    if tc.steps < 1 or tc.batch_size < 1:
        raise ValueError(f"train.steps and train.batch_size must be >= 1 (got {tc.steps}, {tc.batch_size})")
    if dataset is None:
        dataset = load_pair_dataset(paths, params.image.height, params.image.width, "train",
                                    params.image.fit)
    seed_everything(params.seed)
    trainer = build_trainer(params, setup, info)
    seed_everything(params.seed + info.rank)  # per-rank dropout streams after identical init
    # Interface: the trainer splits one loader batch into its batches_per_step chunks.
    loader_batch = tc.batch_size * trainer.batches_per_step
    state, ckpt = resume_or_start(params, paths, trainer, info, resume, loader_batch)
    vset = open_validation_set(params, paths) if info.is_main else None
    loader = build_loader(dataset, loader_batch, tc.num_workers, seed=params.seed,
                          start=state.step * loader_batch, rank=info.rank,
                          world_size=info.world_size, pin_memory=setup.is_cuda)
    images_per_step = tc.batch_size * info.world_size  # generator-update images
    end = tc.steps if stop_after is None else min(tc.steps, stop_after)

    with start_run(params.tracking, params, run_id=state.run_id, enabled=track and info.is_main) as tracker:
        state.run_id = tracker.run_id
        log = ProgressLog(params, tracker, state, show=progress and info.is_main)
        samples = SampleLog(params, tracker, trainer.G, setup, dataset, vset)
        validation = ValidationHook(params, paths, vset, tracker, trainer.G, setup, state,
                                    main=info.is_main, resumed=ckpt.last is not None,
                                    skip_reason=validation_skip_reason(params, paths, vset))
        batches = iter(loader)
        state.timing.start()
        try:
            while state.step < end:
                values = _reduce_terms(trainer.step(next(batches)), state.history.names, info)
                _check_finite(values, state.step + 1, ckpt.where())
                state.step += 1
                state.history.append(values)
                state.timing.images += images_per_step
                log.after_step(state)
                samples.after_step(state)
                validation.after_step(state)
                if ckpt.due(state.step):
                    ckpt.save(trainer, state)
        finally:
            log.close()
            del batches  # stop loader workers
        result = _result(state, tc.steps, ckpt)
        if result.completed and info.is_main:
            _write_outputs(result, params, paths, trainer, state, validation, tracker, info)
        barrier(info)
        return result


def _result(state: RunState, steps: int, ckpt: Any) -> TrainResult:
    return TrainResult(
        steps=state.step, completed=state.step >= steps, final_losses=state.history.last(),
        smoothed_losses=state.history.mean_last(SMOOTH_STEPS),
        images_per_sec=state.timing.images_per_sec(), run_id=state.run_id,
        checkpoint_path=ckpt.last, history=state.history.as_dict(),
        validation=[dict(zip(ValidationHistory.COLUMNS, r)) for r in state.validation.rows],
        best=state.best.state(), validation_fraction=state.timing.validation_fraction(),
    )


def _write_outputs(result: TrainResult, params: Params, paths: PathsConfig, trainer: Any,
                   state: RunState, validation: ValidationHook, tracker: Any, info: DistInfo) -> None:
    """End of a completed run (rank 0): generator.pt, best.pt, metrics JSON, CSVs, MLflow."""
    result.generator_path = save_generator(
        Path(paths.models) / GENERATOR_FILE, trainer.G, params.model, params.image,
        generator_meta(params, state.step, state.run_id, loss=state.history.mean_last(SMOOTH_STEPS)),
    )
    result.best_path = validation.finish(state)
    write_metrics(paths.train_metrics, result, params, info.world_size, val_summary(state))
    write_plots(paths.train_plots, state.history, params.train.log_every)
    state.validation.write_csv(paths.train_validation)
    tracker.log_metrics({**{f"final/{k}": v for k, v in result.smoothed_losses.items()},
                         "images_per_sec_mean": result.images_per_sec,
                         "validation_fraction": result.validation_fraction}, step=state.step)
