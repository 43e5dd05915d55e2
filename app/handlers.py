"""The demo's requests: uploaded files and choices in, pictures and one status line out.

Plain Python (no gradio): app/ui.py wires these to the page. Each request decodes its
photos (size-capped: repose.read_image), finds the people (one YOLO batch), generates,
encodes the result into the demo's temp folder and reports the time each step took. A bad
input of any kind comes back as a status line starting with "Error:" and empty pictures,
never as an exception: the server keeps serving.

Every request returns (source picture, target picture, result file, status):
    source picture: the source crop with its detected skeleton, RGB uint8 [h, w, 3] (x2);
    target picture: the target skeleton (over the target crop for a photo) or, for an
        animation, the sequence's skeletons side by side;
    result file: a PNG (one pose) or an animated GIF, at the model resolution.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline.infer.poses import PoseGallery, move_joint, skeleton_picture
from pipeline.infer.repose import (MAX_PIXELS, Person, Reposer, ReposeError, check_usable, parse_poses,
                                   read_image, write_gif, write_png)

log = logging.getLogger("app")
PICTURE_SCALE = 2  # source / target pictures are shown at twice the model resolution
CANVAS_HEIGHT = 384  # the pose editor's picture height (pixels)
MAX_FRAMES = 32  # poses in one animation
Outputs = tuple[Any, Any, Any, str]


class Stopwatch:
    """Wall time per named step of one request, in order."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.steps[step] = self.steps.get(step, 0.0) + time.perf_counter() - t0

    def summary(self) -> str:
        total = sum(self.steps.values())
        parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.steps.items())
        return f"{total * 1000:.0f} ms ({parts})"


def upload_path(payload: Any, what: str) -> tuple[str, str]:
    """A gradio file payload ({"path", "orig_name", ...}, or a path string) -> (path on
    disk, the name the user knows it by). Nothing given raises ReposeError."""
    if isinstance(payload, dict) and payload.get("path"):
        return payload["path"], payload.get("orig_name") or Path(payload["path"]).name
    if isinstance(payload, (str, Path)) and str(payload):
        return str(payload), Path(payload).name
    raise ReposeError(f"no {what} photo: upload one, take one with the webcam or pick an example")


