"""Market-1501 file naming and folder layout.

A Market-1501 crop is named `PPPP_cCsS_FFFFFF_BB.jpg`: person id (4 digits, `-1` for junk,
`0000` for distractors), camera C (1-6), sequence S, frame, bounding-box index.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from pipeline.datasets.base import Dataset, DatasetError, Download, is_ignored  # noqa: F401 (re-exported)

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


# --------------------------------------------------------------------------- the dataset

ARCHIVE_NAME = "Market-1501-v15.09.15.zip"
# The canonical OpenPose keypoints (name:keypoints_y:keypoints_x) of 128x64 crops and the fixed
# 12,000 test pairs every published number is measured on (method.md).
ANNOTATION_FILES = {"train": "market-annotation-train.csv", "test": "market-annotation-test.csv"}
TEST_PAIRS_FILE = "market-pairs-test.csv"
CANONICAL_HW = (128, 64)


@dataclass(frozen=True)
class Market1501(Dataset):
    """Market-1501: person id and camera from the name; a pair's item is its person."""

    def identify(self, names: Sequence[str]) -> pd.DataFrame:
        parts = pd.Series(list(map(str, names)), dtype="string").str.extract(NAME_RE.pattern)
        bad = parts[0].isna()
        if bad.any():
            first = str(list(names)[int(bad.to_numpy().argmax())])
            raise DatasetError(f"{int(bad.sum())} file name(s) not named like Market-1501 "
                               f"(PPPP_cCsS_FFFFFF_BB.jpg), e.g. {first!r}")
        pid = parts[0].astype("int64").to_numpy()
        return pd.DataFrame({"person_id": pid, "camera": parts[1].astype("int64").to_numpy(),
                             "item_id": pid})

    def canonical_names(self, names: Sequence[str]) -> pd.Series:
        return canonical_names(names)


MARKET1501 = Market1501(
    name="market1501",
    title="Market-1501",
    split_dirs=SPLIT_DIRS,
    image_hw=CANONICAL_HW,
    download=Download(
        ARCHIVE_NAME,
        "https://drive.usercontent.google.com/download?id=0B8-rUzbwVRk0c054eEozWG9COHM"
        "&export=download&confirm=t",
        "md5:65005ab7d12ec1c44de4eeafe813e68a",
    ),
    annotation_files=ANNOTATION_FILES,
    test_pairs_file=TEST_PAIRS_FILE,
)


def find_root(folder: Path) -> Path:
    """The Market-1501 root inside an extracted archive (Dataset.find_root)."""
    return MARKET1501.find_root(folder)


def list_images(root: Path) -> dict[str, list[str]]:
    """Split -> sorted .jpg file names in its folder (litter skipped, names not checked)."""
    return MARKET1501.list_images(root)


def check_layout(root: Path) -> dict[str, int]:
    """Verify a Market-1501 root and return the image count per split (Dataset.check_layout)."""
    return MARKET1501.check_layout(root)
