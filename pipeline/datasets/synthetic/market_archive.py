"""A Market-1501-shaped archive from the synthetic renderer, for full-size rehearsals.

    python -m stages.rehearsal_archive market --annotations DIR --out FILE.zip
        [--seed 0] [--ids-fraction 1.0] [--double-jpg keep|strip] [--workers 2]

Writes `Market-1501-v15.09.15.zip` with the real layout (Market-1501-v15.09.15/
bounding_box_train, bounding_box_test, query, readme.txt) and the real file names:
bounding_box_train and bounding_box_test are exactly the names of the canonical annotation
files (12,936 and 19,732, junk `-1` and distractors `0000` included), query holds names
synthesised in the Market pattern (3,368 at full size: for each test id one hand-drawn box,
index `_00`, per camera it appears on in the gallery, trimmed to the real count). gt_bbox and
gt_query are left out: the pipeline reads neither.

Person images: a person (identity = person id, so one person looks the same everywhere) is
posed by a closed-form inverse kinematics fit to the image's canonical keypoints (view from
the shoulder order, scale from the torso, each limb segment's angles from its 2-D direction)
and drawn by the synthetic renderer over the camera's background; junk and distractors are
drawn as render_extra draws them; images without keypoints (queries) get a sampled pose.
Every image has its own seeded random stream: the archive is byte-identical for a seed.

`--ids-fraction` keeps a seeded subset of ids (and junk/distractors in proportion) and also
writes the matching annotation CSVs and test pair list beside the zip, for scaled tests.
"""
from __future__ import annotations

import functools
import hashlib
import multiprocessing as mp
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline.core.keypoints import J, read_annotation_csv, write_annotation_csv
from pipeline.datasets.market1501 import (
    DISTRACTOR_ID,
    JUNK_ID,
    SPLIT_DIRS,
    canonical_name,
    parse_name,
)
from pipeline.datasets.synthetic.background import crop
from pipeline.datasets.synthetic.body import VIEW_YAW, Pose, rotate, sample_pose, skeleton
from pipeline.datasets.synthetic.dataset import (
    JPEG_QUALITY,
    _compose,
    camera_scene,
    make_identity,
    render_extra,
    render_sample,
)
from pipeline.datasets.synthetic.render import Placement, render_person

ROOT_DIR = "Market-1501-v15.09.15"
ANNOTATIONS = {"train": "market-annotation-train.csv", "test": "market-annotation-test.csv"}
PAIRS_FILE = "market-pairs-test.csv"
QUERY_COUNT = 3368          # real Market-1501 query images
FIT_STREAM = 11             # random stream of the keypoint-fitted renders
NECK_Y, HIP_Y = 0.195, 0.515  # body-frame heights of the shoulder line and hip joints
MTIME = (2015, 9, 15, 0, 0, 0)  # fixed zip timestamps: deterministic bytes


@dataclass(frozen=True)
class Item:
    """One image to write: archive member name, split, person id, camera, keypoints [18, 2]
    (x, y) in 128x64 crop pixels or None."""

    arcname: str
    split: str
    person_id: int
    camera: int
    keypoints: np.ndarray | None


# --------------------------------------------------------------------------- names


