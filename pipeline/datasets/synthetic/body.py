"""Kinematic body model of the synthetic people: pose parameters -> 3D points -> 2D view.

Body frame, in units of the person's standing height (head top Y = 0, soles Y = 1):
    X points to the person's LEFT, Y points down, Z points where the person faces.
A view is a yaw `theta` about Y followed by an orthographic projection onto the image:
    x' = X cos(theta) + Z sin(theta),  depth = -X sin(theta) + Z cos(theta)  (larger = nearer).
theta = 0 is a front view (the person's right side appears on the image's LEFT, as OpenPose
expects), pi a back view, +pi/2 shows the person's right side walking to the image's right.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.core.keypoints import JOINTS

# Named points of the skeleton: the 18 OpenPose joints first (same indices), then helpers.
EXTRA_POINTS: tuple[str, ...] = (
    "head", "pelvis", "r_hand", "l_hand", "r_heel", "r_toe", "l_heel", "l_toe",
)
POINTS: tuple[str, ...] = JOINTS + EXTRA_POINTS
P = {name: i for i, name in enumerate(POINTS)}

VIEW_YAW: dict[str, float] = {"front": 0.0, "back": np.pi, "right": np.pi / 2, "left": -np.pi / 2}
VIEWS: tuple[str, ...] = tuple(VIEW_YAW)
VIEW_PROBS = (0.35, 0.35, 0.15, 0.15)
KINDS: tuple[str, ...] = ("walk", "stand", "gesture")
KIND_PROBS = (0.55, 0.25, 0.2)
GESTURES: tuple[str, ...] = ("phone", "hip", "forward", "wave", "carry")
SOLE_RADIUS = 0.02  # shoe half height below the heel/toe points

# Outward normals (body frame) of the face keypoints; a point is visible when its normal,
# rotated into the view, points towards the camera by more than the threshold.
_FACE_VISIBILITY: dict[str, tuple[tuple[float, float, float], float]] = {
    "nose": ((0.0, 0.18, 0.98), -0.2),
    "r_eye": ((-0.42, -0.1, 0.9), 0.05),
    "l_eye": ((0.42, -0.1, 0.9), 0.05),
    "r_ear": ((-0.99, 0.05, -0.05), -0.35),
    "l_ear": ((0.99, 0.05, -0.05), -0.35),
}


@dataclass(frozen=True)
class BodyShape:
    """Per-identity proportions (body-height units)."""

    shoulder: float = 0.105     # half distance between the shoulder joints
    hip: float = 0.062          # half distance between the hip joints
    chest_depth: float = 0.06   # half depth of the torso (its width in a side view)
    head_rx: float = 0.056      # head half width (= half depth)
    head_ry: float = 0.068      # head half height
    limb: float = 1.0           # limb thickness factor
    upper_arm: float = 0.165
    forearm: float = 0.145
    thigh: float = 0.235
    shin: float = 0.235


@dataclass(frozen=True)
class Pose:
    """One pose: view yaw and joint angles (radians).

    Arms: (upper abduction, upper flexion, forearm abduction, forearm flexion), angles of each
    segment measured from hanging straight down: abduction swings it outward in the frontal
    plane, flexion forward. Legs: (abduction, hip flexion, knee flexion).
    """

    view: str
    yaw: float
    kind: str
    r_arm: tuple[float, float, float, float]
    l_arm: tuple[float, float, float, float]
    r_leg: tuple[float, float, float]
    l_leg: tuple[float, float, float]


def segment_dir(abduction: float, flexion: float, side: float) -> np.ndarray:
    """Unit vector of a segment hanging down (+Y), swung outward (side -1 right, +1 left)
    by `abduction` and then forward (+Z) by `flexion`."""
    y = np.cos(abduction)
    return np.array([side * np.sin(abduction), y * np.cos(flexion), y * np.sin(flexion)])


def skeleton(shape: BodyShape, pose: Pose) -> np.ndarray:
    """3D points [len(POINTS), 3] in the body frame, shifted so the lowest sole touches Y = 1."""
    s = shape
    pts = np.zeros((len(POINTS), 3))
    head = np.array([0.0, s.head_ry + 0.01, 0.0])
    pts[P["head"]] = head
    rx, ry = s.head_rx, s.head_ry
    pts[P["nose"]] = head + (0.0, 0.2 * ry, 0.86 * rx)
    pts[P["r_eye"]] = head + (-0.38 * rx, -0.08 * ry, 0.82 * rx)
    pts[P["l_eye"]] = head + (0.38 * rx, -0.08 * ry, 0.82 * rx)
    pts[P["r_ear"]] = head + (-0.85 * rx, 0.08 * ry, -0.05 * rx)
    pts[P["l_ear"]] = head + (0.85 * rx, 0.08 * ry, -0.05 * rx)
    sh_y, hip_y = 0.195, 0.515
    pts[P["neck"]] = (0.0, sh_y, 0.0)
    pts[P["pelvis"]] = (0.0, hip_y, 0.0)
    for side, prefix, arm, leg in ((-1.0, "r", pose.r_arm, pose.r_leg), (1.0, "l", pose.l_arm, pose.l_leg)):
        shoulder = np.array([side * s.shoulder, sh_y, 0.0])
        elbow = shoulder + s.upper_arm * segment_dir(arm[0], arm[1], side)
        fore = segment_dir(arm[2], arm[3], side)
        wrist = elbow + s.forearm * fore
        pts[P[f"{prefix}_shoulder"]] = shoulder
        pts[P[f"{prefix}_elbow"]] = elbow
        pts[P[f"{prefix}_wrist"]] = wrist
        pts[P[f"{prefix}_hand"]] = wrist + 0.04 * fore
        hip = np.array([side * s.hip, hip_y, 0.0])
        knee = hip + s.thigh * segment_dir(leg[0], leg[1], side)
        ankle = knee + s.shin * segment_dir(leg[0] * 0.5, leg[1] - leg[2], side)
        pts[P[f"{prefix}_hip"]] = hip
        pts[P[f"{prefix}_knee"]] = knee
        pts[P[f"{prefix}_ankle"]] = ankle
        pts[P[f"{prefix}_heel"]] = ankle + (0.0, 0.028, -0.018)
        pts[P[f"{prefix}_toe"]] = ankle + (0.0, 0.036, 0.065)
    feet = [P[n] for n in ("r_heel", "r_toe", "l_heel", "l_toe")]
    pts[:, 1] += 1.0 - SOLE_RADIUS - pts[feet, 1].max()
    return pts


def rotate(points: np.ndarray, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame [..., 3] -> (image-plane x', y) [..., 2] and depth [...] (nearer = larger)."""
    c, s = np.cos(yaw), np.sin(yaw)
    x = points[..., 0] * c + points[..., 2] * s
    depth = -points[..., 0] * s + points[..., 2] * c
    return np.stack([x, points[..., 1]], axis=-1), depth


