"""Inference: re-pose a person photo into one or more target poses with a trained generator.

    python -m stages.repose --source PERSON.jpg --pose TARGET \
        --model models/generator.pt --out OUT.png|OUT.jpg|OUTDIR [--gif OUT.gif]
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
training data. One image in -> one image (at the model resolution) out: --out itself when it
is named like an image (.png, .jpg, ...), else a PNG in the folder --out named after the target.

A source or target without both shoulders and both hips (the pairs-stage `usable` rule), a
joint that is not finite or lies far outside its frame, an empty pose, an image with no
person, or an unreadable file raises ReposeError naming the file; main() then
exits with status 2. ultralytics is imported lazily (only when a pose model is needed).

As a library (the web demo, app/, and bench/bench_demo.py): `Reposer.load(model, pose_model)`
holds a generator and a pose model (`load_pose_model`), loaded once; `people(images)` takes
BGR arrays to cropped people, `generate(person, poses)` gives RGB arrays; `read_image` decodes
an upload with its size checked in the header first, `parse_poses` reads pose-file JSON
already decoded.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from pipeline.infer.crop import Box, crop_box, crop_image, map_keypoints, person_extent, whole_image_box
from pipeline.core.keypoints import J, NUM_JOINTS, present, read_annotation_csv
from pipeline.data.pairs import REQUIRED_JOINTS
from pipeline.datasets.market1501 import CANONICAL_HW  # the canonical annotation CSVs' frame
from pipeline.model.build import run_generator
from pipeline.core.images import IMAGE_SUFFIXES, decode_bytes, decode_image, header_size, image_format

ASPECT_TOLERANCE = 0.1  # relative aspect-ratio difference under which an image is used whole
DEFAULT_SIGMA = 6.0
GIF_FRAME_MS = 250
FRAME_SLACK = 0.5  # a joint may lie this fraction of the frame outside it; farther is a bad pose
MAX_PIXELS = 50_000_000  # decoded-size cap of one input photo: a 48/50 MP phone photo, 150 MB as BGR


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
        if not all(math.isfinite(v) for v in vals):
            raise ReposeError(f"{source}: pose {label!r} joint {j} is not a finite [x, y]: {joint!r}")
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


def check_in_frame(kp: np.ndarray, height: int, width: int, source: str, label: str) -> np.ndarray:
    """kp [18, 2] at height x width, returned unchanged; ReposeError when a present joint lies
    more than FRAME_SLACK of the frame outside it (1e9, or a pose given in another frame
    without its "width"/"height"): the heatmaps and part warps would be nonsense."""
    ok = present(kp)
    limit = np.array([width, height], np.float64) * (1 + FRAME_SLACK)
    far = ok & ((kp > limit).any(axis=-1) | ~np.isfinite(kp).all(axis=-1))
    if far.any():
        j = int(np.flatnonzero(far)[0])
        raise ReposeError(f"{source}: pose {label!r} joint {j} at ({kp[j, 0]:.6g}, {kp[j, 1]:.6g}) lies far "
                          f"outside the {width}x{height} frame (give the pose's own 'width' and 'height')")
    return kp


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
        return [(Path(n).stem, check_in_frame(_scaled(k, scale), height, width, str(path), Path(n).stem))
                for n, k in zip(names, kp)]
    try:
        obj = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReposeError(f"{path}: not valid JSON ({exc})") from exc
    return parse_poses(obj, str(path), height, width, path.stem)


def parse_poses(obj, source: str, height: int, width: int, name: str = "pose"
                ) -> list[tuple[str, np.ndarray]]:
    """Poses from a decoded JSON value in the pose-file format (module docstring): one
    {"keypoints": ...} object (named `name`) or named poses, optional "width"/"height" frame.

    Returns [(name, float32 [18, 2] at height x width)]; raises ReposeError naming `source`.
    """
    if not isinstance(obj, dict) or not obj:
        raise ReposeError(f"{source}: expected a JSON object with 'keypoints' or named poses")
    scale = _frame_scale(obj, source, height, width)
    if "keypoints" in obj:
        named = [(name, "keypoints", obj["keypoints"])]
    else:
        named = [(Path(k).stem, k, v) for k, v in obj.items() if k not in ("width", "height")]
    if not named:
        raise ReposeError(f"{source}: no poses in the file (only 'width' and 'height')")
    return [(n, check_in_frame(_scaled(_parse_joints(v, source, label), scale), height, width, source, label))
            for n, label, v in named]


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
    from pipeline.data.pose import main_people, predict, predict_kwargs, to_op18

    n = len(images)
    if n == 0:
        return np.zeros((0, NUM_JOINTS, 3), np.float32), np.full((0, 4), np.nan, np.float32)
    cfg = PoseConfig(imgsz=pose_imgsz(images), conf=conf, kpt_conf=kpt_conf)
    sizes = np.array([(im.shape[1], im.shape[0]) for im in images], np.int64)
    found = main_people(predict(model, list(images), **predict_kwargs(model, cfg)), sizes)
    return to_op18(found.coco, sizes, kpt_conf), found.boxes


def frame_box(image_hw: tuple[int, int], kp: np.ndarray, box: np.ndarray | None,
              out_hw: tuple[int, int], margin: float) -> Box:
    """Whole image when it already has the model's aspect ratio, else a person crop."""
    ih, iw = image_hw
    if abs((iw / ih) / (out_hw[1] / out_hw[0]) - 1) <= ASPECT_TOLERANCE:
        return whole_image_box(iw, ih)
    box = None if box is None or not np.isfinite(box).all() else box
    return crop_box(person_extent(kp, box), out_hw, margin)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS, label: str | None = None) -> np.ndarray:
    """Decode one image file -> BGR uint8 [H, W, 3], refusing more than `max_pixels` pixels
    before decoding any (the size comes from the header: a 20000x20000 PNG of a few hundred
    KB would otherwise decode to 1.2 GB). Raises ReposeError naming `label` (default: path)."""
    label = str(label or path)
    try:
        data = Path(path).read_bytes()  # once: the checks below and the decoder share it
    except FileNotFoundError:
        raise ReposeError(f"{label}: file not found") from None
    except OSError as exc:
        raise ReposeError(f"{label}: cannot read ({exc.strerror or exc})") from None
    fmt = image_format(data[:16])
    if fmt is None:
        what = "empty file" if not data else "not an image file (JPEG, PNG, BMP or WebP)"
        raise ReposeError(f"{label}: {what}")
    try:
        w, h = header_size(data, fmt)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        raise ReposeError(f"{label}: not a decodable {fmt} image (broken header)") from None
    if w * h > max_pixels:
        raise ReposeError(f"{label}: image too large ({w}x{h} pixels; the limit is "
                          f"{max_pixels / 1e6:g} megapixels)")
    image, err = decode_bytes(data, label, max_pixels)
    if image is None:
        raise ReposeError(err)
    return image


