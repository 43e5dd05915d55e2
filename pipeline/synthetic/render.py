"""Draw one synthetic person: body parts in depth order into a supersampled part-id map, then
colour, patterns and soft shading, then an area downsample (anti-aliasing) to the crop size.

The person is returned premultiplied by its coverage (alpha) so it can be laid over any
background: image = colour + (1 - alpha) * background.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from pipeline.keypoints import J, NUM_JOINTS
from pipeline.synthetic.body import P, Pose, face_visibility, rotate, skeleton, to_body
from pipeline.synthetic.identity import Identity

SS = 4          # supersampling factor of the drawing canvas
_SHIFT = 4      # fixed-point bits for cv2 polygon coordinates
_CIRCLE = np.stack([np.cos(a := np.linspace(0, 2 * np.pi, 16, endpoint=False)), np.sin(a)], 1)

# Materials (index into the per-image palette).
BACKGROUND, SKIN, HAIR, SHIRT, LOWER, SHOES, BAG, EYE = range(8)
NECK_Y = 0.195  # body Y of the shoulder line, where top patterns are anchored


@dataclass(frozen=True)
class Placement:
    """Where the body frame lands in the crop: output pixel = (cx + x * scale, top + y * scale)."""

    scale: float  # standing body height in output pixels
    cx: float
    top: float


@dataclass(frozen=True)
class PersonLayer:
    """A rendered person. colour: premultiplied float32 [H, W, 3] (BGR 0..255); alpha: float32
    [H, W] coverage; keypoints: float32 [18, 2] (x, y) output pixels, -1 where not visible;
    feet: (x, y, half width) of the ground contact, for a shadow."""

    colour: np.ndarray
    alpha: np.ndarray
    keypoints: np.ndarray
    feet: tuple[float, float, float]


def body_extent(xy: np.ndarray, identity: Identity) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) of the drawn body in body units, from projected points [N, 2]."""
    pad = 0.045 * identity.shape.limb + 0.01
    head_top = xy[P["head"], 1] - identity.shape.head_ry * 1.12
    return (float(xy[:, 0].min() - pad), float(xy[:, 0].max() + pad),
            float(min(xy[:, 1].min() - pad, head_top)), 1.0)


def fit_placement(extent: tuple[float, float, float, float], height: int, width: int,
                  rng: np.random.Generator, size: float) -> Placement:
    """A jittered placement keeping the whole body inside the crop with a small margin.

    size: desired standing height as a fraction of the crop height (shrunk if it cannot fit).
    """
    xmin, xmax, ymin, ymax = extent
    mx, my = 0.03 * width, 0.015 * height
    scale = min(size * height, (height - 2 * my) / (ymax - ymin), (width - 2 * mx) / (xmax - xmin))
    free_y = height - 2 * my - scale * (ymax - ymin)
    top = my + free_y * rng.uniform(0.3, 1.0) - scale * ymin
    cx = width / 2 + rng.normal(0.0, 0.04 * width)
    cx = float(np.clip(cx, mx - scale * xmin, width - mx - scale * xmax))
    return Placement(float(scale), cx, float(top))


class _Canvas:
    """Supersampled part-id map plus the material / shade of each part id."""

    def __init__(self, height: int, width: int):
        self.ids = np.zeros((height * SS, width * SS), np.uint8)
        self.material = [BACKGROUND]
        self.shade = [1.0]

    def part(self, material: int, shade: float = 1.0) -> int:
        self.material.append(material)
        self.shade.append(shade)
        if len(self.material) > 255:
            raise RuntimeError("too many parts for a uint8 id map")
        return len(self.material) - 1

    def fill(self, polys: list[np.ndarray], pid: int) -> None:
        # One call per polygon: fillPoly on several overlapping polygons leaves holes (even-odd).
        for p in polys:
            pts = np.round(np.asarray(p) * (1 << _SHIFT)).astype(np.int32)
            cv2.fillPoly(self.ids, [pts], int(pid), cv2.LINE_8, _SHIFT)


