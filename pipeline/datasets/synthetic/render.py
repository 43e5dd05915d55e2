"""Draw one synthetic person: body parts in depth order into a supersampled part-id map, then
colour, patterns and soft shading, then an area downsample (anti-aliasing) to the crop size.

The person is returned premultiplied by its coverage (alpha) so it can be laid over any
background: image = colour + (1 - alpha) * background.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.core.keypoints import J, NUM_JOINTS
from pipeline.datasets.synthetic.body import P, Pose, face_visibility, rotate, skeleton
from pipeline.datasets.synthetic.identity import Identity
from pipeline.datasets.synthetic.parts import BAG, EYE, HAIR, LOWER, SHIRT, SHOES, SKIN, Canvas, Frame, body_steps, draw

SS = 4          # supersampling factor of the drawing canvas
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


def render_person(identity: Identity, pose: Pose, height: int, width: int,
                  placement: Placement | None = None, rng: np.random.Generator | None = None,
                  size: float = 0.88) -> PersonLayer:
    """Render `identity` in `pose` into a height x width crop (see PersonLayer).

    placement None fits the person inside the crop (needs rng for the jitter); an explicit
    placement may put parts of the body outside it (those keypoints become -1).
    """
    pts3 = skeleton(identity.shape, pose)
    xy, depth = rotate(pts3, pose.yaw)
    if placement is None:
        if rng is None:
            raise ValueError("render_person: rng is required when placement is None")
        placement = fit_placement(body_extent(xy, identity), height, width, rng, size * identity.height)
    pl = placement
    out_xy = np.stack([pl.cx + xy[:, 0] * pl.scale, pl.top + xy[:, 1] * pl.scale], 1)
    # Canvas pixel (i, j) covers output pixel (i // SS, j // SS); centres line up like this:
    frame = Frame(identity, pose, pts3, depth, out_xy * SS + (SS - 1) / 2.0, pl.scale * SS)
    canvas = Canvas(height * SS, width * SS)
    draw(canvas, body_steps(frame))
    colour, alpha = _shade_and_downsample(canvas, identity, frame, width, height)
    feet = out_xy[[P["r_heel"], P["r_toe"], P["l_heel"], P["l_toe"]]]
    foot = (float(feet[:, 0].mean()), float(pl.top + pl.scale), float(np.ptp(feet[:, 0]) / 2 + 0.07 * pl.scale))
    return PersonLayer(colour, alpha, _annotate(out_xy, pose.yaw, height, width), foot)


def _shade_and_downsample(canvas: Canvas, identity: Identity, frame: Frame, width: int,
                          height: int) -> tuple[np.ndarray, np.ndarray]:
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
    first = np.zeros((EYE + 1, 3), np.float32)
    first[[SKIN, HAIR, SHIRT, LOWER, SHOES, BAG, EYE]] = (
        identity.skin, identity.hair, identity.shirt, identity.lower, identity.shoes,
        identity.bag_color, (30, 25, 25))
    second = first.copy()
    second[SHIRT], second[LOWER] = identity.shirt2, identity.lower2
    table = np.zeros((256, 3), np.float32)
    table[:len(material)] = first[material] * shade
    table[128:128 + len(material)] = second[material] * shade
    # Body-anchored pattern coordinates (body units): u across, v down from the shoulder line.
    pelvis, k, pelvis_y = frame.c[P["pelvis"]], frame.k, frame.pts3[P["pelvis"], 1]
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
