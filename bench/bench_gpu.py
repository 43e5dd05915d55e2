"""GPU benchmark: train-step throughput, numerics, a short real training and the scorer on CUDA.

    python -m bench.bench_gpu --prepare data/bench_gpu.npz     # on our CPU: synthetic pairs
    python -m bench.bench_gpu --data data/bench_gpu.npz --out gpu.json     # on the GPU
    python -m bench.bench_gpu --device cpu --steps 2 --widths tiny ...     # smoke test

Needs torch, torchvision (optional) and numpy only: no pandas/cv2/yaml/mlflow is imported
(--prepare excepted, which renders pipeline.datasets.synthetic people on our machine), so it runs on a
bare GPU machine. The data is an .npz of rendered pairs (images uint8 [N, H, W, 3] RGB,
keypoints [N, 18, 2], pairs [P, 2]); without --data, textured noise with random poses.
Batches are assembled on the device (heatmaps rendered there), and GanTrainer is driven
directly, with no DataLoader.

Sections (each one's figures, or its error, go to the JSON of --out):
 1. throughput: the paper-width model (--mode paper: the original everything, three
    batches per iteration; plus: our options, one batch) at each of --batches, for float32
    without TF32 (what train.amp false runs: the paper's exact float32), float32 with TF32,
    bf16 autocast, + channels_last, + torch.compile, + CUDA graphs (compile mode
    reduce-overhead); ms/step, generator-updated images/s, peak GPU memory; the projected
    wall time of the paper schedule (89,000 steps at batch 4, the original's last checkpoint)
    with the fastest batch-4 setting, and of the same 356,000 images at the best batch.
 2. numerics: the losses of a fixed batch (G in eval mode, no update) on the device in
    float32 (TF32 off) against CPU float32 (tolerance rel 1e-3), float32 with TF32 and bf16
    autocast against float32 on the device (tolerance rel 5e-2 + abs 2e-3).
 3. training: --train-seconds of real training at batch --train-batch with the fastest
    setting: no NaN, a checkpoint at half time (torch.save / torch.load(weights_only=True)),
    and a resumed trainer that repeats the steps after it (exactly on CPU; max relative
    loss difference reported on CUDA, whose kernels are not all deterministic).
 4. scorer: protocol SSIM and mask-SSIM (pipeline.metrics.ssim / masks, the scorer's own
    functions) of generated test pairs on the device, pairs/s.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

FORBIDDEN = ("pandas", "cv2", "yaml", "mlflow")
PAPER_STEPS, PAPER_BATCH = 89_000, 4
HEATMAP_SIGMA = 6.0  # heatmaps.sigma at 128x64
TINY = dict(encoder_widths=(8, 16, 16, 32, 32, 32), decoder_widths=(32, 32, 32, 16, 8),
            disc_widths=(8, 16, 16, 32))
OURS = dict(norm="instance", block_bias=True, disc_head="patch", init="normal", affine_fit="lstsq",
            part_masks="rect", warp_sampling="bilinear")
# name -> (autocast, channels_last, torch.compile mode, TF32 allowed). fp32 is what
# train.amp false runs on CUDA (TF32 off: pipeline.core.device.set_tf32); the bf16 settings
# allow TF32 for what stays float32, as train.amp true does.
SETTINGS: dict[str, tuple[bool, bool, str | None, bool]] = {
    "fp32": (False, False, None, False),
    "tf32": (False, False, None, True),
    "bf16": (True, False, None, True),
    "bf16+cl": (True, True, None, True),
    "bf16+cl+compile": (True, True, "default", True),
    "bf16+cl+cudagraphs": (True, True, "reduce-overhead", True),
}
FP32_RTOL, FP32_ATOL = 1e-3, 1e-5
AMP_RTOL, AMP_ATOL = 5e-2, 2e-3


# --------------------------------------------------------------------------- data


def prepare(out: Path, images: int, height: int, width: int, seed: int = 0, per_id: int = 8) -> dict:
    """Render `images` synthetic people (pipeline.datasets.synthetic, our CPU) into an .npz."""
    from pipeline.datasets.synthetic import make_identity, render_sample

    ids = max(2, math.ceil(images / per_id))
    imgs, kps, pids = [], [], []
    for pid in range(1, ids + 1):
        ident = make_identity(seed, pid)
        for k in range(per_id):
            s = render_sample(seed, ident, k, height, width)
            imgs.append(s.image[:, :, ::-1])  # BGR -> RGB
            kps.append(s.keypoints.astype(np.float32))
            pids.append(pid)
    pid = np.asarray(pids)
    a, b = np.nonzero((pid[:, None] == pid[None, :]) & ~np.eye(len(pid), dtype=bool))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=np.stack(imgs).astype(np.uint8), keypoints=np.stack(kps),
                        person_ids=pid, pairs=np.stack([a, b], 1).astype(np.int64))
    return {"file": str(out), "images": len(imgs), "pairs": len(a), "height": height, "width": width}


@dataclasses.dataclass
class Data:
    images: torch.Tensor     # uint8 [N, 3, H, W] on the device
    keypoints: torch.Tensor  # float32 [N, 18, 2] (x, y), -1 missing
    pairs: torch.Tensor      # int64 [P, 2] (source, target) image indices, on CPU
    source: str

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])


def load_data(path: str | None, device: torch.device, height: int = 128, width: int = 64) -> Data:
    if path:
        with np.load(path) as z:
            imgs, kp, pairs = z["images"], z["keypoints"], z["pairs"]
        source = f"{path} ({len(imgs)} images, {len(pairs)} pairs)"
    else:  # textured noise and random in-frame poses: the same cost, no content
        rng = np.random.default_rng(0)
        n = 64
        coarse = rng.integers(0, 256, (n, height // 8, width // 8, 3), dtype=np.uint8)
        imgs = np.repeat(np.repeat(coarse, 8, 1), 8, 2)
        kp = rng.uniform([0.2 * width, 0.1 * height], [0.8 * width, 0.9 * height], (n, 18, 2)).astype(np.float32)
        idx = np.arange(n)
        pairs = np.stack([idx, (idx + 1) % n], 1)
        source = f"random ({n} images)"
    return Data(torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).contiguous().to(device),
                torch.from_numpy(np.asarray(kp, np.float32)).to(device),
                torch.from_numpy(np.asarray(pairs, np.int64)), source)


def heatmaps(kp: torch.Tensor, height: int, width: int, sigma: float = HEATMAP_SIGMA) -> torch.Tensor:
    """[B, 18, 2] keypoints -> [B, 18, H, W] Gaussians exp(-d^2 / 2 sigma^2), 0 where missing
    (pipeline.data.heatmaps' formula, separable)."""
    ok = ((kp[..., 0] >= 0) & (kp[..., 1] >= 0)).float()
    rows = torch.arange(height, device=kp.device, dtype=torch.float32)
    cols = torch.arange(width, device=kp.device, dtype=torch.float32)
    gy = torch.exp(-(rows - kp[..., 1:2]) ** 2 / (2 * sigma ** 2)) * ok[..., None]
    gx = torch.exp(-(cols - kp[..., 0:1]) ** 2 / (2 * sigma ** 2))
    return gy[..., :, None] * gx[..., None, :]


def make_batch(data: Data, pair_idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Pairs -> the trainer's batch (xa, xb [B, 3, H, W] in [-1, 1], ha, hb, kpa, kpb)."""
    ab = data.pairs[pair_idx].to(data.images.device)
    h, w = data.hw
    out = {}
    for side, col in (("a", 0), ("b", 1)):
        img = data.images[ab[:, col]]
        kp = data.keypoints[ab[:, col]]
        out[f"x{side}"] = img.float() / 127.5 - 1
        out[f"h{side}"] = heatmaps(kp, h, w)
        out[f"kp{side}"] = kp
    return out


class PairStream:
    """Seeded random pair indices (a CPU generator whose state a checkpoint can hold)."""

    def __init__(self, data: Data, seed: int = 0):
        self.data, self.gen = data, torch.Generator().manual_seed(seed)

    def next(self, n: int) -> dict[str, torch.Tensor]:
        return make_batch(self.data, torch.randint(len(self.data.pairs), (n,), generator=self.gen))


# --------------------------------------------------------------------------- trainer


def random_vgg(path: Path) -> str:
    """VGG19 conv1_1 / conv1_2 with random weights (the NN loss's cost without the file)."""
    g = torch.Generator().manual_seed(0)
    state = {"0.weight": torch.randn(64, 3, 3, 3, generator=g) * (2 / 27) ** 0.5, "0.bias": torch.zeros(64),
             "2.weight": torch.randn(64, 64, 3, 3, generator=g) * (2 / 576) ** 0.5, "2.bias": torch.zeros(64)}
    torch.save(state, path)
    return str(path)


def make_params(mode: str, widths: str, batch: int, hw: tuple[int, int], vgg: str):
    from pipeline.core.config import ImageConfig, LossConfig, ModelConfig, Params, TrainConfig

    model = ModelConfig(**(TINY if widths == "tiny" else {}), **({} if mode == "paper" else OURS))
    return Params(image=ImageConfig(*hw), model=model, loss=LossConfig(vgg_weights=vgg),
                  train=TrainConfig(batch_size=batch, batches_per_step=3 if mode == "paper" else 1))


def device_setup(device: torch.device, setting: str):
    from pipeline.core.device import DeviceSetup, cuda_amp_dtype

    amp, cl, _, _ = SETTINGS[setting]
    dtype = (cuda_amp_dtype() if device.type == "cuda" else torch.bfloat16) if amp else None
    return DeviceSetup(device, amp_dtype=dtype, use_scaler=dtype == torch.float16, channels_last=cl)


def make_trainer(params, device: torch.device, setting: str, seed: int = 0):
    from pipeline.train.gan_trainer import build_trainer

    torch.manual_seed(seed)  # the weights are drawn on the CPU: the same on every device
    trainer = build_trainer(params, device_setup(device, setting))
    mode = SETTINGS[setting][2]
    if mode:
        trainer.G.compile(mode=mode)
        trainer.D.compile(mode=mode)
    return trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# --------------------------------------------------------------------------- sections


def time_setting(args, data: Data, device: torch.device, setting: str, batch: int, vgg: str) -> dict:
    with tf32(device, SETTINGS[setting][3]):
        return _time_setting(args, data, device, setting, batch, vgg)


def _time_setting(args, data: Data, device: torch.device, setting: str, batch: int, vgg: str) -> dict:
    params = make_params(args.mode, args.widths, batch, data.hw, vgg)
    trainer = make_trainer(params, device, setting)
    stream = PairStream(data, seed=batch)
    n = batch * trainer.batches_per_step
    batches = [stream.next(n) for _ in range(2)]
    warmup = args.warmup + (3 if SETTINGS[setting][2] else 0)  # compile / graph capture
    t_first = time.perf_counter()
    for i in range(warmup):
        trainer.step(batches[i % 2])
    _sync(device)
    warm_s = time.perf_counter() - t_first
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(args.steps):
        terms = trainer.step(batches[i % 2])
    _sync(device)
    sec = (time.perf_counter() - t0) / args.steps
    finite = bool(torch.stack([v.float() for v in terms.values()]).isfinite().all())
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"setting": setting, "batch": batch, "ms_per_step": 1e3 * sec, "images_per_sec": batch / sec,
            "pairs_per_sec": n / sec, "peak_gpu_gib": peak, "warmup_s": warm_s, "finite": finite}


def throughput(args, data: Data, device: torch.device, vgg: str, deadline: float) -> dict:
    rows: list[dict] = []
    batches = [int(b) for b in args.batches.split(",")]
    settings = [s for s in args.settings.split(",") if s]
    plain = [s for s in settings if not SETTINGS[s][2]]
    compiled = [s for s in settings if SETTINGS[s][2]]

    def run(setting: str, batch: int) -> bool:
        if time.perf_counter() > deadline:
            rows.append({"setting": setting, "batch": batch, "skipped": "time budget"})
            return False
        try:
            row = time_setting(args, data, device, setting, batch, vgg)
        except Exception as exc:  # noqa: BLE001 - record and go on with the other settings
            rows.append({"setting": setting, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:300]})
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return not _oom(exc)
        rows.append(row)
        print(f"  {setting:<20} batch {batch:>4}: {row['ms_per_step']:9.1f} ms/step "
              f"{row['images_per_sec']:9.1f} img/s  peak {row['peak_gpu_gib'] or 0:6.2f} GiB", flush=True)
        return True

    for setting in plain:
        for batch in batches:
            if not run(setting, batch):
                break  # out of memory or time: larger batches would fail too
    timed = [r for r in rows if "ms_per_step" in r]
    best = max(timed, key=lambda r: r["images_per_sec"]) if timed else None
    compile_batches = sorted({PAPER_BATCH if PAPER_BATCH in batches else batches[0]} |
                             ({best["batch"]} if best else set()))
    for setting in compiled:
        for batch in compile_batches:
            run(setting, batch)
    timed = [r for r in rows if "ms_per_step" in r]
    out: dict[str, Any] = {"rows": rows}
    at4 = [r for r in timed if r["batch"] == PAPER_BATCH]
    if at4:
        f4 = min(at4, key=lambda r: r["ms_per_step"])
        out["paper_schedule_batch4"] = {"setting": f4["setting"], "ms_per_step": f4["ms_per_step"],
                                        "hours": PAPER_STEPS * f4["ms_per_step"] / 3.6e6,
                                        "minutes": PAPER_STEPS * f4["ms_per_step"] / 6e4}
    if timed:
        best = max(timed, key=lambda r: r["images_per_sec"])
        images = PAPER_STEPS * PAPER_BATCH
        out["best"] = {"setting": best["setting"], "batch": best["batch"],
                       "images_per_sec": best["images_per_sec"],
                       "paper_images_minutes": images / best["images_per_sec"] / 60}
    return out


