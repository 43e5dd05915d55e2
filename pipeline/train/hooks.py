"""The per-step pieces of the training loop, each called as hook.after_step(state):

    ProgressLog     progress bar; MLflow losses and images/s every train.log_every steps
    SampleLog       MLflow sample grid (one row per identity) every train.sample_every steps
    ValidationHook  validation every train.val_every steps and at the end: MLflow val/*
                    metrics by step, the validation CSV, models/best.pt on improvement

All of them act on rank 0 only (the others get inactive trackers and no validation set)
and draw from no random generator, so they never change what is trained.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

from pipeline.model.checkpoint import save_generator
from pipeline.core.config import Params, PathsConfig
from pipeline.core.device import DeviceSetup
from pipeline.train.run_state import RunState, Timing
from pipeline.eval.samples import grid_pairs, render_samples
from pipeline.train.validation import METRICS, ValidationSet, validate

BEST_FILE = "best.pt"


def generator_meta(params: Params, step: int, run_id: str | None, **extra: Any) -> dict[str, Any]:
    """The `extra` meta of generator.pt / best.pt (load_generator returns it)."""
    from pipeline.core.tracking import git_revision

    return {"step": step, "run_id": run_id, "git_revision": git_revision(), "seed": params.seed,
            "sigma": params.heatmaps.sigma, "amp": params.train.amp, **extra}


def _every(step: int, every: int, last: int) -> bool:
    return (every > 0 and step % every == 0) or step == last


# --------------------------------------------------------------------------- logging


class ProgressLog:
    """Progress bar, and every log_every steps the mean losses of the window and the
    window's generator-update images/s (validation time left out) to MLflow."""

    def __init__(self, params: Params, tracker: Any, state: RunState, show: bool):
        from tqdm.auto import tqdm

        self.tc, self.tracker = params.train, tracker
        self.bar = tqdm(total=self.tc.steps, initial=state.step, disable=not show, desc="train",
                        unit="step", dynamic_ncols=True, mininterval=1.0)
        # Set after the first step of this process: the clock starts with the loop, and the
        # first window must not span set-up time it never counted (~2e9 images/s at a resume).
        self._window: tuple[float, int] | None = None

    @staticmethod
    def _mark(t: Timing) -> tuple[float, int]:
        return t.seconds - t.validation_seconds, t.images

    def after_step(self, state: RunState) -> None:
        self.bar.update(1)
        first, now = self._window is None, self._mark(state.timing)
        if first:
            self._window = now
        if not _every(state.step, self.tc.log_every, self.tc.steps):
            return
        means = state.history.mean_last(self.tc.log_every)
        speed: dict[str, float] = {}
        if not first:  # images/s from the first completed interval on
            (s0, i0), (s1, i1) = self._window, now
            self._window = now
            if s1 > s0:
                speed["images_per_sec"] = (i1 - i0) / (s1 - s0)
        postfix = {k: f"{v:.3g}" for k, v in means.items() if k in ("g_total", "d")}
        if speed:
            postfix["img/s"] = f"{speed['images_per_sec']:.1f}"
        self.bar.set_postfix(postfix)
        self.tracker.log_metrics({**{f"loss/{k}": v for k, v in means.items()}, **speed}, step=state.step)

    def close(self) -> None:
        self.bar.close()


# --------------------------------------------------------------------------- sample grids


class SampleLog:
    """Sample grids of a fixed batch, one row per person id: the first pair of each of up
    to 8 ids among the validation pairs (else among the training pairs)."""

    def __init__(self, params: Params, tracker: Any, G: Any, setup: DeviceSetup,
                 train_set: Any, vset: ValidationSet | None):
        self.tc, self.tracker, self.G, self.setup = params.train, tracker, G, setup
        self.batch = None
        if tracker.active:  # decode the batch only when it will be logged
            from pipeline.data.pair_dataset import collate_pairs

            ds = vset.dataset if vset is not None else train_set
            rows = grid_pairs(ds, vset.indices if vset is not None else None)
            self.batch = collate_pairs(ds.__getitems__(rows)) if rows else None

    def after_step(self, state: RunState) -> None:
        if self.batch is not None and _every(state.step, self.tc.sample_every, self.tc.steps):
            self.tracker.log_image(render_samples(self.G, self.batch, self.setup),
                                   f"samples/step_{state.step:07d}.png")