def people_from_images(images: Sequence[np.ndarray], labels: Sequence[str], model,
                       out_hw: tuple[int, int], what: str | Sequence[str], margin: float = 0.1
                       ) -> list[Person]:
    """Detect (one batch), crop and check BGR images [H, W, 3]; the first bad one raises
    ReposeError naming its label. what: "source"/"target", one for all or one per image."""
    import cv2

    whats = [what] * len(images) if isinstance(what, str) else list(what)
    kp, boxes = detect(images, model)
    people = []
    for label, w, image, k, b in zip(labels, whats, images, kp, boxes):
        if not present(k).any():
            raise ReposeError(f"{label}: no person found in the {w} image")
        check_usable(k, str(label), w)
        box = frame_box(image.shape[:2], k, b, out_hw, margin)
        crop = cv2.cvtColor(crop_image(image, box, out_hw), cv2.COLOR_BGR2RGB)
        mapped = map_keypoints(k, box, out_hw)
        check_usable(mapped, str(label), w + " (after cropping)")
        people.append(Person(Path(label).stem, str(label), mapped, crop))
    return people


def load_people(paths: Sequence[str | Path], model, out_hw: tuple[int, int], what: str,
                margin: float = 0.1) -> list[Person]:
    """Decode, detect, crop and check every image; the first bad one raises ReposeError."""
    images = []
    for p in paths:
        image, err = decode_image(p)
        if image is None:
            raise ReposeError(f"{err} (cannot use it as the {what} image)")
        images.append(image)
    return people_from_images(images, [str(p) for p in paths], model, out_hw, what, margin)


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
    """uint8 [H, W, 3] RGB to `path`, in the format its suffix names (PNG unless an
    IMAGE_SUFFIXES one says otherwise; JPEG at quality 95)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    Image.fromarray(np.ascontiguousarray(image)).save(path, **({"quality": 95} if jpeg else {}))
    return path


def output_paths(names: Sequence[str], out: str | Path) -> list[Path]:
    """One image per target: `out` itself for a single target and an `out` named like an
    image (IMAGE_SUFFIXES: x.png, x.jpg, ...), else out/<name>.png. Several targets need a
    folder."""
    out = Path(out)
    if out.suffix.lower() in IMAGE_SUFFIXES:
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


def load_pose_model(pose_weights: str = "yolo11n-pose.pt", device: str | torch.device = "cpu"):
    """The YOLO pose model (pipeline.data.pose.PoseModel) from a weights name or a local file;
    any problem is one ReposeError line naming --pose-weights."""
    from pipeline.core.weights import WeightsError, resolve
    from pipeline.data.pose import load_model

    dev = torch.device(device)
    try:
        local = resolve(pose_weights, "--pose-weights")  # a weights name or a local file
        return load_model(str(local), "cpu" if dev.type == "cpu" else str(dev))
    except WeightsError as exc:  # already one line naming --pose-weights
        raise ReposeError(str(exc)) from exc
    except (FileNotFoundError, ValueError) as exc:
        raise ReposeError(f"pose weights: {exc}") from exc


def checkpoint_problem(exc: Exception, model: str | Path) -> str:
    """One line for a generator file that does not load: torch.load's own message for a file
    it cannot unpickle runs to a dozen lines and suggests weights_only=False."""
    if exc.__cause__ is not None and "cannot load checkpoint" in str(exc):
        return (f"{model}: not a generator checkpoint (torch.load(weights_only=True) refused it: "
                f"{type(exc.__cause__).__name__})")
    return str(exc).strip().splitlines()[0]


class Reposer:
    """A trained generator and a pose model, loaded once; arrays in, arrays out.

    The CLI, the web demo (app/) and bench/bench_demo.py all re-pose through one. Several
    may share one pose model (the demo holds one Reposer per checkpoint).
    """

    def __init__(self, G: torch.nn.Module, hw: tuple[int, int], sigma: float, pose_model,
                 device: torch.device, margin: float = 0.1, label: str = "") -> None:
        self.G, self.hw, self.sigma, self.pose_model = G, hw, sigma, pose_model
        self.device, self.margin, self.label = device, margin, label

    @classmethod
    def load(cls, model: str | Path, pose_model, device: str | torch.device = "auto",
             sigma: float = DEFAULT_SIGMA, margin: float = 0.1) -> "Reposer":
        """Rebuild the generator saved in `model` (any file load_generator accepts);
        a file that is not one raises ReposeError naming it."""
        from pipeline.core.device import select_device
        from pipeline.model.checkpoint import CheckpointError, load_generator

        dev = device if isinstance(device, torch.device) else select_device(device)
        try:
            G, meta = load_generator(model, dev)
        except CheckpointError as exc:
            raise ReposeError(checkpoint_problem(exc, model)) from exc
        hw = (meta["image"].height, meta["image"].width)
        return cls(G, hw, model_sigma(meta, sigma), pose_model, dev, margin, str(model))

    def people(self, images: Sequence[np.ndarray], labels: Sequence[str],
               what: str | Sequence[str]) -> list[Person]:
        """BGR uint8 [H, W, 3] photos -> their main people cropped to the model resolution."""
        return people_from_images(images, labels, self.pose_model, self.hw, what, self.margin)

    def generate(self, source: Person, targets: np.ndarray, batch_size: int = 16) -> np.ndarray:
        """float32 [T, 18, 2] target poses (model resolution) -> uint8 [T, H, W, 3] RGB.
        No target, or a target without a single joint, is a ReposeError (nothing to draw from)."""
        kp = np.asarray(targets, np.float32).reshape(-1, NUM_JOINTS, 2)
        if not len(kp):
            raise ReposeError("no target poses to generate")
        empty = np.flatnonzero(~present(kp).any(axis=-1))
        if len(empty):
            raise ReposeError(f"target pose {int(empty[0])} is empty (no joints); nothing to draw from")
        return generate(self.G, source, kp, self.sigma, self.device, batch_size)


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
    from pipeline.core.device import select_device

    dev = select_device(device)
    pose = Path(pose)
    if not pose.exists():
        raise ReposeError(f"{pose}: target pose not found")
    pose_files = list_pose_images(pose) if pose.is_dir() else (
        [pose] if pose.suffix.lower() not in (".json", ".csv") else [])
    reposer = Reposer.load(model, None, dev, sigma, margin)
    reposer.pose_model = load_pose_model(pose_weights, dev)
    hw = reposer.hw
    src = load_people([source], reposer.pose_model, hw, "source", margin)[0]
    if pose_files:
        targets = [(p.name, p.keypoints)
                   for p in load_people(pose_files, reposer.pose_model, hw, "target", margin)]
    else:
        targets = read_pose_file(pose, *hw)
        for name, kp in targets:
            check_usable(kp, f"{pose} [{name}]", "target")
    paths = output_paths([n for n, _ in targets], out)
    frames = reposer.generate(src, np.stack([k for _, k in targets]))
    for frame, path in zip(frames, paths):
        write_png(frame, path)
    if gif is not None:
        write_gif(frames, gif)
    return paths


# --------------------------------------------------------------------------- CLI
