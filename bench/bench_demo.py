"""Web demo latency: one request end to end (decode, pose, generate, encode) at the
quickstart's widths and at the paper's, against its parts measured in the same run.

    python -m bench.bench_demo [--repeats 15] [--device auto]
                               [--pose-weights ../shared/weights/yolo11n-pose.pt]
                               [--images ../shared/data/market1501-sample]

Both generators are built from conf/ as the pipeline composes it (dataset=synthetic
mode=plus: the quickstart; dataset=market1501 mode=paper: the authors' model), randomly
initialised (the latency does not depend on the weights), saved and loaded as a trained one
is. One request = a gallery-pose request of the demo on a real Market-1501 photo: decode it
(with the pixel-cap check), YOLO on it, generate, write the PNG, draw the pictures shown
beside it. Rows, median of --repeats interleaved runs (wall ms; process CPU ms):
  generate only       Reposer.generate on an already cropped person (the baseline)
  pose only           YOLO on the photo (one image)
  request (handler)   app.handlers.Demo.repose_gallery: what the server runs per request
  request (HTTP)      the same through gradio_client against the page served on 127.0.0.1
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEFORMABLE_GAN_SHARED") or ROOT.parent / "shared")  # as tests/conftest.py
CONFIGS = {"quickstart": ("dataset=synthetic", "mode=plus"), "paper": ("dataset=market1501", "mode=paper")}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def medians(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each function, runs interleaved so that load from other
    processes on a shared machine hits every row alike."""
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            runs[k].append(timed(fn))
    return {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}


def save_model(name: str, folder: Path) -> tuple[Path, tuple[int, ...]]:
    """A randomly initialised generator of config `name` saved as training saves one ->
    (file, encoder widths)."""
    import torch

    from pipeline.model.build import build_generator
    from pipeline.model.checkpoint import save_generator
    from stages.params import composed

    params = composed(*CONFIGS[name])
    torch.manual_seed(0)
    G = build_generator(params.model, params.image.height, params.image.width)
    path = save_generator(folder / f"{name}.pt", G, params.model, params.image, {"run_id": None})
    return path, params.model.encoder_widths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_demo", description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--pose-weights", default=str(SHARED / "weights/yolo11n-pose.pt"))
    ap.add_argument("--images", default=str(SHARED / "data/market1501-sample"))
    ap.add_argument("--no-http", action="store_true", help="skip the row through gradio_client")
    args = ap.parse_args(argv)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("YOLO_VERBOSE", "False")

    import torch

    from app.handlers import Demo
    from pipeline.core.device import select_device
    from pipeline.infer.poses import synthetic_gallery
    from pipeline.infer.repose import Reposer, load_pose_model

    photos = sorted(Path(args.images).glob("*.jpg"))
    if not photos:
        raise SystemExit(f"{args.images}: no .jpg photos to benchmark on")
    device = select_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["GRADIO_TEMP_DIR"] = str(tmp / "gradio")
        pose = load_pose_model(args.pose_weights, device)
        saved = {name: save_model(name, tmp) for name in CONFIGS}
        models = {name: Reposer.load(path, pose, device) for name, (path, _) in saved.items()}
        demo = Demo(dict(models), synthetic_gallery(tmp / "gallery", 4), tmp)
        photo = str(photos[0])
        client = None if args.no_http else http_client(demo, photos)
        print(f"demo latency: one gallery-pose request on {photos[0].name}, {cpu_name()}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__} on {torch.get_num_threads()} threads, "
              f"device {device}; median of {args.repeats}")
        print(f"  {'':22s} {'wall ms':>9s} {'CPU ms':>9s}")
        for name, r in models.items():
            fns = rows(demo, client, name, photo)
            for fn in fns.values():
                fn()  # warm-up: first-call allocations, YOLO's predictor set-up
            n_params = sum(p.numel() for p in r.G.parameters()) / 1e6
            print(f"  {name}: {' '.join(CONFIGS[name])}, {r.hw[0]}x{r.hw[1]}, encoder widths "
                  f"{saved[name][1]}, {n_params:.1f} M parameters")
            for label, (wall, cpu) in medians(fns, args.repeats).items():
                print(f"    {label:20s} {wall * 1000:9.1f} {cpu * 1000:9.1f}")


def rows(demo, client, name: str, photo: str) -> dict:
    """The measured functions for checkpoint `name` (see the module docstring)."""
    from pipeline.infer.repose import read_image

    r = demo.models[name]
    person = r.people([read_image(photo)], ["photo"], "source")[0]
    target = demo.gallery.at(1, r.hw)[None]
    fns = {
        "generate only": lambda: r.generate(person, target),
        "pose only": lambda: r.people([read_image(photo)], ["photo"], "source"),
        "request (handler)": lambda: check(demo.repose_gallery(name, photo, 1)),
    }
    if client is not None:
        fns["request (HTTP)"] = lambda: check(client.predict(name, handle(photo), 1,
                                                             api_name="/repose_gallery"))
    return fns


def check(outputs) -> None:
    status = outputs[3]
    if not status.startswith("Done in"):
        raise SystemExit(f"the request failed: {status}")


def handle(path: str):
    from gradio_client import handle_file

    return handle_file(path)


def http_client(demo, photos):
    """Serve the demo's page on a free 127.0.0.1 port in this process; a client for it."""
    import socket

    from gradio_client import Client

    from app.ui import CSS, build_page

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page = build_page(demo, [])
    page.queue(default_concurrency_limit=1).launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
        ssr_mode=False, css=CSS, allowed_paths=[str(demo.workdir)])
    return Client(f"http://127.0.0.1:{port}", verbose=False,
                  download_files=str(demo.workdir / "downloads"))


if __name__ == "__main__":
    main()
