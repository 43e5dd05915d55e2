"""A tiny DeepFashion-shaped data set for tests: real In-shop names (a few items of the real
train.lst / test.lst), drawn people (pipeline.datasets.synthetic.deepfashion_archive), the
split lists, annotation CSVs in the 256x176 frame and a test pair list of same-item pairs."""
from __future__ import annotations

from itertools import permutations
from pathlib import Path

from pipeline.datasets.deepfashion import ANNOTATION_FILES, TEST_PAIRS_FILE


def _item(prefix: str, views: str) -> list[str]:
    return [f"{prefix}_{v}.jpg" for v in views.split()]


# id 00007139 has two outfits (04, 05) here: one person, two items.
TRAIN = (_item("fashionWOMENPantsid0000713904", "1front 2side 3back 7additional")
         + _item("fashionWOMENPantsid0000713905", "1front 2side 3back")
         + _item("fashionWOMENSweatersid0000060702", "1front 3back 4full")
         + _item("fashionMENDenimid0000008001", "1front 2side 3back")
         + ["fashionMENShortsid0000059701_6flat.jpg"])
TEST = (_item("fashionWOMENRompers_Jumpsuitsid0000104507", "1front 3back 4full")
        + _item("fashionWOMENDressesid0000573204", "1front 2side 3back"))


def same_item_pairs(names: list[str] = TEST) -> list[tuple[str, str]]:
    """Every ordered pair of two views of one item (a name without its `_<pose><view>.jpg`
    tail is its item)."""
    return [(a, b) for a, b in permutations(names, 2) if a.rsplit("_", 1)[0] == b.rsplit("_", 1)[0]]


def write_lists(folder: Path) -> Path:
    """train.lst and test.lst of TRAIN and TEST in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.lst").write_text("".join(f"{n}\n" for n in TRAIN))
    (folder / "test.lst").write_text("".join(f"{n}\n" for n in TEST))
    return folder


def make_deepfashion(tmp: Path, layout: str = "inshop") -> tuple[Path, Path]:
    """(archive zip, annotations folder) of the tiny set: the zip in the In-shop layout (256x256)
    or the flat 256x176 one; the folder holds the lists, both annotation CSVs and the pairs."""
    from pipeline.datasets.synthetic.deepfashion_archive import build

    lists = write_lists(tmp / "lists")
    ann = tmp / "annotations"
    build(lists, tmp / "img.zip", layout=layout, workers=1, subset_dir=ann)
    assert (ann / ANNOTATION_FILES["train"]).is_file()
    (ann / TEST_PAIRS_FILE).write_text("from,to\n" + "".join(f"{a},{b}\n" for a, b in same_item_pairs()))
    return tmp / "img.zip", ann
