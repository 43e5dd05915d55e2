"""Write a dataset-shaped archive from the synthetic renderer, for full-size rehearsals: the
real layout and the real file names, every person drawn (pipeline/datasets/synthetic).

    python -m stages.rehearsal_archive market --annotations DIR [--out Market-1501-v15.09.15.zip]
        [--seed 0] [--ids-fraction 1.0] [--subset-dir DIR] [--double-jpg keep|strip] [--workers 2]
    python -m stages.rehearsal_archive deepfashion --lists DIR [--out img.zip] [--seed 0]
        [--fraction 1.0] [--items N] [--layout inshop|flat176] [--subset-dir DIR] [--workers 2]

market: DIR holds the canonical annotation CSVs (and the test pairs); deepfashion: DIR holds
train.lst, test.lst (and the canonical test annotations and pairs). --subset-dir writes the
kept names' annotation files there. Deterministic for a seed. Not a DVC stage.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from pipeline.datasets.market1501 import ARCHIVE_NAME
from stages.cli import run_stage


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m stages.rehearsal_archive", description=__doc__.split("\n\n")[0])
    kinds = ap.add_subparsers(dest="kind", required=True)
    market = kinds.add_parser("market", help="a Market-1501-v15.09.15.zip")
    market.add_argument("--annotations", required=True, help="folder with the canonical annotation CSVs")
    market.add_argument("--out", default=ARCHIVE_NAME, help=f"zip to write (default {ARCHIVE_NAME})")
    market.add_argument("--ids-fraction", type=float, default=1.0, help="keep this fraction of the ids")
    market.add_argument("--double-jpg", choices=("keep", "strip"), default="keep",
                        help="file names of the 18 `.jpg.jpg` annotations: as annotated, or one .jpg")
    fashion = kinds.add_parser("deepfashion", help="an In-shop img.zip (or the papers' 256x176 folders)")
    fashion.add_argument("--lists", required=True, help="folder with train.lst, test.lst (and the canonical "
                         "test annotations and pairs)")
    fashion.add_argument("--out", default="img.zip", help="zip to write (default img.zip)")
    fashion.add_argument("--fraction", type=float, default=1.0, help="keep this share of the items")
    fashion.add_argument("--items", type=int, default=None, help="at most this many items per split")
    fashion.add_argument("--layout", choices=("inshop", "flat176"), default="inshop")
    for sub in (market, fashion):
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--subset-dir", type=Path, help="write the kept names' annotation files here")
        sub.add_argument("--workers", type=int, default=2)
    return ap


def write(argv: Sequence[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.kind == "market":
        from pipeline.datasets.synthetic.market_archive import build

        info = build(Path(args.annotations), Path(args.out), args.seed, args.ids_fraction, args.double_jpg,
                     args.workers, progress=True, subset_dir=args.subset_dir)
    else:
        from pipeline.datasets.synthetic.deepfashion_archive import build

        info = build(Path(args.lists), Path(args.out), args.seed, args.fraction, args.items, args.layout,
                     args.workers, args.subset_dir)
    print(f"rehearsal_archive: {info['images']} images {info['per_split']} -> {args.out} "
          f"({info['bytes'] / 1e6:.1f} MB, {info['seconds']} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("rehearsal_archive", write, argv)


if __name__ == "__main__":
    sys.exit(main())