def _capsule(a: np.ndarray, b: np.ndarray, ra: float, rb: float) -> np.ndarray:
    """Convex outline [K, 2] of a tapered capsule from a (radius ra) to b (radius rb)."""
    pts = np.concatenate([a + ra * _CIRCLE, b + rb * _CIRCLE]).astype(np.float32)
    return cv2.convexHull(pts).reshape(-1, 2)


def _polyline_cut(points: np.ndarray, radii: np.ndarray, fraction: float):
    """Capsules covering the first `fraction` of a polyline's length (for sleeves, trousers)."""
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    todo = fraction * seg.sum()
    out = []
    for i, length in enumerate(seg):
        if todo <= 1e-6:
            break
        t = min(1.0, todo / max(length, 1e-6))
        end = points[i] + t * (points[i + 1] - points[i])
        out.append(_capsule(points[i], end, radii[i], radii[i] + t * (radii[i + 1] - radii[i])))
        todo -= length
    return out


def render_person(identity: Identity, pose: Pose, height: int, width: int,
                  placement: Placement | None = None, rng: np.random.Generator | None = None,
                  size: float = 0.88) -> PersonLayer:
    """Render `identity` in `pose` into a height x width crop (see PersonLayer).

    placement None fits the person inside the crop (needs rng for the jitter); an explicit
    placement may put parts of the body outside it (those keypoints become -1).
    """
    shp = identity.shape
    pts3 = skeleton(shp, pose)
    xy, depth = rotate(pts3, pose.yaw)
    if placement is None:
        if rng is None:
            raise ValueError("render_person: rng is required when placement is None")
        placement = fit_placement(body_extent(xy, identity), height, width, rng, size * identity.height)
    pl = placement
    out_xy = np.stack([pl.cx + xy[:, 0] * pl.scale, pl.top + xy[:, 1] * pl.scale], 1)
    c = out_xy * SS + (SS - 1) / 2.0          # canvas coordinates of every skeleton point
    k = pl.scale * SS                           # body unit -> canvas pixels
    cos, sin = np.cos(pose.yaw), np.sin(pose.yaw)

    def proj(p3) -> np.ndarray:                 # body-frame point(s) -> canvas xy
        q, _ = rotate(np.asarray(p3, float), pose.yaw)
        return np.stack([c[P["pelvis"], 0] + q[..., 0] * k, c[P["pelvis"], 1] + (q[..., 1] - pts3[P["pelvis"], 1]) * k], -1)

    def halfwidth(w: float, d: float) -> float:  # projected half width of an X-Z ellipse
        return float(np.hypot(w * cos, d * sin)) * k

    canvas = _Canvas(height, width)
    parts: list[tuple[float, Callable[[], None]]] = []
    lim = shp.limb
    far_shade = lambda d: 1.0 - 0.22 * float(np.clip(-d / 0.1, 0.0, 1.0))  # noqa: E731

    # ---- legs (always behind the pelvis and torso), far leg first
    for side in ("r", "l"):
        ids = [P[f"{side}_{n}"] for n in ("hip", "knee", "ankle")]
        chain = c[ids]
        radii = np.array([0.052, 0.037, 0.027]) * lim * k
        d = float(depth[ids].mean())
        shade = far_shade(d)

        def draw_leg(chain=chain, radii=radii, side=side, shade=shade):
            skin = canvas.part(SKIN, shade)
            canvas.fill([_capsule(chain[0], chain[1], radii[0], radii[1]),
                         _capsule(chain[1], chain[2], radii[1], radii[2])], skin)
            if identity.lower_kind != "skirt":
                cloth = canvas.part(LOWER, shade)
                extra = np.array([0.006, 0.007, 0.009]) * k
                canvas.fill(_polyline_cut(chain, radii + extra, identity.lower_len), cloth)
            shoe = canvas.part(SHOES, shade)
            canvas.fill([_capsule(c[P[f"{side}_heel"]], c[P[f"{side}_toe"]], 0.024 * k, 0.02 * k)], shoe)

        parts.append((-1.0 + 0.1 * d, draw_leg))

    # ---- pelvis / skirt (lower garment) and torso (top)
    hip_y = pts3[P["pelvis"], 1]

    def draw_pelvis():
        pid = canvas.part(LOWER)
        hw = halfwidth(shp.hip + 0.04, shp.chest_depth * 0.9)
        top = proj((0.0, hip_y - 0.07, 0.0))
        pts = [top + (-hw, 0), top + (hw, 0),
               c[P["r_hip"]] + (0, 0.03 * k), c[P["l_hip"]] + (0, 0.03 * k)]
        circles = [c[P["r_hip"]] + 0.05 * lim * k * _CIRCLE, c[P["l_hip"]] + 0.05 * lim * k * _CIRCLE]
        canvas.fill([cv2.convexHull(np.concatenate([np.array(pts), *circles]).astype(np.float32)).reshape(-1, 2)], pid)

    parts.append((-0.4, draw_pelvis))

    if identity.lower_kind == "skirt":
        hem_y = identity.lower_len

        def draw_skirt():
            pid = canvas.part(LOWER)
            hw = halfwidth(shp.hip + 0.045, shp.chest_depth + 0.01)
            top = proj((0.0, hip_y - 0.07, 0.0))
            pts = [top + (-hw, 0), top + (hw, 0)]
            for side in ("r", "l"):   # the hem follows both legs
                chain = pts3[[P[f"{side}_{n}"] for n in ("hip", "knee", "ankle")]]
                t = np.clip((hem_y - chain[0, 1]) / max(chain[1, 1] - chain[0, 1], 1e-6), 0, 1)
                at = proj(chain[0] + t * (chain[1] - chain[0]))
                pts += [at + (-0.06 * k, 0), at + (0.06 * k, 0)]
            canvas.fill([cv2.convexHull(np.array(pts, np.float32)).reshape(-1, 2)], pid)

        parts.append((-0.3, draw_skirt))

    def draw_torso():
        pid = canvas.part(SHIRT)
        d = shp.chest_depth
        levels = (  # (Y, half width, half depth) from the collar down to the hem
            (0.168, 0.05, 0.04), (0.178, shp.shoulder * 0.65, 0.045),
            (0.195, shp.shoulder + 0.012, 0.05), (0.23, shp.shoulder + 0.02, d),
            (0.33, shp.shoulder * 0.8 + 0.012, d),
            (0.44, shp.hip + 0.036, d * 0.85), (hip_y + 0.03, shp.hip + 0.046, d * 0.9),
        )
        left, right = [], []
        for y, w, dd in levels:
            ctr = proj((0.0, y, 0.0))
            hw = halfwidth(w, dd)
            left.append(ctr - (hw, 0))
            right.append(ctr + (hw, 0))
        canvas.fill([np.array(left + right[::-1], np.float32)], pid)

    parts.append((0.0, draw_torso))

    # ---- arms
    for side, sgn in (("r", -1.0), ("l", 1.0)):
        ids = [P[f"{side}_{n}"] for n in ("shoulder", "elbow", "wrist")]
        chain = c[ids].copy()
        # The arm starts a little below the shoulder joint so it does not poke above the
        # shoulder line (the torso covers the joint itself).
        chain[0] += 0.025 * k * (chain[1] - chain[0]) / max(np.linalg.norm(chain[1] - chain[0]), 1e-6)
        radii = np.array([0.03, 0.025, 0.02]) * lim * k
        d = float(depth[ids].mean())

        def draw_arm(chain=chain, radii=radii, side=side, shade=far_shade(d)):
            skin = canvas.part(SKIN, shade)
            canvas.fill([_capsule(chain[0], chain[1], radii[0], radii[1]),
                         _capsule(chain[1], chain[2], radii[1], radii[2]),
                         _capsule(chain[2], c[P[f"{side}_hand"]], radii[2], 0.024 * k)], skin)
            if identity.sleeve > 0:
                cloth = canvas.part(SHIRT, shade)
                canvas.fill(_polyline_cut(chain, radii + 0.005 * k, identity.sleeve), cloth)

        parts.append((d + 0.03, draw_arm))

    # ---- bags
    if identity.bag == "backpack":
        zc = -(shp.chest_depth + 0.04)
        bd = float(rotate(np.array([0.0, 0.31, zc]), pose.yaw)[1])

        def draw_backpack():
            pid = canvas.part(BAG, 0.9)
            ctr = proj((0.0, 0.31, zc))
            hw, hh, r = halfwidth(0.085, 0.04), 0.11 * k, 0.02 * k
            corners = [ctr + (sx * max(hw - r, 0), sy * (hh - r)) for sx in (-1, 1) for sy in (-1, 1)]
            canvas.fill([cv2.convexHull(np.concatenate([q + r * _CIRCLE for q in corners]).astype(np.float32)).reshape(-1, 2)], pid)

        parts.append((bd + 0.001, draw_backpack))
        if cos > 0.3:  # straps over the chest, seen from the front

            def draw_straps():
                pid = canvas.part(BAG)
                zf = shp.chest_depth
                polys = [_capsule(proj((s * 0.06, 0.18, zf)), proj((s * (shp.shoulder - 0.01), 0.34, zf)),
                                  0.012 * k, 0.012 * k) for s in (-1, 1)]
                canvas.fill(polys, pid)

            parts.append((0.001, draw_straps))
    elif identity.bag == "shoulder":
        bag_side = -1.0 if identity.person_id % 2 else 1.0
        bag3 = np.array([bag_side * (shp.hip + 0.065), 0.5, 0.0])
        bd = float(rotate(bag3, pose.yaw)[1])

        def draw_shoulder_bag():
            pid = canvas.part(BAG)
            zf = shp.chest_depth * (1 if cos > 0 else -1)
            strap = _capsule(proj((-bag_side * 0.07, 0.18, zf)), proj((bag_side * (shp.hip + 0.03), 0.47, zf)),
                             0.01 * k, 0.01 * k)
            ctr = proj(bag3)
            hw, hh = halfwidth(0.045, 0.02), 0.05 * k
            box = np.array([ctr + (-hw, -hh), ctr + (hw, -hh), ctr + (hw, hh), ctr + (-hw, hh)], np.float32)
            canvas.fill([strap, box], pid)

        parts.append((bd + 0.035, draw_shoulder_bag))

    # ---- neck, head, hair
    head_c = c[P["head"]]
    rx, ry = shp.head_rx * k, shp.head_ry * k

    def draw_neck():
        pid = canvas.part(SKIN)
        canvas.fill([_capsule(head_c + (0, 0.3 * ry), c[P["neck"]], 0.028 * k, 0.03 * k)], pid)

    parts.append((-0.001, draw_neck))
    parts.append((0.05, lambda: _draw_head(canvas, identity, pose.yaw, head_c, rx, ry, c)))
    if identity.hair_style in ("long", "medium"):
        hair_z = -0.5 * shp.head_rx
        length = 0.16 + 0.12 * (identity.hair_style == "long") + 0.04 * (identity.person_id % 3) / 2

        def draw_long_hair():
            pid = canvas.part(HAIR)
            top = proj((0.0, pts3[P["head"], 1], hair_z))
            bottom = proj((0.0, pts3[P["head"], 1] + length - shp.head_ry, hair_z))
            hw = halfwidth(shp.head_rx * 0.95, shp.head_rx * 0.5)
            canvas.fill([_capsule(top, bottom, hw, hw * 0.8)], pid)

        # Behind the torso when the face is towards us, over the back (after the head) otherwise.
        parts.append((-0.01 if cos > 0.2 else 0.051, draw_long_hair))

    # Painter's algorithm: far parts first; a stable sort keeps insertion order on ties.
    for _, draw in sorted(parts, key=lambda kv: kv[0]):
        draw()

    colour, alpha = _shade_and_downsample(canvas, identity, c[P["pelvis"]], k, pts3[P["pelvis"], 1], width, height)
    keypoints = _annotate(out_xy, pose.yaw, height, width)
    feet = out_xy[[P["r_heel"], P["r_toe"], P["l_heel"], P["l_toe"]]]
    foot = (float(feet[:, 0].mean()), float(pl.top + pl.scale), float(np.ptp(feet[:, 0]) / 2 + 0.07 * pl.scale))
    return PersonLayer(colour, alpha, keypoints, foot)


