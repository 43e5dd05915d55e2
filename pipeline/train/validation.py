"""Validation during training: a fixed held-out subset of the test pairs, generated in eval
mode and scored with the evaluate stage's own per-pair metrics.

The subset: train.val_pairs pair indices of the test split of paths.pairs, drawn without
replacement by numpy's Generator seeded with params.seed (its own generator: the training
RNG streams are never touched), in increasing order, so every validation of a run, and of
every run with the same seed and pairs file, scores the same pairs.

Scores (pipeline.metrics.scoring.score_batch, as the evaluate stage computes them, on the
same scored frame): SSIM, mask-SSIM and masked L1 of the generated images (uint8, rounded as the evaluate stage
writes them) against the real targets, means over the pairs (NaN pairs, i.e. targets
without keypoints, left out as evaluate leaves them out). PCKh is optional (validate's
`models` with a detector) and off in the loop: it needs ultralytics and the YOLO pose weights
in the training process (importing ultralytics pins OMP_NUM_THREADS=1, see pipeline/data/pose.py);
its detection itself is cheap: 0.64 s on the 64 quickstart pairs beside 19.6 s for the rest
of the validation (bench/bench_validation.py, 2 busy CPU cores).

ValidationHistory keeps (step, ssim, mask_ssim, masked_l1) rows (the CSV that dvc.yaml
declares as a plot); BestScore keeps the best value of train.select_by and its step.
"""
from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.core.device import DeviceSetup
from pipeline.eval.samples import generate, real_to_uint8, to_uint8

METRICS = ("ssim", "mask_ssim", "masked_l1")
HIGHER_IS_BETTER = {"ssim": True, "mask_ssim": True, "masked_l1": False}
BATCH = 32  # pairs per validation forward pass (no grad: far below training memory)


# --------------------------------------------------------------------------- the pairs


def choose_pairs(n: int, k: int, seed: int) -> np.ndarray:
    """k of n pair indices (all when k >= n) drawn with np.random.default_rng(seed),
    sorted. Returns int64 [min(k, n)]."""
    k = max(0, min(int(k), int(n)))
    picked = np.random.default_rng(seed).choice(int(n), size=k, replace=False)
    return np.sort(picked).astype(np.int64)


@dataclass
class ValidationSet:
    """A test-split PairDataset and the fixed pair indices to validate on."""

    dataset: Any           # pipeline.data.pair_dataset.PairDataset (split "test")
    indices: np.ndarray    # int64 [V], the fixed subset
    batch_size: int = BATCH
    uint8: str = "round"   # evaluate.uint8: validation scores what evaluate scores
    frame: tuple[int, int, int, int] | None = None  # (y0, y1, x0, x1) scored, as evaluate's

    def __len__(self) -> int:
        return len(self.indices)

    def batches(self) -> Iterator[dict[str, Any]]:
        """Collated CPU batches of the subset, in order (read again at every validation,
        so a 256-pair subset never sits in memory as float heatmaps)."""
        from pipeline.data.pair_dataset import collate_pairs

        for s in range(0, len(self.indices), self.batch_size):
            part = self.indices[s : s + self.batch_size].tolist()
            yield collate_pairs(self.dataset.__getitems__(part))


def count_split(pairs_path: str | Path, split: str) -> int:
    """Number of pairs of `split` in the pairs Parquet (0 when it has no split column)."""
    import pandas as pd

    table = pd.read_parquet(pairs_path)
    if "split" not in table.columns:
        return 0
    return int((table["split"].astype(str) == split).sum())


def open_validation_set(params: Any, paths: Any) -> ValidationSet | None:
    """The fixed validation subset of paths.pairs' test split, or None when validation is
    off (train.val_every 0 or train.val_pairs 0) or there are no test pairs (a warning)."""
    from pipeline.data.pair_dataset import load_pair_dataset

    tc = params.train
    if tc.val_every <= 0 or tc.val_pairs <= 0:
        return None
    if count_split(paths.pairs, "test") == 0:
        warnings.warn(f"train.val_every: {paths.pairs} has no test pairs; validation skipped "
                      "(best.pt will be the final generator)", stacklevel=2)
        return None
    from pipeline.data import canvas

    image = params.image
    ds = load_pair_dataset(paths, image.height, image.width, split="test", fit=image.fit)
    frame = canvas.intersect(ds.frame, canvas.aspect_frame(image.height, image.width, params.evaluate.frame))
    return ValidationSet(ds, choose_pairs(len(ds), tc.val_pairs, params.seed),
                         uint8=params.evaluate.uint8, frame=frame)


