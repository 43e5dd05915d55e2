"""DeepFashion In-shop: the flattened naming rule, split lists, item ids, the two layouts,
the annotation frame (256x176 on the 256x256 canvas), the fixed 8,570 test pairs, and bad
input as one line naming the file."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from conftest import shared_path
from pipeline.core.config import DataConfig, ImageConfig, Params, PairsConfig
from pipeline.core.keypoints import keypoints_array
from pipeline.data.annotations import join_manifest, read_annotations
from pipeline.data.download import prepare_dataset
from pipeline.data.pairs import make_pairs, read_pair_list
from pipeline.datasets import deepfashion as df
from pipeline.datasets.base import DatasetError
from pipeline.datasets.registry import get
from support.deepfashion_files import TEST, TRAIN, make_deepfashion, same_item_pairs, write_lists

ISSUE_PATH = "img/WOMEN/Blouses_Shirts/id_00003372/03_3_back.jpg"
ISSUE_NAME = "fashionWOMENBlouses_Shirtsid0000337203_3back.jpg"


# --------------------------------------------------------------------------- naming


def test_flatten_the_issue_example_and_back():
    assert df.flatten(ISSUE_PATH) == ISSUE_NAME
    assert df.flatten("In-shop/" + ISSUE_PATH) == ISSUE_NAME  # anything above img/
    assert df.unflatten(ISSUE_NAME) == ISSUE_PATH


@pytest.mark.parametrize("path", ["img/WOMEN/Blouses_Shirts/id_3372/03_3_back.jpg",
                                  "img/KIDS/Tees/id_00003372/03_3_back.jpg",
                                  "img/WOMEN/Blouses_Shirts/id_00003372/03_back.jpg"])
def test_flatten_rejects_other_paths(path):
    with pytest.raises(ValueError, match="not an In-shop image path"):
        df.flatten(path)


def test_every_listed_name_round_trips():
    names = TRAIN + TEST
    try:
        folder = shared_path("data/deepfashion-annotations")
        names = [n for f in ("train.lst", "test.lst")
                 for n in (folder / f).read_text().split()]
        assert len(names) == 48_674 + 4_038 and len(set(names)) == len(names)
    except pytest.skip.Exception:
        pass  # the tiny set's real names only
    assert all(df.flatten(df.unflatten(n)) == n for n in names)


def test_identify_person_item_and_view():
    ids = get("deepfashion").identify([ISSUE_NAME, "fashionMENDenimid0000008001_6flat.jpg"])
    assert ids["person_id"].tolist() == [3372, 80]
    assert ids["item_id"].tolist() == [337203, 8001]
    assert ids["camera"].tolist() == [3, 6]
    with pytest.raises(DatasetError, match="1 file name.*not named like DeepFashion.*'x.jpg'"):
        get("deepfashion").identify([ISSUE_NAME, "x.jpg"])


# --------------------------------------------------------------------------- lists and layouts


def test_split_lists_errors_name_the_file(tmp_path):
    lists = write_lists(tmp_path)
    split_of = df.read_split_lists([lists / "train.lst", lists / "test.lst"])
    assert {split_of[n] for n in TRAIN} == {"train"} and {split_of[n] for n in TEST} == {"test"}
    (tmp_path / "test.lst").write_text(TRAIN[0] + "\n")
    with pytest.raises(DatasetError, match=r"test.lst:1: .* already in the train list"):
        df.read_split_lists([lists / "train.lst", lists / "test.lst"])
    (tmp_path / "test.lst").write_text("\nnot_a_name.jpg\n")
    with pytest.raises(DatasetError, match=r"test.lst:2: 'not_a_name.jpg' is not a flattened"):
        df.read_split_lists([lists / "test.lst"])
    with pytest.raises(DatasetError, match="data.split_lists: .*nope.lst: list not found"):
        df.read_split_lists([tmp_path / "nope.lst"])


def _params(tmp_path, archive, **data) -> Params:
    lists = (str(tmp_path / "annotations" / "train.lst"), str(tmp_path / "annotations" / "test.lst"))
    cfg = DataConfig(source="deepfashion", archive=str(archive), split_lists=lists, **data)
    return Params(image=ImageConfig(256, 256, "pad"), data=cfg)


@pytest.fixture(scope="module")
def inshop(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inshop")
    archive, ann = make_deepfashion(tmp, "inshop")
    info = prepare_dataset(_params(tmp, archive), tmp / "dataset", tmp / "manifest.parquet",
                           progress=False)
    return tmp, ann, info, pd.read_parquet(tmp / "manifest.parquet")


def test_inshop_archive_becomes_the_manifest(inshop):
    tmp, _, info, man = inshop
    assert info["counts"]["per_split"] == {"test": len(TEST), "train": len(TRAIN)}
    row = man.set_index("name").loc[TEST[0]]
    assert row["path"] == df.unflatten(TEST[0]) and (tmp / "dataset" / row["path"]).is_file()
    assert (row["width"], row["height"], row["split"]) == (256, 256, "test")
    # One person, two items: id 00007139 wears outfits 04 and 05.
    pants = man[man["person_id"] == 7139]
    assert sorted(pants["item_id"].unique()) == [713904, 713905]


def test_annotations_land_on_the_canvas_and_pairs_share_the_item(inshop):
    tmp, ann, _, man = inshop
    files = [ann / df.ANNOTATION_FILES[s] for s in ("train", "test")]
    raw = read_annotations(files, image_hw=df.ANNOTATION_HW)
    table = join_manifest(raw, man, fit="pad")
    both = table.set_index("name").loc[raw["name"].astype(str)]
    kp_raw, kp = keypoints_array(raw), keypoints_array(both.reset_index())
    ok = kp_raw[..., 0] >= 0
    # The 256x176 frame is the canvas' columns 40..215: x + 40, y unchanged.
    assert np.allclose(kp[ok][:, 0], kp_raw[ok][:, 0] + 40) and np.allclose(kp[ok][:, 1], kp_raw[ok][:, 1])
    pairs = make_pairs(table, PairsConfig(), 0, read_pair_list(ann / df.TEST_PAIRS_FILE))
    item = dict(zip(table["name"].astype(str), table["item_id"]))
    assert (pairs["from"].map(item) == pairs["to"].map(item)).all()
    assert (pairs["item_id"] == pairs["from"].map(item)).all()
    train = pairs[pairs["split"] == "train"]
    assert len(train) > 0 and set(train["item_id"]) <= {713904, 713905, 60702, 8001}
    assert len(pairs[pairs["split"] == "test"]) == len(same_item_pairs())


def test_flat_176_layout_splits_by_lists_or_folders(tmp_path):
    archive, _ = make_deepfashion(tmp_path, "flat176")
    params = _params(tmp_path, archive)
    prepare_dataset(params, tmp_path / "ds", tmp_path / "m.parquet", progress=False)
    man = pd.read_parquet(tmp_path / "m.parquet")
    assert set(man["width"]) == {176} and set(man["height"]) == {256}
    # The archive's wrapper folder fashion/ is the root: paths start at the split folders.
    assert (man["path"] == man["split"] + "/" + man["name"]).all()
    # Without lists the train/ and test/ folders say the split.
    bare = dataclasses.replace(params, data=dataclasses.replace(params.data, split_lists=()))
    prepare_dataset(bare, tmp_path / "ds2", tmp_path / "m2.parquet", progress=False)
    assert pd.read_parquet(tmp_path / "m2.parquet")["split"].tolist() == man["split"].tolist()


def test_unknown_name_pattern_is_one_line_naming_the_file(tmp_path):
    from support.market_files import make_market_zip

    lists = write_lists(tmp_path / "annotations")
    zip_path = make_market_zip(tmp_path / "market.zip")
    with pytest.raises(DatasetError) as err:
        prepare_dataset(_params(tmp_path, zip_path), tmp_path / "ds", tmp_path / "m.parquet",
                        progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "market.zip" in msg and "unknown DeepFashion name pattern" in msg
    assert lists.is_dir()


def test_no_download_without_an_archive(tmp_path):
    write_lists(tmp_path / "annotations")
    params = _params(tmp_path, "x")
    params = dataclasses.replace(params, data=dataclasses.replace(params.data, archive=None))
    with pytest.raises(Exception, match="deepfashion has no download; set data.url or data.archive"):
        prepare_dataset(params, tmp_path / "ds", tmp_path / "m.parquet", progress=False)


def test_a_test_pair_naming_a_missing_image_names_the_list(inshop, tmp_path):
    _, ann, _, man = inshop
    raw = read_annotations([ann / df.ANNOTATION_FILES["test"]], image_hw=df.ANNOTATION_HW)
    table = join_manifest(raw, man, fit="pad")
    listed = tmp_path / df.TEST_PAIRS_FILE
    listed.write_text(f"from,to\n{TEST[0]},{ISSUE_NAME}\n")
    with pytest.raises(ValueError, match=rf"{df.TEST_PAIRS_FILE}: 1 test pair image\(s\) not in the "
                                         rf"dataset, e.g. \['{ISSUE_NAME}'\]"):
        make_pairs(table, PairsConfig(), 0, read_pair_list(listed), list_source=str(listed))


# --------------------------------------------------------------------------- the canonical files


def test_the_8570_canonical_test_pairs():
    """The canonical annotations (':' separated, 256x176 frame) on test.lst's images give
    exactly the 8,570 fixed pairs, every one within one item."""
    folder = shared_path("data/deepfashion-annotations")
    names = (folder / "test.lst").read_text().split()
    ids = get("deepfashion").identify(names)
    man = pd.DataFrame({"name": names, "path": [df.unflatten(n) for n in names], **ids,
                        "split": "test", "width": 256, "height": 256})
    raw = read_annotations([folder / df.ANNOTATION_FILES["test"]], image_hw=df.ANNOTATION_HW)
    assert len(raw) == 4_038 and int((~raw["detected"]).sum()) == 619
    table = join_manifest(raw, man, fit="pad")
    listed = read_pair_list(folder / df.TEST_PAIRS_FILE)
    pairs = make_pairs(table, PairsConfig(), 0, listed)
    test = pairs[pairs["split"] == "test"]
    assert len(test) == 8_570
    assert set(zip(test["from"], test["to"])) == set(zip(listed["from"], listed["to"]))
    item = dict(zip(table["name"].astype(str), table["item_id"]))
    assert (test["from"].map(item) == test["to"].map(item)).all()
    assert len(pd.unique(pd.concat([test["from"], test["to"]]))) == 3_144
    # x_256 = x_176 + 40 for every visible joint, y unchanged.
    kp = keypoints_array(table.set_index("name").loc[raw["name"].astype(str)].reset_index())
    sel = keypoints_array(raw)[..., 0] >= 0
    assert np.array_equal(kp[sel][:, 0], keypoints_array(raw)[sel][:, 0] + 40)
    assert np.array_equal(kp[sel][:, 1], keypoints_array(raw)[sel][:, 1])