def _draw_head(canvas: _Canvas, identity: Identity, yaw: float, centre: np.ndarray,
               rx: float, ry: float, c: np.ndarray) -> None:
    """Skin ellipse with hair where the surface normal points up/back, plus eyes if facing us."""
    skin, hair = canvas.part(SKIN), canvas.part(HAIR)
    # The hair shell is slightly larger than the skull, raised: volume on top and at the back.
    grow = {"cropped": 1.03, "short": 1.08, "medium": 1.1, "long": 1.1}[identity.hair_style]
    thr = {"cropped": 0.35, "short": 0.0, "medium": -0.1, "long": -0.12}[identity.hair_style]
    shell_c = centre - (0, ry * (grow - 1.0))
    x0 = int(np.floor(centre[0] - rx * grow)) - 1
    y0 = int(np.floor(shell_c[1] - ry * grow)) - 1
    x1, y1 = int(np.ceil(centre[0] + rx * grow)) + 2, int(np.ceil(centre[1] + ry)) + 2
    H, W = canvas.ids.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if xa >= xb or ya >= yb:
        return
    yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)
    up_back = np.array([0.0, -0.74, -0.67])

    def normals(cx, cy, ax, ay):
        u, v = (xx - cx) / ax, (yy - cy) / ay
        r2 = u * u + v * v
        n = np.stack([u, v, np.sqrt(np.clip(1.0 - r2, 0.0, None))], -1)
        return r2 <= 1.0, to_body(n, yaw) @ up_back

    in_head, head_hair = normals(centre[0], centre[1], rx, ry)
    in_shell, shell_hair = normals(shell_c[0], shell_c[1], rx * grow, ry * grow)
    region = canvas.ids[ya:yb, xa:xb]
    region[in_head] = skin
    region[(in_head & (head_hair > thr)) | (in_shell & ~in_head & (shell_hair > thr + 0.15))] = hair
    vis = face_visibility(yaw)
    if vis["nose"] and abs(np.sin(yaw)) > 0.5:  # the nose's profile in side views
        tip = np.array([np.sin(yaw), 0.0]) * rx * 1.02 + (centre[0], c[J["nose"], 1])
        canvas.fill([tip + 0.16 * rx * _CIRCLE], skin)
    eye = canvas.part(EYE)
    for name in ("r_eye", "l_eye"):
        if vis[name] and float(np.cos(yaw)) > -0.2:
            p = c[J[name]]
            canvas.fill([p + max(0.12 * rx, 1.2) * _CIRCLE], eye)


