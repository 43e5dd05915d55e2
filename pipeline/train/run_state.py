"""What a training run carries across steps and across a resume, and the checkpoints that
hold it.

RunState: the step, the per-step losses, the validation history and best score, the
MLflow run id and the timing. Checkpointer writes it (with the trainer's weights and
optimiser states and every rank's RNG state) to <models>/checkpoints/last.pt;
resume_or_start() reads it back when the checkpoint belongs to this run (same
fingerprint), so a resumed run continues exactly where the checkpoint left off.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from pipeline.model.checkpoint import (
    capture_rng,
    check_model_meta,
    latest_checkpoint,
    model_meta,
    restore_rng,
    save_checkpoint,
)
from pipeline.core.config import Params, PathsConfig, to_dict
from pipeline.core.device import DistInfo
from pipeline.core.fsutil import table_digest
from pipeline.train.loss_history import LossHistory
from pipeline.train.validation import BestScore, ValidationHistory

CHECKPOINT_DIR = "checkpoints"
# Train settings that may change between a run and its resumption without changing what
# is trained (validation settings only decide what is measured; see RunState.restore).
RESUMABLE_TRAIN_KEYS = ("steps", "checkpoint_every", "log_every", "sample_every", "num_workers",
                        "device", "val_every", "val_pairs", "select_by")


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN/inf; the message names the step and the offending terms."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_fingerprint(params: Params, paths: PathsConfig) -> str:
    """Hash of everything that defines a training run: seed, image size, model, loss, the
    train settings (except the resumable ones above), the heatmap sigma, and the contents of
    the training pairs file and the keypoint table (the heatmaps and part geometry derive
    from the keypoints; new keypoints need not change the pairs). A checkpoint is resumed
    only under the same fingerprint, so raising train.steps continues a run while any other
    change starts afresh."""
    train = {k: v for k, v in to_dict(params.train).items() if k not in RESUMABLE_TRAIN_KEYS}
    spec = {"seed": params.seed, "image": to_dict(params.image), "model": to_dict(params.model),
            "loss": to_dict(params.loss), "train": train, "sigma": params.heatmaps.sigma}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode())
    for data in (Path(paths.pairs), Path(paths.keypoints)):
        if data.is_file():  # contents only: a rerun stage's new metadata is not new data
            digest.update(bytes.fromhex(table_digest(data)))
    return digest.hexdigest()


# --------------------------------------------------------------------------- state


class Timing:
    """Wall time of the training loop (validation included), the validation share of it,
    and the generator-update images processed (train.batch_size per process per step)."""

    def __init__(self, seconds: float = 0.0, images: int = 0, validation_seconds: float = 0.0):
        self._base, self.images, self.validation_seconds = float(seconds), int(images), float(validation_seconds)
        self._t0 = time.perf_counter()

    def start(self) -> None:
        """Start the clock (the loop begins now; set-up time is not counted)."""
        self._t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self._base + time.perf_counter() - self._t0

    def images_per_sec(self) -> float:
        """Generator-update images per second of training (validation time left out)."""
        busy = self.seconds - self.validation_seconds
        return self.images / busy if busy > 0 else 0.0

    def validation_fraction(self) -> float:
        total = self.seconds
        return self.validation_seconds / total if total > 0 else 0.0

    def state(self) -> dict[str, float]:
        return {"seconds": self.seconds, "images": self.images,
                "validation_seconds": self.validation_seconds}


@dataclass
class RunState:
    step: int = 0
    history: LossHistory = field(default_factory=LossHistory)
    validation: ValidationHistory = field(default_factory=ValidationHistory)
    best: BestScore = field(default_factory=lambda: BestScore("mask_ssim"))
    timing: Timing = field(default_factory=Timing)
    run_id: str | None = None

    @staticmethod
    def validation_spec(params: Params) -> dict[str, Any]:
        """What makes two validation histories comparable (the pairs file is in the
        run fingerprint)."""
        return {"val_pairs": params.train.val_pairs, "seed": params.seed}

    def checkpoint_fields(self, params: Params) -> dict[str, Any]:
        return {
            "step": self.step,
            "history": self.history.state(),
            "validation": {"spec": self.validation_spec(params), "history": self.validation.state(),
                           "best": self.best.state()},
            "run_id": self.run_id,
            "timing": self.timing.state(),
        }

    @classmethod
    def restore(cls, saved: Mapping[str, Any], params: Params, source: Path) -> RunState:
        """The state a checkpoint holds. A validation history taken on another subset
        (train.val_pairs changed) is dropped, and a best score by another train.select_by
        is forgotten, each with a warning; training itself continues unchanged."""
        val = saved.get("validation") or {}
        history, best = ValidationHistory.from_state(val.get("history")), val.get("best")
        if val and val.get("spec") != cls.validation_spec(params):
            warnings.warn(f"{source}: validation settings changed; earlier validation scores "
                          "and the best-model choice start afresh", stacklevel=2)
            history, best = ValidationHistory(), None
        elif best and best.get("metric") != params.train.select_by:
            warnings.warn(f"{source}: train.select_by changed from {best.get('metric')} to "
                          f"{params.train.select_by}; best.pt is chosen afresh from the next "
                          "validation", stacklevel=2)
        timing = dict(saved.get("timing") or {})
        return cls(
            step=int(saved["step"]),
            history=LossHistory(saved["history"]["names"], saved["history"]["values"]),
            validation=history,
            best=BestScore.from_state(best, params.train.select_by),
            timing=Timing(timing.get("seconds", 0.0), timing.get("images", 0),
                          timing.get("validation_seconds", 0.0)),
            run_id=saved.get("run_id"),
        )


# --------------------------------------------------------------------------- DDP helpers


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def gather_rng(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state (collective under DDP), in rank order."""
    state = capture_rng()
    if not info.enabled:
        return [state]
    import torch.distributed as dist

    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, state)
    return states


