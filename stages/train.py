"""DVC stage `train`: pairs + images + heatmaps -> models/generator.pt and models/best.pt,
metrics, loss and validation plots.

    python -m stages.train [--params params.yaml] [--pairs P] [--models DIR] [--no-resume]

Restarting the stage resumes from <models>/checkpoints/last.pt. Multi-process training:

    torchrun --standalone --nproc_per_node 2 -m stages.train --params params.yaml

(gloo on CPU, nccl on CUDA; train.batch_size is per process).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from stages.cli import run_stage


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, what in (
        ("pairs", "pairs Parquet"),
        ("manifest", "manifest Parquet"),
        ("keypoints", "keypoint table Parquet"),
        ("heatmaps", "heatmap store folder"),
        ("dataset", "image folder the manifest paths are relative to"),
        ("models", "output folder for checkpoints/, generator.pt and best.pt"),
        ("metrics", "output metrics JSON (paths.train_metrics)"),
        ("plots", "output loss CSV (paths.train_plots)"),
        ("validation", "output validation CSV (paths.train_validation)"),
    ):
        p.add_argument(f"--{name}", default=None, help=f"{what} (overrides params.yaml paths)")
    p.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop after this step without final outputs (a time-boxed chunk)")
    p.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def configure_threads() -> None:
    """CPU threads per process: the cores shared among the local torchrun processes
    (unless OMP_NUM_THREADS says otherwise)."""
    import torch

    if "OMP_NUM_THREADS" in os.environ:
        return
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))


def main(argv: list[str] | None = None) -> int:
    from pipeline.core.allocator import tune_allocator

    tune_allocator()  # before torch allocates: keep freed memory (pipeline/core/allocator.py)
    from pipeline.model.checkpoint import CheckpointError
    from pipeline.train.training import NonFiniteLossError

    return run_stage("train", lambda a: run(parse_args(a)), argv,
                     extra=(CheckpointError, NonFiniteLossError))


def run(args: argparse.Namespace) -> int:
    from pipeline.core.config import load_params
    from pipeline.train.training import train

    configure_threads()
    params = load_params(args.params)
    overrides = {
        "pairs": args.pairs, "manifest": args.manifest, "keypoints": args.keypoints,
        "heatmaps": args.heatmaps, "dataset": args.dataset, "models": args.models,
        "train_metrics": args.metrics, "train_plots": args.plots,
        "train_validation": args.validation,
    }
    paths = dataclasses.replace(params.paths, **{k: v for k, v in overrides.items() if v is not None})
    result = train(params, paths, resume=not args.no_resume, stop_after=args.stop_after,
                   track=not args.no_tracking, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        state = "done" if result.completed else "stopped"
        print(f"train: {state} at step {result.steps}, {result.images_per_sec:.1f} images/s, "
              f"losses {({k: round(v, 4) for k, v in result.smoothed_losses.items()})}"
              + (f", generator {result.generator_path}" if result.generator_path else "")
              + (f", best {result.best['metric']} {result.best['value']:.4f} at step {result.best['step']}"
                 if result.best.get("step") is not None else "")
              + (f", MLflow run {result.run_id}" if result.run_id else ""))
        if result.run_id:
            print(_mlflow_hint(result.run_id, params.tracking.uri))
    return 0


def _mlflow_hint(run_id: str, uri: str | None) -> str:
    """Where to see the run: the UI command and its runs-table URL (model-training view)."""
    from pipeline.core.tracking import run_ui_url, tracking_uri

    try:
        url = run_ui_url(run_id, uri)
    except Exception as exc:  # tracking is optional: never fail a finished training on it
        return f"train: MLflow UI address unavailable ({exc})"
    return f"train: compare runs: mlflow ui --backend-store-uri {tracking_uri(uri)} --workers 1, then {url}"


if __name__ == "__main__":
    sys.exit(main())
