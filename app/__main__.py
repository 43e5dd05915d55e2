"""The web demo: `python -m app --model models/generator.pt`, then open http://127.0.0.1:7860.

    python -m app [--model FILE]... [--host 127.0.0.1] [--port 7860]
                  [--pose-weights yolo11n-pose.pt|FILE] [--device auto]
                  [--keypoints data/keypoints.parquet] [--dataset data/dataset]
                  [--max-upload-mb 30] [--max-megapixels 50]

Every --model (a generator file: models/generator.pt, models/best.pt, ...) is loaded once at
start and offered in the page; one that does not load is listed with its reason, and the
demo stops (status 2) only when none loads. The pose gallery and the example photos are the
pipeline's test set (--keypoints, --dataset) when it has run, else synthetic people. Uploads,
outputs and gradio's cache live in one temp folder, removed on exit; no telemetry.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Sequence



def quiet_environment() -> None:
    """Before gradio and ultralytics are imported: no usage statistics, no update check, no
    Hub telemetry, and never a pip install on a user's input (ultralytics would fetch a HEIF
    plugin for an image PIL cannot open)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ["YOLO_AUTOINSTALL"] = "False"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from pipeline.infer.repose import MAX_PIXELS

    ap = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", help="generator file; repeat to offer several "
                    "(default models/generator.pt)")
    ap.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--pose-weights", default="yolo11n-pose.pt",
                    help="YOLO pose weights: a weights name (pipeline/core/weights.py) or a local file")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--keypoints", default="data/keypoints.parquet",
                    help="the pose stage's keypoint table: test-set poses for the gallery")
    ap.add_argument("--dataset", default="data/dataset", help="the dataset folder: example photos")
    ap.add_argument("--gallery-size", type=int, default=24, help="poses in the gallery")
    ap.add_argument("--max-upload-mb", type=float, default=30, help="largest accepted upload")
    ap.add_argument("--max-megapixels", type=float, default=MAX_PIXELS / 1e6,
                    help="largest accepted photo, decoded (checked before decoding)")
    args = ap.parse_args(argv)
    args.model = args.model or ["models/generator.pt"]
    for name, value, low in (("--port", args.port, 0), ("--gallery-size", args.gallery_size, 1),
                             ("--max-upload-mb", args.max_upload_mb, 0.001),
                             ("--max-megapixels", args.max_megapixels, 0.001)):
        if value < low:
            ap.error(f"{name} must be >= {low}, got {value}")
    return args


def build_demo(args: argparse.Namespace, workdir: Path):
    """Load the models and the gallery -> (Demo, example photos). Raises ReposeError when
    nothing can be served."""
    from app.handlers import Demo
    from pipeline.core.device import select_device
    from pipeline.infer.poses import gallery_from_table, synthetic_gallery
    from pipeline.infer.repose import Reposer, ReposeError, load_pose_model

    try:
        device = select_device(args.device)
    except ValueError as exc:
        raise ReposeError(f"--device: {exc}") from None
    pose_model = load_pose_model(args.pose_weights, device)
    models: dict[str, Reposer | str] = {}
    for path in args.model:
        try:
            models[path] = Reposer.load(path, pose_model, device)
        except ReposeError as exc:
            models[path] = str(exc)
            print(f"warning: {exc}", file=sys.stderr)
    if not any(isinstance(m, Reposer) for m in models.values()):
        raise ReposeError("no usable generator: " + "; ".join(str(m) for m in models.values()))
    gallery = None
    if Path(args.keypoints).is_file():
        try:
            gallery = gallery_from_table(args.keypoints, args.dataset, args.gallery_size)
        except (OSError, ValueError, KeyError) as exc:
            print(f"warning: {args.keypoints}: not a keypoint table ({exc}); "
                  "using synthetic poses", file=sys.stderr)
        gallery = gallery if gallery is not None and len(gallery) else None
    if gallery is None:
        gallery = synthetic_gallery(workdir / "synthetic", args.gallery_size)
    photos = gallery.photos or synthetic_gallery(workdir / "synthetic", 8).photos
    examples = [photos[i] for i in sorted({round(k * (len(photos) - 1) / 7) for k in range(8)})]
    default = next(k for k, m in models.items() if isinstance(m, Reposer))
    demo = Demo(models, gallery, workdir, int(args.max_megapixels * 1e6), default)
    demo.repose_gallery(default, str(examples[0]), 0)  # warm-up: the first YOLO call sets itself up
    return demo, examples


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # gradio closes its server on it, then the temp folder goes


def serve(args: argparse.Namespace, workdir: Path) -> int:
    from pipeline.infer.repose import ReposeError

    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")  # uploads and gradio's cache
    try:
        demo, examples = build_demo(args, workdir)
    except ReposeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import gradio as gr

    from app.ui import CSS, build_page

    page = build_page(demo, examples)
    print(f"demo: serving {', '.join(demo.models)} on http://{args.host}:{args.port} "
          f"(temp folder {workdir})", flush=True)
    try:
        page.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, max_file_size=int(args.max_upload_mb * 2**20),
            show_error=True, allowed_paths=[str(workdir)], ssr_mode=False, share=False,
            footer_links=["api"], quiet=True, css=CSS,
            # system fonts: the default theme would fetch Google Fonts in the browser
            theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"]),
        )  # returns on Ctrl-C / SIGTERM once serving
    except OSError as exc:  # the port is taken, the address is not this machine's, ...
        print(f"error: cannot serve on {args.host}:{args.port}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    quiet_environment()
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    # Python leaves SIGINT ignored when the parent started us with it ignored (a background
    # job of a shell, nohup): Ctrl-C / SIGINT must still stop the server and clean up.
    signal.signal(signal.SIGINT, _interrupt)
    with tempfile.TemporaryDirectory(prefix="deformable-gan-demo-") as tmp:
        try:
            code = serve(args, Path(tmp))
        except KeyboardInterrupt:  # Ctrl-C while loading or starting
            code = 0
    print("demo: stopped", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
