"""On-disk store of quantised pose heatmaps, addressable by image name.

A store is a folder:
    heatmaps.npy    uint8 [N, 18, H, W], q = round(255 * h) (half up); h = q / 255 is within
                    1/510 of the rendered value. 18*128*64 = 147,456 bytes (144 KiB) per image
                    at 128x64, so Market-1501's 36,036 images (train 12,936, test 19,732,
                    query 3,368) take 5.31 GB. Kept raw so any row is one memmap slice.
    index.parquet   name (string), row (int64): which row of heatmaps.npy holds which image
    meta.json       height, width, sigma, scale (1/255), count, dtype, plus optional extras
                    (e.g. keypoints_sha256 of the table it was rendered from)

Writing goes to a temporary sibling folder that is renamed into place at the end, so a
reader never sees a half-written store and a failed run leaves the old store untouched.
Reading memory-maps heatmaps.npy lazily; a HeatmapStore pickles without its memmap (for
DataLoader workers) and reopens it on first use after unpickling.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.fsutil import replace_dir
from pipeline.heatmaps import ArrayLike, render_heatmaps_uint8
from pipeline.keypoints import NUM_JOINTS

ARRAY_FILE = "heatmaps.npy"
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"
SCALE = 1.0 / 255.0


def bytes_per_image(height: int, width: int) -> int:
    return NUM_JOINTS * height * width


def write_heatmap_store(
    path: str | Path,
    names: Sequence[str],
    keypoints: ArrayLike,
    height: int,
    width: int,
    sigma: float,
    chunk: int = 512,
    extra_meta: Mapping[str, Any] | None = None,
    threads: int | None = 1,
) -> Path:
    """Render heatmaps for every image and write a store at `path` (replacing any old one).

    names: N unique image names; keypoints: [N, 18, >=2] (x, y) at height x width, -1 for
    missing joints. Rendering and writing go `chunk` images at a time into a memmap, so
    memory stays bounded whatever N is. `threads`: torch intra-op threads while rendering
    (restored afterwards; None keeps torch's setting). One thread is the default because
    the renderer works on cache-sized blocks, too small to split across threads well: on a
    shared 2-core machine two threads measured 5-8x slower than one (OpenMP barrier waits),
    and one core already renders faster than the disk writes. Returns the store path.
    """
    path = Path(path)
    names = [str(n) for n in names]
    kp = keypoints if isinstance(keypoints, torch.Tensor) else np.asarray(keypoints, np.float32)
    if kp.ndim != 3 or kp.shape[0] != len(names) or kp.shape[1] != NUM_JOINTS or kp.shape[2] < 2:
        raise ValueError(
            f"keypoints must be [{len(names)}, {NUM_JOINTS}, >=2] for {len(names)} names, "
            f"got {tuple(kp.shape)}"
        )
    dup = pd.Index(names)[pd.Index(names).duplicated()]
    if len(dup):
        raise ValueError(f"{len(dup)} duplicate image name(s): {list(dup[:20])}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        n = len(names)
        mm = np.lib.format.open_memmap(
            tmp / ARRAY_FILE, mode="w+", dtype=np.uint8, shape=(n, NUM_JOINTS, height, width)
        )
        with _torch_threads(threads):
            for start in range(0, n, chunk):
                _render_chunk(mm, kp, start, min(start + chunk, n), height, width, sigma)
        mm.flush()
        del mm
        _fsync(tmp / ARRAY_FILE)
        pd.DataFrame(
            {"name": pd.Series(names, dtype="string"), "row": np.arange(n, dtype=np.int64)}
        ).to_parquet(tmp / INDEX_FILE, index=False)
        meta = {
            "height": int(height),
            "width": int(width),
            "sigma": float(sigma),
            "scale": SCALE,
            "count": n,
            "dtype": "uint8",
            **dict(extra_meta or {}),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _render_chunk(
    mm: np.ndarray, kp: ArrayLike, start: int, stop: int, height: int, width: int, sigma: float
) -> None:
    """Render rows [start, stop) straight into the memmap."""
    out = torch.from_numpy(mm[start:stop])
    render_heatmaps_uint8(kp[start:stop], height, width, sigma, out=out)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n is not None:
            torch.set_num_threads(before)


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HeatmapStore:
    """Read access to a heatmap store folder (see module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        for f in (ARRAY_FILE, INDEX_FILE, META_FILE):
            if not (self.path / f).is_file():
                raise FileNotFoundError(f"{self.path}: not a heatmap store (missing {f})")
        try:
            self.meta: dict[str, Any] = json.loads((self.path / META_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self.path / META_FILE}: not valid JSON: {exc}") from exc
        index = pd.read_parquet(self.path / INDEX_FILE)
        if list(index.columns[:2]) != ["name", "row"]:
            raise ValueError(f"{self.path / INDEX_FILE}: expected columns name, row")
        self._names = pd.Index(index["name"].astype(str), name="name")
        self._rows = index["row"].to_numpy(np.int64)
        if len(self._names) != self.meta.get("count"):
            raise ValueError(
                f"{self.path}: index has {len(self._names)} names, meta.json count "
                f"{self.meta.get('count')}"
            )
        if not self._names.is_unique:
            raise ValueError(f"{self.path / INDEX_FILE}: duplicate image names in the index")
        self._mm: np.ndarray | None = None

    # -- lazily opened array; dropped when pickled, reopened after
    @property
    def array(self) -> np.ndarray:
        """The raw uint8 [N, 18, H, W] memmap (read-only)."""
        if self._mm is None:
            mm = np.load(self.path / ARRAY_FILE, mmap_mode="r")
            want = (len(self._names), NUM_JOINTS, self.height, self.width)
            if mm.shape != want or mm.dtype != np.uint8:
                raise ValueError(
                    f"{self.path / ARRAY_FILE}: expected uint8 {want}, got {mm.dtype} {mm.shape}"
                )
            self._mm = mm
        return self._mm

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_mm"] = None
        return state

    @property
    def height(self) -> int:
        return int(self.meta["height"])

    @property
    def width(self) -> int:
        return int(self.meta["width"])

    @property
    def sigma(self) -> float:
        return float(self.meta["sigma"])

    @property
    def names(self) -> list[str]:
        return self._names.tolist()

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def rows(self, names: Iterable[str]) -> np.ndarray:
        """Image names -> int64 rows of the array. Unknown names raise KeyError listing them."""
        names = pd.Index([str(n) for n in names])
        pos = self._names.get_indexer(names)
        missing = names[pos < 0]
        if len(missing):
            raise KeyError(
                f"{len(missing)} name(s) not in heatmap store {self.path}: "
                f"{list(missing[:20])}"
            )
        return self._rows[pos]

    def get(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Rows -> float32 [n, 18, H, W] heatmaps in [0, 1]."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.array[rows].astype(np.float32) * np.float32(SCALE)

    def load(self, names: Iterable[str]) -> np.ndarray:
        """Names -> float32 [n, 18, H, W]; shorthand for get(rows(names))."""
        return self.get(self.rows(names))

    def __repr__(self) -> str:
        return f"HeatmapStore({str(self.path)!r}, n={len(self)}, {self.height}x{self.width})"
