"""Stage-less CLI: a trained generator on new photos (pipeline.infer.repose).

    python -m stages.repose --source PERSON.jpg --pose TARGET.jpg|POSES_DIR|poses.json|poses.csv
                            [--model models/generator.pt] --out OUT.png|OUT_DIR [--gif OUT.gif]
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.infer.repose import DEFAULT_SIGMA, repose
from stages.cli import run_stage


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stages.repose", description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, help="photo of the person to re-pose")
    ap.add_argument("--pose", required=True, help="target pose: image, folder of images, .json or .csv")
    ap.add_argument("--model", default="models/generator.pt", help="generator file (save_generator)")
    ap.add_argument("--out", required=True, help="output image (one target: .png, .jpg, ...) or folder")
    ap.add_argument("--gif", default=None, help="also write the sequence as an animated GIF")
    ap.add_argument("--pose-weights", default="yolo11n-pose.pt",
                    help="YOLO pose weights: a weights name (pipeline/core/weights.py) or a local file")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--sigma", type=float, default=DEFAULT_SIGMA,
                    help="heatmap sigma (px) when the checkpoint does not record one")
    ap.add_argument("--margin", type=float, default=0.1, help="crop margin, fraction of the person height")
    return ap.parse_args(argv)


def run(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    paths = repose(args.source, args.pose, args.model, args.out, args.gif, args.pose_weights,
                   args.device, args.sigma, args.margin)
    for p in paths:
        print(p)
    if args.gif:
        print(args.gif)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage("repose", run, argv)  # ReposeError is a ValueError: one line, exit 2


if __name__ == "__main__":
    sys.exit(main())
