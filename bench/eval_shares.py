"""Where an evaluation's time goes, by metric: runs a command (e.g. `python -m stages.evaluate`)
under py-spy (`pip install py-spy`) and sorts the samples of its stacks into parts.

    python -m bench.eval_shares [--rate 10] [--raw FILE] -- python -m stages.evaluate --no-tracking
    python -m bench.eval_shares --raw FILE          # sort an earlier recording again

Prints wall time, peak RSS (of the command's process tree) and a table: part, share of the
samples, seconds (share x wall). A sample belongs to the first part (in PARTS order) whose
marker appears in its stack.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

# (part, markers): a stack containing any marker (a function or file name as py-spy prints it)
# is that part's; the first matching part wins.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("FID real set: torchvision Inception over the training images (once, then cached)", ("_real_features",)),
    ("FID (gfla/dptn/...): torchvision Inception on generated images", ("imagenet_inception.py",)),
    ("IS / mask-IS / FID (2018): the 2015 Inception", ("metrics/inception.py",)),
    ("DS / PCKh: YOLO on generated images", ("metrics/detection.py",)),
    ("LPIPS / mask-LPIPS", ("lpips",)),
    ("SSIM (all variants)", ("metrics/ssim.py",)),
    ("person masks", ("metrics/masks.py",)),
    ("generation (the generator forward)", ("run_generator",)),
    ("loading pairs (images, heatmaps)", ("pair_dataset.py", "heatmap_store.py", "dataloader.py")),
    ("writing PNGs", ("imwrite", "generate_test_images")),
    ("loading networks and weights", ("load_models", "load_generator", "load_imagenet_inception")),
    ("imports and start-up", ("_find_and_load",)),
)
OTHER = "other"
# Runs argv[2:] and writes the peak RSS (KiB) of everything it waited for to argv[1] (py-spy
# does not reap its child the way RUSAGE_CHILDREN needs, so the wrapper measures).
PEAK_RSS = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
            "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
            "sys.exit(rc)")


def parse_raw(path: Path) -> Counter:
    """py-spy raw (collapsed) stacks -> Counter(part -> samples)."""
    counts: Counter = Counter()
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        part = next((name for name, marks in PARTS if any(m in stack for m in marks)), OTHER)
        counts[part] += int(n)
    return counts


def table(counts: Counter, wall: float | None) -> str:
    total = sum(counts.values()) or 1
    rows = ["| part | share | seconds |", "|---|---|---|"]
    for part, n in counts.most_common():
        secs = f"{n / total * wall:.0f}" if wall else "-"
        rows.append(f"| {part} | {100 * n / total:.1f} % | {secs} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=10, help="samples per second")
    ap.add_argument("--raw", type=Path, help="py-spy raw output (read it when no command is given)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    wall = None
    if command:
        work = Path(tempfile.mkdtemp(prefix="eval-shares-"))
        raw, rss = args.raw or work / "stacks.raw", work / "peak_rss_kb"
        spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--rate", str(args.rate), "--format", "raw",
               "--subprocesses", "--output", str(raw), "--", sys.executable, "-c", PEAK_RSS, str(rss), *command]
        t0 = time.perf_counter()
        rc = subprocess.call(spy)
        wall = time.perf_counter() - t0
        peak = int(rss.read_text()) / 1024 if rss.is_file() else float("nan")
        print(f"exit {rc}; wall {wall:.0f} s; peak RSS {peak:.0f} MB; stacks: {raw}")
    elif args.raw is None:
        ap.error("give a command or --raw FILE")
    else:
        raw = args.raw
    print(table(parse_raw(raw), wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