# --------------------------------------------------------------------------- checkpoints


class Checkpointer:
    """Writes <models>/checkpoints/last.pt (rank 0) every train.checkpoint_every steps and
    at the end; remembers the last good one for error messages.

    stale: the folder holds another run's checkpoints; they are removed at our first save,
    not before, so a run that fails before it saves anything leaves them untouched."""

    def __init__(self, directory: Path, params: Params, fingerprint: str, info: DistInfo,
                 loader_batch: int, stale: bool, last: Path | None = None, last_step: int = -1):
        self.directory, self.params, self.fingerprint, self.info = directory, params, fingerprint, info
        self.loader_batch, self.stale = loader_batch, stale
        self.last, self.last_step = last, last_step

    def due(self, step: int) -> bool:
        tc = self.params.train
        return step % tc.checkpoint_every == 0 or step == tc.steps

    def where(self) -> str:
        """The last good checkpoint, for messages."""
        return f"{self.last} (step {self.last_step})" if self.last_step >= 0 else "none written yet"

    def save(self, trainer: Any, state: RunState) -> Path:
        """Collective: all ranks gather RNG states; rank 0 writes; barrier afterwards."""
        if not trainer.all_finite():
            raise NonFiniteLossError(f"step {state.step}: non-finite weights; not checkpointing "
                                     f"(last good checkpoint kept in {self.directory})")
        rngs = gather_rng(self.info)
        path = self.directory / "last.pt"
        if self.info.is_main:
            if self.stale:
                for old in self.directory.glob("*.pt"):
                    old.unlink()
                self.stale = False
            tc = self.params.train
            save_checkpoint(self.directory, {
                **trainer.state_dict(),
                **state.checkpoint_fields(self.params),
                "model_meta": model_meta(self.params.model, self.params.image),
                "rng": rngs,
                "sampler": {"seed": self.params.seed, "position": state.step * self.loader_batch,
                            "batch_size": tc.batch_size, "loader_batch": self.loader_batch,
                            "world_size": self.info.world_size},
                "fingerprint": self.fingerprint,
            })
        barrier(self.info)
        self.last, self.last_step = path, state.step
        return path


def _restore_rngs(rngs: list[Any], info: DistInfo, seed: int, step: int, source: Path) -> None:
    if len(rngs) == info.world_size:
        restore_rng(rngs[info.rank])
        return
    warnings.warn(f"{source}: saved by {len(rngs)} process(es), resuming with "
                  f"{info.world_size}: data order and RNG streams differ from the original run")
    seed_everything(seed + info.rank + step)


def resume_or_start(params: Params, paths: PathsConfig, trainer: Any, info: DistInfo,
                    resume: bool, loader_batch: int) -> tuple[RunState, Checkpointer]:
    """Load <models>/checkpoints/last.pt into the trainer and the RNGs when `resume` and it
    was written by this run (same fingerprint; model config checked), else a fresh state."""
    directory = Path(paths.models) / CHECKPOINT_DIR
    fingerprint = run_fingerprint(params, paths)
    found = latest_checkpoint(directory) if resume else None
    if found is not None and found[1].get("fingerprint") != fingerprint:
        # Checkpoints persist across DVC runs: one written under other params or data (e.g.
        # before `dvc exp run -S loss.nn_weight=...`) must not be continued as if it were ours.
        warnings.warn(f"{found[0]}: written by a run with other params or data; starting afresh "
                      "(it is replaced at the first checkpoint)")
        found, resume = None, False
    state = RunState(best=BestScore(params.train.select_by))
    path: Path | None = None
    if found is not None:
        path, saved = found
        check_model_meta(saved["model_meta"], params.model, params.image, path)
        trainer.load_state_dict(saved, params.train.lr, params.train.betas)
        state = RunState.restore(saved, params, path)
        _restore_rngs(saved["rng"], info, params.seed, state.step, path)
        del saved
    del found
    ckpt = Checkpointer(directory, params, fingerprint, info, loader_batch, stale=not resume,
                        last=path, last_step=state.step if path is not None else -1)
    return state, ckpt
