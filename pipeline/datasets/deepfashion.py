"""DeepFashion In-shop Clothes Retrieval: file naming, layout and split.

The In-shop archive (`img.zip`, 256x256 images: a person centred on a white canvas) holds

    img/<MEN|WOMEN>/<Category>/id_<8 digits>/<NN>_<pose>_<view>.jpg
    e.g. img/WOMEN/Blouses_Shirts/id_00003372/03_3_back.jpg

The pose-transfer papers since 2019 (their train.lst / test.lst, annotations and pairs) name
each image by its flattened path: "fashion", the gender, the category as it is (its
underscore kept), "id" and the 8 digits (the id's underscore dropped), the outfit number NN,
"_", the pose number and the view (the underscore between them dropped):

    fashionWOMENBlouses_Shirtsid0000337203_3back.jpg

Both layouts are read: the In-shop tree (named by flattening) and any folder of images
already carrying flattened names (the papers' 256x176 `train/`, `test/` folders). The person
is the id; the item, which a pair's two images must share, is the id and the outfit
(item_id = id * 100 + NN); `camera` holds the pose number (1 front, 2 side, 3 back, 4 full,
6 flat, 7 additional). The split comes from the lists (data.split_lists: an image is in the
split its list is named for), else from a `train/` or `test/` folder holding it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from pipeline.core.images import IMAGE_SUFFIXES
from pipeline.datasets.base import Dataset, DatasetError, is_ignored

# The flattened name: gender, category (letters and underscores), id, outfit, pose, view.
NAME_RE = re.compile(r"^fashion(MEN|WOMEN)([A-Za-z_]+)id(\d{8})(\d{2})_(\d)([a-z]+)\.jpg$")
# An In-shop path (anything above img/ allowed): the same six fields.
TREE_RE = re.compile(r"(?:^|/)(MEN|WOMEN)/([A-Za-z_]+)/id_(\d{8})/(\d{2})_(\d)_([a-z]+)\.jpg$")
NAME_HELP = ("In-shop img/<MEN|WOMEN>/<Category>/id_<8 digits>/<NN>_<pose>_<view>.jpg or a "
             "flattened name like fashionWOMENBlouses_Shirtsid0000337203_3back.jpg")
UNLISTED = "unlisted"  # split of an image no list names (never paired)
SPLIT_FOLDERS = ("train", "test")
TREE_DIRS = ("img", "MEN", "WOMEN", *SPLIT_FOLDERS)

ANNOTATION_FILES = {"train": "fasion-resize-annotation-train.csv",
                    "test": "fasion-resize-annotation-test.csv"}
TEST_PAIRS_FILE = "fasion-resize-pairs-test.csv"
ANNOTATION_HW = (256, 176)  # the annotations' frame: the 256x256 canvas cut to columns 40..215
CANVAS_HW = (256, 256)      # the In-shop images, the original Deformable GAN's model size


def flatten(path: str) -> str:
    """`img/WOMEN/Blouses_Shirts/id_00003372/03_3_back.jpg` ->
    `fashionWOMENBlouses_Shirtsid0000337203_3back.jpg`. ValueError if not an In-shop path."""
    m = TREE_RE.search(str(path).replace("\\", "/"))
    if m is None:
        raise ValueError(f"{path!r} is not an In-shop image path ({NAME_HELP})")
    gender, category, pid, outfit, pose, view = m.groups()
    return f"fashion{gender}{category}id{pid}{outfit}_{pose}{view}.jpg"


def unflatten(name: str) -> str:
    """Inverse of flatten: the In-shop path under img/. ValueError if not a flattened name."""
    m = NAME_RE.match(str(name))
    if m is None:
        raise ValueError(f"{name!r} is not a flattened DeepFashion name ({NAME_HELP})")
    gender, category, pid, outfit, pose, view = m.groups()
    return f"img/{gender}/{category}/id_{pid}/{outfit}_{pose}_{view}.jpg"


def read_split_lists(paths: Sequence[str | Path]) -> dict[str, str]:
    """Flattened name -> split, from list files named <split>.lst (one name a line).
    DatasetError naming the file for a missing file, a name that is not a flattened
    DeepFashion name, or a name two lists claim."""
    split_of: dict[str, str] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise DatasetError(f"data.split_lists: {path}: list not found")
        split = path.stem
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            if NAME_RE.match(name) is None:
                raise DatasetError(f"{path}:{lineno}: {name!r} is not a flattened DeepFashion "
                                   f"name (e.g. fashionWOMENBlouses_Shirtsid0000337203_3back.jpg)")
            if split_of.setdefault(name, split) != split:
                raise DatasetError(f"{path}:{lineno}: {name!r} is already in the "
                                   f"{split_of[name]} list")
    return split_of


@dataclass(frozen=True)
class DeepFashion(Dataset):
    """DeepFashion In-shop (see the module docstring); split_of: name -> split from the lists."""

    split_of: Mapping[str, str] = field(default_factory=dict)

    def identify(self, names: Sequence[str]) -> pd.DataFrame:
        parts = pd.Series(list(map(str, names)), dtype="string").str.extract(NAME_RE.pattern)
        bad = parts[0].isna()
        if bad.any():
            first = str(list(names)[int(bad.to_numpy().argmax())])
            raise DatasetError(f"{int(bad.sum())} file name(s) not named like DeepFashion "
                               f"({NAME_HELP}), e.g. {first!r}")
        pid = parts[2].astype("int64").to_numpy()
        return pd.DataFrame({"person_id": pid, "camera": parts[4].astype("int64").to_numpy(),
                             "item_id": pid * 100 + parts[3].astype("int64").to_numpy()})

    def configured(self, data: Any, seed: int = 0) -> "DeepFashion":
        lists = tuple(getattr(data, "split_lists", ()) or ())
        return replace(self, split_of=read_split_lists(lists)) if lists else self

    def find_root(self, folder: Path) -> Path:
        """`folder`, or its single top folder when that is all it holds (an archive's
        wrapper folder); the layout itself is checked by images()."""
        folder = Path(folder)
        entries = [p for p in folder.iterdir() if not is_ignored(p.name)]
        if len(entries) == 1 and entries[0].is_dir() and entries[0].name not in TREE_DIRS:
            return entries[0]
        return folder

    def images(self, root: Path) -> pd.DataFrame:
        root = Path(root)
        rows = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
            for file in filenames:
                if is_ignored(file) or not file.lower().endswith(IMAGE_SUFFIXES):
                    continue
                rel = Path(dirpath, file).relative_to(root).as_posix()
                rows.append((self._name(rel, root), rel))
        if not rows:
            raise DatasetError(f"{root}: no DeepFashion images ({NAME_HELP})")
        df = pd.DataFrame(rows, columns=["name", "path"])
        dup = df["name"].duplicated(keep=False)
        if dup.any():
            paths = df.loc[dup, "path"].tolist()[:2]
            raise DatasetError(f"{root}: two files are the same image {df.loc[dup, 'name'].iloc[0]!r}: {paths}")
        df["split"] = self._splits(df, root)
        return df.sort_values(["split", "name"], kind="stable").reset_index(drop=True)

    def _name(self, rel: str, root: Path) -> str:
        if TREE_RE.search(rel):
            return flatten(rel)
        base = rel.rsplit("/", 1)[-1]
        if NAME_RE.match(base):
            return base
        raise DatasetError(f"{root / rel}: unknown DeepFashion name pattern (expected {NAME_HELP})")

    def _splits(self, df: pd.DataFrame, root: Path) -> list[str]:
        if self.split_of:
            return [self.split_of.get(n, UNLISTED) for n in df["name"]]
        folder = df["path"].str.split("/").str[-2].fillna("")
        if folder.isin(SPLIT_FOLDERS).all():
            return folder.tolist()
        raise DatasetError(f"{root}: DeepFashion needs its split lists (data.split_lists: "
                           f"train.lst, test.lst) or train/ and test/ folders")


DEEPFASHION = DeepFashion(
    name="deepfashion",
    title="DeepFashion In-shop",
    split_dirs={},
    image_hw=CANVAS_HW,
    # No stable public file: the owners share img.zip through a Google Drive folder after a
    # request (set data.archive to the downloaded img.zip, or data.url to a mirror).
    download=None,
    annotation_files=ANNOTATION_FILES,
    test_pairs_file=TEST_PAIRS_FILE,
)
