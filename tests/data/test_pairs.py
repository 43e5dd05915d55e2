"""Same-identity pairs (pipeline/data/pairs.py) and the pairs stage."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from conftest import shared_path
from pipeline.datasets import market1501 as market
from pipeline.core.config import PairsConfig
from pipeline.data.heatmap_store import write_heatmap_store
from pipeline.core.keypoints import NUM_JOINTS, make_table, read_annotation_csv
from pipeline.data.pairs import (
    check_pairs, make_pairs, ordered_pairs, pair_counts, read_pair_list, split_pairs, usable,
)

ANN = "data/market1501-annotations"


def _pose() -> np.ndarray:
    kp = np.stack([np.linspace(5, 10, NUM_JOINTS), np.linspace(5, 25, NUM_JOINTS)], -1)
    return kp.astype(np.float32)


def _table(spec: list[tuple[int, str, int]]) -> pd.DataFrame:
    """spec: (person_id, split, count) -> a table of `count` full poses per entry."""
    names, splits, kps = [], [], []
    for pid, split, count in spec:
        for i in range(count):
            names.append(market.format_name(pid, 1 + i % 6, 1000 * (len(names) + 1), i % 100))
            splits.append(split)
            kps.append(_pose())
    ids = [market.parse_name(n)[0] for n in names]
    return make_table(names, np.stack(kps), split=splits, person_id=ids, width=16, height=32)


@pytest.fixture
def table() -> pd.DataFrame:
    t = _table([(1, "train", 4), (2, "train", 3), (3, "train", 1), (-1, "train", 2),
                (0, "train", 2), (7, "test", 5), (8, "test", 2), (0, "test", 3)])
    # Image 0 of id 1: no left hip -> unusable; image 1 of id 2: not detected -> unusable.
    t.loc[0, ["l_hip_x", "l_hip_y"]] = -1
    t.loc[4, "detected"] = False
    return t


def test_usable_rules(table):
    ok = usable(table)
    assert not ok[0] and not ok[4]
    assert not ok[table["person_id"] <= 0].any()  # junk and distractors
    assert ok.sum() == 3 + 2 + 1 + 5 + 2
    for joint in ("r_shoulder", "l_shoulder", "r_hip", "l_hip"):
        t = table.copy()
        t.loc[1, f"{joint}_x"] = -1
        assert not usable(t)[1], joint
    t = table.copy()
    t.loc[1, ["nose_x", "nose_y", "l_wrist_x", "l_wrist_y"]] = -1  # other joints don't matter
    assert usable(t)[1]


def test_train_pairs_all_ordered_same_id(table):
    pairs = split_pairs(table, "train")
    assert list(pairs.columns) == ["from", "to", "person_id", "item_id", "split"]
    assert (pairs["from"] != pairs["to"]).all()
    assert (pairs["split"] == "train").all()
    ids = pairs["from"].map(lambda n: market.parse_name(n)[0])
    assert (ids == pairs["person_id"]).all()
    assert (pairs["to"].map(lambda n: market.parse_name(n)[0]) == ids).all()
    assert Counter(pairs["person_id"]) == {1: 3 * 2, 2: 2 * 1}  # n(n-1); id 3 has one image
    assert not pairs.duplicated(["from", "to"]).any()
    ok = set(table.loc[usable(table), "name"])
    assert set(pairs["from"]) | set(pairs["to"]) <= ok


def test_ordered_pairs_vectorised_enumeration():
    names = np.array(["c", "a", "x", "b", "y"])
    ids = np.array([5, 5, 9, 5, 9])
    ia, ib = ordered_pairs(names, ids)
    got = list(zip(names[ia], names[ib]))
    assert got == [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b"),
                   ("x", "y"), ("y", "x")]
    assert ordered_pairs(np.array([], str), np.array([], int))[0].size == 0


def test_cap_is_deterministic_and_bounded():
    names = np.array([f"{i:03d}" for i in range(30)])
    ids = np.repeat([1, 2, 3], [10, 3, 17])
    full = ordered_pairs(names, ids)
    a1 = ordered_pairs(names, ids, cap=20, seed=4)
    a2 = ordered_pairs(names, ids, cap=20, seed=4)
    a3 = ordered_pairs(names, ids, cap=20, seed=5)
    np.testing.assert_array_equal(a1[0], a2[0])
    np.testing.assert_array_equal(a1[1], a2[1])
    assert not np.array_equal(a1[0], a3[0])
    assert Counter(ids[a1[0]]) == {1: 20, 2: 6, 3: 20}  # id 2 has only 6 pairs: all kept
    sub = set(zip(a1[0], a1[1]))
    assert len(sub) == 46 and sub <= set(zip(full[0], full[1]))


def test_generated_test_pairs_and_counts(table):
    cfg = PairsConfig(test_pairs_per_id=3, max_pairs_per_id=4)
    pairs = make_pairs(table, cfg, seed=0)
    again = make_pairs(table, cfg, seed=0)
    pd.testing.assert_frame_equal(pairs, again)
    test = pairs[pairs["split"] == "test"]
    assert Counter(test["person_id"]) == {7: 3, 8: 2}
    assert Counter(pairs.loc[pairs["split"] == "train", "person_id"]) == {1: 4, 2: 2}
    counts = pair_counts(table, pairs)
    assert counts == {"train": {"usable_images": 6, "ids": 3, "items": 3, "pairs": 6},
                      "test": {"usable_images": 7, "ids": 2, "items": 2, "pairs": 5}}


def test_fixed_list_checks_names(table, tmp_path):
    test_names = table.loc[table["split"] == "test", "name"].tolist()
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"from,to\n{test_names[1]},{test_names[0]}\n{test_names[0]},{test_names[2]}\n")
    pairs = make_pairs(table, PairsConfig(), 0, read_pair_list(csv), store_names=table["name"])
    test = pairs[pairs["split"] == "test"]
    assert test[["from", "to"]].values.tolist() == [[test_names[1], test_names[0]],
                                                     [test_names[0], test_names[2]]]
    assert (test["person_id"] == 7).all()

    csv.write_text(f"from,to\n{test_names[0]},missing_one.jpg\n")
    # The list and the images disagree: the message names the list's file.
    with pytest.raises(ValueError, match=r"pairs.csv: 1 test pair image\(s\) not in the dataset, "
                                         r"e.g. \['missing_one.jpg'\]"):
        make_pairs(table, PairsConfig(), 0, read_pair_list(csv), list_source=str(csv))
    undetected = table.loc[4, "name"]
    csv.write_text(f"from,to\n{undetected},{test_names[0]}\n")
    with pytest.raises(ValueError, match=f"detected false.*{undetected}"):
        make_pairs(table, PairsConfig(), 0, read_pair_list(csv))
    csv.write_text(f"from,to\n{test_names[0]},{test_names[1]}\n")
    with pytest.raises(ValueError, match=f"heatmap store.*{test_names[1]}"):
        make_pairs(table, PairsConfig(), 0, read_pair_list(csv),
                   store_names=[n for n in table["name"] if n != test_names[1]])
    csv.write_text("a,b\nx,y\n")
    with pytest.raises(ValueError, match="from,to"):
        read_pair_list(csv)


def test_error_lists_first_20_and_count(table):
    bad = pd.DataFrame({"from": [f"g{i:02d}.jpg" for i in range(25)], "to": ["g00.jpg"] * 25})
    with pytest.raises(ValueError, match="25 image") as err:
        check_pairs(bad, table)
    assert "g19.jpg" in str(err.value) and "g20.jpg" not in str(err.value)


def _canonical_table(split: str) -> pd.DataFrame:
    names, kp = read_annotation_csv(shared_path(f"{ANN}/market-annotation-{split}.csv"))
    # The id prefix, not market.parse_name: 18 real test crops are named `*.jpg.jpg`.
    ids = [int(n.split("_")[0]) for n in names]
    return make_table(names, kp, split=split, person_id=ids, width=64, height=128)


def test_canonical_train_annotations_usable_counts():
    t = _canonical_table("train")
    ok = usable(t)
    assert ok.sum() == 12116
    assert t.loc[ok, "person_id"].nunique() == 745
    pairs = split_pairs(t, "train")
    n = t.loc[ok].groupby("person_id").size()
    assert len(pairs) == int((n * (n - 1)).sum()) == 263632


def test_canonical_test_pairs_resolve():
    t = _canonical_table("test")
    pair_list = read_pair_list(shared_path(f"{ANN}/market-pairs-test.csv"))
    pairs = make_pairs(t, PairsConfig(), 0, pair_list)
    test = pairs[pairs["split"] == "test"]
    assert len(test) == 12000
    assert (test["person_id"] > 0).all()
    assert test["from"].tolist() == pair_list["from"].tolist()


def test_stage_on_tiny_table(table, tmp_path, capsys):
    from stages.pairs import main

    kp_file = tmp_path / "kp.parquet"
    table.to_parquet(kp_file)
    params = tmp_path / "params.yaml"
    params.write_text("seed: 3\npairs:\n  test_pairs_per_id: 2\n")
    hm = write_heatmap_store(tmp_path / "hm", table["name"], np.full((len(table), 18, 2), -1.0),
                             8, 4, 1.0)
    out, counts = tmp_path / "o" / "pairs.parquet", tmp_path / "o" / "counts.json"
    args = ["--params", str(params), "--keypoints", str(kp_file), "--heatmaps", str(hm),
            "--out", str(out), "--counts", str(counts)]
    assert main(args) == 0
    pairs = pd.read_parquet(out)
    assert list(pairs.columns) == ["from", "to", "person_id", "item_id", "split"]
    c = json.loads(counts.read_text())
    assert c["train"]["pairs"] == 8 and c["test"]["pairs"] == 4
    assert len(pairs) == 12

    # A heatmap store missing an image used by a pair -> the stage fails naming it.
    names = table["name"].tolist()
    kept = names[:1] + names[2:]  # names[1] is a usable train image of id 1
    write_heatmap_store(hm, kept, np.full((len(kept), 18, 2), -1.0), 8, 4, 1.0)
    capsys.readouterr()
    assert main(args) == 2  # one line naming the image, no traceback (stages/cli.py)
    err = capsys.readouterr().err
    assert err.startswith("pairs: error: ") and names[1] in err and err.count("\n") == 1


@pytest.mark.parametrize("files_double", [False, True])
def test_fixed_list_resolves_single_or_double_jpg(table, tmp_path, files_double):
    """A list entry with one `.jpg` finds an image named with two and vice versa; the pairs
    carry the table's (the files') names, so they join the manifest and heatmap store."""
    t = table.copy()
    test = t.index[t["split"] == "test"][:3]
    if files_double:
        t.loc[test, "name"] = t.loc[test, "name"] + ".jpg"
    files = t.loc[test, "name"].tolist()
    listed = [n + ".jpg" if not n.endswith(".jpg.jpg") else n[:-4] for n in files]
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"from,to\n{listed[0]},{listed[1]}\n{listed[2]},{listed[0]}\n")
    pairs = make_pairs(t, PairsConfig(), 0, read_pair_list(csv), store_names=t["name"])
    got = pairs[pairs["split"] == "test"]
    assert got[["from", "to"]].values.tolist() == [[files[0], files[1]], [files[2], files[0]]]
    assert (got["person_id"] == 7).all()


def test_canonical_double_jpg_pair_resolves_to_single_jpg_files():
    """The canonical list's one `*.jpg.jpg` pair finds a gallery of single-`.jpg` files."""
    t = _canonical_table("test")
    t["name"] = market.canonical_names(t["name"]).to_numpy(object)
    pair_list = read_pair_list(shared_path(f"{ANN}/market-pairs-test.csv"))
    test = make_pairs(t, PairsConfig(), 0, pair_list).query("split == 'test'")
    assert len(test) == 12000 and (test["person_id"] > 0).all()
    assert not test["from"].str.endswith(".jpg.jpg").any()
    row = pair_list["from"].str.endswith(".jpg.jpg").to_numpy().nonzero()[0][0]
    assert test["from"].iloc[row] == "1488_c4s6_022291_05.jpg"
