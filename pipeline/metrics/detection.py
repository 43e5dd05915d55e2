"""Detection score (DS) and pose accuracy (PCKh) of generated images with the YOLO pose model.

DS: for each image, the highest person-box confidence the YOLO pose model gives (0 when no
box above `det_conf`); DS = mean over images. The papers used an SSD detector, so our DS is
NOT comparable with theirs, only between our own runs.

PCKh@alpha: the pose model's keypoints of the main person (pipeline.data.pose.main_person_index),
mapped to OpenPose-18 (pipeline.data.pose.to_op18), against the TARGET keypoints. Market crops
have no head box, so the head size h is the larger side of the bounding box of the target's
head points (nose, neck, eyes, ears) present, when at least two are; images with fewer are
left out. A target joint counts as correct when the prediction has it and it lies within
alpha * h (alpha = 0.5); a joint the prediction misses is wrong. PCKh = correct / target
joints, pooled over all images.

ultralytics is imported only inside the functions that need it (via pipeline.data.pose).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.core.config import PoseConfig
from pipeline.core.keypoints import J, present

HEAD_JOINTS = (J["nose"], J["neck"], J["r_eye"], J["l_eye"], J["r_ear"], J["l_ear"])
DET_CONF = 0.01  # keep weak detections: DS averages the confidence, a cut-off would bias it


def load_detector(weights: str, device: str = "auto"):
    """A pipeline.data.pose.PoseModel (raises FileNotFoundError/ValueError with the reason)."""
    from pipeline.data import pose

    return pose.load_model(weights, device)


def detect(
    images,
    model,
    cfg: PoseConfig,
    *,
    det_conf: float = DET_CONF,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the pose model on uint8 RGB [B, H, W, 3].

    Returns (score float64 [B]: max person confidence, 0 when none;
             keypoints float32 [B, 18, 3]: OpenPose-18 (x, y, c) of the main person, -1 missing).
    """
    from pipeline.data import pose

    images = np.asarray(images)
    b, h, w = images.shape[:3]
    kwargs = pose.predict_kwargs(model, dataclasses.replace(cfg, conf=det_conf))
    score = np.zeros(b, dtype=np.float64)
    coco = np.zeros((b, 17, 3), dtype=np.float32)
    sizes = np.tile([w, h], (b, 1))
    step = max(int(cfg.batch), 1)
    for s in range(0, b, step):
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in images[s : s + step]]  # YOLO wants BGR arrays
        found = pose.main_people(pose.predict(model, bgr, **kwargs), sizes[s : s + step])
        score[s : s + step], coco[s : s + step] = found.best, found.coco
    return score, pose.to_op18(coco, sizes, cfg.kpt_conf)


def head_size(target) -> np.ndarray:
    """[B, 18, >=2] -> [B]: larger side of the bbox of the present head points (NaN if < 2)."""
    kp = np.asarray(target, dtype=np.float64)[..., :2]
    head = kp[:, HEAD_JOINTS]
    ok = present(head)
    lo = np.where(ok[..., None], head, np.inf).min(1)
    hi = np.where(ok[..., None], head, -np.inf).max(1)
    size = (hi - lo).max(-1)
    return np.where(ok.sum(1) >= 2, size, np.nan)


def pckh(pred, target, alpha: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Per image (correct, total) int64 [B] for PCKh@alpha; total = target joints counted."""
    pred = np.asarray(pred, dtype=np.float64)[..., :2]
    target = np.asarray(target, dtype=np.float64)[..., :2]
    h = head_size(target)
    counted = present(target) & np.isfinite(h)[:, None]
    dist = np.linalg.norm(pred - target, axis=-1)
    hit = counted & present(pred) & (dist <= alpha * np.nan_to_num(h, nan=0.0)[:, None])
    return hit.sum(1).astype(np.int64), counted.sum(1).astype(np.int64)
