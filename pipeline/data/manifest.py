"""The image manifest: one row per image of a dataset folder (Parquet).

Columns: name (file name), path (relative to the dataset root, POSIX), person_id (Market:
-1 junk, 0 distractor), camera, item_id (what a pair's two images share: the person, or
DeepFashion's clothing item), split (train / test / query), width, height (from the image
header; 0 x 0 when the file cannot be read). The dataset (pipeline.datasets) decides the
ids from the names, once. Rows are sorted by split then name, so the
same folder always gives the same table. A small JSON sidecar records where the data came
from (URL or archive, checksum) and counts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd
from PIL import Image, UnidentifiedImageError

from pipeline.core.fsutil import atomic_write, write_json
from pipeline.datasets.base import Dataset
from pipeline.datasets.market1501 import DISTRACTOR_ID, JUNK_ID, MARKET1501

COLUMNS: tuple[str, ...] = ("name", "path", "person_id", "camera", "item_id", "split",
                            "width", "height")
_DTYPES = {"person_id": "int64", "camera": "int64", "item_id": "int64", "width": "int64",
           "height": "int64"}


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header only (no decode); (0, 0) if unreadable."""
    try:
        with Image.open(path) as im:  # lazy: reads the header, not the pixels
            return int(im.width), int(im.height)
    # ImportError: once ultralytics is imported, its patched Image.open retries an
    # unidentified file with pi_heif, which is not installed.
    except (OSError, UnidentifiedImageError, ValueError, ImportError):
        return 0, 0


def build_manifest(root: Path, dataset: Dataset = MARKET1501) -> pd.DataFrame:
    """Scan a dataset root (Dataset.images: its split folders or lists) into a table.

    Raises DatasetError when the layout is wrong or a file name does not fit.
    """
    root = Path(root)
    images = dataset.images(root)  # name, path, split; names checked by the dataset
    ids = dataset.identify(images["name"].tolist())
    sizes = [image_size(root / path) for path in images["path"]]
    df = pd.DataFrame({
        "name": images["name"].to_numpy(), "path": images["path"].to_numpy(),
        **{c: ids[c].to_numpy() for c in ids.columns},
        "split": images["split"].to_numpy(), "width": [w for w, _ in sizes],
        "height": [h for _, h in sizes],
    }, columns=list(COLUMNS)).astype(_DTYPES)
    return df.sort_values(["split", "name"], kind="stable").reset_index(drop=True)


def write_manifest(df: pd.DataFrame, path: Path) -> None:
    """Write the manifest to Parquet atomically (temp file + rename)."""
    atomic_write(path, lambda tmp: df.loc[:, list(COLUMNS)].to_parquet(tmp, index=False))


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest written by write_manifest; a missing file or column is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run the download stage)")
    df = pd.read_parquet(path)
    if "item_id" not in df.columns and "person_id" in df.columns:
        df["item_id"] = df["person_id"]  # manifests written before item_id: the person is the item
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: not a manifest, missing column(s) {missing}")
    return df


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts for the sidecar and the stage's summary line."""
    ids = df.loc[df.person_id > 0]
    return {
        "images": int(len(df)),
        "per_split": {s: int(n) for s, n in df.split.value_counts().sort_index().items()},
        "identities": {s: int(n) for s, n in ids.groupby("split").person_id.nunique().items()},
        "junk": int((df.person_id == JUNK_ID).sum()),
        "distractors": int((df.person_id == DISTRACTOR_ID).sum()),
        "unreadable": int(((df.width == 0) | (df.height == 0)).sum()),
    }


def sidecar_path(manifest_path: Path) -> Path:
    """data/manifest.parquet -> data/manifest.json."""
    return Path(manifest_path).with_suffix(".json")


def write_sidecar(path: Path, info: Mapping[str, Any]) -> None:
    """Write provenance/counts as stable, sorted JSON (no timestamps: DVC-friendly)."""
    write_json(path, dict(info), sort_keys=True)