def to_body(vectors: np.ndarray, yaw: float) -> np.ndarray:
    """Inverse rotation of view-frame vectors [..., 3] (x', y, depth) back to the body frame."""
    c, s = np.cos(yaw), np.sin(yaw)
    x = vectors[..., 0] * c - vectors[..., 2] * s
    z = vectors[..., 0] * s + vectors[..., 2] * c
    return np.stack([x, vectors[..., 1], z], axis=-1)


def face_visibility(yaw: float) -> dict[str, bool]:
    """Which face keypoints (nose, eyes, ears) face the camera enough to be annotated."""
    out = {}
    for name, (normal, thr) in _FACE_VISIBILITY.items():
        n = np.asarray(normal) / np.linalg.norm(normal)
        out[name] = bool(rotate(n, yaw)[1] > thr)
    return out


# --------------------------------------------------------------------------- sampling


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_pose(rng: np.random.Generator, view: str | None = None, kind: str | None = None) -> Pose:
    """A random pose: walking phase, standing, or a gesture, seen from a jittered view."""
    if view is None:
        view = VIEWS[rng.choice(len(VIEWS), p=VIEW_PROBS)]
    if view not in VIEW_YAW:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}")
    if kind is None:
        kind = KINDS[rng.choice(len(KINDS), p=KIND_PROBS)]
    if kind not in KINDS:
        raise ValueError(f"unknown pose kind {kind!r}; expected one of {KINDS}")
    yaw = VIEW_YAW[view] + float(np.clip(rng.normal(0.0, 0.18), -0.35, 0.35))
    legs_walk = kind == "walk" or (kind == "gesture" and rng.random() < 0.5)
    r_leg, l_leg = _walk_legs(rng) if legs_walk else _stand_legs(rng)
    if kind == "walk":
        r_arm, l_arm = _walk_arms(rng)
    else:
        r_arm, l_arm = _stand_arm(rng), _stand_arm(rng)
        if kind == "gesture":
            which = rng.integers(0, 3)  # 0 right, 1 left, 2 both
            if which in (0, 2):
                r_arm = _gesture_arm(rng, GESTURES[rng.integers(len(GESTURES))])
            if which in (1, 2):
                l_arm = _gesture_arm(rng, GESTURES[rng.integers(len(GESTURES))])
    return Pose(view, yaw, kind, r_arm, l_arm, r_leg, l_leg)


