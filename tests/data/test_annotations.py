"""pipeline.data.annotations: canonical CSV import (alone or joined with a manifest) and export."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path

from pipeline.data.annotations import (
    NO_ANNOTATION,
    export_csv,
    infer_split,
    join_manifest,
    market_person_ids,
    read_annotations,
)
from pipeline.core.keypoints import CSV_HEADER, J, keypoints_array, read_annotation_csv

ANN = "data/market1501-annotations/market-annotation-{}.csv"


def line(name: str, ys: list[int], xs: list[int]) -> str:
    return f"{name}: [{', '.join(map(str, ys))}]: [{', '.join(map(str, xs))}]"


def tiny_csv(tmp_path: Path, fname: str = "market-annotation-train.csv") -> Path:
    full = line("0002_c1s1_000451_03.jpg", list(range(10, 28)), list(range(0, 18)))
    sparse = line("0007_c2s1_000001_01.jpg", [-1] * 17 + [50], [-1] * 17 + [20])
    empty = line("-1_c3s1_000002_00.jpg", [-1] * 18, [-1] * 18)
    path = tmp_path / fname
    path.write_text("\n".join([CSV_HEADER, full, sparse, empty]) + "\n")
    return path


def test_infer_split_and_person_ids():
    assert infer_split("a/market-annotation-train.csv") == "train"
    assert infer_split("market-annotation-test.csv") == "test"
    assert infer_split("query_kp.csv") == "query"
    assert infer_split("mine.csv") == ""
    ids = market_person_ids(["0002_c1s1_000451_03.jpg", "-1_c3s1_000002_00.jpg", "me.jpg"])
    assert ids.tolist() == [2, -1, -1]


def test_import_fields(tmp_path: Path):
    table = read_annotations([tiny_csv(tmp_path)])
    assert table["name"].tolist()[0] == "0002_c1s1_000451_03.jpg"
    assert table["split"].tolist() == ["train"] * 3
    assert table["person_id"].tolist() == [2, 7, -1]
    assert table["detected"].tolist() == [True, True, False]
    # score = fraction of the 18 joints present
    np.testing.assert_allclose(table["score"], [1.0, 1 / 18, 0.0], rtol=1e-6)
    assert (table["width"] == 64).all() and (table["height"] == 128).all()
    assert table["model"].iloc[0].startswith("market-annotation-train.csv@sha256:")
    kp = keypoints_array(table)
    assert kp[0, J["nose"]].tolist() == [0, 10, 1]  # x from the second list, y from the first
    assert kp[1, J["l_ear"]].tolist() == [20, 50, 1]
    assert kp[1, J["nose"]].tolist() == [-1, -1, 0]


def test_join_with_manifest(tmp_path: Path):
    table = read_annotations([tiny_csv(tmp_path)])
    manifest = pd.DataFrame(
        {
            "name": [
                "0007_c2s1_000001_01.jpg", "0009_c1s1_000001_01.jpg", "0002_c1s1_000451_03.jpg"
            ],
            "path": ["a", "b", "c"],
            "person_id": [7, 9, 2],
            "camera": [2, 1, 1],
            "split": ["train", "train", "train"],
            "width": [64, 64, 128],  # the last image is twice the canonical size
            "height": [128, 128, 256],
        }
    )
    joined = join_manifest(table, manifest)
    assert joined["name"].tolist() == manifest["name"].tolist()  # manifest order
    assert joined["detected"].tolist() == [True, False, True]
    assert joined["error"].tolist()[1] == NO_ANNOTATION
    assert pd.isna(joined["error"].iloc[0]) and pd.isna(joined["error"].iloc[2])
    kp = keypoints_array(joined)
    assert (kp[1, :, :2] == -1).all()
    assert kp[2, J["nose"]].tolist() == [0, 20, 1]  # rescaled x2 into the image's own pixels
    assert kp[2, J["neck"]].tolist() == [2, 22, 1]
    assert joined[["width", "height"]].iloc[2].tolist() == [128, 256]


def test_join_respects_split_and_rejects_ambiguity(tmp_path: Path):
    table = read_annotations([tiny_csv(tmp_path)])
    manifest = pd.DataFrame(
        {"name": ["0002_c1s1_000451_03.jpg"], "path": ["q"], "person_id": [2], "split": ["query"]}
    )
    joined = join_manifest(table, manifest)  # the train annotation is not this query image
    assert joined["error"].tolist() == [NO_ANNOTATION]
    twice = pd.concat([table, table], ignore_index=True)
    manifest["split"] = "train"
    with pytest.raises(ValueError, match="0002_c1s1_000451_03.jpg.*several annotation rows"):
        join_manifest(twice, manifest, source="x.csv")


def test_join_with_a_split_less_manifest_takes_the_annotation_split(tmp_path: Path):
    # A standalone folder (stages.pose --images) has no split: its images still match.
    table = read_annotations([tiny_csv(tmp_path)])
    manifest = pd.DataFrame(
        {"name": ["0002_c1s1_000451_03.jpg", "0404_c1s1_000001_01.jpg"], "path": ["a", "b"],
         "person_id": [2, 404], "split": ["", ""]}
    )
    joined = join_manifest(table, manifest)
    assert joined["detected"].tolist() == [True, False]
    assert joined["split"].tolist() == ["train", ""]
    assert joined["error"].tolist()[1] == NO_ANNOTATION


def test_export_round_trip_and_rescale(tmp_path: Path):
    src = tiny_csv(tmp_path)
    table = read_annotations([src])
    out = tmp_path / "out" / "copy.csv"
    export_csv(table, out)
    assert out.read_bytes() == src.read_bytes()
    # Rows of 128x256 images exported at the canonical 128x64: coordinates halved.
    big = table.assign(width=128, height=256)
    export_csv(big, tmp_path / "half.csv", image_hw=(128, 64))
    _, half = read_annotation_csv(tmp_path / "half.csv")
    kp = keypoints_array(table)[..., :2]
    ok = kp >= 0
    assert (half[ok] == np.rint(half[ok])).all()
    np.testing.assert_allclose(half[ok], kp[ok] / 2, atol=1.0)
    assert (half[~ok] == -1).all()


def test_malformed_file_names_file_and_line(tmp_path: Path):
    path = tiny_csv(tmp_path, "broken-train.csv")
    with path.open("a") as fh:
        fh.write("0003_c1s1_000001_01.jpg: [1, 2]: [3]\n")
    with pytest.raises(ValueError, match=r"broken-train\.csv:5"):
        read_annotations([path])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_annotations([tmp_path / "nope.csv"])


@pytest.mark.parametrize("split, rows", [("train", 12936), ("test", 19732)])
def test_canonical_files_round_trip_byte_exact(tmp_path: Path, split: str, rows: int):
    src = shared_path(ANN.format(split))
    table = read_annotations([src])
    assert len(table) == rows
    assert (table["split"] == split).all()
    out = tmp_path / f"{split}.csv"
    export_csv(table, out)
    assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("files_double", [False, True])
def test_join_resolves_single_or_double_jpg(tmp_path, files_double):
    """An annotation `X.jpg.jpg` finds the file `X.jpg`, and an annotation `Y.jpg` the file
    `Y.jpg.jpg`; the table keeps the files' own names (the manifest's)."""
    ys, xs = list(range(10, 28)), list(range(0, 18))
    path = tmp_path / "market-annotation-test.csv"
    path.write_text("\n".join([CSV_HEADER, line("1488_c5s3_071737_01.jpg.jpg", ys, xs),
                               line("0002_c1s1_000451_03.jpg", ys, xs)]) + "\n")
    ann = read_annotations([path])
    files = ["1488_c5s3_071737_01.jpg", "0002_c1s1_000451_03.jpg"]
    if files_double:
        files = [f + ".jpg" for f in files]
    manifest = pd.DataFrame({"name": files, "split": "test", "person_id": [1488, 2],
                             "width": 64, "height": 128})
    table = join_manifest(ann, manifest)
    assert table["name"].tolist() == files
    assert table["detected"].all() and table["error"].isna().all()
    np.testing.assert_array_equal(keypoints_array(table)[:, :, 0], [xs, xs])


def test_canonical_double_jpg_names_join_their_files():
    """The 18 canonical `*.jpg.jpg` test annotations join a gallery whose files carry one .jpg."""
    names, _ = read_annotation_csv(shared_path(ANN.format("test")))
    double = [n for n in names if n.endswith(".jpg.jpg")]
    assert len(double) == 18
    ann = read_annotations([shared_path(ANN.format("test"))])
    files = [n[: -len(".jpg")] for n in double]
    manifest = pd.DataFrame({"name": files, "split": "test", "person_id": 0, "width": 64,
                             "height": 128})
    table = join_manifest(ann, manifest)
    assert table["error"].isna().all() and table["name"].tolist() == files
