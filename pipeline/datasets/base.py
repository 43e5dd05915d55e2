"""The dataset interface: everything the pipeline knows about one benchmark's files.

A dataset says where its splits live inside the dataset folder, how a file name gives a
person (and the item that pairs must share), the canonical image size the papers use,
where its archive comes from, and which canonical annotation and test-pair files exist.
Stages never parse file names themselves: the manifest carries person_id, camera and
item_id, decided here once.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd


# OS litter that archives and folders carry; never an error, never listed.
IGNORED_FILES = frozenset({"thumbs.db", ".ds_store", "desktop.ini"})
IGNORED_DIRS = frozenset({"__macosx"})
IDENTITY_COLUMNS = ("person_id", "camera", "item_id")


class DatasetError(ValueError):
    """A folder, archive or file name that does not fit the dataset it is read as."""


def is_ignored(name: str) -> bool:
    """True for OS litter (Thumbs.db, .DS_Store, macOS `._x` resource forks, __MACOSX)."""
    low = name.lower()
    return low in IGNORED_FILES or low in IGNORED_DIRS or name.startswith("._")


@dataclass(frozen=True)
class Download:
    """Where the dataset's archive comes from: the defaults of data.url / data.checksum."""

    archive_name: str
    url: str
    checksum: str | None


@dataclass(frozen=True)
class Dataset(ABC):
    """One benchmark. Subclasses fill the fields and implement identify()."""

    name: str                              # data.source
    title: str                             # how people write it, for messages
    split_dirs: Mapping[str, str]          # split -> folder inside the dataset root
    image_hw: tuple[int, int]              # canonical (height, width) papers train and score at
    download: Download | None = None       # None: nothing to download (rendered or local)
    # split -> canonical keypoint CSV (name:keypoints_y:keypoints_x), under data/annotations/
    annotation_files: Mapping[str, str] = field(default_factory=dict)
    test_pairs_file: str | None = None     # the fixed published test pairs (from,to)
    image_suffixes: tuple[str, ...] = (".jpg",)

    @abstractmethod
    def identify(self, names: Sequence[str]) -> pd.DataFrame:
        """File names [N] -> DataFrame of int64 person_id, camera, item_id [N] (item_id: the
        key pairs must share; the person id where a person is the item). Raises
        DatasetError naming the first name that does not fit."""

    def canonical_names(self, names: Sequence[str]) -> pd.Series:
        """The join key between image files and annotation/pair entries (string Series)."""
        return pd.Series(list(map(str, names)), dtype="string")

    def configured(self, data: Any, seed: int = 0) -> "Dataset":
        """This dataset with the user's data.* settings (DataConfig; e.g. DeepFashion's
        split lists) and the params seed (a folder's held-out persons) applied. Datasets
        without such settings return themselves."""
        return self

    # ------------------------------------------------------------------ layout

    def find_root(self, folder: Path) -> Path:
        """The dataset root inside an extracted archive: `folder` itself when it holds the
        split folders, else its single top-level folder when that does."""
        folder = Path(folder)
        if self._has_splits(folder):
            return folder
        subdirs = [p for p in folder.iterdir() if p.is_dir() and not is_ignored(p.name)]
        if len(subdirs) == 1 and self._has_splits(subdirs[0]):
            return subdirs[0]
        wanted = ", ".join(self.split_dirs.values())
        found = sorted(p.name for p in folder.iterdir() if not is_ignored(p.name))
        raise DatasetError(f"{folder}: no {self.title} layout ({wanted}) at the top or under a "
                           f"single top folder; found {found[:10]}")

    def _has_splits(self, folder: Path) -> bool:
        return all((folder / d).is_dir() for d in self.split_dirs.values())

    def list_images(self, root: Path) -> dict[str, list[str]]:
        """Split -> sorted image file names in its folder (litter skipped, names unchecked)."""
        root = Path(root)
        out: dict[str, list[str]] = {}
        for split, sub in self.split_dirs.items():
            folder = root / sub
            if not folder.is_dir():
                raise DatasetError(f"{root}: missing split folder {sub}/")
            with os.scandir(folder) as it:
                out[split] = sorted(
                    e.name for e in it if e.name.lower().endswith(self.image_suffixes)
                    and not is_ignored(e.name) and e.is_file())
        return out

    def images(self, root: Path) -> pd.DataFrame:
        """Every image of a dataset root: name (the dataset's name for it), path (relative to
        root, POSIX) and split, sorted by split then name. DatasetError when a name does
        not fit (identify). This default reads one folder per split (split_dirs)."""
        frames = []
        for split, names in self.list_images(root).items():
            sub = self.split_dirs[split]
            try:
                self.identify(names)
            except DatasetError as exc:
                raise DatasetError(f"{Path(root) / sub}: {exc}") from exc
            frames.append(pd.DataFrame({"name": names, "path": [f"{sub}/{n}" for n in names],
                                        "split": split}))
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            {"name": [], "path": [], "split": []})
        return out.astype(str)

    def check_layout(self, root: Path) -> dict[str, int]:
        """Verify a dataset root (its layout, every image name fits, some training images)
        and return the image count per split; DatasetError names what is wrong."""
        root = Path(root)
        images = self.images(root)
        counts = {str(s): int(n) for s, n in images["split"].value_counts(sort=False).items()}
        if not counts.get("train"):
            raise DatasetError(f"{root / self.split_dirs.get('train', '')}: no training images")
        return counts