def _walk_legs(rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    phase = _u(rng, 0.0, 2 * np.pi)
    amp, knee = _u(rng, 0.15, 0.38), _u(rng, 0.25, 0.65)
    legs = []
    for ph in (phase, phase + np.pi):
        # The knee bends while the leg swings forward (cos > 0), straight at heel strike.
        legs.append((_u(rng, 0.0, 0.04), amp * np.sin(ph), 0.06 + knee * max(0.0, np.cos(ph))))
    return tuple(legs)


def _stand_legs(rng: np.random.Generator) -> tuple[tuple[float, float, float], ...]:
    bent = rng.integers(0, 2)
    return tuple(
        (_u(rng, 0.02, 0.09), float(rng.normal(0, 0.05)),
         _u(rng, 0.1, 0.25) if i == bent else _u(rng, 0.0, 0.05))
        for i in range(2)
    )


def _walk_arms(rng: np.random.Generator) -> tuple[tuple[float, float, float, float], ...]:
    phase = _u(rng, 0.0, 2 * np.pi)
    amp, elbow = _u(rng, 0.15, 0.45), _u(rng, 0.1, 0.35)
    arms = []
    for sign in (-1.0, 1.0):
        flex = sign * amp * np.sin(phase)
        abd = _u(rng, 0.07, 0.14)
        arms.append((abd, flex, abd * 0.7, flex + elbow + 0.5 * max(0.0, flex)))
    return tuple(arms)


def _stand_arm(rng: np.random.Generator) -> tuple[float, float, float, float]:
    abd, flex = _u(rng, 0.08, 0.18), float(rng.normal(0, 0.08))
    return abd, flex, abd * 0.8, flex + _u(rng, 0.05, 0.3)


def _gesture_arm(rng: np.random.Generator, gesture: str) -> tuple[float, float, float, float]:
    if gesture == "phone":   # hand up in front of the chest or face
        return _u(rng, 0.05, 0.15), _u(rng, 0.1, 0.4), _u(rng, -0.3, 0.0), _u(rng, 2.2, 2.7)
    if gesture == "hip":     # hand on the hip, elbow out
        return _u(rng, 0.5, 0.8), _u(rng, -0.3, -0.1), _u(rng, -1.2, -0.8), _u(rng, -0.1, 0.1)
    if gesture == "forward":  # pointing / reaching forward
        flex = _u(rng, 0.8, 1.4)
        return _u(rng, 0.0, 0.2), flex, _u(rng, 0.0, 0.2), flex + _u(rng, 0.0, 0.4)
    if gesture == "wave":    # forearm raised beside the head
        return _u(rng, 0.45, 0.8), _u(rng, 0.0, 0.3), _u(rng, 2.7, 3.0), _u(rng, -0.1, 0.2)
    if gesture == "carry":   # elbow bent, carrying something
        return _u(rng, 0.1, 0.2), _u(rng, 0.0, 0.2), _u(rng, 0.0, 0.2), _u(rng, 0.7, 1.1)
    raise ValueError(f"unknown gesture {gesture!r}; expected one of {GESTURES}")
