"""The evaluate stage's library: generate the test pairs with a trained generator and score them.

evaluate_model() runs the generator over every test pair (batched, no grad, eval mode, in the
precision evaluate.precision picks: eval_precision), writes each generated image as <out_dir>/images/{from_stem}___{to_stem}.png and scores
each batch in memory while it is still decoded (no second decode pass):

    model        generated image vs real target
    copy_source  the source image x_a as the prediction (the trivial baseline: a model must
                 beat it on the pose-sensitive metrics; on SSIM it is often hard to beat)
    real         the real targets themselves, for the set-level metrics where that is an upper
                 bound (IS, DS, PCKh); per-pair similarities of a target to itself are omitted
                 (copy_source and real: evaluate.baselines, about half the scoring cost)

Scoring goes through pipeline.metrics.scoring.Scorer (definitions in pipeline/metrics):
per-pair SSIM, mask-SSIM, L1, masked L1 (and LPIPS, DS, PCKh when their models are
loaded), and the set metrics FID / IS / mask-IS from accumulated Inception outputs.

Two files come out of a summary {"model": {...}, "copy_source": {...}, "real": {...},
"pairs": N, "notes": {...}}:
    metrics (paths.eval_metrics, a DVC metric)   the model's headline numbers, flat
                                                 ({"ssim": .., "mask_ssim": .., ..., "pairs": N}),
                                                 so `dvc metrics show` / `dvc exp show` stay
                                                 a few columns wide;
    details (paths.eval_details)                 the whole summary: baselines, counts, std,
                                                 every *_reason, notes (which checkpoint,
                                                 generator path and step, MLflow run).
Reasons and notes also go to the MLflow run as tags (eval/<group>/<key>).

The sample grid holds one row per test identity: the first pair of each distinct person
id, in pair order, up to evaluate.grid_pairs rows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch

from pipeline.core.config import EvaluateConfig, PathsConfig, TrackingConfig
from pipeline.core.fsutil import replace_dir, scratch_dir, write_json
from pipeline.data import canvas
from pipeline.eval.samples import (  # one uint8 rule for PNGs and validation
    GRID_TITLES, first_per_identity, pair_identities, real_to_uint8, sample_grid, to_uint8,
)
from pipeline.model.build import GEN_KEYS, run_generator

SEP = "___"  # generated file name: {from_stem}___{to_stem}.png
IMAGES_DIR = "images"
GRID_FILE = "grid.png"
GRID_ARTIFACT = "evaluation/grid.png"
DETAILS_ARTIFACT = "evaluation/details.json"  # the summary with every null metric's reason
SET_ONLY_FOR_REAL = ("is", "mask_is", "ds", "pckh")  # set metrics meaningful on real targets
# The headline metrics, in column order, that the DVC metrics file keeps (when computed).
HEADLINE = ("ssim", "mask_ssim", "l1", "masked_l1", "lpips", "fid", "is", "mask_is", "ds", "pckh")

def pair_file(name_a: str, name_b: str) -> str:
    return f"{Path(name_a).stem}{SEP}{Path(name_b).stem}.png"


def eval_precision(setting: str, trained_amp: bool | None, device: torch.device
                   ) -> torch.dtype | None:
    """The autocast dtype for generating (None = float32) under evaluate.precision `setting`:
    "checkpoint" follows the checkpoint's train.amp (`trained_amp`; None, not recorded, is
    float32), "float32" and "amp" say it. Only CUDA autocasts: the CPU evaluates in float32."""
    if setting not in ("checkpoint", "float32", "amp"):
        raise ValueError(f"evaluate.precision must be checkpoint, float32 or amp, got {setting!r}")
    amp = bool(trained_amp) if setting == "checkpoint" else setting == "amp"
    if device.type != "cuda" or not amp:
        return None
    from pipeline.core.device import cuda_amp_dtype

    return cuda_amp_dtype()


def precision_name(dtype: torch.dtype | None) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def generate_test_images(
    generator: torch.nn.Module,
    dataset,
    out_dir: str | Path,
    batch_size: int,
    device: str | torch.device = "cpu",
    max_pairs: int | None = None,
    on_batch: Callable[[Mapping[str, Any], np.ndarray], None] | None = None,
    num_workers: int = 0,
    amp_dtype: torch.dtype | None = None,
    uint8: str = "round",
) -> pd.DataFrame:
    """Generate every pair of `dataset` (a PairDataset) -> PNGs in out_dir; table (from, to, file).

    out_dir ends up holding exactly this run's images: they are written into a scratch folder
    beside it that replaces it at the end (no stale images of a larger earlier run; an
    interrupted run leaves the old folder whole).

    on_batch(batch, generated uint8 [B, H, W, 3]) is called for each batch (the CPU batch
    from the loader), e.g. to score it while it is in memory. The first `max_pairs` pairs
    are used (all when None). amp_dtype: autocast dtype (None: float32); uint8: the
    conversion rule (evaluate.uint8, pipeline.eval.samples.to_uint8).
    """
    import cv2
    from torch.utils.data import DataLoader

    from pipeline.data.pair_dataset import collate_pairs

    final, out_dir = Path(out_dir), scratch_dir(out_dir)
    device = torch.device(device)
    n = len(dataset) if max_pairs is None else min(int(max_pairs), len(dataset))
    loader = DataLoader(dataset, batch_size=max(int(batch_size), 1), sampler=range(n),
                        collate_fn=collate_pairs, num_workers=num_workers)
    generator.eval()
    rows = []
    try:
        for batch in loader:
            b = {k: batch[k].to(device) for k in GEN_KEYS}
            with _autocast(device, amp_dtype):
                fake = run_generator(generator, b).image
            gen = to_uint8(fake, uint8)
            for img, a, bn in zip(gen, batch["name_a"], batch["name_b"]):
                name = pair_file(a, bn)
                if not cv2.imwrite(str(out_dir / name), np.ascontiguousarray(img[:, :, ::-1])):
                    raise OSError(f"{final / name}: cannot write image")
                rows.append((a, bn, name))
            if on_batch is not None:
                on_batch(batch, gen)
        replace_dir(out_dir, final)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)  # gone already when swapped in
    return pd.DataFrame(rows, columns=["from", "to", "file"])


# --------------------------------------------------------------------------- scoring


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars -> Python, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_generated(
    generator: torch.nn.Module,
    dataset,
    out_dir: str | Path,
    cfg: EvaluateConfig,
    device: str | torch.device = "cpu",
    models=None,
    protocols=None,
    amp_dtype: torch.dtype | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, np.ndarray]]:
    """Generate into out_dir/images and score, batch by batch, the model, the copy-the-source
    baseline and the real targets with pipeline.metrics.scoring.Scorer.

    models: pipeline.metrics.scoring.Models (Inception / LPIPS / pose detector, each possibly
    None with a reason); default: only the per-pair metrics that need no weights.
    protocols: a pipeline.metrics.protocol_set.ProtocolSet scoring the model's images under
    the other families' protocols too (summary["protocols"]).
    Returns (summary, per_pair table, grid arrays for one pair per identity (identity_rows,
    up to cfg.grid_pairs): xa, kpb, gen, xb as uint8 [N, H, W, 3] / float32 [N, 18, 2]).
    """
    from pipeline.metrics.scoring import Models, Scorer

    models = models or Models(device=torch.device(device).type)
    ref = Scorer(models, batch_size=cfg.batch_size)
    # Inception on 12,000 pairs dominates the cost: the targets go through it once, in the
    # model scorer (added first each batch); copy_source and real take its outputs. LPIPS of
    # a target to itself is never reported, so it is not computed.
    real_models = dataclasses.replace(models, lpips=None, lpips_info="not computed for the real targets")
    scorers = {"model": ref}
    if cfg.baselines:  # about half the cost (Inception and YOLO on sources and targets)
        scorers["copy_source"] = Scorer(models, batch_size=cfg.batch_size, reference=ref)
        scorers["real"] = Scorer(real_models, batch_size=cfg.batch_size, reference=ref)
    grid: dict[str, list] = {"xa": [], "kpb": [], "gen": [], "xb": []}
    n = len(dataset) if cfg.max_pairs is None else min(int(cfg.max_pairs), len(dataset))
    wanted = first_per_identity(pair_identities(dataset, np.arange(n)), int(cfg.grid_pairs))
    seen = [0]  # pairs generated so far: the index of the batch's first pair

    # Only the scored frame (dataset.frame): with image.fit pad (DeepFashion's 176-wide
    # images on the 256x256 canvas) the white padding, with evaluate.frame the canvas outside
    # the benchmark's frame, is cut off every image first.
    frame = getattr(dataset, "frame", None) or canvas.WHOLE

    def on_batch(batch: Mapping[str, Any], gen: np.ndarray) -> None:
        real = canvas.cut(real_to_uint8(batch["xb"], cfg.uint8), frame)
        src = canvas.cut(real_to_uint8(batch["xa"], cfg.uint8), frame)
        gen = canvas.cut(gen, frame)
        kp = canvas.keypoints_in_frame(batch["kpb"].numpy(), frame)
        names = [pair_file(a, b) for a, b in zip(batch["name_a"], batch["name_b"])]
        per = {}
        for which, pred in (("model", gen), ("copy_source", src), ("real", real)):
            if which in scorers:
                per[which] = scorers[which].add(names, real, pred, kp)
        if protocols:  # the model's LPIPS (same network, same images) serves gfla/dptn too
            protocols.add(real, gen, kp, lpips=per["model"].get("lpips"))
        take = wanted[(wanted >= seen[0]) & (wanted < seen[0] + len(real))] - seen[0]
        if len(take):
            for key, arr in (("xa", src), ("kpb", kp), ("gen", gen), ("xb", real)):
                grid[key].append(arr[take])
        seen[0] += len(real)

    files = generate_test_images(generator, dataset, Path(out_dir) / IMAGES_DIR, cfg.batch_size,
                                 device, cfg.max_pairs, on_batch, amp_dtype=amp_dtype,
                                 uint8=cfg.uint8)
    results = {which: s.result() for which, s in scorers.items()}
    per_pair = files.copy()
    for which in [w for w in ("model", "copy_source") if w in results]:
        table = results[which][1]
        for col in table.columns:
            if col not in ("name", "generated", "has_keypoints"):
                per_pair[f"{which}_{col}"] = table[col].to_numpy()
    summary: dict[str, Any] = {"model": results["model"][0], "pairs": int(len(per_pair)), "notes": {}}
    if cfg.baselines:
        real = results["real"][0]
        summary["copy_source"] = results["copy_source"][0]
        # Scores of the real targets only where they are an upper bound (IS, DS, PCKh).
        summary["real"] = {k: v for k, v in real.items()
                           if k.split("_reason")[0].split("_std")[0] in SET_ONLY_FOR_REAL}
    else:
        summary["notes"]["baselines"] = "not scored (evaluate.baselines: false)"
    if protocols:
        summary["protocols"] = protocols.result()
    arrays = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in grid.items()}
    return _plain(summary), per_pair, arrays


# --------------------------------------------------------------------------- metrics / details


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def headline_metrics(summary: Mapping[str, Any]) -> dict[str, float | int]:
    """The DVC metrics file: the model's computed HEADLINE metrics (flat) and the pair count.
    Null metrics are left out here; the details file says why they are null."""
    group = summary.get("model", {})
    out: dict[str, float | int] = {k: group[k] for k in HEADLINE if _number(group.get(k))}
    pairs = summary.get("pairs")
    if _number(pairs):
        out["pairs"] = int(pairs)
    for name, group in (summary.get("protocols") or {}).items():  # {protocol: {metric: value}}
        numbers = {k: v for k, v in group.items() if _number(v) and not k.endswith("_std")}
        if numbers:
            out[name] = numbers
    return _plain(out)


def null_reasons(summary: Mapping[str, Any], prefix: str = "") -> dict[str, list[str]]:
    """{reason: ["model/fid", "real/fid", ...]}: each distinct reason once, with the null
    metrics it explains (one missing weights file nulls several metrics in every group)."""
    out: dict[str, list[str]] = {}
    for key, value in summary.items():
        if isinstance(value, Mapping):
            for reason, names in null_reasons(value, f"{prefix}{key}/").items():
                out.setdefault(reason, []).extend(names)
        elif value is None and f"{key}_reason" in summary:
            out.setdefault(str(summary[f"{key}_reason"]), []).append(f"{prefix}{key}")
    return out


def eval_tags(summary: Mapping[str, Any], prefix: str = "eval") -> dict[str, str]:
    """The few MLflow tags of an evaluation: which checkpoint, and which metrics are null
    (their reasons are in the run's evaluation/details.json artifact, not in tags)."""
    notes = summary.get("notes") or {}
    nulls = [name for names in null_reasons(summary).values() for name in names]
    tags = {f"{prefix}/checkpoint": str(notes.get("checkpoint", "")),
            f"{prefix}/generator": str(notes.get("generator", ""))}
    if nulls:
        tags[f"{prefix}/null_metrics"] = ", ".join(nulls) + f" (reasons: {DETAILS_ARTIFACT})"
    return {k: v for k, v in tags.items() if v}


# --------------------------------------------------------------------------- tracking


def flat_metrics(summary: Mapping[str, Any], prefix: str = "eval") -> dict[str, float]:
    """{"model": {"ssim": .5}} -> {"eval/model/ssim": .5}; numbers only."""
    out = {}
    for group in ("model", "copy_source", "real"):
        for key, value in (summary.get(group) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{prefix}/{group}/{key}"] = float(value)
    for name, group in (summary.get("protocols") or {}).items():
        out.update({f"{prefix}/{name}/{k}": float(v) for k, v in group.items() if _number(v)})
    out[f"{prefix}/pairs"] = float(summary.get("pairs", 0))
    return out


def log_evaluation(summary: Mapping[str, Any], grid_path: str | Path | None, run_id: str | None,
                   tracking: TrackingConfig) -> str | None:
    """Log metrics (and the grid) into the training run `run_id` when it exists in the
    tracking store, else into a new run named "evaluate". Returns the run id used (None
    when a write failed: the tracker warned and stopped)."""
    from pipeline.core import tracking as trk

    def log(tracker) -> str:
        tracker.log_metrics(flat_metrics(summary))
        tracker.set_tags({"eval_pairs": summary.get("pairs"), **eval_tags(summary)})
        with tempfile.TemporaryDirectory() as tmp:  # the whole summary, reasons included
            details = write_json(Path(tmp) / Path(DETAILS_ARTIFACT).name, _plain(dict(summary)),
                                 sort_keys=True)
            tracker.log_artifact(details, str(Path(DETAILS_ARTIFACT).parent))
        if grid_path is not None:
            tracker.log_artifact(grid_path, str(Path(GRID_ARTIFACT).parent))
        return None if tracker.failed else tracker.run_id

    if run_id:
        from mlflow.exceptions import MlflowException

        try:
            with trk.resume_run(run_id, tracking.uri) as tracker:
                return log(tracker)
        except MlflowException:
            pass  # the training run is not in this store (e.g. another machine's DB)
    with trk.start_run(tracking, name="evaluate") as tracker:
        tracker.set_tags({"training_run_id": run_id})
        return log(tracker)


def track_evaluation(summary: dict[str, Any], tracking: TrackingConfig) -> str | None:
    """log_evaluation for a finished evaluation whose results are already written; tracking
    is optional, so a failure (disk full, store unreachable) is one warning line, and the
    run id used (recorded in the summary's notes) or None."""
    import sys

    notes = summary.setdefault("notes", {})
    grid = notes.get("grid")
    try:
        run = log_evaluation(summary, Path(grid) if grid else None, notes.get("training_run_id"), tracking)
    except Exception as exc:  # noqa: BLE001 - any tracking failure; the results stand
        print(f"evaluate: warning: MLflow logging failed, results kept: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return None
    if run:
        notes["mlflow_run_id"] = run
    return run


# --------------------------------------------------------------------------- the stage


def evaluate_model(
    generator_path: str | Path,
    paths: PathsConfig,
    out_dir: str | Path,
    cfg: EvaluateConfig,
    device: str = "auto",
    models=None,
    checkpoint: str = "last",
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Generate and score every test pair with the generator file; write images, the grid
    (out_dir/grid.png) and the per-pair table (out_dir/per_pair.parquet). `checkpoint`
    labels which file it is (last | best | a path given by hand), recorded in the notes with
    the grid and the training run id (track_evaluation logs them, after the caller has
    written the results). Returns (summary dict, per-pair DataFrame)."""
    from pipeline.model.checkpoint import load_generator
    from pipeline.data.pair_dataset import load_pair_dataset
    from pipeline.core.device import select_device

    dev = select_device(device)
    G, meta = load_generator(generator_path, dev)
    amp_dtype = eval_precision(cfg.precision, meta.get("amp"), dev)
    if dev.type == "cuda":
        from pipeline.core.device import set_tf32

        set_tf32(amp_dtype is not None)  # float32 generation is true float32
    image = meta["image"]
    dataset = load_pair_dataset(paths, image.height, image.width, split="test", fit=image.fit)
    dataset.frame = canvas.intersect(dataset.frame, canvas.aspect_frame(image.height, image.width, cfg.frame))
    out_dir = Path(out_dir)
    protocols = protocol_set_for(cfg, paths, models, dev.type, image, dataset.frame)
    summary, per_pair, g = score_generated(G, dataset, out_dir, cfg, dev, models, protocols, amp_dtype)
    summary["notes"].update(checkpoint=checkpoint, generator=str(generator_path),
                            generator_step=meta.get("step"), training_run_id=meta.get("run_id"),
                            precision=precision_name(amp_dtype), uint8=cfg.uint8,
                            trained_amp=meta.get("amp"))
    if tuple(dataset.frame) != (0, image.height, 0, image.width):  # padding cropped off
        summary["notes"]["scored_frame"] = "rows {}..{}, columns {}..{} of {}x{}".format(
            dataset.frame[0], dataset.frame[1] - 1, dataset.frame[2], dataset.frame[3] - 1,
            image.height, image.width)
    grid_path = None
    (out_dir / GRID_FILE).unlink(missing_ok=True)  # an earlier run's grid must not pass for this one's
    if len(g["xa"]):
        from pipeline.data.preview import with_titles, write_png

        grid_path = out_dir / GRID_FILE
        grid = with_titles(sample_grid(g["xa"], g["kpb"], g["gen"], g["xb"]), GRID_TITLES,
                           g["xa"].shape[2])
        write_png(grid_path, np.ascontiguousarray(grid[:, :, ::-1]))  # RGB -> BGR for cv2
    per_pair.to_parquet(out_dir / "per_pair.parquet", index=False)
    if grid_path is not None:
        summary["notes"]["grid"] = str(grid_path)
    return summary, per_pair


def protocol_set_for(cfg: EvaluateConfig, paths: PathsConfig, models, device: str, image=None,
                     frame: tuple[int, int, int, int] | None = None):
    """The ProtocolSet of evaluate.protocol (None for the 2018 protocol alone); its FID real
    set: the folder evaluate.fid_real (images as they are), else the train split of the
    manifest, each image brought onto the model's canvas (image: ImageConfig) and cut to the
    scored frame, as the generated images are scored."""
    from pipeline.metrics import protocol_set
    from pipeline.metrics.scoring import Models

    if all(name == "defgan" for name in cfg.protocol):
        return None
    read, read_id = protocol_set.read_rgb, ""
    if cfg.fid_real:
        files = protocol_set.folder_files(cfg.fid_real)
    else:
        files = protocol_set.manifest_train_files(paths.manifest, paths.dataset) or None
        if image is not None:
            frame = frame or (0, image.height, 0, image.width)
            read = functools.partial(_canvas_read, height=image.height, width=image.width, fit=image.fit, frame=frame)
            read_id = f"canvas {image.height}x{image.width} {image.fit}, frame {list(frame)}"
    models = models or Models(device=device)
    return protocol_set.ProtocolSet(cfg.protocol, protocol_set.nets_from_models(models), files,
                                    real_reason=f"{paths.manifest} has no train images",
                                    cache_dir=cfg.fid_stats, batch_size=cfg.batch_size, read=read, read_id=read_id)


def _canvas_read(path: Path, height: int, width: int, fit: str, frame: tuple[int, int, int, int]) -> np.ndarray:
    from pipeline.metrics.protocol_set import read_rgb

    return canvas.canvas_image(read_rgb(path), height, width, fit, frame)


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """The metrics JSON (sorted keys, NaN -> null) for DVC, written atomically (temporary
    file + rename), so an interrupted run never leaves a truncated metrics file."""
    return write_json(path, _plain(dict(summary)), sort_keys=True)