def fixed_losses(trainer, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Every loss term of one fixed batch, no update: G in eval mode (no dropout, so no RNG),
    D on real and generated, the generator's losses against the real target."""
    from pipeline.model.checkpoint import unwrap

    G, D, setup = unwrap(trainer.G), trainer.D, trainer.setup
    b = trainer.to_device(batch)
    G.eval()
    try:
        with torch.no_grad(), setup.autocast():
            fake = G(b["xa"], b["ha"], b["hb"], b["kpa"], b["kpb"])
            out = D(torch.cat([b["xa"], b["xa"]]), torch.cat([b["ha"], b["ha"]]),
                    torch.cat([b["xb"], fake.image]), torch.cat([b["hb"], b["hb"]]))
            _, d_terms = trainer.losses.discriminator(*out.chunk(2))
            g_total, g_terms = trainer.losses.generator(fake.image, b["xb"], D(b["xa"], b["ha"], fake.image, b["hb"]),
                                                        fake.offsets)
    finally:
        G.train()
    terms = {**{k if k.startswith("g_") else f"g_{k}": v for k, v in g_terms.items()},
             "g_total": g_total, **d_terms}
    return {k: float(v) for k, v in terms.items()}


def _compare(got: dict[str, float], ref: dict[str, float], rtol: float, atol: float) -> dict:
    rel = {k: abs(got[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref}
    ok = all(abs(got[k] - ref[k]) <= atol + rtol * abs(ref[k]) for k in ref)
    return {"max_rel_diff": max(rel.values()), "rel_diff": rel, "rtol": rtol, "atol": atol, "pass": ok}


@contextlib.contextmanager
def tf32(device: torch.device, allowed: bool):
    """TF32 for float32 convolutions and matmuls on or off (set_tf32, as setup_device sets it
    from train.amp) for the block, restored after; nothing to do off CUDA."""
    if device.type != "cuda":
        yield
        return
    from pipeline.core.device import set_tf32

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_tf32(allowed)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def numerics(args, data: Data, device: torch.device, vgg: str) -> dict:
    params = make_params(args.mode, args.widths, PAPER_BATCH, data.hw, vgg)
    batch = PairStream(data, seed=123).next(PAPER_BATCH)
    cpu_batch = {k: v.cpu() for k, v in batch.items()}
    ref = fixed_losses(make_trainer(params, torch.device("cpu"), "fp32"), cpu_batch)
    with tf32(device, False):
        fp32 = fixed_losses(make_trainer(params, device, "fp32"), batch)
    with tf32(device, True):
        tf = fixed_losses(make_trainer(params, device, "tf32"), batch)
        bf16 = fixed_losses(make_trainer(params, device, "bf16+cl"), batch)
    return {"cpu_fp32": ref, "device_fp32": fp32, "device_tf32": tf, "device_bf16": bf16,
            "fp32_vs_cpu": _compare(fp32, ref, FP32_RTOL, FP32_ATOL),
            "tf32_vs_fp32": _compare(tf, fp32, AMP_RTOL, AMP_ATOL),
            "bf16_vs_fp32": _compare(bf16, fp32, AMP_RTOL, AMP_ATOL)}


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def training(args, data: Data, device: torch.device, setting: str, vgg: str, workdir: Path) -> dict:
    params = make_params(args.mode, args.widths, args.train_batch, data.hw, vgg)
    trainer = make_trainer(params, device, setting)
    stream = PairStream(data, seed=7)
    n = args.train_batch * trainer.batches_per_step
    ckpt, ckpt_step, log = workdir / "bench_gpu_checkpoint.pt", None, []
    t0 = time.perf_counter()
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= args.train_seconds and ckpt_step is not None and len(log) >= ckpt_step + args.resume_steps:
            break
        if ckpt_step is None and elapsed >= args.train_seconds / 2:
            torch.save({"trainer": trainer.state_dict(), "step": len(log), "rng": _rng_state(device),
                        "stream": stream.gen.get_state()}, ckpt)
            ckpt_step = len(log)
        terms = trainer.step(stream.next(n))
        log.append({k: float(v) for k, v in terms.items()})
        if not all(math.isfinite(v) for v in log[-1].values()):
            return {"error": f"non-finite loss at step {len(log)}: {log[-1]}", "steps": len(log)}
    seconds = time.perf_counter() - t0

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    resumed = make_trainer(params, device, setting, seed=1)
    resumed.load_state_dict(state["trainer"], params.train.lr, params.train.betas)
    _set_rng(state["rng"], device)
    stream.gen.set_state(state["stream"])
    again = [{k: float(v) for k, v in resumed.step(stream.next(n)).items()} for _ in range(args.resume_steps)]
    want = log[state["step"]:state["step"] + args.resume_steps]
    rel = max(abs(a[k] - w[k]) / max(abs(w[k]), 1e-12) for a, w in zip(again, want) for k in w)
    return {"setting": setting, "batch": args.train_batch, "steps": len(log), "seconds": seconds,
            "images_per_sec": len(log) * args.train_batch / seconds, "all_finite": True,
            "checkpoint": str(ckpt), "checkpoint_bytes": ckpt.stat().st_size, "checkpoint_step": state["step"],
            "resumed_steps": len(again), "resume_max_rel_diff": rel, "resume_exact": again == want,
            "first_losses": log[0], "last_losses": log[-1]}


def scorer(args, data: Data, device: torch.device, vgg: str, setting: str) -> dict:
    from pipeline.model.checkpoint import unwrap
    from pipeline.metrics.masks import person_masks
    from pipeline.metrics.ssim import ssim_nchw

    params = make_params(args.mode, args.widths, PAPER_BATCH, data.hw, vgg)
    G = unwrap(make_trainer(params, device, setting).G).eval()
    stream, n, chunk = PairStream(data, seed=11), args.score_pairs, 64
    h, w = data.hw

    def to_uint8(x: torch.Tensor) -> torch.Tensor:
        return ((x.float().clamp(-1, 1) + 1) * 127.5).round()

    gen_s, score_s, values = 0.0, 0.0, {"ssim": [], "mask_ssim": []}
    for s in range(0, n, chunk):
        b = stream.next(min(chunk, n - s))
        t = time.perf_counter()
        with torch.no_grad(), device_setup(device, setting).autocast():
            fake = to_uint8(G(b["xa"], b["ha"], b["hb"], b["kpa"], b["kpb"]).image)
        _sync(device)
        t1 = time.perf_counter()
        real = to_uint8(b["xb"])
        # The protocol in float64 (pipeline.metrics.scoring's dtype for SSIM).
        x, y = real.double(), fake.double()
        dr = y.flatten(1).amax(1) - y.flatten(1).amin(1)
        values["ssim"].append(ssim_nchw(x, y, dr))
        m = person_masks(b["kpb"], h, w).to(device)[:, None]
        xm, ym = x * m, y * m
        drm = ym.flatten(1).amax(1) - ym.flatten(1).amin(1)
        values["mask_ssim"].append(ssim_nchw(xm, ym, drm))
        _sync(device)
        gen_s, score_s = gen_s + t1 - t, score_s + time.perf_counter() - t1
    return {"pairs": n, "generate_pairs_per_sec": n / gen_s, "score_pairs_per_sec": n / score_s,
            "mean_ssim": float(torch.cat(values["ssim"]).mean()),
            "mean_mask_ssim": float(torch.nanmean(torch.cat(values["mask_ssim"]))),
            "note": "untrained G; SSIM and mask-SSIM in float64 as the scorer computes them"}


# --------------------------------------------------------------------------- main


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "numpy": np.__version__, "device": str(device),
           "threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", memory_gib=p.total_memory / 2**30,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return env


def _section(results: dict, name: str, fn: Callable[[], dict]) -> dict | None:
    t = time.perf_counter()
    print(f"[{name}]", flush=True)
    try:
        results[name] = fn()
    except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    results[name]["section_seconds"] = time.perf_counter() - t
    print(json.dumps(results[name], default=str)[:1500], flush=True)
    return results[name]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prepare", metavar="OUT.npz", help="render synthetic pairs into OUT.npz and exit")
    ap.add_argument("--prepare-images", type=int, default=512)
    ap.add_argument("--data", help=".npz from --prepare (default: random textures and poses)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--mode", choices=("paper", "plus"), default="paper")
    ap.add_argument("--widths", choices=("paper", "tiny"), default="paper")
    ap.add_argument("--batches", default="4,16,64,128,256")
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--train-seconds", type=float, default=120.0)
    ap.add_argument("--train-batch", type=int, default=PAPER_BATCH)
    ap.add_argument("--resume-steps", type=int, default=3)
    ap.add_argument("--score-pairs", type=int, default=1024)
    ap.add_argument("--vgg", help="VGG19 features weights file (default: random conv1 weights; same cost)")
    ap.add_argument("--time-budget", type=float, default=420.0,
                    help="seconds for the throughput sweep; later settings are skipped")
    ap.add_argument("--out", help="write the figures as JSON here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.prepare:
        print(json.dumps(prepare(Path(args.prepare), args.prepare_images, 128, 64)))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("bench_gpu: --device cuda but CUDA is not available (use --device cpu for the smoke test)")
            return 2
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    results: dict[str, Any] = {"environment": environment(device), "args": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        vgg = args.vgg or random_vgg(Path(tmp) / "vgg_conv1.pt")
        results["vgg"] = args.vgg or "random conv1 weights (timing and comparisons only)"
        data = load_data(args.data, device)
        results["data"] = data.source
        deadline = time.perf_counter() + args.time_budget
        tp = _section(results, "throughput", lambda: throughput(args, data, device, vgg, deadline))
        fastest = (tp.get("paper_schedule_batch4") or {}).get("setting", "bf16+cl")
        _section(results, "numerics", lambda: numerics(args, data, device, vgg))
        with tf32(device, SETTINGS[fastest][3]):
            _section(results, "training", lambda: training(args, data, device, fastest, vgg, Path(tmp)))
            _section(results, "scorer", lambda: scorer(args, data, device, vgg, fastest))
    results["forbidden_modules_loaded"] = [m for m in FORBIDDEN if m in sys.modules]
    summary(results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


def precision_pairs(rows: list[dict]) -> dict[int, dict[str, float]]:
    """{batch: {"fp32": ms, "bf16": ms}} for the batches timed in both settings."""
    ms: dict[int, dict[str, float]] = {}
    for row in rows:
        if row.get("setting") in ("fp32", "bf16") and "ms_per_step" in row:
            ms.setdefault(row["batch"], {})[row["setting"]] = row["ms_per_step"]
    return {b: v for b, v in ms.items() if len(v) == 2}


def summary(r: dict) -> None:
    env = r["environment"]
    print(f"\n== bench_gpu on {env.get('gpu', env['device'])} (torch {env['torch']}) ==")
    tp = r.get("throughput", {})
    if "paper_schedule_batch4" in tp:
        p = tp["paper_schedule_batch4"]
        print(f"paper schedule (89,000 steps at batch 4, {p['setting']}): {p['ms_per_step']:.1f} ms/step "
              f"-> {p['minutes']:.1f} min")
    for batch, pair in sorted(precision_pairs(tp.get("rows", [])).items()):
        print(f"batch {batch}: float32 without TF32 {pair['fp32']:.1f} ms/step, bf16 "
              f"{pair['bf16']:.1f} ms/step ({pair['fp32'] / pair['bf16']:.2f}x)")
    if "best" in tp:
        b = tp["best"]
        print(f"best: {b['setting']} at batch {b['batch']}: {b['images_per_sec']:.0f} img/s "
              f"-> the paper schedule's 356,000 images in {b['paper_images_minutes']:.1f} min")
    nm = r.get("numerics", {})
    for key in ("fp32_vs_cpu", "tf32_vs_fp32", "bf16_vs_fp32"):
        if key in nm:
            c = nm[key]
            print(f"numerics {key}: max rel diff {c['max_rel_diff']:.2e} (rtol {c['rtol']}, atol {c['atol']}): "
                  f"{'pass' if c['pass'] else 'FAIL'}")
    tr = r.get("training", {})
    if "steps" in tr and "error" not in tr:
        print(f"training: {tr['steps']} steps in {tr['seconds']:.0f} s, finite, checkpoint at step "
              f"{tr['checkpoint_step']}, resume max rel diff {tr['resume_max_rel_diff']:.2e}")
    sc = r.get("scorer", {})
    if "score_pairs_per_sec" in sc:
        print(f"scorer: SSIM + mask-SSIM {sc['score_pairs_per_sec']:.0f} pairs/s")
    errors = [k for k, v in r.items() if isinstance(v, dict) and "error" in v]
    print(f"sections with errors: {errors or 'none'}; forbidden modules loaded: {r['forbidden_modules_loaded'] or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
