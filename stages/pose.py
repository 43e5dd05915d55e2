"""Stage `pose`: images -> keypoint table (Parquet) + summary metric JSON.

    python -m stages.pose [--params params.yaml] [--manifest FILE] [--dataset DIR]
                          [--out FILE.parquet] [--summary FILE.json]
                          [--backend yolo|annotations] [--weights PATH]
                          [--annotations CSV ...] [--csv FILE]

Standalone on any folder of images (no DVC, no manifest; backend yolo unless --backend):

    python -m stages.pose --images DIR --out FILE.parquet [--weights PATH] [--csv FILE]

pose.backend yolo runs the YOLO pose model on every image; annotations imports the
canonical CSVs of pose.annotations. --csv also writes the table as a canonical CSV.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.data.annotations import export_csv, join_manifest, read_annotations
from pipeline.core.config import Params, load_params
from pipeline.data.manifest import read_manifest
from pipeline.data.pose import estimate_manifest, failures, load_model, mark_unreadable, scan_folder, summarize, write_table
from pipeline.core.weights import resolve as resolve_weights
from stages.cli import run_stage


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stages.pose", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default=None, help="params file (default: params.yaml if present)")
    ap.add_argument("--manifest", help="manifest Parquet (default paths.manifest)")
    ap.add_argument("--dataset", help="dataset folder the manifest paths are relative to")
    ap.add_argument("--images", help="any folder of images: run without a manifest")
    ap.add_argument("--out", help="keypoint table Parquet (default paths.keypoints)")
    ap.add_argument("--summary", help="summary JSON (default paths.pose_summary; "
                    "with --images only when given)")
    ap.add_argument("--backend", choices=("yolo", "annotations"), help="overrides pose.backend")
    ap.add_argument("--weights", help="YOLO pose weights: a weights name or a local file "
                    "(overrides pose.weights)")
    ap.add_argument("--annotations", nargs="+", help="canonical CSVs (overrides pose.annotations)")
    ap.add_argument("--csv", help="also write the table as a canonical annotation CSV")
    return ap


def _params(path: str | None) -> Params:
    # Standalone runs may happen outside the project: no params.yaml means the defaults.
    if path is None and not Path("params.yaml").is_file():
        return Params()
    return load_params(path or "params.yaml")


def main(argv: list[str] | None = None) -> int:
    return run_stage("pose", lambda a: run(_parser().parse_args(a)), argv)


def run(args: argparse.Namespace) -> int:
    params = _params(args.params)
    cfg, paths = params.pose, params.paths

    if args.images:
        dataset = Path(args.images)
        manifest = scan_folder(dataset)
        backend = args.backend or "yolo"
        summary_file = Path(args.summary) if args.summary else None
    else:
        dataset = Path(args.dataset or paths.dataset)
        manifest = read_manifest(Path(args.manifest or paths.manifest))
        backend = args.backend or cfg.backend
        summary_file = Path(args.summary or paths.pose_summary)
    out = Path(args.out or paths.keypoints)

    start = time.perf_counter()
    if backend == "yolo":
        # A weights name or a local file (pipeline/core/weights.py): a missing one is one line.
        spec, param = (args.weights, "--weights") if args.weights else (cfg.weights, "pose.weights")
        model = load_model(str(resolve_weights(spec, param)), cfg.device)
        table = estimate_manifest(manifest, dataset, model, cfg)
        label = model.label
        settings = {"imgsz": cfg.imgsz, "conf": cfg.conf, "kpt_conf": cfg.kpt_conf,
                    "device": model.device, "half": model.half, "weights": model.weights}
    else:
        files = args.annotations or list(cfg.annotations)
        if not files:
            raise SystemExit("pose: backend annotations needs pose.annotations or --annotations")
        annotations = read_annotations(files, image_hw=tuple(cfg.annotations_hw))
        table = join_manifest(annotations, manifest, source=", ".join(map(str, files)),
                              fit=params.image.fit)
        table = mark_unreadable(table, manifest, dataset)  # a corrupt image is recorded, skipped
        label = ";".join(annotations["model"].astype(str).unique())
        settings = {"annotations": [str(f) for f in files]}
    seconds = time.perf_counter() - start

    summary = summarize(table, backend, label)
    # No timings in the table: the same inputs give the same bytes (DVC's cache and the
    # training run's fingerprint stay valid when the stage merely reruns).
    write_table(table, out, {**summary, **settings})
    if summary_file is not None:
        summary_file.parent.mkdir(parents=True, exist_ok=True)
        # The DVC metric holds counts and the backend label; the model's long provenance
        # label stays in the table's metadata (a metrics column per sha256 would not fit).
        metric = {k: v for k, v in summary.items() if k != "model"}
        summary_file.write_text(json.dumps(metric, indent=2) + "\n")
    if args.csv:
        export_csv(table, args.csv)
    rate = len(table) / seconds if seconds > 0 else float("inf")
    print(f"pose: {backend} on {summary['images']} images -> {out} ({summary['detected']} "
          f"detected, {summary['no_annotation']} without annotation, {summary['failed']} failed, "
          f"{rate:.0f} images/s)")
    for name, error in failures(table).head(5).itertuples(index=False):
        print(f"  {name}: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
