"""Inference: re-pose a person photo into one or more target poses with a trained generator.

    python -m pipeline.infer.repose --source PERSON.jpg --pose TARGET \
        --model models/generator.pt --out OUT.png|OUTDIR [--gif OUT.gif]
        [--pose-weights yolo11n-pose.pt|FILE] [--device auto] [--sigma 6] [--margin 0.1]

TARGET may be
  * an image: the pose model finds the person, whose pose is used;
  * a folder: every image in it (sorted by name) is one target pose;
  * a JSON file: {"keypoints": [[x, y], ...18]} (one pose) or {"name": [[x, y], ...18], ...}
    (several); OpenPose-18 order, [x, y] or [x, y, c] per joint, -1 / null / c <= 0 missing.
    Coordinates are pixels of the model resolution, unless the object (or the top level for
    the named form) holds "width" and "height" of the frame they refer to;
  * a canonical annotation CSV (name:keypoints_y:keypoints_x), whose coordinates are pixels of
    a Market-1501 crop (64 wide, 128 high) and are rescaled to the model resolution.

Both the source and every target image are cropped to the model's aspect ratio around the
detected person (box grown by `margin` of its height), except images that already have that
aspect ratio (within ASPECT_TOLERANCE), which are taken whole: they are person crops like the
training data. One image in -> one PNG (at the model resolution) out, named after the target.

A source or target without both shoulders and both hips (the pairs-stage `usable` rule), an
image with no person, or an unreadable file raises ReposeError naming the file; main() then
exits with status 2. ultralytics is imported lazily (only when a pose model is needed).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipeline.infer.crop import Box, crop_box, crop_image, map_keypoints, person_extent, whole_image_box
from pipeline.core.keypoints import J, NUM_JOINTS, present, read_annotation_csv
from pipeline.data.pairs import REQUIRED_JOINTS
from pipeline.model.build import run_generator
from pipeline.core.images import IMAGE_SUFFIXES, decode_image

ASPECT_TOLERANCE = 0.1  # relative aspect-ratio difference under which an image is used whole
CANONICAL_HW = (128, 64)  # frame of the canonical Market-1501 annotation CSVs
DEFAULT_SIGMA = 6.0
GIF_FRAME_MS = 250


class ReposeError(ValueError):
    """Bad input for re-posing (names the file and the problem)."""


@dataclass(frozen=True)
class Person:
    """A person at the model resolution.

    image: uint8 [H, W, 3] RGB, or None for a pose given as coordinates only.
    keypoints: float32 [18, 2] (x, y) at the model resolution, -1 missing.
    """

    name: str
    source: str
    keypoints: np.ndarray
    image: np.ndarray | None = None


# --------------------------------------------------------------------------- poses


def check_usable(kp: np.ndarray, source: str, what: str) -> None:
    """Raise ReposeError unless both shoulders and both hips are present in kp [18, >=2]."""
    ok = present(np.asarray(kp, np.float32))
    missing = [j for j in REQUIRED_JOINTS if not ok[J[j]]]
    if missing:
        raise ReposeError(
            f"{source}: {what} pose has too few joints: missing {', '.join(missing)} "
            f"({int(ok.sum())} of {NUM_JOINTS} joints found; both shoulders and hips are needed)"
        )


def _parse_joints(value, source: str, label: str) -> np.ndarray:
    """[[x, y] | [x, y, c] | null, ...18] -> float32 [18, 2], -1 missing."""
    if not isinstance(value, list) or len(value) != NUM_JOINTS:
        n = len(value) if isinstance(value, list) else type(value).__name__
        raise ReposeError(f"{source}: pose {label!r} must list {NUM_JOINTS} joints [x, y], got {n}")
    out = np.full((NUM_JOINTS, 2), -1.0, np.float32)
    for j, joint in enumerate(value):
        if joint is None:
            continue
        try:
            vals = [float(v) if v is not None else -1.0 for v in joint]
        except (TypeError, ValueError):
            raise ReposeError(f"{source}: pose {label!r} joint {j} is not [x, y]: {joint!r}") from None
        if len(vals) not in (2, 3):
            raise ReposeError(f"{source}: pose {label!r} joint {j} is not [x, y] or [x, y, c]: {joint!r}")
        if len(vals) == 3 and vals[2] <= 0:
            continue
        out[j] = vals[:2]
    out[~present(out)] = -1.0
    return out


def _frame_scale(obj: dict, source: str, height: int, width: int) -> np.ndarray:
    if "width" in obj or "height" in obj:
        try:
            fw, fh = float(obj["width"]), float(obj["height"])
        except (KeyError, TypeError, ValueError):
            raise ReposeError(f"{source}: 'width' and 'height' must both be numbers") from None
        if fw <= 0 or fh <= 0:
            raise ReposeError(f"{source}: 'width' and 'height' must be positive")
        return np.array([width / fw, height / fh], np.float32)
    return np.ones(2, np.float32)


def _scaled(kp: np.ndarray, scale: np.ndarray) -> np.ndarray:
    ok = present(kp)
    out = kp * scale
    out[~ok] = -1.0
    return out


def read_pose_file(path: str | Path, height: int, width: int) -> list[tuple[str, np.ndarray]]:
    """Target poses from a JSON or canonical CSV file (see the module docstring).

    Returns [(name, float32 [18, 2] at height x width)]; raises ReposeError on bad content.
    """
    path = Path(path)
    if not path.is_file():
        raise ReposeError(f"{path}: pose file not found")
    if path.suffix.lower() == ".csv":
        try:
            names, kp = read_annotation_csv(path)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReposeError(f"{path}: not a canonical annotation CSV ({exc})") from exc
        if not names:
            raise ReposeError(f"{path}: no poses in the file")
        scale = np.array([width / CANONICAL_HW[1], height / CANONICAL_HW[0]], np.float32)
        return [(Path(n).stem, _scaled(k, scale)) for n, k in zip(names, kp)]
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReposeError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict) or not obj:
        raise ReposeError(f"{path}: expected a JSON object with 'keypoints' or named poses")
    if "keypoints" in obj:
        kp = _parse_joints(obj["keypoints"], str(path), "keypoints")
        return [(path.stem, _scaled(kp, _frame_scale(obj, str(path), height, width)))]
    scale = _frame_scale(obj, str(path), height, width)
    poses = {k: v for k, v in obj.items() if k not in ("width", "height")}
    return [(Path(k).stem, _scaled(_parse_joints(v, str(path), k), scale)) for k, v in poses.items()]


# --------------------------------------------------------------------------- detection


def pose_imgsz(images: Sequence[np.ndarray]) -> int:
    """YOLO input size for a batch: 1.5x the longest side (small crops gain from upscaling,
    cf. params pose.imgsz), a multiple of 32 within [192, 640]."""
    side = max(max(im.shape[:2]) for im in images)
    return int(min(640, max(192, -(-int(1.5 * side) // 32) * 32)))


def detect(images: Sequence[np.ndarray], model, kpt_conf: float = 0.3, conf: float = 0.1
           ) -> tuple[np.ndarray, np.ndarray]:
    """Main person of each BGR image -> (keypoints [N, 18, 3] original pixels, boxes [N, 4]
    xyxy; NaN rows where nobody was found). model: pipeline.data.pose.PoseModel."""
    from pipeline.core.config import PoseConfig
    from pipeline.data.pose import main_people, predict_kwargs, to_op18

    n = len(images)
    if n == 0:
        return np.zeros((0, NUM_JOINTS, 3), np.float32), np.full((0, 4), np.nan, np.float32)
    cfg = PoseConfig(imgsz=pose_imgsz(images), conf=conf, kpt_conf=kpt_conf)
    sizes = np.array([(im.shape[1], im.shape[0]) for im in images], np.int64)
    found = main_people(model.yolo.predict(list(images), **predict_kwargs(model, cfg)), sizes)
    return to_op18(found.coco, sizes, kpt_conf), found.boxes


def frame_box(image_hw: tuple[int, int], kp: np.ndarray, box: np.ndarray | None,
              out_hw: tuple[int, int], margin: float) -> Box:
    """Whole image when it already has the model's aspect ratio, else a person crop."""
    ih, iw = image_hw
    if abs((iw / ih) / (out_hw[1] / out_hw[0]) - 1) <= ASPECT_TOLERANCE:
        return whole_image_box(iw, ih)
    box = None if box is None or not np.isfinite(box).all() else box
    return crop_box(person_extent(kp, box), out_hw, margin)


