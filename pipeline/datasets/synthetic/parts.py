"""The body parts of a synthetic person as drawing steps into a part-id canvas.

Each step carries a depth key; drawing the steps sorted by key (far first) is the painter's
algorithm that gives the right occlusions for every view: the far arm and leg behind the
torso in side views, long hair behind the shoulders from the front but over the back from
behind, a backpack hidden from the front, and so on. All drawing is in canvas pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from pipeline.core.keypoints import J
from pipeline.datasets.synthetic.body import P, Pose, face_visibility, rotate, to_body
from pipeline.datasets.synthetic.identity import Identity

# Materials (index into the per-image palette).
BACKGROUND, SKIN, HAIR, SHIRT, LOWER, SHOES, BAG, EYE = range(8)
MAX_PARTS = 127  # ids >= 128 mark the second colour of a pattern
_SHIFT = 4       # fixed-point bits for cv2 polygon coordinates
_CIRCLE = np.stack([np.cos(a := np.linspace(0, 2 * np.pi, 16, endpoint=False)), np.sin(a)], 1)
# Body direction (up and back) that hair covers on the head.
_UP_BACK = np.array([0.0, -0.74, -0.67])

Step = tuple[float, Callable[["Canvas"], None]]


class Canvas:
    """A uint8 part-id map plus the material and shade of each part id (0 = background)."""

    def __init__(self, height: int, width: int):
        self.ids = np.zeros((height, width), np.uint8)
        self.material = [BACKGROUND]
        self.shade = [1.0]

    def part(self, material: int, shade: float = 1.0) -> int:
        if len(self.material) >= MAX_PARTS:
            raise RuntimeError(f"more than {MAX_PARTS} parts for the part-id map")
        self.material.append(material)
        self.shade.append(shade)
        return len(self.material) - 1

    def fill(self, polys: list[np.ndarray], pid: int) -> None:
        # One call per polygon: fillPoly on several overlapping polygons leaves holes (even-odd).
        for poly in polys:
            pts = np.round(np.asarray(poly) * (1 << _SHIFT)).astype(np.int32)
            cv2.fillPoly(self.ids, [pts], int(pid), cv2.LINE_8, _SHIFT)


@dataclass(frozen=True)
class Frame:
    """The geometry of one render. pts3: body-frame skeleton [len(POINTS), 3]; depth: view
    depth of each point; c: canvas xy of each point [len(POINTS), 2]; k: body unit -> canvas px."""

    identity: Identity
    pose: Pose
    pts3: np.ndarray
    depth: np.ndarray
    c: np.ndarray
    k: float

    @property
    def cos(self) -> float:
        return float(np.cos(self.pose.yaw))

    def proj(self, p3) -> np.ndarray:
        """Body-frame point(s) [..., 3] -> canvas xy [..., 2]."""
        q, _ = rotate(np.asarray(p3, float), self.pose.yaw)
        origin, pelvis_y = self.c[P["pelvis"]], self.pts3[P["pelvis"], 1]
        return np.stack([origin[0] + q[..., 0] * self.k, origin[1] + (q[..., 1] - pelvis_y) * self.k], -1)

    def halfwidth(self, w: float, d: float) -> float:
        """Projected half width (canvas px) of a horizontal section with half axes w (X), d (Z)."""
        return float(np.hypot(w * np.cos(self.pose.yaw), d * np.sin(self.pose.yaw))) * self.k


def capsule(a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Convex outline [K, 2] of a tapered capsule from a (radius ra) to b (radius rb)."""
    pts = np.concatenate([a + ra * _CIRCLE, b + rb * _CIRCLE]).astype(np.float32)
    return cv2.convexHull(pts).reshape(-1, 2)


def hull(points: list[np.ndarray]) -> np.ndarray:
    return cv2.convexHull(np.concatenate([np.reshape(p, (-1, 2)) for p in points]).astype(np.float32)).reshape(-1, 2)


