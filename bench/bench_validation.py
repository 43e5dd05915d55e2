"""Cost of validation during training, against the training it interrupts (one run, one machine).

For each params file or config-group choice (default: params.yaml, the quickstart, and
`dataset=market1501,mode=paper`, the paper's Market-1501 config composed from conf/):
build the run's trainer, time train steps (one loader batch of batch_size * batches_per_step
pairs each) and a validation of train.val_pairs pairs (pipeline.train.validation.validate: eval
mode, no grad, the setup's autocast, SSIM + mask-SSIM + masked L1), and print

    fraction = t_validation / (val_every * t_step + t_validation)

the share of wall time validation takes at that params file's val_every. With --pose-weights
it also times the YOLO detection PCKh would add on the same generated images.
Synthetic in-memory pairs (noise images, a jittered standing pose, Gaussian heatmaps): the
networks' cost does not depend on the pixels; JPEG decoding (done by loader workers during
training, in the main process for validation) is left out on both sides.

    python bench/bench_validation.py [--params params.yaml dataset=market1501,mode=paper]
        [--steps 3] [--weights-dir ../shared/weights] [--pose-weights ../shared/weights/yolo11n-pose.pt]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stages.params import compose  # noqa: E402

# A standing person in 128x64 pixels, OpenPose-18 order (x, y).
BASE_POSE = np.array([
    [32, 14], [32, 28], [22, 28], [19, 46], [17, 62], [42, 28], [45, 46], [47, 62],
    [26, 66], [25, 90], [24, 114], [38, 66], [39, 90], [40, 114], [29, 11], [35, 11],
    [26, 13], [38, 13]], dtype=np.float32)


class MemoryPairs:
    """n pairs of the training item layout (pipeline/data/pair_dataset.py), generated once."""

    def __init__(self, n: int, height: int, width: int, sigma: float, seed: int = 0):
        from pipeline.data.heatmaps import render_heatmaps

        g = torch.Generator().manual_seed(seed)
        scale = torch.tensor([width / 64, height / 128])
        kp = (torch.from_numpy(BASE_POSE) + torch.randn(2 * n, 18, 2, generator=g) * 3) * scale
        self.kp = kp
        self.maps = torch.as_tensor(render_heatmaps(kp, height, width, sigma)).float()
        self.img = torch.rand(2 * n, 3, height, width, generator=g) * 2 - 1
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitems__(self, indices):
        return [{"xa": self.img[i], "xb": self.img[self.n + i], "ha": self.maps[i],
                 "hb": self.maps[self.n + i], "kpa": self.kp[i], "kpb": self.kp[self.n + i],
                 "index": int(i), "name_a": f"{i % 8:04d}_a.jpg", "name_b": f"{i % 8:04d}_b.jpg"}
                for i in indices]


def bench(params_file: str, steps: int, pose_weights: str | None) -> dict[str, float]:
    from pipeline.core.config import load_params
    from pipeline.data.pair_dataset import collate_pairs
    from pipeline.core.device import setup_device
    from pipeline.train.gan_trainer import build_trainer
    from pipeline.eval.samples import generate, to_uint8
    from pipeline.train.validation import ValidationSet, validate

    params = load_params(params_file)
    tc, img = params.train, params.image
    setup = setup_device(tc.device, tc.amp)
    torch.manual_seed(0)
    trainer = build_trainer(params, setup)
    loader_batch = tc.batch_size * int(getattr(trainer, "batches_per_step", 1))
    train_pairs = MemoryPairs(loader_batch, img.height, img.width, params.heatmaps.sigma, seed=1)
    batch = collate_pairs(train_pairs.__getitems__(range(loader_batch)))
    trainer.step(batch)  # warm-up (allocations, autotuning)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(batch)
    t_step = (time.perf_counter() - t0) / steps

    vset = ValidationSet(MemoryPairs(tc.val_pairs, img.height, img.width, params.heatmaps.sigma),
                         np.arange(tc.val_pairs))
    validate(trainer.G, vset, setup)  # warm-up
    t0 = time.perf_counter()
    validate(trainer.G, vset, setup)
    t_val = time.perf_counter() - t0
    out = {"t_step": t_step, "t_val": t_val, "val_every": tc.val_every, "val_pairs": tc.val_pairs,
           "fraction": t_val / (tc.val_every * t_step + t_val) if tc.val_every > 0 else 0.0}
    if pose_weights:
        from pipeline.metrics import detection

        det = detection.load_detector(pose_weights, setup.device.type)
        gen = np.concatenate([to_uint8(generate(trainer.G, b, setup)) for b in vset.batches()])
        detection.detect(gen[:8], det, params.pose)  # warm-up
        t0 = time.perf_counter()
        detection.detect(gen, det, params.pose)
        out["t_pckh"] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", nargs="+", default=["params.yaml", "dataset=market1501,mode=paper"])
    ap.add_argument("--steps", type=int, default=3, help="timed train steps per config")
    ap.add_argument("--weights-dir", default=str(ROOT.parent / "shared" / "weights"),
                    help="$DEFORMABLE_GAN_WEIGHTS for the VGG19 of the NN loss")
    ap.add_argument("--pose-weights", default=None, help="YOLO pose weights: also time PCKh's detection")
    args = ap.parse_args()
    if Path(args.weights_dir).is_dir():
        os.environ.setdefault("DEFORMABLE_GAN_WEIGHTS", args.weights_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda {torch.cuda.is_available()}, cpu {os.cpu_count()} cores")
    print(f"{'params':<26}{'s/step':>9}{'val_pairs':>10}{'s/val':>8}{'val_every':>10}{'fraction':>10}"
          f"{'s/PCKh':>8}")
    for pf in args.params:
        if "=" in pf:  # config groups: compose them into a temporary params file
            out = Path(tempfile.mkdtemp()) / "params.yaml"
            compose(out, pf.split(","))
            pf_path = str(out)
        else:
            pf_path = str(ROOT / pf) if not Path(pf).is_absolute() else pf
        r = bench(pf_path, args.steps, args.pose_weights)
        pckh = f"{r['t_pckh']:>8.2f}" if "t_pckh" in r else f"{'-':>8}"
        print(f"{pf:<26}{r['t_step']:>9.3f}{r['val_pairs']:>10}{r['t_val']:>8.2f}{r['val_every']:>10}"
              f"{r['fraction']:>9.2%} {pckh}", flush=True)


if __name__ == "__main__":
    main()
