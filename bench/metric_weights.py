"""A weights folder for timing the metrics offline: seeded random weights of the real metric
networks under their registry file names (pipeline/core/weights.py), beside links to the
real files given (e.g. ../shared/weights: YOLO, VGG19). With $DEFORMABLE_GAN_WEIGHTS set to
it, every metric runs at its true cost; the Inception and AlexNet values mean nothing.

    python -m bench.metric_weights OUT_DIR [--link FILE ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pipeline.core.weights import REGISTRY


def write_folder(out: Path, links: list[Path]) -> list[Path]:
    """Random 2015 Inception (torch-fidelity layout), torchvision Inception v3 and AlexNet
    state dicts in out/, plus a link to each file of `links`; the files written."""
    from torchvision.models import alexnet

    from pipeline.metrics import imagenet_inception, inception

    out.mkdir(parents=True, exist_ok=True)
    written = [inception.write_random_weights(out / REGISTRY["inception_fid"].file, seed=0)]
    for name, state in (("inception_v3_imagenet", imagenet_inception.random_state_dict(0)),
                        ("alexnet", alexnet(weights=None).state_dict())):
        torch.save(state, out / REGISTRY[name].file)
        written.append(out / REGISTRY[name].file)
    for link in links:
        dest = out / link.name
        dest.unlink(missing_ok=True)
        dest.symlink_to(link.resolve())
        written.append(dest)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--link", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    torch.manual_seed(0)
    for path in write_folder(args.out, args.link):
        print(path)


if __name__ == "__main__":
    main()
