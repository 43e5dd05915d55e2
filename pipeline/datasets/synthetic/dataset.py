"""The synthetic dataset in Market-1501 layout: images, names and ground-truth keypoints.

Every image draws from its own Generator seeded by (seed, stream, person, index), so the
output does not depend on generation order and the same seed gives byte-identical files.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.config import SyntheticConfig
from pipeline.core.keypoints import NUM_JOINTS, scale_keypoints, write_annotation_csv
from pipeline.datasets.market1501 import CANONICAL_HW, DISTRACTOR_ID, JUNK_ID, SPLIT_DIRS, format_name
from pipeline.datasets.synthetic.background import camera_background, crop
from pipeline.datasets.synthetic.body import Pose, sample_pose
from pipeline.datasets.synthetic.identity import Identity, sample_identity
from pipeline.datasets.synthetic.render import PersonLayer, Placement, render_person

# Random streams, so that e.g. a query render never repeats a gallery render.
IDENTITY, GALLERY, QUERY, CAMERA, JUNK, DISTRACTOR = range(1, 7)
CAMERAS = 6
JPEG_QUALITY = 95
ANNOTATION_FILES = {"train": "market-annotation-train.csv", "test": "market-annotation-test.csv"}


@dataclass(frozen=True)
class Sample:
    """One rendered crop. image: uint8 [H, W, 3] BGR; keypoints: float32 [18, 2] (x, y), -1
    missing; background: float32 [H, W, 3] the same crop without the person; alpha: float32
    [H, W] person coverage; pose None for person-less junk."""

    image: np.ndarray
    keypoints: np.ndarray
    background: np.ndarray
    alpha: np.ndarray
    camera: int
    pose: Pose | None


def image_rng(seed: int, stream: int, person_id: int, index: int) -> np.random.Generator:
    """The Generator of one image (person_id may be -1 for junk)."""
    if seed < 0:
        raise ValueError(f"synthetic seed must be >= 0, got {seed}")
    return np.random.default_rng([seed, stream, person_id + 1, index])


def make_identity(seed: int, person_id: int) -> Identity:
    return sample_identity(image_rng(seed, IDENTITY, person_id, 0), person_id)


@functools.lru_cache(maxsize=2 * CAMERAS)
def camera_scene(seed: int, camera: int, height: int, width: int) -> np.ndarray:
    """The (read-only, cached) background scene of one camera."""
    scene = camera_background(image_rng(seed, CAMERA, camera, 0), height, width)
    scene.setflags(write=False)
    return scene


def render_sample(seed: int, identity: Identity, index: int, height: int, width: int, *,
                  stream: int = GALLERY, view: str | None = None, kind: str | None = None) -> Sample:
    """Render image `index` of `identity`: random camera, pose, view, placement and lighting."""
    rng = image_rng(seed, stream, identity.person_id, index)
    camera = int(rng.integers(1, CAMERAS + 1))
    pose = sample_pose(rng, view=view, kind=kind)
    bg = crop(camera_scene(seed, camera, height, width), rng, height, width)
    layer = render_person(identity, pose, height, width, rng=rng, size=float(rng.uniform(0.86, 0.96)))
    return _compose(bg, layer, rng, camera, pose)


def render_extra(seed: int, person_id: int, index: int, height: int, width: int) -> Sample:
    """A junk (-1) or distractor (0000) crop, as Market-1501 has: background only, a zoomed-in
    fragment of a person, or a small off-centre person. Keypoints are those inside the crop."""
    stream = JUNK if person_id == JUNK_ID else DISTRACTOR
    rng = image_rng(seed, stream, person_id, index)
    camera = int(rng.integers(1, CAMERAS + 1))
    bg = crop(camera_scene(seed, camera, height, width), rng, height, width)
    if person_id == JUNK_ID and index % 2 == 0:
        empty = np.zeros((height, width), np.float32)
        kp = np.full((NUM_JOINTS, 2), -1.0, np.float32)
        layer = PersonLayer(np.zeros_like(bg), empty, kp, (0.0, 0.0, 0.0))
        return _compose(bg, layer, rng, camera, None)
    identity = sample_identity(rng, person_id)
    pose = sample_pose(rng)
    if person_id == JUNK_ID:   # a fragment: the person far too close to the camera
        scale = height * rng.uniform(2.0, 3.0)
        place = Placement(scale, width * rng.uniform(0.2, 0.8), -scale * rng.uniform(0.15, 0.45))
    elif index % 2 == 0:      # upper body only, cut by the crop
        scale = height * rng.uniform(1.4, 1.8)
        place = Placement(scale, width * rng.uniform(0.35, 0.65), height * rng.uniform(0.0, 0.08))
    else:                     # a small person off to one side
        scale = height * rng.uniform(0.45, 0.6)
        place = Placement(scale, width * rng.uniform(0.25, 0.75), height * rng.uniform(0.05, 0.4))
    layer = render_person(identity, pose, height, width, placement=place)
    return _compose(bg, layer, rng, camera, pose)


def _compose(bg: np.ndarray, layer: PersonLayer, rng: np.random.Generator, camera: int,
             pose: Pose | None) -> Sample:
    """Shadow, person over background, per-image lighting, grain, JPEG-ready uint8."""
    height, width = bg.shape[:2]
    fx, fy, fw = layer.feet
    if fw > 0:
        shadow = np.zeros((height, width), np.float32)
        cv2.ellipse(shadow, (int(round(fx)), int(round(fy))), (max(int(round(fw)), 1), max(int(height * 0.02), 1)),
                    0, 0, 360, 1.0, -1, cv2.LINE_AA)
        shadow = cv2.GaussianBlur(shadow, (0, 0), max(height / 128.0, 0.5))
        bg = bg * (1.0 - 0.35 * shadow)[..., None]
    gain = rng.uniform(0.85, 1.12) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    img = (layer.colour + (1.0 - layer.alpha)[..., None] * bg) * gain
    background = bg * gain
    img = img + rng.normal(0.0, rng.uniform(1.0, 3.0), img.shape).astype(np.float32)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Sample(img, layer.keypoints, np.clip(background, 0, 255), layer.alpha, camera, pose)


def _name(seed: int, stream: int, person_id: int, index: int, camera: int) -> str:
    """Market-1501 name; the frame grows with the index, so names are unique per person."""
    rng = image_rng(seed, stream + 100, person_id, index)
    frame = index * 97 + int(rng.integers(0, 97))
    return format_name(person_id, camera, frame, int(rng.integers(1, 4)), int(rng.integers(1, 7)))


def _write_jpg(path: Path, image: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def generate(out_dir: Path, cfg: SyntheticConfig, height: int, width: int, seed: int, *,
             junk: int = 2, distractors: int = 2) -> dict:
    """Write the synthetic dataset in Market-1501 layout under `out_dir`.

    bounding_box_train/: cfg.train_ids identities (ids 1..), cfg.images_per_id images each;
    bounding_box_test/: cfg.test_ids further identities plus `junk` (-1) and `distractors`
    (0000) crops; query/: one extra render per test identity; annotations/: the canonical
    keypoint CSVs of the train and bounding_box_test images (OpenPose-18, in pixels of the
    canonical 128x64 crop whatever the render size, as Market-1501's files: the annotation
    import rescales them to the images' size).
    Returns counts per split and the identity ids.
    """
    _check_args(cfg, height, width, seed, junk, distractors)
    out_dir = Path(out_dir)
    for folder in (*SPLIT_DIRS.values(), "annotations"):
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    train_ids = list(range(1, cfg.train_ids + 1))
    test_ids = list(range(cfg.train_ids + 1, cfg.train_ids + cfg.test_ids + 1))
    annotations: dict[str, dict[str, np.ndarray]] = {"train": {}, "test": {}}

    def emit(split: str, stream: int, person_id: int, index: int, sample: Sample) -> None:
        name = _name(seed, stream, person_id, index, sample.camera)
        _write_jpg(out_dir / SPLIT_DIRS[split] / name, sample.image)
        if split in annotations:
            annotations[split][name] = sample.keypoints

    for split, ids in (("train", train_ids), ("test", test_ids)):
        for pid in ids:
            identity = make_identity(seed, pid)
            for index in range(cfg.images_per_id):
                emit(split, GALLERY, pid, index, render_sample(seed, identity, index, height, width))
            if split == "test":
                q = cfg.images_per_id  # continues the frame numbering: query names are new
                emit("query", QUERY, pid, q, render_sample(seed, identity, q, height, width, stream=QUERY))
    for pid, count, stream in ((JUNK_ID, junk, JUNK), (DISTRACTOR_ID, distractors, DISTRACTOR)):
        for index in range(count):
            emit("test", stream, pid, index, render_extra(seed, pid, index, height, width))
    for split, rows in annotations.items():
        names = sorted(rows)
        kp = np.stack([rows[n] for n in names]) if names else np.zeros((0, NUM_JOINTS, 2), np.float32)
        kp = scale_keypoints(kp, np.full((len(kp), 2), (width, height)), CANONICAL_HW)
        write_annotation_csv(out_dir / "annotations" / ANNOTATION_FILES[split], names, kp)
    return {
        "train": len(annotations["train"]),
        "test": len(annotations["test"]),
        "query": len(test_ids),
        "junk": junk,
        "distractors": distractors,
        "train_ids": train_ids,
        "test_ids": test_ids,
        "images_per_id": cfg.images_per_id,
        "height": height,
        "width": width,
        "seed": seed,
    }


def _check_args(cfg: SyntheticConfig, height: int, width: int, seed: int, junk: int, distractors: int) -> None:
    problems = []
    if cfg.train_ids < 1:
        problems.append(f"data.synthetic.train_ids must be >= 1, got {cfg.train_ids}")
    if cfg.test_ids < 0:
        problems.append(f"data.synthetic.test_ids must be >= 0, got {cfg.test_ids}")
    if cfg.train_ids + cfg.test_ids > 9999:
        problems.append("data.synthetic: train_ids + test_ids must be <= 9999 (4-digit Market ids)")
    if not 1 <= cfg.images_per_id <= 10000:
        problems.append(f"data.synthetic.images_per_id must be in 1..10000, got {cfg.images_per_id}")
    if height < 32 or width < 16:
        problems.append(f"image size {height}x{width} too small (>= 32x16)")
    if seed < 0:
        problems.append(f"seed must be >= 0, got {seed}")
    if junk < 0 or distractors < 0:
        problems.append("junk and distractors must be >= 0")
    if problems:
        raise ValueError("synthetic dataset: " + "; ".join(problems))
