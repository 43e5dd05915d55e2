"""Any folder of people as a dataset: one folder per person, or a flat folder and a CSV.

Two ways to say who is who:

    DIR/<person>/<image>               a folder per person; the folder's name is the person
    DIR/<image> + CSV `name,person_id` a flat folder; the CSV (data.folder.persons) names
                                       each image's person (`name` relative to DIR)

The download stage gathers either into the dataset folder as `<person>/<image>` copies, so
every later read sees the first layout. An image's name (the manifest's join key, and the
stem of the evaluation's generated files) is `<person>__<file>`: flat and unique. Person ids
are 1..N in the sorted order of the person names; the item a pair's two images share is the
person. A seeded draw of whole persons (data.folder.test_persons, seed = params seed) is the
test split, so no test person is seen in training. Keypoints come from YOLO (conf/dataset/
folder.yaml): a user's own photos have no canonical annotations.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.images import IMAGE_SUFFIXES
from pipeline.datasets.base import Dataset, DatasetError, is_ignored

SEP = "__"  # between the person and the file in an image's name
CSV_COLUMNS = ["name", "person_id"]
LAYOUT_HELP = "DIR/<person>/<image>, or a flat DIR with data.folder.persons (a CSV name,person_id)"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not is_ignored(name)


def image_name(person: str, file: str) -> str:
    """('alice', 'IMG_1.jpg') -> 'alice__IMG_1.jpg'."""
    return f"{person}{SEP}{file}"


def check_person_name(person: str, where: str) -> None:
    """A person name must be a plain folder name without the name separator."""
    if not person or person in (".", "..") or "/" in person or "\\" in person:
        raise DatasetError(f"{where}: {person!r} is not usable as a person name (a folder name)")
    if SEP in person:
        raise DatasetError(f"{where}: the person name {person!r} contains {SEP!r}, which "
                           f"separates person and file in image names; rename it")


# --------------------------------------------------------------------------- reading people


def scan_persons(folder: Path) -> pd.DataFrame:
    """DIR/<person>/<image> -> DataFrame[person, file, path] (path relative to DIR, POSIX),
    sorted; images deeper down are not read. DatasetError for an image outside a person
    folder or a person name that cannot be used."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder of people not found")
    rows = []
    with os.scandir(folder) as top:
        entries = sorted((e for e in top if not is_ignored(e.name)), key=lambda e: e.name)
    for entry in entries:
        if entry.is_file() and _is_image(entry.name):
            raise DatasetError(f"{folder / entry.name}: an image outside a person folder "
                               f"(expected {LAYOUT_HELP})")
        if not entry.is_dir():
            continue
        check_person_name(entry.name, str(folder / entry.name))
        with os.scandir(entry.path) as it:
            files = sorted(e.name for e in it if e.is_file() and _is_image(e.name))
        rows += [(entry.name, f, f"{entry.name}/{f}") for f in files]
    return pd.DataFrame(rows, columns=["person", "file", "path"]).astype(str)