def load_people(paths: Sequence[str | Path], model, out_hw: tuple[int, int], what: str,
                margin: float = 0.1) -> list[Person]:
    """Decode, detect, crop and check every image; the first bad one raises ReposeError."""
    import cv2

    images = []
    for p in paths:
        image, err = decode_image(p)
        if image is None:
            raise ReposeError(f"{err} (cannot use it as the {what} image)")
        images.append(image)
    kp, boxes = detect(images, model)
    people = []
    for p, image, k, b in zip(paths, images, kp, boxes):
        if not present(k).any():
            raise ReposeError(f"{p}: no person found in the {what} image")
        check_usable(k, str(p), what)
        box = frame_box(image.shape[:2], k, b, out_hw, margin)
        crop = cv2.cvtColor(crop_image(image, box, out_hw), cv2.COLOR_BGR2RGB)
        mapped = map_keypoints(k, box, out_hw)
        check_usable(mapped, str(p), what + " (after cropping)")
        people.append(Person(Path(p).stem, str(p), mapped, crop))
    return people


def list_pose_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ReposeError(f"{folder}: no pose images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    return files


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def generate(G: torch.nn.Module, source: Person, targets: np.ndarray, sigma: float,
             device: str | torch.device = "cpu", batch_size: int = 16) -> np.ndarray:
    """Re-pose `source` into every target pose.

    targets: float32 [T, 18, 2] at the model resolution. Returns uint8 [T, H, W, 3] RGB.
    """
    from pipeline.eval.evaluation import to_uint8
    from pipeline.data.heatmaps import render_heatmaps

    G.eval()
    device = torch.device(device)
    h, w = source.image.shape[:2]
    xa = torch.from_numpy(source.image).to(device).permute(2, 0, 1).float().div(127.5).sub(1)[None]
    kpa = torch.from_numpy(np.asarray(source.keypoints, np.float32)).to(device)[None]
    ha = render_heatmaps(kpa, h, w, sigma)
    out = []
    for s in range(0, len(targets), max(batch_size, 1)):
        kpb = torch.from_numpy(np.asarray(targets[s : s + batch_size], np.float32)).to(device)
        n = len(kpb)
        hb = render_heatmaps(kpb, h, w, sigma)
        batch = {"xa": xa.expand(n, -1, -1, -1), "ha": ha.expand(n, -1, -1, -1), "hb": hb,
                 "kpa": kpa.expand(n, -1, -1), "kpb": kpb}
        fake = run_generator(G, batch).image
        out.append(to_uint8(fake))
    return np.concatenate(out) if out else np.zeros((0, h, w, 3), np.uint8)


def write_gif(frames: Sequence[np.ndarray], path: str | Path, duration_ms: int = GIF_FRAME_MS) -> Path:
    """Animated, looping GIF of uint8 [H, W, 3] RGB frames."""
    from PIL import Image

    if not len(frames):
        raise ReposeError(f"{path}: no frames for the GIF")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imgs = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=duration_ms, loop=0)
    return path


