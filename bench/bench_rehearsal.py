"""Full-size rehearsal: every stage of the paper's Market-1501 config (dataset=market1501
mode=paper) under `dvc repro`, on a
Market-1501-shaped synthetic archive (pipeline/datasets/synthetic/market_archive.py).

    .venv/bin/python bench/bench_rehearsal.py [--work DIR] [--archive ZIP] [--steps 20]
        [--annotations DIR] [--weights DIR] [--max-pairs N] [--ids-fraction F]

A throw-away git + DVC project (tests/dvc_project.py style) gets the Market config with
data.archive = the generated zip, the canonical annotations and pairs and the weights
passed as params (only in that temporary project: conf/ names no ../shared path) and
train.steps shortened. Each stage runs as `dvc repro -s <stage>` under a wrapper that
reports the peak RSS of its process tree (RUSAGE_CHILDREN: the largest process, here the
stage's python). Prints per stage: wall time, peak RSS, bytes written (the stage's outs);
for train the step cost and the projected 90,000-step schedule on this CPU; for evaluate the
pairs/s over every test pair. The machine may be shared: the load average is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dvc_project import make_project, project_env

STAGES = ("download", "pose", "heatmaps", "pairs", "train", "evaluate")
DATA_STAGES = STAGES[:4]
FULL_STEPS, FULL_BATCH = 90_000, 4
SHARED = ROOT.parent / "shared"
# The outs of each stage (the default paths), for "bytes written".
OUTS = {
    "download": ["data/dataset", "data/manifest.parquet", "data/dataset_summary.json"],
    "pose": ["data/keypoints.parquet", "data/pose_summary.json"],
    "heatmaps": ["data/heatmaps", "data/heatmaps_preview.png"],
    "pairs": ["data/pairs.parquet", "data/pairs_counts.json"],
    "train": ["models", "metrics/train.json", "metrics/train_losses.csv"],
    "evaluate": ["data/evaluation", "metrics/eval.json"],
}
# Runs a command and prints the peak RSS (KiB) of everything it waited for.
WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "
    "file=sys.stderr); sys.exit(rc)"
)


def size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def input_settings(archive: Path, annotations: Path, weights: Path) -> dict:
    """Params that point the Market-1501 config at a local archive, annotation folder and
    weights folder (the rehearsal and the scaled test in the suite share them)."""
    return {
        "data.archive": str(archive),
        "data.checksum": None,
        "pose.annotations": [str(annotations / "market-annotation-train.csv"),
                             str(annotations / "market-annotation-test.csv")],
        "pose.weights": str(weights / "yolo11n-pose.pt"),
        "pairs.test_list": str(annotations / "market-pairs-test.csv"),
        "loss.vgg_weights": str(weights / "vgg19_features_caffe_rgb_fp16.pt"),
        "evaluate.pose_weights": str(weights / "yolo11n-pose.pt"),
        "evaluate.download": False,
    }


def make_market_project(dest: Path, changes: dict) -> Path:
    """The project's code with the paper's Market-1501 config groups + changes, committed."""
    return make_project(dest, changes, groups={"dataset": "market1501", "mode": "paper"})


def run_stage(project: Path, stage: str, env: dict, log: Path) -> dict:
    dvc = str(Path(sys.executable).parent / "dvc")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, dvc, "repro", "-s", stage],
                          cwd=project, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    rss = [int(l.split()[1]) for l in proc.stderr.splitlines() if l.startswith("PEAK_RSS_KB")]
    out = {"stage": stage, "rc": proc.returncode, "wall_s": round(wall, 1),
           "peak_rss_mb": round(rss[-1] / 1024, 0) if rss else None,
           "bytes_written": sum(size_of(project / p) for p in OUTS[stage])}
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", help="project folder (default: a new temp folder)")
    ap.add_argument("--archive", help="Market-shaped zip (default: generate into --work)")
    ap.add_argument("--annotations", default=str(SHARED / "data" / "market1501-annotations"))
    ap.add_argument("--weights", default=str(SHARED / "weights"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-pairs", type=int, default=None, help="evaluate.max_pairs (default all)")
    ap.add_argument("--ids-fraction", type=float, default=1.0,
                    help="a scaled archive (subset annotations and pairs are written too)")
    ap.add_argument("--stages", nargs="+", default=list(STAGES))
    ap.add_argument("--set", nargs="*", default=[], help="extra dotted.key=yaml-value params")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    ann = Path(args.annotations).resolve()
    weights = Path(args.weights).resolve()
    archive = Path(args.archive).resolve() if args.archive else work / "Market-1501-v15.09.15.zip"
    subset = work / "annotations" if args.ids_fraction < 1 else None
    if not archive.is_file() or subset is not None:
        from pipeline.datasets.synthetic.market_archive import build

        info = build(ann, archive, fraction=args.ids_fraction, workers=2, subset_dir=subset)
        print(f"archive: {info['images']} images {info['per_split']} in {info['seconds']} s "
              f"({info['images_per_s']} images/s, {info['bytes'] / 1e6:.0f} MB) -> {archive}")
    ann_dir = subset or ann

    project = work / "project"
    if project.exists():
        shutil.rmtree(project)
    import yaml

    changes = {
        **input_settings(archive, ann_dir, weights),
        "train.steps": args.steps,
        "train.checkpoint_every": args.steps,
        "train.log_every": max(args.steps // 4, 1),
        "train.sample_every": args.steps,
        "evaluate.max_pairs": args.max_pairs,
        **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)},
    }
    make_market_project(project, changes)
    env = project_env()
    env["DEFORMABLE_GAN_WEIGHTS"] = str(weights)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{project / 'mlflow.db'}"
    print(f"project: {project}  (load average at start: {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")

    rows = []
    for stage in args.stages:
        row = run_stage(project, stage, env, work / f"{stage}.log")
        rows.append(row)
        print(json.dumps(row), flush=True)
        if row["rc"] != 0:
            break
    report(project, rows, args.steps)
    print(f"load average at end: {os.getloadavg()[0]:.1f}; logs in {work}")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


def report(project: Path, rows: list[dict], steps: int) -> None:
    print("\n| stage | wall | peak RSS | bytes written | notes |\n|---|---|---|---|---|")
    for r in rows:
        note = r.get("error", "")
        if r["stage"] == "train" and r["rc"] == 0:
            note = train_note(project, r["wall_s"], steps)
        if r["stage"] == "evaluate" and r["rc"] == 0:
            note = eval_note(project, r["wall_s"])
        rss = "?" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} MB"
        print(f"| {r['stage']} | {r['wall_s']:.0f} s | {rss} | "
              f"{r['bytes_written'] / 1e6:.1f} MB | {note} |")
    data = [r["wall_s"] for r in rows if r["stage"] in DATA_STAGES]
    print(f"data stages together: {sum(data):.0f} s")


def train_note(project: Path, wall: float, steps: int) -> str:
    m = json.loads((project / "metrics" / "train.json").read_text())
    ips = m.get("images_per_sec") or 0
    step = FULL_BATCH / ips if ips else wall / steps
    full_h = step * FULL_STEPS / 3600
    return (f"{step:.2f} s/step ({ips:.2f} generator images/s); 90,000 steps at batch 4: "
            f"{full_h:.0f} h on this CPU")


def eval_note(project: Path, wall: float) -> str:
    pairs = __import__("pandas").read_parquet(project / "data" / "evaluation" / "per_pair.parquet")
    n = len(pairs) if "model" not in pairs.columns else pairs["model"].value_counts().max()
    return f"{n} pairs scored in {wall:.0f} s ({n / wall:.1f} pairs/s, incl. DVC start)"


if __name__ == "__main__":
    sys.exit(main())
