"""The image manifest built from a Market-layout folder."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline.data import manifest
from pipeline.datasets import market1501 as market
from support.market_files import FILES, write_market_tree


def test_manifest_rows_ids_cameras_splits_sizes(tmp_path):
    root = write_market_tree(tmp_path / "d")
    df = manifest.build_manifest(root)
    assert tuple(df.columns) == manifest.COLUMNS
    assert len(df) == sum(len(v) for v in FILES.values())  # Thumbs.db not listed
    split_of = {v: k for k, v in market.SPLIT_DIRS.items()}
    expected = sorted(
        (split_of[folder], name, f"{folder}/{name}", w, h)
        for folder, files in FILES.items() for name, (w, h) in files
    )
    got = list(zip(df.split, df.name, df.path, df.width, df.height))
    assert got == expected  # sorted by split then name, sizes from the headers
    row = df.set_index("name")
    assert row.loc["-1_c1s1_000401_03.jpg", "person_id"] == -1
    assert row.loc["0000_c5s1_000102_01.jpg", "person_id"] == 0
    assert (row.loc["0000_c5s1_000102_01.jpg", ["camera", "split"]] == [5, "test"]).all()
    assert (row.loc["0007_c3s3_012345_02.jpg", ["person_id", "camera"]] == [7, 3]).all()
    assert df.person_id.dtype == "int64" and df.width.dtype == "int64"
    for path in df.path:
        assert (root / path).is_file()


def test_unreadable_image_listed_with_zero_size(tmp_path):
    root = write_market_tree(tmp_path / "d")
    (root / "query" / "0003_c2s1_000010_00.jpg").write_bytes(b"not a jpeg")
    df = manifest.build_manifest(root).set_index("name")
    assert (df.loc["0003_c2s1_000010_00.jpg", ["width", "height", "person_id"]] == [0, 0, 3]).all()
    assert manifest.summarize(df.reset_index())["unreadable"] == 1


def test_misnamed_jpg_is_an_error(tmp_path):
    root = write_market_tree(tmp_path / "d")
    (root / "bounding_box_train" / "img.jpg").write_bytes(b"")
    with pytest.raises(market.DatasetError, match=r"bounding_box_train.*img\.jpg"):
        manifest.build_manifest(root)


def test_write_read_deterministic(tmp_path):
    root = write_market_tree(tmp_path / "d")
    a, b = tmp_path / "a" / "m.parquet", tmp_path / "b" / "m.parquet"
    manifest.write_manifest(manifest.build_manifest(root), a)
    manifest.write_manifest(manifest.build_manifest(root), b)
    assert a.read_bytes() == b.read_bytes()
    pd.testing.assert_frame_equal(manifest.read_manifest(a), manifest.build_manifest(root))
    pd.DataFrame({"name": ["x"]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing column"):
        manifest.read_manifest(tmp_path / "bad.parquet")
    with pytest.raises(FileNotFoundError, match="run the download stage"):
        manifest.read_manifest(tmp_path / "none.parquet")


def test_summary_and_sidecar(tmp_path):
    df = manifest.build_manifest(write_market_tree(tmp_path / "d"))
    s = manifest.summarize(df)
    assert s == {
        "images": 7,
        "per_split": {"query": 1, "test": 3, "train": 3},
        "identities": {"query": 1, "test": 1, "train": 2},
        "junk": 1, "distractors": 1, "unreadable": 0,
    }
    side = manifest.sidecar_path(tmp_path / "data" / "manifest.parquet")
    assert side == tmp_path / "data" / "manifest.json"
    manifest.write_sidecar(side, {"counts": s, "checksum": "sha256:ab"})
    assert json.loads(side.read_text())["counts"] == s
