"""NN loss forward+backward: time and peak memory, ours vs the naive n^2-shifted-copies version.

    python -m bench.bench_losses [--shape 8 64 128 64] [--windows 3 5] [--repeats 3]

Each (method, window) runs in a fresh subprocess so peak memory is its own: on CUDA the
allocator's peak, on CPU the growth of the process's peak RSS (ru_maxrss) over the inputs.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from pipeline.model.losses import nn_loss


def naive_nn_loss(gen: torch.Tensor, real: torch.Tensor, window: int) -> torch.Tensor:
    """All window^2 shifted copies of real at once (inf-distance outside), min over them."""
    b, c, h, w = gen.shape
    r = window // 2
    padded = F.pad(real, (r, r, r, r))
    inside = F.pad(torch.ones(1, 1, h, w, device=gen.device), (r, r, r, r))
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    def window_of(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        return t[:, :, r + dy:r + dy + h, r + dx:r + dx + w]

    shifted = torch.stack([window_of(padded, dy, dx) for dy, dx in offsets])
    valid = torch.stack([window_of(inside, dy, dx) for dy, dx in offsets])
    dist = (shifted - gen.unsqueeze(0)).abs().sum(2)  # [n^2, B, H, W]
    dist = dist.masked_fill(valid[:, :, 0] == 0, float("inf"))
    return dist.min(0).values.mean()


METHODS = {"ours": nn_loss, "naive": naive_nn_loss}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_one(method: str, shape: list[int], window: int, repeats: int, device: str) -> dict:
    """Time and peak memory of one method in this process."""
    torch.manual_seed(0)
    fn = METHODS[method]
    gen = torch.randn(*shape, device=device, requires_grad=True)
    real = torch.randn(*shape, device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    times = []
    for _ in range(repeats):
        gen.grad = None
        start = time.perf_counter()
        loss = fn(gen, real, window)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else _rss_mb() - base
    return {"method": method, "window": window, "seconds": statistics.median(times),
            "peak_mb": peak, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", type=int, nargs=4, default=[8, 64, 128, 64], metavar=("B", "C", "H", "W")
    )
    parser.add_argument("--windows", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "WINDOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        method, window = args.child[0], int(args.child[1])
        print(json.dumps(run_one(method, args.shape, window, args.repeats, args.device)))
        return

    print(f"NN loss fwd+bwd, features {args.shape}, device {args.device}, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'window':>6} {'method':>6} {'time ms':>9} {'peak MB':>9} {'loss':>12}")
    for window in args.windows:
        for method in METHODS:
            cmd = [
                sys.executable, "-m", "bench.bench_losses", "--child", method, str(window),
                "--shape", *map(str, args.shape), "--repeats", str(args.repeats),
                "--device", args.device,
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{window:>6} {method:>6} {1000 * r['seconds']:>9.1f} "
                f"{r['peak_mb']:>9.1f} {r['loss']:>12.4f}"
            )


if __name__ == "__main__":
    main()
