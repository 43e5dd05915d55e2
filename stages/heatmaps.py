"""Stage `heatmaps`: keypoint table -> heatmap store folder + preview PNG.

    python -m stages.heatmaps [--params params.yaml] [--keypoints FILE] [--out DIR]
                              [--preview FILE] [--manifest FILE] [--dataset DIR]

Stores every row of the keypoint table, scaled to image.height x image.width, as a heatmap
store (pipeline/data/heatmap_store.py: keypoints on disk, Gaussians of sigma heatmaps.sigma
rendered on read, the values of a uint8 store). The preview finds its images through the manifest (name, path relative to
the dataset folder); without them it draws on grey tiles and says so.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from pipeline.core.config import load_params
from pipeline.core.fsutil import file_digest
from pipeline.data.heatmap_store import HeatmapStore, write_heatmap_store
from pipeline.data.heatmaps import table_keypoints
from pipeline.core.keypoints import present
from pipeline.data.preview import (GAP, PREVIEW_TITLES, load_images, pick_rows, preview_grid,
                                   with_titles, write_png)
from stages.cli import run_stage

PREVIEW_COUNT = 6
MOST_JOINTS = 16  # of 18: a standing person seen whole (ears or eyes may hide)


def main(argv: list[str] | None = None) -> int:
    return run_stage("heatmaps", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.heatmaps", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--keypoints", help="keypoint table Parquet (default paths.keypoints)")
    ap.add_argument("--out", help="heatmap store folder (default paths.heatmaps)")
    ap.add_argument("--preview", help="preview PNG (default paths.heatmaps_preview)")
    ap.add_argument("--manifest", help="image manifest Parquet (default paths.manifest)")
    ap.add_argument("--dataset", help="image folder the manifest paths are relative to")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    paths = params.paths
    kp_file = Path(args.keypoints or paths.keypoints)
    out = Path(args.out or paths.heatmaps)
    preview = Path(args.preview or paths.heatmaps_preview)
    manifest_file = Path(args.manifest or paths.manifest)
    dataset = Path(args.dataset or paths.dataset)
    h, w, sigma = params.image.height, params.image.width, params.heatmaps.sigma

    if not kp_file.is_file():
        sys.exit(f"{kp_file}: keypoint table not found (run the pose stage first)")
    table = pd.read_parquet(kp_file)
    try:
        kp = table_keypoints(table, h, w, fit=params.image.fit)
    except (KeyError, ValueError) as exc:
        sys.exit(f"{kp_file}: {exc}")

    t0 = time.perf_counter()
    write_heatmap_store(
        out, table["name"].astype(str).tolist(), kp, h, w, sigma,
        chunk=params.heatmaps.chunk, values=params.heatmaps.values,
        extra_meta={"keypoints_file": str(kp_file), "keypoints_sha256": file_digest(kp_file)},
    )
    dt = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"heatmaps: {len(table)} images {h}x{w} sigma {sigma} ({params.heatmaps.values}) -> {out} "
          f"({size / 1e6:.1f} MB: keypoints, rendered on read; {dt:.1f} s)")

    # Whole people (the most joints visible), spread over the table: what a pose looks like.
    joints = present(kp).sum(axis=1)
    rows = pick_rows(joints >= min(MOST_JOINTS, joints.max(initial=0)), PREVIEW_COUNT)
    names = table["name"].astype(str).to_numpy()[rows].tolist()
    manifest = pd.read_parquet(manifest_file) if manifest_file.is_file() else None
    images, missing = load_images(names, manifest, dataset, h, w, params.image.fit)
    if missing:
        print(f"heatmaps: preview without photos for {len(missing)} image(s) "
              f"(not found via {manifest_file} under {dataset}): {missing}")
    if images:
        heat = HeatmapStore(out).load(names)
        grid = preview_grid(images, kp[rows], heat)  # columns twice the image width
        write_png(preview, with_titles(grid, PREVIEW_TITLES, 2 * w, GAP))
        print(f"heatmaps: preview of {len(images)} images -> {preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
