"""Convert one of the authors' released generators (pose-gan, Keras 2.0.8 .h5) into our
generator checkpoint, which evaluate, repose and the demo accept like any trained one:

    python -m stages.convert generator-warp-mask-nn3-cl12.h5 --out models/authors-market.pt
    python -m stages.evaluate --model models/authors-market.pt

The checkpoint records the paper-mode model config with the file's widths, the image size
(Market-1501's 128x64 for the 6-level file, DeepFashion's 256x256 for the 7-level one, or
--height/--width), the heatmap sigma (6, the original's), float32 as the training precision,
and the source file's name and sha256. A file that is not such a generator (a discriminator,
the no-warp baseline, a truncated download) is one line naming what does not match, exit 2.
Not a DVC stage: a tool run once per downloaded file (pipeline/model/keras_h5.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from stages.cli import run_stage

ORIGINAL_SIGMA = 6.0  # pose-gan pose_utils.cords_to_map


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m stages.convert",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="the authors' generator .h5 (Model.save or save_weights)")
    ap.add_argument("--out", required=True, help="our generator checkpoint to write (.pt)")
    ap.add_argument("--height", type=int, default=None, help="image height (default: by depth)")
    ap.add_argument("--width", type=int, default=None, help="image width (default: by depth)")
    return ap.parse_args(argv)


def convert(argv: Sequence[str] | None = None) -> int:
    from pipeline.model.checkpoint import save_generator
    from pipeline.model.keras_h5 import convert_keras_generator

    args = parse_args(argv)
    if (args.height is None) != (args.width is None):
        sys.exit("convert: give both --height and --width, or neither")
    done = convert_keras_generator(args.source, args.height, args.width)
    info = {k: v for k, v in done.info.items() if k != "keras_layers"}
    extra = {**info, "source": Path(args.source).name, "sigma": ORIGINAL_SIGMA, "amp": False}
    out = save_generator(args.out, done.generator, done.model, done.image, extra)
    levels = len(done.model.encoder_widths)
    print(f"convert: {args.source} ({len(done.info['keras_layers'])} weighted layers, {levels} "
          f"levels, {done.image.height}x{done.image.width}, sha256 {info['source_sha256'][:12]}…) "
          f"-> {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """convert(); a user error (a wrong or unreadable file, an unwritable --out) is one line
    on stderr and exit status 2 (stages/cli.py)."""
    return run_stage("convert", convert, argv)


if __name__ == "__main__":
    sys.exit(main())
