"""Target poses for interactive re-posing (the web demo): a gallery of test-set poses,
skeleton pictures, and hand edits of a pose.

A pose travels as the pose-file JSON of pipeline.infer.repose ({"keypoints": [[x, y], ...18],
"width": W, "height": H}, -1 missing), so it carries its own frame and fits any model
resolution (repose.parse_poses rescales it).

The gallery comes from the pose stage's keypoint table (test split, usable people, with
their photos as examples) when the pipeline has run, else from the synthetic renderer's test
identities (pipeline.datasets.synthetic), written as example photos into a given folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.core.keypoints import J, JOINTS, NUM_JOINTS, keypoints_array, present, scale_keypoints
from pipeline.data.preview import draw_skeleton
from pipeline.datasets.market1501 import SPLIT_DIRS
from pipeline.infer.repose import ReposeError

CANVAS_GREY = 40  # background of a bare skeleton picture
SYNTHETIC_HW = (128, 64)  # the synthetic gallery's frame: Market-1501's crop size


@dataclass(frozen=True)
class PoseGallery:
    """N poses with the frames they were measured in.

    keypoints: float32 [N, 18, 2] (x, y) pixels of their frame, -1 missing;
    frames: int [N, 2] (width, height); photos: the N source photos (examples), or None.
    """

    names: list[str]
    keypoints: np.ndarray
    frames: np.ndarray
    photos: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def at(self, index: int, hw: tuple[int, int]) -> np.ndarray:
        """Pose `index` rescaled to (height, width) hw: float32 [18, 2]."""
        if not 0 <= int(index) < len(self):
            raise ReposeError(f"gallery pose {index} does not exist (the gallery has {len(self)} poses, 0..{len(self) - 1})")
        i = int(index)
        return scale_keypoints(self.keypoints[i : i + 1], self.frames[i : i + 1], hw)[0]

    def as_json(self, index: int) -> dict:
        """Pose `index` in its own frame, as pose-file JSON."""
        w, h = (int(v) for v in self.frames[index])
        return pose_json(self.at(index, (h, w)), (h, w))


def _spread(n: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over range(n) (all of them when n <= count)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, count)).round().astype(int)) if n else np.zeros(0, int)


def gallery_from_table(table_path: str | Path, dataset_dir: str | Path, count: int = 24) -> PoseGallery:
    """Usable test-split people of the pose stage's keypoint table (both shoulders and hips, a
    real person id), `count` of them spread over the split; photos where the files exist."""
    import pandas as pd

    from pipeline.data.pairs import usable

    table = pd.read_parquet(table_path)
    rows = table[(table["split"] == "test") & usable(table)].sort_values("name")
    rows = rows.iloc[_spread(len(rows), count)]
    folder = Path(dataset_dir) / SPLIT_DIRS["test"]
    photos = [folder / n for n in rows["name"]]
    return PoseGallery(
        names=[Path(n).stem for n in rows["name"]],
        keypoints=keypoints_array(rows)[..., :2].copy(),
        frames=rows[["width", "height"]].to_numpy(np.int64),
        photos=photos if photos and all(p.is_file() for p in photos) else None,
    )


def synthetic_gallery(out_dir: str | Path, count: int = 24, seed: int = 0,
                      hw: tuple[int, int] = SYNTHETIC_HW) -> PoseGallery:
    """`count` renders of synthetic test identities (ids after the quickstart's 24 training
    ones), written as JPEGs into out_dir (the demo's examples), with their true keypoints."""
    from pipeline.datasets.synthetic import make_identity, render_sample

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, kps, photos = [], [], []
    for k in range(count):
        pid, index = 25 + k % 8, k // 8
        sample = render_sample(seed, make_identity(seed, pid), index, *hw)
        name = f"synthetic_{pid:04d}_{index:02d}"
        photo = out_dir / f"{name}.jpg"
        cv2.imwrite(str(photo), sample.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        names.append(name)
        kps.append(sample.keypoints)
        photos.append(photo)
    frames = np.tile(np.array([hw[1], hw[0]], np.int64), (count, 1))
    return PoseGallery(names, np.stack(kps).astype(np.float32), frames, photos)


# --------------------------------------------------------------------------- pictures


def skeleton_picture(kp: np.ndarray, hw: tuple[int, int], scale: int = 2,
                     image: np.ndarray | None = None) -> np.ndarray:
    """The skeleton kp [18, 2] (pixels of an hw frame) drawn over `image` (RGB uint8 [h, w, 3])
    or a grey canvas, upscaled by `scale`: RGB uint8 [h * scale, w * scale, 3]."""
    h, w = hw
    base = np.full((h, w, 3), CANVAS_GREY, np.uint8) if image is None else image[..., ::-1]
    return np.ascontiguousarray(draw_skeleton(np.ascontiguousarray(base), kp, scale)[..., ::-1])


# --------------------------------------------------------------------------- edits


def pose_json(kp: np.ndarray, hw: tuple[int, int]) -> dict:
    """float32 [18, 2] in an hw frame -> pose-file JSON (rounded to 0.1 px, -1 missing)."""
    pts = np.asarray(kp, np.float32).reshape(NUM_JOINTS, 2)
    ok = present(pts)
    joints = [[round(float(x), 1), round(float(y), 1)] if k else [-1, -1] for (x, y), k in zip(pts, ok)]
    return {"keypoints": joints, "width": int(hw[1]), "height": int(hw[0])}


def move_joint(pose: dict, joint: str, x: float, y: float, scale: float = 1.0) -> dict:
    """A copy of pose-file JSON `pose` with `joint` (a JOINTS name) moved to (x, y), given in
    pixels of the pose's frame upscaled by `scale` (a click on its skeleton picture)."""
    if joint not in J:
        raise ReposeError(f"unknown joint {joint!r}; one of {', '.join(JOINTS)}")
    w, h = float(pose["width"]), float(pose["height"])
    # Pixel-centre convention (pipeline.data.preview): picture pixel p shows frame point (p + 0.5) / scale - 0.5.
    fx = min(max((float(x) + 0.5) / scale - 0.5, 0.0), w - 1)
    fy = min(max((float(y) + 0.5) / scale - 0.5, 0.0), h - 1)
    joints = [list(j) for j in pose["keypoints"]]
    joints[J[joint]] = [round(fx, 1), round(fy, 1)]
    return {**pose, "keypoints": joints}