# --------------------------------------------------------------------------- validation


class ValidationHook:
    """Validate, record and keep the best generator (rank 0; `vset` None = no validation).

    best.pt belongs to the run: a fresh run replaces an older one at its first validation
    (or at its end without one), never before, so a fresh run that fails early loses nothing;
    a resumed run whose best.pt has gone (e.g. removed by hand) picks it afresh."""

    def __init__(self, params: Params, paths: PathsConfig, vset: ValidationSet | None,
                 tracker: Any, G: Any, setup: DeviceSetup, state: RunState, *, main: bool,
                 resumed: bool, skip_reason: str):
        self.params, self.paths, self.vset = params, paths, vset
        self.tracker, self.G, self.setup, self.main = tracker, G, setup, main
        self.skip_reason = skip_reason
        self.best_path = Path(paths.models) / BEST_FILE
        if not main:
            return
        if resumed and state.best.step is not None and not self.best_path.is_file():
            warnings.warn(f"{self.best_path}: missing; the best model is chosen afresh", stacklevel=2)
            state.best.value = state.best.step = None
        if resumed and vset is not None:
            state.validation.write_csv(paths.train_validation)  # drop rows past the checkpoint

    def due(self, step: int) -> bool:
        tc = self.params.train
        return self.vset is not None and tc.val_every > 0 and _every(step, tc.val_every, tc.steps)

    def after_step(self, state: RunState) -> None:
        if not self.due(state.step):
            return
        t0 = time.perf_counter()
        scores = validate(self.G, self.vset, self.setup)
        state.validation.append(state.step, scores)
        state.validation.write_csv(self.paths.train_validation)
        self.tracker.log_metrics({f"val/{k}": v for k, v in scores.items()}, step=state.step)
        if state.best.improves(scores):
            state.best.update(state.step, scores)
            self._save_best(state, scores)
            self.tracker.log_metrics({f"best/{state.best.metric}": state.best.value,
                                      "best/step": state.step}, step=state.step)
        state.timing.validation_seconds += time.perf_counter() - t0

    def _save_best(self, state: RunState, scores: Mapping[str, float]) -> Path:
        tc = self.params.train
        meta = generator_meta(self.params, state.step, state.run_id, selected_by=tc.select_by,
                              value=float(scores[tc.select_by]),
                              validation={k: float(v) for k, v in scores.items()},
                              val_pairs=len(self.vset) if self.vset is not None else 0)
        return save_generator(self.best_path, self.G, self.params.model, self.params.image, meta)

    def finish(self, state: RunState) -> Path | None:
        """At the end of a completed run: make sure best.pt exists. Without any validation
        score it is the final generator, its meta saying why."""
        if not self.main:
            return None
        if state.best.step is not None and self.best_path.is_file():
            return self.best_path
        if self.vset is not None and len(state.validation):
            reason = f"no finite validation {self.params.train.select_by}"
        else:
            reason = self.skip_reason
        meta = generator_meta(self.params, state.step, state.run_id, selected_by=None,
                              value=math.nan, selection=f"final generator: {reason}")
        return save_generator(self.best_path, self.G, self.params.model, self.params.image, meta)


def validation_skip_reason(params: Params, paths: PathsConfig, vset: ValidationSet | None) -> str:
    tc = params.train
    if tc.val_every <= 0 or tc.val_pairs <= 0:
        return "validation off (train.val_every or train.val_pairs is 0)"
    if vset is None:
        return f"no test pairs in {paths.pairs}"
    return ""


def val_summary(state: RunState) -> dict[str, Any]:
    """The validation part of the metrics JSON: the last scores and the best one."""
    out: dict[str, Any] = {}
    if len(state.validation):
        out["val"] = {k: v for k, v in state.validation.last().items() if k in METRICS}
    if state.best.step is not None:
        out["best"] = {"step": state.best.step, state.best.metric: state.best.value}
    return out
