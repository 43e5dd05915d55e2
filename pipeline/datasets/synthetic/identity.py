"""Per-identity appearance of the synthetic people: body proportions, skin, hair, clothing.

Everything is drawn from a Generator seeded by (seed, person id), so a person looks the same
in every image. Colours are BGR floats in 0..255 (OpenCV order).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from pipeline.datasets.synthetic.body import BodyShape

Color = tuple[float, float, float]

SHIRT_PATTERNS: tuple[str, ...] = ("plain", "stripes", "checks", "twotone")
LOWER_KINDS: tuple[str, ...] = ("trousers", "capri", "shorts", "skirt")
HAIR_STYLES: tuple[str, ...] = ("short", "medium", "long", "cropped")
BAGS: tuple[str, ...] = ("none", "backpack", "shoulder")

# Skin tones from light to dark (BGR), interpolated.
_SKIN = np.array([(196, 214, 244), (150, 178, 222), (104, 140, 190), (62, 92, 138), (44, 62, 96)], float)
_HAIR = ((22, 22, 26), (28, 40, 62), (40, 66, 104), (96, 156, 200), (140, 140, 144), (34, 52, 128))
_HAIR_P = (0.45, 0.2, 0.13, 0.08, 0.07, 0.07)


@dataclass(frozen=True)
class Identity:
    person_id: int
    shape: BodyShape
    height: float               # standing height relative to the crop (before jitter)
    skin: Color
    hair: Color
    hair_style: str             # HAIR_STYLES
    hair_length: float          # medium/long hair: how far it falls below the chin (body units)
    shirt: Color
    shirt2: Color               # second colour of the pattern
    shirt_pattern: str          # SHIRT_PATTERNS
    pattern_period: float       # stripe / check period (body-height units)
    twotone_split: float        # body-height below the neck where a two-tone top changes colour
    sleeve: float               # fraction of the arm covered: 0 sleeveless .. 1 long sleeves
    lower_kind: str             # LOWER_KINDS
    lower: Color
    lower2: Color               # checks on skirts
    lower_pattern: str          # plain | checks
    lower_len: float            # trousers: fraction of the leg covered; skirt: hem (Y)
    shoes: Color
    bag: str                    # BAGS
    bag_color: Color


def hsv(h: float, s: float, v: float) -> Color:
    """HSV in 0..1 -> BGR 0..255."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return (b * 255.0, g * 255.0, r * 255.0)


def _garment_color(rng: np.random.Generator) -> Color:
    """Market-like clothing: many whites/blacks/greys, else saturated colours."""
    if rng.random() < 0.3:
        v = float(rng.choice([0.1, 0.2, 0.45, 0.7, 0.92])) + rng.uniform(-0.05, 0.05)
        return hsv(rng.uniform(0, 1), rng.uniform(0, 0.08), v)
    return hsv(rng.uniform(0, 1), rng.uniform(0.45, 0.95), rng.uniform(0.4, 0.95))


def _lower_color(rng: np.random.Generator) -> Color:
    kind = rng.choice(5, p=(0.35, 0.25, 0.15, 0.1, 0.15))
    if kind == 0:    # denim
        return hsv(rng.uniform(0.57, 0.63), rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.65))
    if kind == 1:    # black / dark grey
        return hsv(rng.uniform(0, 1), rng.uniform(0, 0.1), rng.uniform(0.08, 0.3))
    if kind == 2:    # khaki / beige
        return hsv(rng.uniform(0.08, 0.13), rng.uniform(0.25, 0.5), rng.uniform(0.5, 0.8))
    if kind == 3:    # white / light grey
        return hsv(rng.uniform(0, 1), rng.uniform(0, 0.06), rng.uniform(0.75, 0.95))
    return _garment_color(rng)


