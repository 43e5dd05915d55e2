"""Joint orders, COCO-17 -> OpenPose-18 mapping, the keypoint table and the canonical CSV.

Keypoint table (the pose stage's Parquet output), one row per image:
    name, split, person_id, width, height, detected, score, error, model,
    then for every OpenPose-18 joint J (JOINTS order): J_x, J_y, J_c
Coordinates are pixels of the ORIGINAL image (x = column, y = row); a missing joint
has x = y = -1 and c = 0.

Canonical annotation CSV (method.md), byte-compatible with the files every paper uses:
    name:keypoints_y:keypoints_x
    0224_c6s1_055726_02.jpg: [8, 23, ...]: [39, 37, ...]
with integer rows/columns and -1 for missing joints.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

if TYPE_CHECKING:  # pandas is imported where used: the model (and the GPU bench) need only numpy
    import pandas as pd

# OpenPose / COCO-18 order used by the network and by every Market-1501 paper.
JOINTS: tuple[str, ...] = (
    "nose", "neck",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle",
    "l_hip", "l_knee", "l_ankle",
    "r_eye", "l_eye", "r_ear", "l_ear",
)
NUM_JOINTS = len(JOINTS)
J = {name: i for i, name in enumerate(JOINTS)}

# COCO-17 order produced by YOLO pose models (left before right).
COCO17: tuple[str, ...] = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear",
    "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist",
    "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)
# For each OpenPose-18 joint, its COCO-17 index (-1 for the neck, which COCO lacks).
OP18_FROM_COCO17 = np.array([COCO17.index(n) if n in COCO17 else -1 for n in JOINTS])

# Limbs drawn on skeleton previews and used by the protocol masks (OpenPose-18 indices).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
    (2, 8), (5, 11), (8, 11), (2, 5),
)

META_COLUMNS = ("name", "split", "person_id", "width", "height", "detected", "score", "error", "model")
KP_COLUMNS: tuple[str, ...] = tuple(f"{j}_{a}" for j in JOINTS for a in ("x", "y", "c"))
CSV_HEADER = "name:keypoints_y:keypoints_x"


def coco17_to_op18(kp: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """Map COCO-17 keypoints to OpenPose-18.

    kp: [..., 17, 3] as (x, y, confidence). Joints with confidence < min_conf (or <= 0)
    become missing. Returns [..., 18, 3] with missing joints as (-1, -1, 0). The neck is the
    shoulders' midpoint, present only when both shoulders are, with the lower confidence.
    """
    kp = np.asarray(kp, dtype=np.float32)
    out = kp[..., np.maximum(OP18_FROM_COCO17, 0), :].copy()
    ls, rs = kp[..., COCO17.index("l_shoulder"), :], kp[..., COCO17.index("r_shoulder"), :]
    out[..., J["neck"], :2] = (ls[..., :2] + rs[..., :2]) / 2
    out[..., J["neck"], 2] = np.minimum(ls[..., 2], rs[..., 2])
    both = (ls[..., 2] >= max(min_conf, 1e-12)) & (rs[..., 2] >= max(min_conf, 1e-12))
    out[..., J["neck"], 2] = np.where(both, out[..., J["neck"], 2], 0.0)
    missing = out[..., 2] < max(min_conf, 1e-12)
    out[missing] = (-1.0, -1.0, 0.0)
    return out


def present(kp: np.ndarray) -> np.ndarray:
    """[..., 18, >=2] -> bool [..., 18]: joints whose coordinates are not -1."""
    kp = np.asarray(kp)
    return (kp[..., 0] >= 0) & (kp[..., 1] >= 0)


# --------------------------------------------------------------------------- the table


def make_table(
    names: Iterable[str],
    keypoints: np.ndarray,
    *,
    split: Iterable[str] | str = "",
    person_id: Iterable[int] | int = -1,
    width: Iterable[int] | int = 0,
    height: Iterable[int] | int = 0,
    detected: Iterable[bool] | None = None,
    score: Iterable[float] | float = 1.0,
    error: Iterable[str | None] | None = None,
    model: str = "",
) -> pd.DataFrame:
    """Build a keypoint table from arrays. keypoints: [N, 18, 3] (x, y, c) or [N, 18, 2]."""
    import pandas as pd

    names = list(names)
    kp = np.asarray(keypoints, dtype=np.float32)
    # An empty table has nothing to infer the last axis from: keep the given one.
    kp = kp.reshape(len(names), NUM_JOINTS, kp.shape[-1] if kp.size == 0 else -1)
    if kp.shape[-1] == 2:
        conf = present(kp).astype(np.float32)
        kp = np.concatenate([kp, conf[..., None]], axis=-1)
    n = len(names)
    if detected is None:
        detected = present(kp).any(axis=1)
    df = pd.DataFrame(
        {
            "name": pd.Series(names, dtype="string"),
            "split": pd.Series(_broadcast(split, n), dtype="string"),
            "person_id": np.asarray(_broadcast(person_id, n), dtype=np.int64),
            "width": np.asarray(_broadcast(width, n), dtype=np.int32),
            "height": np.asarray(_broadcast(height, n), dtype=np.int32),
            "detected": np.asarray(list(detected), dtype=bool),
            "score": np.asarray(_broadcast(score, n), dtype=np.float32),
            "error": pd.Series(list(error) if error is not None else [None] * n, dtype="string"),
            "model": pd.Series([model] * n, dtype="string"),
        }
    )
    flat = kp.reshape(n, NUM_JOINTS * 3)
    kp_df = pd.DataFrame(flat, columns=list(KP_COLUMNS)).astype(np.float32)
    return pd.concat([df, kp_df], axis=1)


def keypoints_array(table: pd.DataFrame) -> np.ndarray:
    """Keypoint table -> float32 [N, 18, 3] (x, y, c) in original-image pixels."""
    return table[list(KP_COLUMNS)].to_numpy(np.float32).reshape(len(table), NUM_JOINTS, 3)


def scale_keypoints(kp: np.ndarray, src_wh: np.ndarray, dst_hw: tuple[int, int]) -> np.ndarray:
    """Rescale [N, 18, >=2] pixel keypoints from per-image (width, height) [N, 2] to a fixed
    (height, width). Missing joints stay at -1. Returns float32 [N, 18, 2] as (x, y)."""
    kp = np.asarray(kp, dtype=np.float32)[..., :2]
    src = np.asarray(src_wh, dtype=np.float32).reshape(-1, 1, 2)
    scale = np.array([dst_hw[1], dst_hw[0]], dtype=np.float32) / np.maximum(src, 1)
    out = kp * scale
    out[~present(kp)] = -1.0
    return out


def _broadcast(value, n: int) -> list:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"expected {n} values, got {len(values)}")
    return values


# --------------------------------------------------------------------------- canonical CSV


def read_annotation_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Parse a canonical annotation file (fields separated by ": " or ":"). Returns (names,
    [N, 18, 2] float32 (x, y), -1 missing).

    Raises ValueError naming the file and line on any malformed row.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines or lines[0].strip() != CSV_HEADER:
        raise ValueError(f"{path}: expected header {CSV_HEADER!r}")
    names: list[str] = []
    coords: list[list[list[int]]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            # Market's files separate the fields with ": ", DeepFashion's with ":".
            name, ys, xs = (field.strip() for field in line.split(":"))
            y = [int(v) for v in ys.strip("[]").split(",")]
            x = [int(v) for v in xs.strip("[]").split(",")]
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: malformed annotation line: {exc}") from exc
        if len(y) != NUM_JOINTS or len(x) != NUM_JOINTS:
            raise ValueError(f"{path}:{lineno}: expected {NUM_JOINTS} x and y values")
        names.append(name)
        coords.append([x, y])
    arr = np.asarray(coords, dtype=np.float32).reshape(-1, 2, NUM_JOINTS).transpose(0, 2, 1)
    missing = (arr[..., 0] < 0) | (arr[..., 1] < 0)
    arr[missing] = -1.0
    return names, np.ascontiguousarray(arr)


def format_annotation_csv(names: Iterable[str], kp: np.ndarray) -> str:
    """Canonical CSV text for [N, 18, >=2] (x, y) keypoints; coordinates rounded to ints."""
    kp = np.asarray(kp, dtype=np.float32)[..., :2]
    miss = ~present(kp)
    ints = np.rint(kp).astype(np.int64)
    ints[miss] = -1
    rows = [CSV_HEADER]
    for name, pts in zip(names, ints):
        ys = ", ".join(str(v) for v in pts[:, 1])
        xs = ", ".join(str(v) for v in pts[:, 0])
        rows.append(f"{name}: [{ys}]: [{xs}]")
    return "\n".join(rows) + "\n"


def write_annotation_csv(path: str | Path, names: Iterable[str], kp: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(format_annotation_csv(names, kp))