def _shade_and_downsample(canvas: _Canvas, identity: Identity, pelvis: np.ndarray, k: float,
                          pelvis_y: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Part-id canvas -> premultiplied colour [H, W, 3] and coverage [H, W] at the crop size."""
    colour = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    rows, cols = np.flatnonzero(canvas.ids.any(axis=1)), np.flatnonzero(canvas.ids.any(axis=0))
    if rows.size == 0:
        return colour, alpha
    # Work on the person's bounding box only, in whole output pixels (+1 px for the shading).
    y0, x0 = max(rows[0] // SS - 1, 0), max(cols[0] // SS - 1, 0)
    y1, x1 = min(rows[-1] // SS + 2, height), min(cols[-1] // SS + 2, width)
    ids = canvas.ids[y0 * SS:y1 * SS, x0 * SS:x1 * SS]
    # Per-part colour table (shade folded in); entries 128+ hold the pattern's second colour.
    material = np.asarray(canvas.material)
    shade = np.asarray(canvas.shade, np.float32)[:, None]
    first = np.array([(0, 0, 0), identity.skin, identity.hair, identity.shirt, identity.lower,
                      identity.shoes, identity.bag_color, (30, 25, 25)], np.float32)
    second = first.copy()
    second[SHIRT], second[LOWER] = identity.shirt2, identity.lower2
    table = np.zeros((256, 3), np.float32)
    table[:len(material)] = first[material] * shade
    table[128:128 + len(material)] = second[material] * shade
    # Body-anchored pattern coordinates (body units): u across, v down from the shoulder line.
    u = ((np.arange(x0 * SS, x1 * SS, dtype=np.float32) - pelvis[0]) / k)[None, :]
    v = ((np.arange(y0 * SS, y1 * SS, dtype=np.float32) - pelvis[1]) / k + pelvis_y - NECK_Y)[:, None]
    key = ids.copy()
    per = identity.pattern_period
    if identity.shirt_pattern != "plain":
        vi, ui = np.floor(v / per).astype(np.int32), np.floor(u / per).astype(np.int32)
        pat = {"stripes": np.broadcast_to(vi % 2 == 1, ids.shape),
               "checks": (vi + ui) % 2 == 1,
               "twotone": np.broadcast_to(v > identity.twotone_split, ids.shape)}[identity.shirt_pattern]
        key[pat & (material[ids] == SHIRT)] += 128
    if identity.lower_pattern == "checks":
        q = per * 1.3
        pat = (np.floor(v / q).astype(np.int32) + np.floor(u / q).astype(np.int32)) % 2 == 1
        key[pat & (material[ids] == LOWER)] += 128
    img = table[key]
    # Part boundaries (both sides, incl. the silhouette): a thin outline and, blurred, a soft
    # darkening that rounds every part and separates limbs from a same-coloured torso.
    kernel = np.ones((3, 3), np.uint8)
    edge = (cv2.dilate(ids, kernel) != cv2.erode(ids, kernel)).astype(np.float32)
    cover = (ids > 0).astype(np.float32)
    size = (x1 - x0, y1 - y0)
    col = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    a = cv2.resize(cover, size, interpolation=cv2.INTER_AREA)
    e = cv2.resize(edge * cover, size, interpolation=cv2.INTER_AREA)
    soft = cv2.GaussianBlur(cv2.resize(edge, size, interpolation=cv2.INTER_AREA), (0, 0), 1.0 * k / SS / 110)
    light = 1.08 * (1.0 - 0.5 * np.minimum(soft * 1.6, 1.0)) * (1.0 - 0.35 * e)
    colour[y0:y1, x0:x1] = col * light[..., None]
    alpha[y0:y1, x0:x1] = a
    return colour, alpha


def _annotate(out_xy: np.ndarray, yaw: float, height: int, width: int) -> np.ndarray:
    """OpenPose-18 keypoints [18, 2] (x, y): face points hidden by the view, or outside the
    crop after rounding, are -1."""
    kp = out_xy[:NUM_JOINTS].astype(np.float32).copy()
    for name, visible in face_visibility(yaw).items():
        if not visible:
            kp[J[name]] = -1.0
    r = np.rint(kp)
    outside = (r[:, 0] < 0) | (r[:, 0] > width - 1) | (r[:, 1] < 0) | (r[:, 1] > height - 1)
    kp[outside] = -1.0
    return kp