def polyline_cut(points: np.ndarray, radii: np.ndarray, fraction: float) -> list[np.ndarray]:
    """Capsules covering the first `fraction` of a polyline's length (sleeves, trouser legs)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    todo = fraction * seg.sum()
    out = []
    for i, length in enumerate(seg):
        if todo <= 1e-6:
            break
        t = min(1.0, todo / max(length, 1e-6))
        end = points[i] + t * (points[i + 1] - points[i])
        out.append(capsule(points[i], end, radii[i], radii[i] + t * (radii[i + 1] - radii[i])))
        todo -= length
    return out


def _far_shade(depth: float) -> float:
    """Limbs on the far side of the body are a little darker (they are in the body's shade)."""
    return 1.0 - 0.22 * float(np.clip(-depth / 0.1, 0.0, 1.0))


def body_steps(f: Frame) -> list[Step]:
    """Every drawing step of the person, unsorted."""
    return [*_legs(f), *_lower_body(f), _torso(f), *_arms(f), *_bags(f), *_head(f)]


def draw(canvas: Canvas, steps: list[Step]) -> None:
    """Painter's algorithm: far steps first; the stable sort keeps list order on ties."""
    for _, step in sorted(steps, key=lambda s: s[0]):
        step(canvas)


# --------------------------------------------------------------------------- limbs


def _legs(f: Frame) -> list[Step]:
    """Legs always go behind the pelvis and torso; the far leg first."""
    steps = []
    ident, k = f.identity, f.k
    for side in ("r", "l"):
        ids = [P[f"{side}_{n}"] for n in ("hip", "knee", "ankle")]
        chain = f.c[ids]
        radii = np.array([0.052, 0.037, 0.027]) * ident.shape.limb * k
        d = float(f.depth[ids].mean())

        def leg(cv: Canvas, chain=chain, radii=radii, side=side, shade=_far_shade(d)) -> None:
            cv.fill([capsule(chain[0], chain[1], radii[0], radii[1]),
                     capsule(chain[1], chain[2], radii[1], radii[2])], cv.part(SKIN, shade))
            if ident.lower_kind != "skirt":
                extra = np.array([0.006, 0.007, 0.009]) * k  # cloth is a little wider
                cv.fill(polyline_cut(chain, radii + extra, ident.lower_len), cv.part(LOWER, shade))
            shoe = capsule(f.c[P[f"{side}_heel"]], f.c[P[f"{side}_toe"]], 0.024 * k, 0.02 * k)
            cv.fill([shoe], cv.part(SHOES, shade))

        steps.append((-1.0 + 0.1 * d, leg))
    return steps


def _arms(f: Frame) -> list[Step]:
    steps = []
    ident, k = f.identity, f.k
    for side in ("r", "l"):
        ids = [P[f"{side}_{n}"] for n in ("shoulder", "elbow", "wrist")]
        chain = f.c[ids].copy()
        # Start a little below the shoulder joint so the arm does not poke above the
        # shoulder line (the torso covers the joint itself).
        down = chain[1] - chain[0]
        chain[0] += 0.025 * k * down / max(float(np.linalg.norm(down)), 1e-6)
        radii = np.array([0.03, 0.025, 0.02]) * ident.shape.limb * k
        d = float(f.depth[ids].mean())

        def arm(cv: Canvas, chain=chain, radii=radii, side=side, shade=_far_shade(d)) -> None:
            hand = capsule(chain[2], f.c[P[f"{side}_hand"]], radii[2], 0.024 * k)
            cv.fill([capsule(chain[0], chain[1], radii[0], radii[1]),
                     capsule(chain[1], chain[2], radii[1], radii[2]), hand], cv.part(SKIN, shade))
            if ident.sleeve > 0:
                cv.fill(polyline_cut(chain, radii + 0.005 * k, ident.sleeve), cv.part(SHIRT, shade))

        # Arms beside the torso (depth ~0 in front views) are drawn over it.
        steps.append((d + 0.03, arm))
    return steps


# --------------------------------------------------------------------------- trunk


def _lower_body(f: Frame) -> list[Step]:
    """The pelvis in the lower garment's material, and a skirt over the thighs."""
    ident, shp, k = f.identity, f.identity.shape, f.k
    hip_y = f.pts3[P["pelvis"], 1]
    waist = f.proj((0.0, hip_y - 0.07, 0.0))

    def pelvis(cv: Canvas) -> None:
        hw = f.halfwidth(shp.hip + 0.04, shp.chest_depth * 0.9)
        r = 0.05 * shp.limb * k
        hips = [f.c[P["r_hip"]], f.c[P["l_hip"]]]
        cv.fill([hull([waist - (hw, 0), waist + (hw, 0), *[h + (0, 0.03 * k) for h in hips],
                       *[h + r * _CIRCLE for h in hips]])], cv.part(LOWER))

    steps: list[Step] = [(-0.4, pelvis)]
    if ident.lower_kind == "skirt":

        def skirt(cv: Canvas) -> None:
            hw = f.halfwidth(shp.hip + 0.045, shp.chest_depth + 0.01)
            pts = [waist - (hw, 0), waist + (hw, 0)]
            for side in ("r", "l"):  # the hem follows both thighs
                hip, knee = f.pts3[P[f"{side}_hip"]], f.pts3[P[f"{side}_knee"]]
                t = np.clip((ident.lower_len - hip[1]) / max(knee[1] - hip[1], 1e-6), 0, 1)
                at = f.proj(hip + t * (knee - hip))
                pts += [at - (0.06 * k, 0), at + (0.06 * k, 0)]
            cv.fill([hull(pts)], cv.part(LOWER))

        steps.append((-0.3, skirt))
    return steps


def _torso(f: Frame) -> Step:
    shp = f.identity.shape
    hip_y = f.pts3[P["pelvis"], 1]
    d = shp.chest_depth
    levels = (  # (Y, half width, half depth) from the collar down to the hem
        (0.168, 0.05, 0.04), (0.178, shp.shoulder * 0.65, 0.045),
        (0.195, shp.shoulder + 0.012, 0.05), (0.23, shp.shoulder + 0.02, d),
        (0.33, shp.shoulder * 0.8 + 0.012, d),
        (0.44, shp.hip + 0.036, d * 0.85), (hip_y + 0.03, shp.hip + 0.046, d * 0.9),
    )

    def torso(cv: Canvas) -> None:
        left, right = [], []
        for y, w, dd in levels:
            ctr, hw = f.proj((0.0, y, 0.0)), f.halfwidth(w, dd)
            left.append(ctr - (hw, 0))
            right.append(ctr + (hw, 0))
        cv.fill([np.array(left + right[::-1], np.float32)], cv.part(SHIRT))

    return 0.0, torso


def _bags(f: Frame) -> list[Step]:
    ident, shp, k = f.identity, f.identity.shape, f.k
    if ident.bag == "backpack":
        centre = np.array([0.0, 0.31, -(shp.chest_depth + 0.04)])

        def backpack(cv: Canvas) -> None:
            ctr = f.proj(centre)
            hw, hh, r = f.halfwidth(0.085, 0.04), 0.11 * k, 0.02 * k
            corners = [ctr + (sx * max(hw - r, 0), sy * (hh - r)) for sx in (-1, 1) for sy in (-1, 1)]
            cv.fill([hull([q + r * _CIRCLE for q in corners])], cv.part(BAG, 0.9))

        def straps(cv: Canvas) -> None:  # over the chest, seen from the front
            z = shp.chest_depth
            cv.fill([capsule(f.proj((s * 0.06, 0.18, z)), f.proj((s * (shp.shoulder - 0.01), 0.34, z)),
                             0.012 * k, 0.012 * k) for s in (-1, 1)], cv.part(BAG))

        steps: list[Step] = [(float(rotate(centre, f.pose.yaw)[1]) + 0.001, backpack)]
        return steps + ([(0.001, straps)] if f.cos > 0.3 else [])
    if ident.bag == "shoulder":
        side = -1.0 if ident.person_id % 2 else 1.0
        centre = np.array([side * (shp.hip + 0.065), 0.5, 0.0])

        def shoulder_bag(cv: Canvas) -> None:
            z = shp.chest_depth * (1 if f.cos > 0 else -1)  # the strap on the visible side
            strap = capsule(f.proj((-side * 0.07, 0.18, z)), f.proj((side * (shp.hip + 0.03), 0.47, z)),
                            0.01 * k, 0.01 * k)
            ctr, hw, hh = f.proj(centre), f.halfwidth(0.045, 0.02), 0.05 * k
            box = np.array([ctr + (-hw, -hh), ctr + (hw, -hh), ctr + (hw, hh), ctr + (-hw, hh)], np.float32)
            cv.fill([strap, box], cv.part(BAG))

        return [(float(rotate(centre, f.pose.yaw)[1]) + 0.035, shoulder_bag)]
    return []


# --------------------------------------------------------------------------- head


def _head(f: Frame) -> list[Step]:
    ident, shp, k = f.identity, f.identity.shape, f.k
    centre = f.c[P["head"]]
    rx, ry = shp.head_rx * k, shp.head_ry * k

    def neck(cv: Canvas) -> None:
        cv.fill([capsule(centre + (0, 0.3 * ry), f.c[P["neck"]], 0.028 * k, 0.03 * k)], cv.part(SKIN))

    steps: list[Step] = [(-0.001, neck), (0.05, lambda cv: _draw_head(cv, f, centre, rx, ry))]
    if ident.hair_style in ("long", "medium"):
        z = -0.5 * shp.head_rx   # the hair hangs just behind the head's centre
        head_y = f.pts3[P["head"], 1]

        def long_hair(cv: Canvas) -> None:
            top = f.proj((0.0, head_y, z))
            bottom = f.proj((0.0, head_y + shp.head_ry + ident.hair_length, z))
            hw = f.halfwidth(shp.head_rx * 0.95, shp.head_rx * 0.5)
            cv.fill([capsule(top, bottom, hw, hw * 0.8)], cv.part(HAIR))

        # Behind the torso when the face is towards us, over the back (after the head) otherwise.
        steps.append((-0.01 if f.cos > 0.2 else 0.051, long_hair))
    return steps


def _draw_head(cv: Canvas, f: Frame, centre: np.ndarray, rx: float, ry: float) -> None:
    """Skin ellipse with hair where the head's surface normal points up/back (this follows
    the view: forehead hairline from the front, all hair from behind), nose profile, eyes."""
    ident, yaw = f.identity, f.pose.yaw
    skin, hair = cv.part(SKIN), cv.part(HAIR)
    # The hair shell is slightly larger than the skull and raised: volume on top and behind.
    grow = {"cropped": 1.03, "short": 1.08, "medium": 1.1, "long": 1.1}[ident.hair_style]
    thr = {"cropped": 0.35, "short": 0.0, "medium": -0.1, "long": -0.12}[ident.hair_style]
    shell = centre - (0, ry * (grow - 1.0))
    H, W = cv.ids.shape
    xa, ya = max(int(np.floor(centre[0] - rx * grow)) - 1, 0), max(int(np.floor(shell[1] - ry * grow)) - 1, 0)
    xb, yb = min(int(np.ceil(centre[0] + rx * grow)) + 2, W), min(int(np.ceil(centre[1] + ry)) + 2, H)
    if xa >= xb or ya >= yb:
        return
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)

    def surface(cx: float, cy: float, ax: float, ay: float) -> tuple[np.ndarray, np.ndarray]:
        """Inside mask and (normal . up-back) of the visible half of an ellipsoid."""
        u, v = (xx - cx) / ax, (yy - cy) / ay
        r2 = u * u + v * v
        n = np.stack([u, v, np.sqrt(np.clip(1.0 - r2, 0.0, None))], -1)
        return r2 <= 1.0, to_body(n, yaw) @ _UP_BACK

    in_head, head_hair = surface(centre[0], centre[1], rx, ry)
    in_shell, shell_hair = surface(shell[0], shell[1], rx * grow, ry * grow)
    region = cv.ids[ya:yb, xa:xb]
    region[in_head] = skin
    region[(in_head & (head_hair > thr)) | (in_shell & ~in_head & (shell_hair > thr + 0.15))] = hair
    vis = face_visibility(yaw)
    if vis["nose"] and abs(np.sin(yaw)) > 0.5:  # the nose's profile in side views
        tip = np.array([np.sin(yaw) * rx * 1.02 + centre[0], f.c[J["nose"], 1]])
        cv.fill([tip + 0.16 * rx * _CIRCLE], skin)
    eye = cv.part(EYE)
    for name in ("r_eye", "l_eye"):
        if vis[name]:
            cv.fill([f.c[J[name]] + max(0.12 * rx, 1.2) * _CIRCLE], eye)
