"""Stage `pairs`: keypoint table (+ heatmap store) -> same-identity pairs and their counts.

    python -m stages.pairs [--params params.yaml] [--keypoints FILE] [--heatmaps DIR]
                           [--out FILE] [--counts FILE] [--test-list FILE]

Train pairs: every ordered same-id pair of usable train images (pairs.max_pairs_per_id caps
them). Test pairs: the list pairs.test_list / --test-list (CSV `from,to`) when given, else
pairs.test_pairs_per_id generated per id. Every pair image must have keypoints and heatmaps.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from pipeline.core.config import load_params
from pipeline.data.heatmap_store import HeatmapStore
from pipeline.data.pairs import make_pairs, pair_counts, read_pair_list
from stages.cli import run_stage


def main(argv: list[str] | None = None) -> int:
    return run_stage("pairs", _main, argv)


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stages.pairs", description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--keypoints", help="keypoint table Parquet (default paths.keypoints)")
    ap.add_argument("--heatmaps", help="heatmap store folder (default paths.heatmaps)")
    ap.add_argument("--out", help="pairs Parquet (default paths.pairs)")
    ap.add_argument("--counts", help="counts JSON (default paths.pairs_counts)")
    ap.add_argument("--test-list", help="fixed test pairs CSV `from,to` (default pairs.test_list)")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    paths = params.paths
    kp_file = Path(args.keypoints or paths.keypoints)
    store_dir = Path(args.heatmaps or paths.heatmaps)
    out = Path(args.out or paths.pairs)
    counts_file = Path(args.counts or paths.pairs_counts)
    test_list = args.test_list or params.pairs.test_list

    if not kp_file.is_file():
        sys.exit(f"{kp_file}: keypoint table not found (run the pose stage first)")
    table = pd.read_parquet(kp_file)
    try:
        store = HeatmapStore(store_dir)
        pair_list = read_pair_list(test_list) if test_list else None
        pairs = make_pairs(table, params.pairs, params.seed, pair_list, store.names,
                           list_source=str(test_list))
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(f"pairs: error: {exc}", file=sys.stderr)
        return 2

    counts = pair_counts(table, pairs)
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs.to_parquet(out, index=False)
    counts_file.parent.mkdir(parents=True, exist_ok=True)
    counts_file.write_text(json.dumps(counts, indent=2) + "\n")
    print(f"pairs: {json.dumps(counts)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
