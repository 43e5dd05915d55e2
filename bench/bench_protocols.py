"""Cost of the paper families' protocols (pipeline/metrics/protocols.py) per pair, by metric,
and the wall time and peak RSS they would take on the 12,000 Market-1501 test pairs.

    python -m bench.bench_protocols [--pairs 32] [--protocols gfla-market dptn-market] [--threads N]

Random 128x64 pairs and seeded random weights (torchvision Inception, LPIPS AlexNet): the
timing is that of the real networks, the values mean nothing. The FID real set (12,936
Market training images) is one Inception pass per image, once (then cached). Each metric is
timed alone (the baseline), then the protocols together as evaluate runs them (one
ProtocolSet: what they compute alike is computed once). Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import resource
import time

import numpy as np
import torch

from pipeline.metrics import imagenet_inception, protocols
from pipeline.metrics.lpips import LIN_KEYS, build_lpips
from pipeline.metrics.protocol_set import ProtocolSet

MARKET_TEST_PAIRS, MARKET_TRAIN = 12000, 12936


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--protocols", nargs="+", default=["gfla-market", "dptn-market"])
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from torchvision.models import alexnet

    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (args.pairs, 128, 64, 3), dtype=np.uint8)
    gen = rng.integers(0, 256, (args.pairs, 128, 64, 3), dtype=np.uint8)
    kp = np.stack([rng.uniform(4, 60, (args.pairs, 18)), rng.uniform(4, 124, (args.pairs, 18))], -1)
    pool = imagenet_inception.ImagenetPool3(imagenet_inception.random_state_dict(0))
    lin = {k: torch.rand((1, c, 1, 1)) for k, c in zip(LIN_KEYS, (64, 192, 384, 256, 256))}
    lp = build_lpips(alexnet(weights=None).state_dict(), lin)
    nets = protocols.Nets(imagenet=pool, imagenet_info="random", lpips=lp, lpips_info="random")
    print(f"{args.pairs} pairs of 128x64, {torch.get_num_threads()} threads")
    total = 0.0
    for name in args.protocols:
        rec = protocols.recipe(name)
        for metric in rec.metrics:
            one = dataclasses.replace(rec, metrics=(metric,))
            s = protocols.ProtocolScorer(one, nets, None, batch_size=32)
            t = time.perf_counter()
            s.add(real, gen, kp)
            per_pair = (time.perf_counter() - t) / args.pairs
            total += per_pair
            print(f"  {name:12s} {metric:10s} {per_pair * 1e3:8.2f} ms/pair -> {per_pair * MARKET_TEST_PAIRS / 60:7.1f} min on 12,000 pairs")
    t = time.perf_counter()
    ProtocolSet(args.protocols, nets, batch_size=32).add(real, gen, kp)  # shared work, as evaluate runs them
    together = (time.perf_counter() - t) / args.pairs
    print(f"  together (one ProtocolSet: what they compute alike computed once): {together * 1e3:.2f} ms/pair "
          f"vs {total * 1e3:.2f} ms/pair metric by metric ({total / together:.2f}x) -> "
          f"{together * MARKET_TEST_PAIRS / 60:.1f} min on 12,000 pairs")
    t = time.perf_counter()
    imagenet_inception.pool3(real.astype(np.float32) / 255, pool, batch_size=32)
    per_image = (time.perf_counter() - t) / args.pairs
    print(f"  real set: {per_image * 1e3:.1f} ms/image -> {per_image * MARKET_TRAIN / 60:.1f} min once for the 12,936 train images")
    print(f"  all listed protocols metric by metric: {total * MARKET_TEST_PAIRS / 60:.1f} min on 12,000 pairs "
          f"(+ the real set once)")
    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