def read_persons_csv(csv: Path, folder: Path) -> pd.DataFrame:
    """A CSV `name,person_id` naming images of `folder` -> DataFrame[person, file, path].
    DatasetError naming the CSV (and its line) for a wrong header, an empty cell, a name
    that is not a relative path to an image in `folder`, or a name listed twice."""
    csv, folder = Path(csv), Path(folder)
    if not csv.is_file():
        raise DatasetError(f"data.folder.persons: {csv}: CSV not found")
    df = pd.read_csv(csv, dtype=str, keep_default_na=False, skipinitialspace=True)
    if list(df.columns) != CSV_COLUMNS:
        raise DatasetError(f"{csv}: expected the header 'name,person_id', got {','.join(df.columns)!r}")
    rows = []
    for line, (name, person) in enumerate(df[CSV_COLUMNS].itertuples(index=False), start=2):
        where = f"{csv}:{line}"
        rel = PurePosixPath(name.strip())
        if not name.strip() or rel.is_absolute() or ".." in rel.parts:
            raise DatasetError(f"{where}: {name!r} is not a path relative to {folder}")
        person = person.strip()
        check_person_name(person, where)
        if not _is_image(rel.name):
            raise DatasetError(f"{where}: {name!r} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        if not (folder / rel).is_file():
            raise DatasetError(f"{where}: {name!r} is not in {folder}")
        rows.append((person, rel.name, rel.as_posix(), where))
    out = pd.DataFrame(rows, columns=["person", "file", "path", "where"])
    dup = out["path"].duplicated()
    if dup.any():
        raise DatasetError(f"{out.loc[dup, 'where'].iloc[0]}: {out.loc[dup, 'path'].iloc[0]!r} is listed twice")
    return out.drop(columns="where").sort_values(["person", "file"], kind="stable").reset_index(drop=True)


def check_people(people: pd.DataFrame, where: Path | str) -> None:
    """At least two persons, each with two or more images, no two files of one person
    sharing a stem (generated images are named by it); DatasetError naming `where`."""
    where = str(where)
    if people.empty:
        raise DatasetError(f"{where}: no images (expected {LAYOUT_HELP}; images end in "
                           f"{', '.join(IMAGE_SUFFIXES)})")
    counts = people["person"].value_counts(sort=False)
    single = sorted(counts.index[counts < 2])
    if single:
        raise DatasetError(f"{where}: person {single[0]!r} has only one image "
                           f"({len(single)} such person(s)); pairs need two images of a person")
    if len(counts) < 2:
        raise DatasetError(f"{where}: only one person ({counts.index[0]!r}); a folder dataset "
                           f"needs two or more (whole persons are held out for testing)")
    stems = people["person"] + "/" + people["file"].map(lambda f: PurePosixPath(f).stem)
    dup = stems.duplicated(keep=False)
    if dup.any():
        files = people.loc[dup, "path"].tolist()[:2]
        raise DatasetError(f"{where}: {files} share the name {stems[dup].iloc[0]!r}; rename one")
    names = image_name_series(people)
    if names.duplicated().any():
        raise DatasetError(f"{where}: two images get the name {names[names.duplicated()].iloc[0]!r}")


def image_name_series(people: pd.DataFrame) -> pd.Series:
    return (people["person"] + SEP + people["file"]).astype(str)


def held_out(persons: Sequence[str], test_persons: float, seed: int) -> set[str]:
    """The persons of the test split: a seeded draw of round(test_persons * N) persons (at
    least one) when test_persons < 1, else that many. DatasetError naming the setting when
    it is not a whole count or leaves no one to train on."""
    persons = sorted(persons)
    n = len(persons)
    if test_persons < 1:
        count = max(1, round(test_persons * n))
    elif float(test_persons).is_integer():
        count = int(test_persons)
    else:
        raise DatasetError(f"data.folder.test_persons: {test_persons} is neither a fraction "
                           f"(< 1) nor a whole number of persons")
    if count >= n:
        raise DatasetError(f"data.folder.test_persons: {test_persons} holds out {count} of the "
                           f"{n} persons; at least one must be left for training")
    order = np.random.default_rng(seed).permutation(n)
    return {persons[i] for i in order[:count]}


# --------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class FolderDataset(Dataset):
    """A folder of people (module docstring); test_persons and seed decide the split."""

    persons_csv: str | None = None  # data.folder.persons: the flat layout's CSV
    test_persons: float = 0.2
    seed: int = 0

    def configured(self, data: Any, seed: int = 0) -> FolderDataset:
        folder = data.folder
        return replace(self, persons_csv=folder.persons, test_persons=folder.test_persons, seed=seed)

    def identify(self, names: Sequence[str]) -> pd.DataFrame:
        series = pd.Series(list(map(str, names)), dtype="string")
        parts = series.str.split(SEP, n=1)
        bad = parts.str.len() != 2
        if bad.any():
            raise DatasetError(f"{int(bad.sum())} image name(s) not named <person>{SEP}<file>, "
                               f"e.g. {series[bad].iloc[0]!r}")
        person = parts.str[0].astype(str)
        codes, _ = pd.factorize(person, sort=True)  # ids 1..N in sorted person order
        pid = codes.astype(np.int64) + 1
        return pd.DataFrame({"person_id": pid, "camera": np.zeros(len(pid), np.int64), "item_id": pid})

    def find_root(self, folder: Path) -> Path:
        """`folder`, or its single top folder when that is all it holds and it holds more
        than one person's images (an archive's wrapper folder)."""
        folder = Path(folder)
        entries = [p for p in folder.iterdir() if not is_ignored(p.name)]
        if len(entries) == 1 and entries[0].is_dir():
            inner = [p for p in entries[0].iterdir() if not is_ignored(p.name)]
            if self.persons_csv or any(p.is_dir() for p in inner):
                return entries[0]
        return folder

    def gather(self, folder: Path) -> pd.DataFrame:
        """The user's folder -> DataFrame[person, file, path] checked (check_people): the
        CSV's rows with data.folder.persons, else the person folders."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"data.folder.path: {folder}: folder not found")
        people = (read_persons_csv(Path(self.persons_csv), folder) if self.persons_csv
                  else scan_persons(folder))
        check_people(people, folder)
        return people

    def images(self, root: Path) -> pd.DataFrame:
        """The gathered layout root/<person>/<image>: name, path, split (held-out persons
        in test), sorted by split then name."""
        people = scan_persons(root)
        check_people(people, root)
        test = held_out(people["person"].unique(), self.test_persons, self.seed)
        df = pd.DataFrame({"name": image_name_series(people), "path": people["path"],
                           "split": np.where(people["person"].isin(test), "test", "train")})
        return df.sort_values(["split", "name"], kind="stable").reset_index(drop=True).astype(str)


FOLDER = FolderDataset(
    name="folder",
    title="folder of people",
    split_dirs={},
    image_hw=(128, 64),  # no canonical size: image.height / image.width decide
    download=None,
)