def _contrast(rng: np.random.Generator, base: Color) -> Color:
    """A second colour that stands out from `base` (for stripes and checks)."""
    lum = float(np.mean(base))
    if rng.random() < 0.5:
        v = 0.92 if lum < 128 else 0.12
        return hsv(rng.uniform(0, 1), rng.uniform(0, 0.1), v)
    c = _garment_color(rng)
    if abs(float(np.mean(c)) - lum) < 50:
        c = tuple(255.0 - x for x in c)  # type: ignore[assignment]
    return c


def sample_identity(rng: np.random.Generator, person_id: int) -> Identity:
    """A random person: proportions, skin/hair, top, bottom, shoes and bag."""
    broad = rng.uniform(0, 1)  # 0 slim .. 1 broad
    shape = BodyShape(
        shoulder=0.095 + 0.022 * broad,
        hip=0.058 + 0.012 * rng.uniform(0, 1),
        chest_depth=0.05 + 0.02 * broad,
        head_rx=rng.uniform(0.052, 0.06),
        head_ry=rng.uniform(0.064, 0.072),
        limb=rng.uniform(0.9, 1.15),
        upper_arm=rng.uniform(0.155, 0.17),
        forearm=rng.uniform(0.14, 0.15),
        thigh=rng.uniform(0.225, 0.24),
        shin=rng.uniform(0.225, 0.24),
    )
    skin = tuple(_interp(_SKIN, rng.beta(1.3, 2.2)) * rng.uniform(0.95, 1.05, 3))
    hair = _HAIR[rng.choice(len(_HAIR), p=_HAIR_P)]
    hair = tuple(float(np.clip(c * rng.uniform(0.85, 1.15), 0, 255)) for c in hair)
    shirt = _garment_color(rng)
    pattern = SHIRT_PATTERNS[rng.choice(4, p=(0.5, 0.22, 0.14, 0.14))]
    lower_kind = LOWER_KINDS[rng.choice(4, p=(0.55, 0.12, 0.18, 0.15))]
    lower_len = {
        "trousers": 1.0,
        "capri": rng.uniform(0.7, 0.8),
        "shorts": rng.uniform(0.35, 0.5),
        "skirt": rng.uniform(0.6, 0.78),
    }[lower_kind]
    lower = _lower_color(rng) if lower_kind != "skirt" else _garment_color(rng)
    hair_style = HAIR_STYLES[rng.choice(4, p=(0.45, 0.2, 0.25, 0.1))]
    shoes = hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), float(rng.choice([0.12, 0.3, 0.9])))
    bag = BAGS[rng.choice(3, p=(0.6, 0.25, 0.15))]
    return Identity(
        person_id=person_id,
        shape=shape,
        height=float(rng.uniform(0.92, 1.0)),
        skin=_as_color(skin),
        hair=_as_color(hair),
        hair_style=hair_style,
        hair_length=float(rng.uniform(0.02, 0.05) if hair_style == "medium" else rng.uniform(0.1, 0.2)),
        shirt=shirt,
        shirt2=_contrast(rng, shirt),
        shirt_pattern=pattern,
        pattern_period=float(rng.uniform(0.03, 0.055)),
        twotone_split=float(rng.uniform(0.12, 0.2)),
        sleeve=float(rng.choice([0.0, rng.uniform(0.3, 0.45), rng.uniform(0.95, 1.0)], p=(0.1, 0.45, 0.45))),
        lower_kind=lower_kind,
        lower=lower,
        lower2=_contrast(rng, lower),
        lower_pattern="checks" if lower_kind == "skirt" and rng.random() < 0.3 else "plain",
        lower_len=float(lower_len),
        shoes=shoes,
        bag=bag,
        bag_color=hsv(rng.uniform(0, 1), rng.uniform(0, 0.7), rng.uniform(0.1, 0.7)),
    )


def _interp(table: np.ndarray, t: float) -> np.ndarray:
    pos = t * (len(table) - 1)
    i = min(int(pos), len(table) - 2)
    return table[i] + (pos - i) * (table[i + 1] - table[i])


def _as_color(c) -> Color:
    return tuple(float(np.clip(v, 0, 255)) for v in c)  # type: ignore[return-value]