def read_canonical(folder: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """split -> (names, keypoints [N, 18, 2] (x, y)) of the canonical annotation files."""
    out = {}
    for split, file in ANNOTATIONS.items():
        path = Path(folder) / file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: canonical annotation file not found")
        names, kp = read_annotation_csv(path)
        out[split] = (list(map(str, names)), np.asarray(kp, np.float32)[..., :2])
    return out


def query_names(test_names: Sequence[str], count: int, seed: int) -> list[str]:
    """Market-pattern query names for the real ids of the gallery: one `_00` box per (id,
    camera) seen in the gallery, reusing a gallery frame of that id and camera; a seeded
    subset (or seeded extra cameras) makes exactly `count`. Sorted."""
    base = [canonical_name(n) for n in test_names]
    df = pd.DataFrame({"name": base})
    parts = df["name"].str.extract(r"^(\d{4})_c(\d)s(\d)_(\d{6})_\d{2}\.jpg$").dropna()
    parts.columns = ["pid", "cam", "seq", "frame"]
    parts = parts[parts["pid"].astype(int) > 0].sort_values(["pid", "cam", "seq", "frame"])
    first = parts.drop_duplicates(["pid", "cam"])
    names = (first["pid"] + "_c" + first["cam"] + "s" + first["seq"] + "_" + first["frame"] + "_00.jpg")
    names = sorted(names.tolist())
    rng = np.random.default_rng([seed, 7])
    if len(names) > count:
        names = sorted(np.asarray(names)[np.sort(rng.choice(len(names), count, replace=False))].tolist())
    elif len(names) < count and len(parts):
        # More boxes than (id, camera) pairs: extra frames of seeded gallery images.
        extra = parts.iloc[rng.choice(len(parts), count - len(names), replace=True)]
        bump = (extra["frame"].astype(int) + 1 + np.arange(len(extra))) % 1_000_000
        more = extra["pid"] + "_c" + extra["cam"] + "s" + extra["seq"] + "_" + \
            bump.map("{:06d}".format) + "_00.jpg"
        names = sorted(set(names) | set(more.tolist()))
    return names


def subset_ids(names: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """bool mask: images of a seeded `fraction` of the real ids, and the same fraction of the
    junk/distractor images. fraction 1 keeps everything."""
    if not 0 < fraction <= 1:
        raise ValueError(f"ids fraction must be in (0, 1], got {fraction}")
    pid = np.array([parse_name(n)[0] for n in names], np.int64)
    if fraction >= 1:
        return np.ones(len(names), bool)
    # A per-id (per-image for junk) hash decides: the same id is kept in every split.
    key = np.where(pid > 0, pid, np.arange(len(pid)) + 10_000)
    u = np.array([_unit(seed, "subset", int(k)) for k in key])
    return u < fraction


def _unit(seed: int, *parts: object) -> float:
    h = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def plan(annotations: dict[str, tuple[list[str], np.ndarray]], seed: int = 0,
         fraction: float = 1.0, double_jpg: str = "keep") -> list[Item]:
    """Every image of the archive, train then test then query, each split sorted.

    double_jpg: 'keep' names the files exactly as the annotations do (18 test names end in
    `.jpg.jpg`); 'strip' gives every file a single `.jpg`."""
    if double_jpg not in ("keep", "strip"):
        raise ValueError(f"double_jpg must be 'keep' or 'strip', got {double_jpg!r}")
    items: list[Item] = []
    for split in ("train", "test"):
        names, kp = annotations[split]
        keep = subset_ids(names, fraction, seed)
        for i in np.flatnonzero(keep):
            name = names[i] if double_jpg == "keep" else canonical_name(names[i])
            pid, cam = parse_name(names[i])
            items.append(Item(f"{ROOT_DIR}/{SPLIT_DIRS[split]}/{name}", split, pid, cam, kp[i]))
    test_names = [it.arcname.rsplit("/", 1)[1] for it in items if it.split == "test"]
    count = round(QUERY_COUNT * fraction) if fraction < 1 else QUERY_COUNT
    for name in query_names(test_names, count, seed):
        pid, cam = parse_name(name)
        items.append(Item(f"{ROOT_DIR}/{SPLIT_DIRS['query']}/{name}", "query", pid, cam, None))
    return sorted(items, key=lambda it: it.arcname)


# --------------------------------------------------------------------------- posing


def _segment_angles(v: np.ndarray, yaw: float, side: float, abd0: float) -> tuple[float, float]:
    """(abduction, flexion) of a segment whose projected direction is v = (dx, dy) / length
    (body units; |v| <= 1 when the segment is not foreshortened), seen at `yaw`.

    Front/back views: abduction from the sideways part, flexion takes up the foreshortening.
    Side views: the sideways part is the flexion; abduction stays abd0."""
    c, s = np.cos(yaw), np.sin(yaw)
    if abs(c) > 0.5:
        a = float(np.arcsin(np.clip(v[0] / (side * np.sign(c)), -1.0, 1.0)))
        f = float(np.arccos(np.clip(v[1] / max(np.cos(a), 1e-3), -1.0, 1.0)))
        return a, f
    return abd0, float(np.arctan2(v[0] / np.sign(s) / max(np.cos(abd0), 1e-3), v[1]))


def fit_pose(kp: np.ndarray, shape, rng: np.random.Generator):
    """(Pose, scale in px per body unit, BodyShape with fitted limb lengths) whose drawn
    joints follow canonical keypoints kp [18, 2] (x, y; -1 missing). None when the torso (neck or shoulders, and hips) is
    missing. Segments with a missing end keep the sampled pose's angles."""
    ok = (kp >= 0).all(axis=1)
    top = kp[J["neck"]] if ok[J["neck"]] else (
        (kp[J["r_shoulder"]] + kp[J["l_shoulder"]]) / 2 if ok[J["r_shoulder"]] & ok[J["l_shoulder"]] else None)
    if top is None or not (ok[J["r_hip"]] and ok[J["l_hip"]]):
        return None
    hip = (kp[J["r_hip"]] + kp[J["l_hip"]]) / 2
    scale = float(hip[1] - top[1]) / (HIP_Y - NECK_Y)
    if scale <= 10:
        return None
    base = sample_pose(rng, kind="stand")
    dx = kp[J["l_shoulder"], 0] - kp[J["r_shoulder"], 0] if ok[J["r_shoulder"]] & ok[J["l_shoulder"]] else 0.0
    ratio = dx / (2 * shape.shoulder * scale)
    if ratio > 0.4:
        yaw = VIEW_YAW["front"]
    elif ratio < -0.4:
        yaw = VIEW_YAW["back"]
    else:
        facing_right = kp[J["nose"], 0] > top[0] if ok[J["nose"]] else rng.random() < 0.5
        yaw = VIEW_YAW["right"] if facing_right else VIEW_YAW["left"]

    shape = fit_lengths(kp, ok, shape, scale)

    def direction(a: str, b: str, length: float) -> np.ndarray | None:
        if not (ok[J[a]] and ok[J[b]]):
            return None
        return (kp[J[b]] - kp[J[a]]) / (scale * length)

    arms, legs = {}, {}
    for side, p, arm, leg in ((-1.0, "r", base.r_arm, base.r_leg), (1.0, "l", base.l_arm, base.l_leg)):
        ua, uf, fa, ff = arm
        if (v := direction(f"{p}_shoulder", f"{p}_elbow", shape.upper_arm)) is not None:
            ua, uf = _segment_angles(v, yaw, side, ua)
        if (v := direction(f"{p}_elbow", f"{p}_wrist", shape.forearm)) is not None:
            fa, ff = _segment_angles(v, yaw, side, fa)
        arms[p] = (ua, uf, fa, ff)
        la, hf, kf = leg
        if (v := direction(f"{p}_hip", f"{p}_knee", shape.thigh)) is not None:
            la, hf = _segment_angles(v, yaw, side, la)
        if (v := direction(f"{p}_knee", f"{p}_ankle", shape.shin)) is not None:
            _, shin = _segment_angles(v, yaw, side, la * 0.5)
            kf = hf - shin
        legs[p] = (la, hf, kf)
    pose = replace(base, view="fit", yaw=float(yaw), kind="fit", r_arm=arms["r"], l_arm=arms["l"],
                   r_leg=legs["r"], l_leg=legs["l"])
    return pose, scale, shape


SEGMENTS = {"upper_arm": ("shoulder", "elbow"), "forearm": ("elbow", "wrist"),
            "thigh": ("hip", "knee"), "shin": ("knee", "ankle")}


def fit_lengths(kp: np.ndarray, ok: np.ndarray, shape, scale: float):
    """The identity's BodyShape with each limb length set to the keypoints' (mean of both
    sides, body units), kept within 0.7-1.5x the identity's own: a segment seen without
    foreshortening then lands on its keypoint."""
    lengths = {}
    for field, (a, b) in SEGMENTS.items():
        d = [np.linalg.norm(kp[J[f"{p}_{b}"]] - kp[J[f"{p}_{a}"]]) / scale
             for p in ("r", "l") if ok[J[f"{p}_{a}"]] and ok[J[f"{p}_{b}"]]]
        if d:
            own = getattr(shape, field)
            lengths[field] = float(np.clip(np.mean(d), 0.7 * own, 1.5 * own))
    return replace(shape, **lengths)


def placement_for(kp: np.ndarray, shape, pose: Pose, scale: float) -> Placement:
    """The Placement that puts the drawn neck/hip midpoint on the keypoints' own."""
    xy, _ = rotate(skeleton(shape, pose), pose.yaw)
    ok = (kp >= 0).all(axis=1)
    anchors = [j for j in ("neck", "r_hip", "l_hip", "r_shoulder", "l_shoulder") if ok[J[j]]]
    idx = [J[j] for j in anchors]
    cx = float(np.mean(kp[idx, 0] - xy[idx, 0] * scale))
    top = float(np.mean(kp[idx, 1] - xy[idx, 1] * scale))
    return Placement(scale, cx, top)


# --------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=4096)
def _identity(seed: int, person_id: int):
    return make_identity(seed, person_id)


def render_item(item: Item, seed: int, height: int = 128, width: int = 64) -> np.ndarray:
    """BGR uint8 [H, W, 3] of one archive image (see the module docstring)."""
    index = int.from_bytes(hashlib.blake2b(item.arcname.encode(), digest_size=6).digest(), "little")
    if item.person_id in (JUNK_ID, DISTRACTOR_ID):
        return render_extra(seed, item.person_id, index, height, width).image
    identity = _identity(seed, item.person_id)
    rng = np.random.default_rng([seed, FIT_STREAM, index])
    fitted = None
    if item.keypoints is not None:
        kp = item.keypoints * np.array([width / 64, height / 128], np.float32)
        fitted = fit_pose(np.where(item.keypoints >= 0, kp, -1.0), identity.shape, rng)
    if fitted is None:
        return render_sample(seed, identity, index % 1_000_000, height, width, stream=FIT_STREAM).image
    pose, scale, shape = fitted
    identity = replace(identity, shape=shape)
    bg = crop(camera_scene(seed, item.camera, height, width), rng, height, width)
    layer = render_person(identity, pose, height, width, placement=placement_for(kp, shape, pose, scale))
    return _compose(bg, layer, rng, item.camera, pose).image


def _render_chunk(args: tuple[list[Item], int]) -> list[bytes]:
    items, seed = args
    out = []
    for item in items:
        ok, buf = cv2.imencode(".jpg", render_item(item, seed), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError(f"{item.arcname}: JPEG encoding failed")
        out.append(buf.tobytes())
    return out


def _chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for s in range(0, len(items), size):
        yield items[s:s + size]


def write_archive(out: str | Path, items: list[Item], seed: int = 0, workers: int = 2,
                  chunk: int = 128, progress: bool = False) -> dict:
    """Render `items` and write the zip (stored: JPEGs do not compress) atomically at `out`.
    Returns counts and the rendering rate."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    t0 = time.perf_counter()
    jobs = [(c, seed) for c in _chunks(items, chunk)]
    ctx = mp.get_context("fork") if workers > 1 else None
    pool = ctx.Pool(workers) if ctx else None
    try:
        results = pool.imap(_render_chunk, jobs) if pool else map(_render_chunk, jobs)
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
            for sub in (*SPLIT_DIRS.values(),):
                zf.writestr(zipfile.ZipInfo(f"{ROOT_DIR}/{sub}/", MTIME), b"")
            zf.writestr(zipfile.ZipInfo(f"{ROOT_DIR}/readme.txt", MTIME),
                        "Synthetic stand-in with the Market-1501 layout and file names.\n")
            done = 0
            for (batch, _), blobs in zip(jobs, results):
                for item, blob in zip(batch, blobs):
                    zf.writestr(zipfile.ZipInfo(item.arcname, MTIME), blob)
                done += len(batch)
                if progress and done % (chunk * 40) < chunk:
                    print(f"  {done}/{len(items)} images", file=sys.stderr)
    finally:
        if pool:
            pool.close()
            pool.join()
    tmp.replace(out)
    seconds = time.perf_counter() - t0
    counts = pd.Series([it.split for it in items]).value_counts().to_dict() if items else {}
    return {"images": len(items), "per_split": counts, "seconds": round(seconds, 2),
            "images_per_s": round(len(items) / max(seconds, 1e-9), 1), "bytes": out.stat().st_size}


def write_subset_files(folder: Path, annotations: dict[str, tuple[list[str], np.ndarray]],
                       items: list[Item], pairs_csv: Path | None) -> None:
    """The annotation CSVs (and test pairs among the kept images) of a subset archive."""
    folder.mkdir(parents=True, exist_ok=True)
    kept = {canonical_name(it.arcname.rsplit("/", 1)[1]) for it in items}
    for split, (names, kp) in annotations.items():
        mask = np.array([canonical_name(n) in kept for n in names], bool)
        write_annotation_csv(folder / ANNOTATIONS[split], np.asarray(names)[mask], kp[mask])
    if pairs_csv is not None:
        pairs = pd.read_csv(pairs_csv, dtype=str, keep_default_na=False)
        both = pairs["from"].map(canonical_name).isin(kept) & pairs["to"].map(canonical_name).isin(kept)
        pairs[both].to_csv(folder / PAIRS_FILE, index=False)


def build(annotations_dir: Path, out: Path, seed: int = 0, fraction: float = 1.0,
          double_jpg: str = "keep", workers: int = 2, progress: bool = False,
          subset_dir: Path | None = None) -> dict:
    """read_canonical + plan + write_archive (+ write_subset_files into subset_dir)."""
    ann = read_canonical(annotations_dir)
    items = plan(ann, seed, fraction, double_jpg)
    info = write_archive(out, items, seed, workers, progress=progress)
    if subset_dir is not None:
        pairs = Path(annotations_dir) / PAIRS_FILE
        write_subset_files(Path(subset_dir), ann, items, pairs if pairs.is_file() else None)
    return info

