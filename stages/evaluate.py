"""DVC stage `evaluate`: protocol metrics of generated images (pipeline/metrics).

Model mode (the DVC stage; no --real/--generated): generate every test pair with the
generator evaluate.checkpoint names (last: <paths.models>/generator.pt, best:
<paths.models>/best.pt, picked on validation pairs during training; --model overrides), score
the model, the copy-the-source baseline and the real targets, write
<paths.evaluation>/{images/, grid.png, per_pair.parquet}, the metrics JSON (paths.eval_metrics:
the model's headline numbers) and the details JSON (paths.eval_details: baselines, counts,
reasons of null metrics, which checkpoint), and log them into the model's MLflow training run:

    python -m stages.evaluate [--params params.yaml] [--model FILE] [--pairs FILE] [--out-dir DIR]
        [--out FILE] [--details FILE]

Standalone mode, on two folders of images matched by file name:

    python -m stages.evaluate --real DIR --generated DIR [--keypoints FILE] [--detect-keypoints]
        [--real-pckh] [--pose-weights FILE] [--out metrics.json] [--per-pair FILE.parquet] [--params params.yaml]
        [--protocol NAME ...] [--fid-real DIR]

--protocol NAME (repeatable; both modes): also score under a paper family's protocol
(pipeline/metrics/protocols.py), its keys grouped under its name; --fid-real DIR: the
training images those protocols' FID compares with (model mode: default the manifest's
train split).

--keypoints: target keypoints keyed by the real file names (keypoint-table Parquet or
canonical annotation CSV). Without it, --detect-keypoints runs the pose model on the real
targets to get them (for mask-SSIM / mask-IS / PCKh; the JSON says so). Metrics that cannot
be computed offline (no Inception / LPIPS weights) are null with a reason.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.core.config import ConfigError, Params, load_params
from stages.cli import run_stage


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stages.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default=None, help="params file (default: params.yaml if present)")
    standalone = ap.add_argument_group("standalone mode (score two folders)")
    standalone.add_argument("--real", default=None, help="folder of real target images")
    standalone.add_argument("--generated", default=None, help="folder of generated images (same file names)")
    standalone.add_argument("--keypoints", default=None, help="target keypoints (.parquet table or canonical .csv)")
    standalone.add_argument("--detect-keypoints", action="store_true",
                            help="without --keypoints: detect target keypoints on the real images")
    standalone.add_argument("--real-pckh", action="store_true", help="also PCKh of the real targets (upper bound)")
    ap.add_argument("--pose-weights", default=None, help="YOLO pose weights; overrides evaluate.pose_weights")
    ap.add_argument("--protocol", action="append", default=None, metavar="NAME",
                    help="also score under a paper family's protocol (repeatable; overrides evaluate.protocol): "
                         "defgan, patn-fashion, gfla-market, gfla-fashion, dptn-market, dptn-fashion, "
                         "pidm-fashion, cfld-fashion")
    ap.add_argument("--fid-real", default=None, metavar="DIR",
                    help="FID real set of those protocols (the training images); overrides evaluate.fid_real")
    standalone.add_argument("--max-pairs", type=int, default=None, help="overrides evaluate.max_pairs")
    trained = ap.add_argument_group("model mode (default: generate the test pairs with the trained model)")
    trained.add_argument("--model", default=None,
                         help="generator file (default: by evaluate.checkpoint, <paths.models>/generator.pt or best.pt)")
    trained.add_argument("--pairs", default=None, help="pairs Parquet (default: paths.pairs; its 'test' rows)")
    trained.add_argument("--out-dir", default=None, help="images, grid and per-pair table (default: paths.evaluation)")
    trained.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    ap.add_argument("--out", default=None, help="metrics JSON; overrides paths.eval_metrics")
    trained.add_argument("--details", default=None,
                         help="details JSON (baselines, counts, reasons, notes); overrides paths.eval_details")
    ap.add_argument("--per-pair", default=None, help="per-pair metrics Parquet (optional)")
    return ap


def load(path: str | None) -> Params:
    """params.yaml (or the given file); built-in defaults when no file was named and none exists."""
    if path is None:
        return load_params("params.yaml") if Path("params.yaml").is_file() else Params()
    return load_params(path)


def protocol_options(cfg, args: argparse.Namespace):
    """evaluate config with --protocol / --fid-real applied (unknown names: one line)."""
    import dataclasses

    from pipeline.metrics.protocols import recipe

    if args.protocol:
        cfg = dataclasses.replace(cfg, protocol=tuple(recipe(n).name for n in args.protocol))
    if args.fid_real is not None:
        cfg = dataclasses.replace(cfg, fid_real=args.fid_real)
    return cfg


def run_standalone(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    import dataclasses

    from pipeline.metrics.scoring import score_folders

    cfg = protocol_options(params.evaluate, args)
    if args.max_pairs is not None:
        cfg = dataclasses.replace(cfg, max_pairs=args.max_pairs)
    if args.pose_weights is not None:
        cfg = dataclasses.replace(cfg, pose_weights=args.pose_weights)
    summary, table = score_folders(
        args.real, args.generated, args.keypoints, cfg,
        pose_cfg=params.pose, detect_keypoints=args.detect_keypoints, real_pckh=args.real_pckh,
        allow_download=cfg.download,
    )
    if args.per_pair:
        Path(args.per_pair).parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(args.per_pair, index=False)
    return summary


CHECKPOINT_FILES = {"last": "generator.pt", "best": "best.pt"}


def generator_file(model: str | None, models_dir: str, checkpoint: str) -> tuple[Path, str]:
    """(generator file, label): --model when given (label "model"), else the file that
    evaluate.checkpoint names in models_dir. A missing file is a one-line error."""
    if model:
        return Path(model), "model"
    path = Path(models_dir) / CHECKPOINT_FILES[checkpoint]
    if not path.is_file():
        hint = {"last": "run the train stage first",
                "best": "the train stage writes it (with validation: train.val_every > 0); "
                        "or set evaluate.checkpoint: last"}[checkpoint]
        raise FileNotFoundError(f"evaluate.checkpoint: {checkpoint}: {path} not found ({hint})")
    return path, checkpoint


def run_model(args: argparse.Namespace, params: Params) -> dict[str, Any]:
    """Generate every test pair with the trained generator, score model / copy-the-source /
    real targets, write images, grid and per-pair table (main() writes the metrics, then
    logs into the training run)."""
    import dataclasses

    import torch

    from pipeline.core.device import select_device
    from pipeline.eval.evaluation import evaluate_model
    from pipeline.metrics.scoring import load_models

    paths, cfg = params.paths, protocol_options(params.evaluate, args)
    if args.pose_weights is not None:
        cfg = dataclasses.replace(cfg, pose_weights=args.pose_weights)
    if args.max_pairs is not None:
        cfg = dataclasses.replace(cfg, max_pairs=args.max_pairs)
    threads = torch.get_num_threads()
    device = select_device(params.train.device)
    models = load_models(cfg, params.pose, device=device.type, allow_download=cfg.download)
    torch.set_num_threads(threads)  # importing ultralytics sets OMP_NUM_THREADS=1
    generator, which = generator_file(args.model, paths.models, cfg.checkpoint)
    paths = dataclasses.replace(paths, pairs=args.pairs or paths.pairs)
    summary, table = evaluate_model(
        generator, paths, args.out_dir or paths.evaluation, cfg, str(device), models, checkpoint=which,
    )
    if args.per_pair:
        Path(args.per_pair).parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(args.per_pair, index=False)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """Readable lines; a null metric points to its reason, and each distinct reason is
    printed once at the end (one missing weights file nulls several metrics)."""
    from pipeline.eval.evaluation import null_reasons

    reasons = list(null_reasons(summary))
    lines = _summary_lines(summary, {r: i + 1 for i, r in enumerate(reasons)}, "  ")
    lines += [f"  [{i + 1}] {r}" for i, r in enumerate(reasons)]
    return "\n".join(lines)


def _summary_lines(summary: dict[str, Any], notes: dict[str, int], indent: str) -> list[str]:
    lines = []
    for key, value in summary.items():
        if key.endswith("_reason") or key.endswith("_std"):
            continue
        if isinstance(value, dict):
            lines += [f"{indent}{key}:", *_summary_lines(value, notes, indent + "  ")]
            continue
        if value is None and f"{key}_reason" in summary:
            value = f"null [{notes[str(summary[key + '_reason'])]}]"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        lines.append(f"{indent}{key}: {value}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from pipeline.model.checkpoint import CheckpointError

    return run_stage("evaluate", _main, argv, extra=(CheckpointError, RuntimeError))


def _main(argv: list[str] | None = None) -> int:
    from pipeline.core.allocator import tune_allocator

    tune_allocator()  # before torch allocates: keep freed memory (pipeline/core/allocator.py)
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        params = load(args.params)
    except ConfigError as exc:
        sys.exit(f"evaluate: {exc}")

    if args.real or args.generated:
        if not (args.real and args.generated):
            ap.error("standalone mode needs both --real and --generated")
        try:
            summary = run_standalone(args, params)
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            sys.exit(f"evaluate: {exc}")
    else:
        from pipeline.model.checkpoint import CheckpointError
        from pipeline.data.pair_dataset import DataError

        try:
            summary = run_model(args, params)
        except (FileNotFoundError, ValueError, RuntimeError, CheckpointError, DataError) as exc:
            sys.exit(f"evaluate: {exc}")

    from pipeline.eval.evaluation import headline_metrics, track_evaluation, write_summary

    n = summary.get("n_pairs", summary.get("pairs", 0))
    if args.real:  # a report for the user: one file with everything
        out = write_summary(args.out or params.paths.eval_metrics, summary)
        print(f"evaluate: {n} pairs -> {out}")
    else:  # the DVC metric (numbers) and its sidecar (the rest)
        out = write_summary(args.out or params.paths.eval_metrics, headline_metrics(summary))
        details = write_summary(args.details or params.paths.eval_details, summary)
        print(f"evaluate: {n} pairs -> {out}, details {details}")
        # Tracking last: the results above are on disk whatever happens to it.
        if not args.no_tracking and track_evaluation(summary, params.tracking):
            write_summary(details, summary)  # now with the MLflow run id
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
