"""Normalisation forward+backward time: SampleNorm (model.norm sample, the original's) beside
per-channel InstanceNorm2d (model.norm instance) and the same formula through autograd.

    python -m bench.bench_norm [--shape 8 128 64 32] [--repeats 20] [--device auto]
                               [--channels-last] [--amp] [--threads N]

Prints one JSON line per method: median milliseconds per forward+backward and the ratio to
InstanceNorm2d, measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from pipeline.model.norm import SampleNorm


class AutogradSampleNorm(nn.Module):
    """The same formula with torch.var_mean and autograd's backward (the simple version)."""

    def __init__(self):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(())), nn.Parameter(torch.zeros(()))

    def forward(self, x):
        x32 = x.float()
        var, mean = torch.var_mean(x32, dim=(1, 2, 3), keepdim=True, correction=0)
        scale = self.weight / (var.sqrt() + 1e-3)
        return torch.addcmul(self.bias - mean * scale, x32, scale).to(x.dtype)


def run_once(layer: nn.Module, x: torch.Tensor, amp: bool) -> float:
    """Milliseconds of one forward+backward."""
    dev = x.device.type
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    xi = x.detach().requires_grad_(True)
    sync()
    start = time.perf_counter()
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
        y = layer(xi)
    y.float().square().mean().backward()
    sync()
    return (time.perf_counter() - start) * 1e3


def time_all(layers: dict[str, nn.Module], x: torch.Tensor, repeats: int,
             amp: bool) -> dict[str, float]:
    """Median ms per method; the methods take turns, so load changes hit them alike."""
    times: dict[str, list[float]] = {name: [] for name in layers}
    for i in range(repeats + 3):  # three warm-up rounds
        for name, layer in layers.items():
            ms = run_once(layer, x, amp)
            if i >= 3:
                times[name].append(ms)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[8, 128, 64, 32])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast, input in bf16")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    x = torch.randn(*args.shape, device=device)
    if args.amp:
        x = x.bfloat16()
    if args.channels_last:
        x = x.to(memory_format=torch.channels_last)
    layers = {"instance_norm2d": nn.InstanceNorm2d(args.shape[1], affine=True),
              "sample_norm": SampleNorm(), "sample_autograd": AutogradSampleNorm()}
    results = time_all({n: layer.to(device) for n, layer in layers.items()}, x, args.repeats,
                       args.amp)
    base = results["instance_norm2d"]
    for name, ms in results.items():
        print(json.dumps({"method": name, "device": device.type, "shape": args.shape,
                          "channels_last": args.channels_last, "amp": args.amp,
                          "ms": round(ms, 3), "vs_instance_norm2d": round(ms / base, 2)}))


if __name__ == "__main__":
    main()