@dataclass
class Demo:
    """What the page serves: one Reposer per checkpoint (or the reason it cannot load),
    the pose gallery and the temp folder every output goes to."""

    models: dict[str, Reposer | str]
    gallery: PoseGallery
    workdir: Path
    max_pixels: int = MAX_PIXELS
    default_model: str = field(default="")

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.default_model = self.default_model or next(iter(self.models))

    # ------------------------------------------------------------------ helpers

    def reposer(self, model: str | None) -> Reposer:
        entry = self.models.get(model or self.default_model)
        if entry is None:
            raise ReposeError(f"unknown model {model!r}; this demo serves {', '.join(self.models)}")
        if isinstance(entry, str):
            raise ReposeError(entry)  # why the checkpoint did not load
        return entry

    def _out(self, suffix: str) -> Path:
        return self.workdir / "outputs" / f"{uuid.uuid4().hex}{suffix}"

    def _photos(self, watch: Stopwatch, r: Reposer, payloads: list[tuple[Any, str]]) -> list[Person]:
        files = [upload_path(p, what) for p, what in payloads]
        with watch("decode"):
            images = [read_image(path, self.max_pixels, label) for path, label in files]
        with watch("pose"):
            return r.people(images, [label for _, label in files], [what for _, what in payloads])

    def _finish(self, watch: Stopwatch, r: Reposer, source: Person, targets: np.ndarray,
                target_picture: np.ndarray) -> Outputs:
        with watch("generate"):
            frames = r.generate(source, targets)
        with watch("encode"):
            out = write_png(frames[0], self._out(".png")) if len(frames) == 1 else \
                write_gif(frames, self._out(".gif"))
        h, w = r.hw
        what = "PNG" if len(frames) == 1 else f"GIF of {len(frames)} frames"
        status = f"Done in {watch.summary()}: {w}x{h} {what}, model {Path(r.label).name}."
        return (skeleton_picture(source.keypoints, r.hw, PICTURE_SCALE, source.image),
                target_picture, str(out), status)

    @staticmethod
    def _guarded(fn: Callable[[], Outputs]) -> Outputs:
        try:
            return fn()
        except ReposeError as exc:
            return None, None, None, f"Error: {exc}"
        except Exception as exc:  # a bug, not the user's input: one line here, the traceback in the log
            log.exception("request failed")
            return None, None, None, f"Error: internal error ({type(exc).__name__}: {exc})"

    # ------------------------------------------------------------------ requests

    def repose_photo(self, model: str, source: Any, target: Any) -> Outputs:
        """Re-pose the source person into the pose of the person in the target photo."""
        def run() -> Outputs:
            watch, r = Stopwatch(), self.reposer(model)
            src, tgt = self._photos(watch, r, [(source, "source"), (target, "target")])
            picture = skeleton_picture(tgt.keypoints, r.hw, PICTURE_SCALE, tgt.image)
            return self._finish(watch, r, src, tgt.keypoints[None], picture)
        return self._guarded(run)

    def repose_gallery(self, model: str, source: Any, index: float | int | None) -> Outputs:
        """Re-pose the source person into gallery pose `index`."""
        def run() -> Outputs:
            watch, r = Stopwatch(), self.reposer(model)
            if index is None:
                raise ReposeError("no gallery pose chosen: click one of the poses")
            kp = self.gallery.at(int(index), r.hw)
            (src,) = self._photos(watch, r, [(source, "source")])
            return self._finish(watch, r, src, kp[None], skeleton_picture(kp, r.hw, PICTURE_SCALE))
        return self._guarded(run)

    def repose_pose(self, model: str, source: Any, pose_text: str) -> Outputs:
        """Re-pose the source person into a pose given as pose-file JSON (the editor's)."""
        def run() -> Outputs:
            watch, r = Stopwatch(), self.reposer(model)
            kp = self._parse_pose(pose_text, r.hw)
            (src,) = self._photos(watch, r, [(source, "source")])
            return self._finish(watch, r, src, kp[None], skeleton_picture(kp, r.hw, PICTURE_SCALE))
        return self._guarded(run)

    def animate(self, model: str, source: Any, indices: str) -> Outputs:
        """Re-pose the source person into a sequence of gallery poses ("3, 7, 12") -> GIF."""
        def run() -> Outputs:
            watch, r = Stopwatch(), self.reposer(model)
            order = self._indices(indices)
            kp = np.stack([self.gallery.at(i, r.hw) for i in order])
            (src,) = self._photos(watch, r, [(source, "source")])
            strip = np.concatenate([skeleton_picture(k, r.hw, 1) for k in kp], axis=1)
            return self._finish(watch, r, src, kp, strip)
        return self._guarded(run)

    # ------------------------------------------------------------------ the pose editor

    def gallery_pose_json(self, index: float | int | None) -> str:
        """Gallery pose `index` (default 0) as editable pose-file JSON text."""
        try:
            return json.dumps(self.gallery.as_json(int(index or 0)))
        except ReposeError as exc:
            return json.dumps({"error": str(exc)})

    def editor_picture(self, pose_text: str) -> tuple[np.ndarray | None, str]:
        """The skeleton of the edited pose (CANVAS_HEIGHT high) and a status line."""
        try:
            pose = json.loads(pose_text)
            h, w = int(pose["height"]), int(pose["width"])
            kp = self._parse_pose(pose_text, (h, w), check=False)
        except (ReposeError, ValueError, KeyError, TypeError) as exc:
            return None, f"Error: the edited pose: {exc}"
        return skeleton_picture(kp, (h, w), self.canvas_scale(h)), "Click the picture to move the chosen joint."

    def click_joint(self, pose_text: str, joint: str, xy: tuple[float, float]) -> tuple[str, np.ndarray | None, str]:
        """Move `joint` to a click at picture pixel xy; returns (JSON, picture, status)."""
        try:
            pose = json.loads(pose_text)
            moved = json.dumps(move_joint(pose, joint, xy[0], xy[1], self.canvas_scale(int(pose["height"]))))
        except (ReposeError, ValueError, KeyError, TypeError) as exc:
            return pose_text, None, f"Error: the edited pose: {exc}"
        picture, status = self.editor_picture(moved)
        return moved, picture, status

    @staticmethod
    def canvas_scale(height: int) -> int:
        return max(1, round(CANVAS_HEIGHT / max(height, 1)))

    @staticmethod
    def _parse_pose(pose_text: str, hw: tuple[int, int], check: bool = True) -> np.ndarray:
        try:
            obj = json.loads(pose_text or "")
        except ValueError as exc:
            raise ReposeError(f"the pose is not valid JSON ({exc})") from None
        poses = parse_poses(obj, "the pose", *hw)
        if len(poses) != 1:
            raise ReposeError(f"the pose: expected one pose, got {len(poses)}")
        if check:
            check_usable(poses[0][1], "the pose", "target")
        return poses[0][1]

    def _indices(self, text: str) -> list[int]:
        try:
            order = [int(t) for t in str(text).replace(",", " ").split()]
        except ValueError:
            raise ReposeError(f"pose sequence {text!r}: give gallery numbers, e.g. 0, 5, 9, 12") from None
        if not 2 <= len(order) <= MAX_FRAMES:
            raise ReposeError(f"pose sequence {text!r}: give 2 to {MAX_FRAMES} gallery numbers")
        return order
