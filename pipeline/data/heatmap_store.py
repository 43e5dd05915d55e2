"""On-disk store of pose heatmaps, addressable by image name, rendered on read.

Each heatmap is separable, exp(-dx^2/2s^2) * exp(-dy^2/2s^2), so the store keeps what it is
made of, not its pixels:
    keypoints.npy   float32 [N, 18, 2] (x, y) at height x width, -1 for a missing joint
    index.parquet   name (string), row (int64): which row holds which image
    meta.json       height, width, sigma, scale (1/255), count, dtype, format
                    "keypoints", plus optional extras (e.g. keypoints_sha256)
get(rows) renders the rows' maps in one batched torch pass. dtype (heatmaps.values) says
which values: "uint8", exactly those the former dense uint8 store held (q / 255 with
q = floor(255 h + 0.5), within 1/510 of h); "float32", the original's exact Gaussians
(render_heatmaps_exact). 144 bytes per image either way instead of 147,456 (18*128*64
uint8), so Market-1501's 36,036 images take 5.2 MB instead of 5.31 GB.

Writing goes to a temporary sibling folder that is renamed into place at the end, so a
reader never sees a half-written store and a failed run leaves the old store untouched.
A HeatmapStore loads its keypoints lazily and pickles without them (DataLoader workers).
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pipeline.core.fsutil import replace_dir, scratch_dir
from pipeline.data.heatmaps import (
    ArrayLike, render_heatmaps_exact, render_heatmaps_quantised, render_heatmaps_uint8,
)
from pipeline.core.keypoints import NUM_JOINTS

KEYPOINTS_FILE = "keypoints.npy"
INDEX_FILE = "index.parquet"
META_FILE = "meta.json"
FORMAT = "keypoints"
SCALE = 1.0 / 255.0
RENDERERS = {"uint8": render_heatmaps_quantised, "float32": render_heatmaps_exact}


def bytes_per_image(height: int, width: int) -> int:
    """Bytes of one image's maps as uint8 pixels (what get() returns, before float)."""
    return NUM_JOINTS * height * width


def stored_bytes_per_image() -> int:
    """Bytes one image takes on disk: its 18 (x, y) float32 keypoints."""
    return NUM_JOINTS * 2 * 4


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
    values: str = "uint8",
) -> Path:
    """Write a store at `path` (replacing any old one) for these images; get() renders
    `values` maps ("uint8": quantised to k/255, "float32": exact; heatmaps.values).

    names: N unique image names; keypoints: [N, 18, >=2] (x, y) at height x width, -1 (or
    NaN) for missing joints. `chunk` rows are validated (rendered once, which also checks
    the sigma and the coordinates) and copied at a time; `threads` caps torch's intra-op
    threads while doing so (None keeps torch's setting). Returns the store path.
    """
    path = Path(path)
    names = [str(n) for n in names]
    kp = keypoints.detach().cpu().numpy() if isinstance(keypoints, torch.Tensor) else keypoints
    kp = np.asarray(kp, np.float32)
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
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if values not in RENDERERS:
        raise ValueError(f"heatmaps.values must be one of {sorted(RENDERERS)}, got {values!r}")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_dir(path, "tmp")  # sweeps folders left by a killed run first
    try:
        n = len(names)
        mm = np.lib.format.open_memmap(tmp / KEYPOINTS_FILE, mode="w+", dtype=np.float32,
                                       shape=(n, NUM_JOINTS, 2))
        with _torch_threads(threads):
            for start in range(0, n, chunk):
                _render_chunk(mm, kp, start, min(start + chunk, n), height, width, sigma)
        mm.flush()
        del mm
        _fsync(tmp / KEYPOINTS_FILE)
        pd.DataFrame(
            {"name": pd.Series(names, dtype="string"), "row": np.arange(n, dtype=np.int64)}
        ).to_parquet(tmp / INDEX_FILE, index=False)
        meta = {
            "height": int(height),
            "width": int(width),
            "sigma": float(sigma),
            "scale": SCALE,
            "count": n,
            "dtype": values,
            "format": FORMAT,
            **dict(extra_meta or {}),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _render_chunk(
    mm: np.ndarray, kp: np.ndarray, start: int, stop: int, height: int, width: int, sigma: float
) -> None:
    """Copy rows [start, stop) into the memmap, missing joints normalised to -1. Rendering
    a small block of them checks that they render (a cheap guard against bad input)."""
    rows = np.array(kp[start:stop, :, :2], np.float32)
    rows[~((rows[..., 0] >= 0) & (rows[..., 1] >= 0))] = -1.0  # NaN fails both tests
    render_heatmaps_uint8(rows[:2], height, width, sigma)
    mm[start:stop] = rows


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
        for f in (KEYPOINTS_FILE, INDEX_FILE, META_FILE):
            if not (self.path / f).is_file():
                raise FileNotFoundError(f"{self.path}: not a heatmap store (missing {f}; "
                                        "re-run the heatmaps stage)")
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
        self._render = RENDERERS.get(self.meta.get("dtype", "uint8"))
        if self._render is None:
            raise ValueError(f"{self.path / META_FILE}: unknown dtype {self.meta.get('dtype')!r}, "
                             f"expected one of {sorted(RENDERERS)} (re-run the heatmaps stage)")
        self._kp: np.ndarray | None = None

    # -- lazily loaded keypoints; dropped when pickled, reloaded after
    @property
    def keypoints(self) -> np.ndarray:
        """float32 [N, 18, 2] (x, y) at height x width, -1 missing (read-only)."""
        if self._kp is None:
            kp = np.load(self.path / KEYPOINTS_FILE, mmap_mode="r")
            want = (len(self._names), NUM_JOINTS, 2)
            if kp.shape != want or kp.dtype != np.float32:
                raise ValueError(
                    f"{self.path / KEYPOINTS_FILE}: expected float32 {want}, got {kp.dtype} {kp.shape}"
                )
            self._kp = np.array(kp)  # N x 144 bytes: small enough to hold
        return self._kp

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_kp"] = None
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
        """Image names -> int64 rows of the store. Unknown names raise KeyError listing them."""
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
        """Rows -> float32 [n, 18, H, W] heatmaps in [0, 1] (quantised to k / 255, or the
        exact float32 values: the store's dtype), rendered for the whole batch at once."""
        rows = np.asarray(rows, dtype=np.int64)
        kp = torch.from_numpy(self.keypoints[rows])
        # One thread: a batch is a few MB, and splitting it measured 5-60x slower on a
        # loaded 2-core machine (OpenMP barrier waits); one core renders 24 maps in ~3 ms.
        with _torch_threads(1):
            return self._render(kp, self.height, self.width, self.sigma).numpy()

    def load(self, names: Iterable[str]) -> np.ndarray:
        """Names -> float32 [n, 18, H, W]; shorthand for get(rows(names))."""
        return self.get(self.rows(names))

    def __repr__(self) -> str:
        return f"HeatmapStore({str(self.path)!r}, n={len(self)}, {self.height}x{self.width})"