def write_png(image: np.ndarray, path: str | Path) -> Path:
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path)
    return path


def output_paths(names: Sequence[str], out: str | Path) -> list[Path]:
    """One PNG per target: `out` itself for a single target and a *.png `out`, else
    out/<name>.png. Several targets need a folder."""
    out = Path(out)
    if out.suffix.lower() == ".png":
        if len(names) != 1:
            raise ReposeError(f"{out}: {len(names)} target poses need an output folder, not a file")
        return [out]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise ReposeError(f"target pose name {n!r} occurs twice; output files would clash")
        seen.add(n)
    return [out / f"{n}.png" for n in names]


def model_sigma(meta: dict, fallback: float) -> float:
    """Heatmap sigma recorded with the generator ("sigma" or heatmaps.sigma), else fallback."""
    value = meta.get("sigma")
    if value is None and isinstance(meta.get("heatmaps"), dict):
        value = meta["heatmaps"].get("sigma")
    return float(fallback if value is None else value)


def repose(
    source: str | Path,
    pose: str | Path,
    model: str | Path,
    out: str | Path,
    gif: str | Path | None = None,
    pose_weights: str = "yolo11n-pose.pt",
    device: str = "auto",
    sigma: float = DEFAULT_SIGMA,
    margin: float = 0.1,
) -> list[Path]:
    """The whole inference: returns the PNG paths written (plus nothing else; the GIF goes to
    `gif` when given). Raises ReposeError for bad inputs."""
    from pipeline.model.checkpoint import CheckpointError, load_generator
    from pipeline.core.device import select_device

    dev = select_device(device)
    try:
        G, meta = load_generator(model, dev)
    except CheckpointError as exc:
        raise ReposeError(str(exc)) from exc
    hw = (meta["image"].height, meta["image"].width)
    sigma = model_sigma(meta, sigma)

    pose = Path(pose)
    if not pose.exists():
        raise ReposeError(f"{pose}: target pose not found")
    pose_files = list_pose_images(pose) if pose.is_dir() else (
        [pose] if pose.suffix.lower() not in (".json", ".csv") else [])

    from pipeline.data.pose import load_model
    from pipeline.core.weights import WeightsError, resolve

    try:
        local = resolve(pose_weights, "--pose-weights")  # a weights name or a local file
        pose_model = load_model(str(local), "cpu" if dev.type == "cpu" else str(dev))
    except WeightsError as exc:  # already one line naming --pose-weights
        raise ReposeError(str(exc)) from exc
    except (FileNotFoundError, ValueError) as exc:
        raise ReposeError(f"pose weights: {exc}") from exc
    src = load_people([source], pose_model, hw, "source", margin)[0]
    if pose_files:
        targets = [(p.name, p.keypoints) for p in load_people(pose_files, pose_model, hw, "target", margin)]
    else:
        targets = read_pose_file(pose, *hw)
        for name, kp in targets:
            check_usable(kp, f"{pose} [{name}]", "target")
    paths = output_paths([n for n, _ in targets], out)
    frames = generate(G, src, np.stack([k for _, k in targets]), sigma, dev)
    for frame, path in zip(frames, paths):
        write_png(frame, path)
    if gif is not None:
        write_gif(frames, gif)
    return paths


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.infer.repose", description=__doc__.split("\n")[0])
    ap.add_argument("--source", required=True, help="photo of the person to re-pose")
    ap.add_argument("--pose", required=True, help="target pose: image, folder of images, .json or .csv")
    ap.add_argument("--model", default="models/generator.pt", help="generator file (save_generator)")
    ap.add_argument("--out", required=True, help="output PNG (one target) or folder")
    ap.add_argument("--gif", default=None, help="also write the sequence as an animated GIF")
    ap.add_argument("--pose-weights", default="yolo11n-pose.pt",
                    help="YOLO pose weights: a weights name (pipeline/core/weights.py) or a local file")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--sigma", type=float, default=DEFAULT_SIGMA,
                    help="heatmap sigma (px) when the checkpoint does not record one")
    ap.add_argument("--margin", type=float, default=0.1, help="crop margin, fraction of the person height")
    args = ap.parse_args(argv)
    try:
        paths = repose(args.source, args.pose, args.model, args.out, args.gif, args.pose_weights,
                       args.device, args.sigma, args.margin)
    except ReposeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    if args.gif:
        print(args.gif)
    return 0


if __name__ == "__main__":
    sys.exit(main())
