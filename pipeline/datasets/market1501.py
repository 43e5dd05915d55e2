"""Market-1501 file naming and folder layout.

A Market-1501 crop is named `PPPP_cCsS_FFFFFF_BB.jpg`: person id (4 digits, `-1` for junk,
`0000` for distractors), camera C (1-6), sequence S, frame, bounding-box index.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

# split name -> folder inside the extracted dataset
SPLIT_DIRS: dict[str, str] = {
    "train": "bounding_box_train",
    "test": "bounding_box_test",
    "query": "query",
}
# A few canonical test annotations carry a doubled extension (`..._01.jpg.jpg`); accept it.
NAME_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg(\.jpg)?$")
JUNK_ID = -1
DISTRACTOR_ID = 0


def parse_name(name: str) -> tuple[int, int]:
    """`0002_c1s1_000451_03.jpg` -> (person_id 2, camera 1). Raises ValueError if not Market."""
    m = NAME_RE.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a Market-1501 file name (PPPP_cCsS_FFFFFF_BB.jpg)")
    return int(m.group(1)), int(m.group(2))


def is_market_name(name: str) -> bool:
    return NAME_RE.match(name) is not None


_DOUBLE_JPG = re.compile(r"\.jpg\.jpg$")


def canonical_name(name: str) -> str:
    """The name with a doubled `.jpg.jpg` extension collapsed to `.jpg` (the join key that
    matches a file to its annotation or pair entry whichever of the two carries one or two)."""
    return _DOUBLE_JPG.sub(".jpg", str(name))


def canonical_names(names) -> pd.Series:
    """canonical_name over a sequence, vectorised; a pandas string Series."""
    return pd.Series(list(map(str, names)), dtype="string").str.replace(_DOUBLE_JPG, ".jpg", regex=True)


def format_name(person_id: int, camera: int, frame: int, index: int = 0, sequence: int = 1) -> str:
    """Inverse of parse_name: (2, 1, 451, 3) -> `0002_c1s1_000451_03.jpg`."""
    pid = "-1" if person_id == JUNK_ID else f"{person_id:04d}"
    return f"{pid}_c{camera}s{sequence}_{frame:06d}_{index:02d}.jpg"


# --------------------------------------------------------------------------- layout

ARCHIVE_NAME = "Market-1501-v15.09.15.zip"
# OS litter that archives and folders carry; never an error, never listed.
IGNORED_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})
IGNORED_DIRS = frozenset({"__macosx"})


class DatasetError(ValueError):
    """A folder that is not a usable Market-1501-layout dataset."""


def is_ignored(name: str) -> bool:
    """True for OS litter (Thumbs.db, .DS_Store, macOS `._x` resource forks, __MACOSX)."""
    low = name.lower()
    return low in IGNORED_FILES or low in IGNORED_DIRS or name.startswith("._")


def find_root(folder: Path) -> Path:
    """The dataset root inside an extracted archive: `folder` itself when it holds the split
    folders, else its single top-level folder (Market-1501-v15.09.15/) when that does."""
    folder = Path(folder)
    if _has_splits(folder):
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not is_ignored(p.name)]
    if len(subdirs) == 1 and _has_splits(subdirs[0]):
        return subdirs[0]
    wanted = ", ".join(SPLIT_DIRS.values())
    found = sorted(p.name for p in folder.iterdir() if not is_ignored(p.name))
    raise DatasetError(
        f"{folder}: no Market-1501 layout ({wanted}) at the top or under a single top folder; "
        f"found {found[:10]}"
    )


def _has_splits(folder: Path) -> bool:
    return all((folder / d).is_dir() for d in SPLIT_DIRS.values())


def list_images(root: Path) -> dict[str, list[str]]:
    """Split -> sorted .jpg file names in its folder (litter skipped, names not checked)."""
    root = Path(root)
    out: dict[str, list[str]] = {}
    for split, sub in SPLIT_DIRS.items():
        folder = root / sub
        if not folder.is_dir():
            raise DatasetError(f"{root}: missing split folder {sub}/")
        with os.scandir(folder) as it:
            out[split] = sorted(
                e.name for e in it
                if e.name.lower().endswith(".jpg") and not is_ignored(e.name) and e.is_file()
            )
    return out


def check_layout(root: Path) -> dict[str, int]:
    """Verify a dataset root and return the image count per split.

    Requires the three split folders, every .jpg in them named like Market-1501, and at
    least one training image. Raises DatasetError naming the folder and the offending files.
    """
    root = Path(root)
    images = list_images(root)
    for split, names in images.items():
        bad = [n for n in names if not is_market_name(n)]
        if bad:
            raise DatasetError(
                f"{root / SPLIT_DIRS[split]}: {len(bad)} .jpg file(s) not named like Market-1501 "
                f"(PPPP_cCsS_FFFFFF_BB.jpg), e.g. {bad[:3]}"
            )
    if not images["train"]:
        raise DatasetError(f"{root / SPLIT_DIRS['train']}: no training images")
    return {split: len(names) for split, names in images.items()}
