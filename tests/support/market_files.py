"""Shared test helpers (moved out of tests/datasets/test_market1501.py)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


TOP = "Market-1501-v15.09.15"
# split folder -> (file name, (width, height)); includes a junk (-1) and a distractor (0000).
FILES: dict[str, list[tuple[str, tuple[int, int]]]] = {
    "bounding_box_train": [
        ("0002_c1s1_000451_03.jpg", (16, 32)),
        ("0002_c2s1_000301_01.jpg", (16, 32)),
        ("0007_c3s3_012345_02.jpg", (12, 24)),
    ],
    "bounding_box_test": [
        ("-1_c1s1_000401_03.jpg", (16, 32)),
        ("0000_c5s1_000102_01.jpg", (8, 16)),
        ("0011_c6s4_002502_01.jpg", (16, 32)),
    ],
    "query": [("0011_c1s1_002301_00.jpg", (16, 32))],
}


def jpeg_bytes(size: tuple[int, int], seed: int = 0) -> bytes:
    """A real (tiny, noisy) JPEG of `size` = (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def market_entries(top: str = TOP) -> dict[str, bytes]:
    """Archive member name -> bytes for the tiny Market-like set (plus a Thumbs.db)."""
    prefix = f"{top}/" if top else ""
    out = {
        f"{prefix}{folder}/{name}": jpeg_bytes(size, i)
        for folder, files in FILES.items()
        for i, (name, size) in enumerate(files)
    }
    out[f"{prefix}bounding_box_test/Thumbs.db"] = b"\x00litter"
    return out


def write_market_tree(root: Path) -> Path:
    """Write the tiny set as a folder (split folders directly under `root`)."""
    for name, data in market_entries(top="").items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def make_market_zip(path: Path, top: str = TOP, extra: dict[str, bytes] | None = None) -> Path:
    """Write the tiny set as a zip (under `top`/ unless top is ''), plus `extra` members."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in {**market_entries(top), **(extra or {})}.items():
            zf.writestr(name, data)
    return path

