"""DVC stage `download`: the dataset folder (Market-1501 layout) and its manifest.

    python -m stages.download [--params params.yaml] [--archive PATH] [--out DIR] [--manifest FILE]

data.source market1501 downloads (or takes --archive / data.archive), verifies and safely
extracts Market-1501 (deepfashion likewise); folder copies a folder of people
(data.folder.path, or an archive of it); synthetic generates the offline stand-in.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pipeline.core.config import load_params
from pipeline.data.download import DownloadError, prepare_dataset
from pipeline.data.extract import ArchiveError
from pipeline.datasets.base import DatasetError
from stages.cli import run_stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("download", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.download", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    ap.add_argument("--archive", default=None,
                    help="local dataset archive; overrides data.archive (with data.source synthetic: market1501)")
    ap.add_argument("--out", default=None, help="dataset folder; overrides paths.dataset")
    ap.add_argument("--manifest", default=None, help="manifest Parquet; overrides paths.manifest")
    ap.add_argument("--summary", default=None,
                    help="dataset summary JSON (provenance, counts); overrides paths.dataset_summary")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    dataset = Path(args.out or params.paths.dataset)
    manifest = Path(args.manifest or params.paths.manifest)
    archive = args.archive
    if archive is not None and params.data.source == "synthetic":  # an archive is real data
        params = dataclasses.replace(params, data=dataclasses.replace(params.data, source="market1501"))

    try:
        info = prepare_dataset(params, dataset, manifest, archive=archive,
                               summary_path=args.summary or params.paths.dataset_summary)
    except (DownloadError, ArchiveError, DatasetError, ValueError) as exc:
        sys.exit(f"download: {exc}")
    counts = info["counts"]
    if info.get("checksum_verified") is False:
        print(f"note: data.checksum is null; archive {info['checksum']} "
              f"(set data.checksum to pin it)")
    splits = ", ".join(f"{s} {n}" for s, n in counts["per_split"].items())
    print(f"download: {info['source']} -> {dataset} ({counts['images']} images: {splits}; "
          f"{counts['unreadable']} unreadable); manifest {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
