"""Market-1501 naming and layout checks; also home of the tiny Market-like tree/zip builders
that test_extract, test_manifest and test_download import."""
from __future__ import annotations


import pytest

from conftest import shared_path
from pipeline.datasets import market1501 as market

from support.market_files import TOP, jpeg_bytes, write_market_tree


# --------------------------------------------------------------------------- naming


def test_parse_name_on_real_market_sample():
    folder = shared_path("data/market1501-sample")
    names = sorted(p.name for p in folder.glob("*.jpg"))
    assert len(names) == 20
    for name in names:
        pid, cam = market.parse_name(name)
        assert pid == int(name[:4]) and pid > 0
        assert cam == int(name[6]) and 1 <= cam <= 6
        m = market.NAME_RE.match(name)
        seq, frame, idx = int(m.group(3)), int(m.group(4)), int(m.group(5))
        assert market.format_name(pid, cam, frame, idx, seq) == name


def test_junk_and_distractor_ids():
    assert market.parse_name("-1_c1s1_000401_03.jpg") == (market.JUNK_ID, 1)
    assert market.parse_name("0000_c5s1_000102_01.jpg") == (market.DISTRACTOR_ID, 5)
    assert market.format_name(-1, 1, 401, 3) == "-1_c1s1_000401_03.jpg"


@pytest.mark.parametrize("name", ["2_c1s1_000451_03.jpg", "0002_c1s1_000451_03.png",
                                  "0002_c1_000451_03.jpg", "Thumbs.db", "0002_c1s1_000451_03.JPG"])
def test_parse_name_rejects_non_market(name):
    assert not market.is_market_name(name)
    with pytest.raises(ValueError, match="not a Market-1501 file name"):
        market.parse_name(name)


# --------------------------------------------------------------------------- layout


def test_find_root_at_top_or_under_single_folder(tmp_path):
    flat = write_market_tree(tmp_path / "flat")
    assert market.find_root(flat) == flat
    nested = tmp_path / "nested"
    write_market_tree(nested / TOP)
    (nested / "__MACOSX").mkdir()  # litter beside the top folder does not count
    assert market.find_root(nested) == nested / TOP


def test_find_root_rejects_two_top_folders(tmp_path):
    write_market_tree(tmp_path / "a")
    write_market_tree(tmp_path / "b")
    with pytest.raises(market.DatasetError, match="no Market-1501 layout"):
        market.find_root(tmp_path)


def test_check_layout_counts_and_ignores_litter(tmp_path):
    root = write_market_tree(tmp_path)
    assert (root / "bounding_box_test" / "Thumbs.db").exists()
    assert market.check_layout(root) == {"train": 3, "test": 3, "query": 1}
    assert "Thumbs.db" not in market.list_images(root)["test"]


def test_check_layout_names_misnamed_file(tmp_path):
    root = write_market_tree(tmp_path)
    (root / "query" / "holiday.jpg").write_bytes(jpeg_bytes((8, 8)))
    with pytest.raises(market.DatasetError, match=r"query.*holiday\.jpg"):
        market.check_layout(root)


def test_check_layout_missing_split_or_empty_train(tmp_path):
    root = write_market_tree(tmp_path / "a")
    for p in (root / "query").iterdir():
        p.unlink()
    (root / "query").rmdir()
    with pytest.raises(market.DatasetError, match="missing split folder query"):
        market.check_layout(root)
    empty = tmp_path / "b"
    for sub in market.SPLIT_DIRS.values():
        (empty / sub).mkdir(parents=True)
    with pytest.raises(market.DatasetError, match="no training images"):
        market.check_layout(empty)


def test_canonical_name_collapses_a_doubled_extension_only():
    assert market.canonical_name("1488_c5s3_071737_01.jpg.jpg") == "1488_c5s3_071737_01.jpg"
    assert market.canonical_name("1488_c5s3_071737_01.jpg") == "1488_c5s3_071737_01.jpg"
    assert market.canonical_name("a.jpg.jpg.jpg") == "a.jpg.jpg"
    got = market.canonical_names(["x.jpg.jpg", "y.jpg", "z.png"]).tolist()
    assert got == ["x.jpg", "y.jpg", "z.png"]
    assert market.parse_name("-1_c4s6_022316_11.jpg.jpg") == (-1, 4)