# --------------------------------------------------------------------------- scoring


def summarise(per_pair: Mapping[str, list[np.ndarray]]) -> dict[str, float]:
    """Per-pair score arrays (lists of per-batch arrays) -> means; pckh pooled over joints.
    A metric with no finite pair is NaN."""
    out: dict[str, float] = {}
    for key in METRICS:
        values = np.concatenate(per_pair[key]) if per_pair.get(key) else np.zeros(0)
        finite = values[np.isfinite(values)]
        out[key] = float(finite.mean()) if len(finite) else math.nan
    if per_pair.get("pckh_total"):
        total = float(np.concatenate(per_pair["pckh_total"]).sum())
        correct = float(np.concatenate(per_pair["pckh_correct"]).sum())
        out["pckh"] = correct / total if total > 0 else math.nan
    return out


def validate(G: nn.Module, vset: ValidationSet, setup: DeviceSetup, models: Any = None) -> dict[str, float]:
    """Generate the validation pairs in eval mode and score them.

    models: pipeline.metrics.scoring.Models; the default loads nothing (SSIM, mask-SSIM,
    masked L1 only). One with a pose detector adds "pckh" (and the cost of detection).
    Returns {"ssim", "mask_ssim", "masked_l1"[, "pckh"]} -> float.
    """
    from pipeline.data import canvas
    from pipeline.metrics.scoring import Models, score_batch

    models = models or Models(device=setup.device.type)
    per_pair: dict[str, list[np.ndarray]] = defaultdict(list)
    with torch.no_grad():
        for batch in vset.batches():
            frame = vset.frame or canvas.WHOLE
            fake = canvas.cut(to_uint8(generate(G, batch, setup), vset.uint8), frame)
            scores = score_batch(canvas.cut(real_to_uint8(batch["xb"], vset.uint8), frame), fake,
                                 canvas.keypoints_in_frame(batch["kpb"].numpy(), frame),
                                 models=models, batch_size=vset.batch_size)
            for key, values in scores.items():
                per_pair[key].append(np.asarray(values))
    return summarise(per_pair)


# --------------------------------------------------------------------------- history


class ValidationHistory:
    """One row per validation: step and the METRICS; survives a resume via state()."""

    COLUMNS = ("step", *METRICS)

    def __init__(self, rows: list[list[float]] | None = None):
        self.rows: list[list[float]] = [list(r) for r in rows or []]

    def append(self, step: int, scores: Mapping[str, float]) -> None:
        self.rows.append([float(step)] + [float(scores.get(k, math.nan)) for k in METRICS])

    def __len__(self) -> int:
        return len(self.rows)

    def last(self) -> dict[str, float]:
        return dict(zip(METRICS, self.rows[-1][1:])) if self.rows else {}

    def steps(self) -> list[int]:
        return [int(r[0]) for r in self.rows]

    def state(self) -> dict[str, Any]:
        values = torch.tensor(self.rows, dtype=torch.float64).reshape(len(self.rows), len(self.COLUMNS))
        return {"columns": list(self.COLUMNS), "values": values}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> ValidationHistory:
        if not state:
            return cls()
        cols = list(state["columns"])
        values = state["values"].tolist()
        return cls([[row[cols.index(c)] if c in cols else math.nan for c in cls.COLUMNS] for row in values])

    def write_csv(self, path: str | Path) -> Path:
        """The DVC plots CSV: step, ssim, mask_ssim, masked_l1 (header only when empty)."""
        import pandas as pd

        frame = pd.DataFrame(self.rows, columns=list(self.COLUMNS))
        frame["step"] = frame["step"].astype("int64")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False, float_format="%.6g")
        return path


@dataclass
class BestScore:
    """The best value of one validation metric so far, and its step (None: none yet)."""

    metric: str
    value: float | None = None
    step: int | None = None

    def improves(self, scores: Mapping[str, float]) -> bool:
        """True when scores[metric] is finite and better than the best so far."""
        v = scores.get(self.metric, math.nan)
        if not math.isfinite(v):
            return False
        if self.value is None:
            return True
        return v > self.value if HIGHER_IS_BETTER[self.metric] else v < self.value

    def update(self, step: int, scores: Mapping[str, float]) -> None:
        self.value, self.step = float(scores[self.metric]), int(step)

    def state(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "step": self.step}

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None, metric: str) -> BestScore:
        """The saved best when it was chosen by `metric`, else a fresh one."""
        if not state or state.get("metric") != metric:
            return cls(metric)
        return cls(metric, state.get("value"), state.get("step"))
