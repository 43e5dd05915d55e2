"""Safe archive extraction: unsafe members are rejected before anything is written, a bad
archive leaves the previous dataset untouched, a good one is swapped in whole."""
from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from pipeline.data import extract
from pipeline.datasets import market1501 as market
from support.market_files import FILES, TOP, make_market_zip, market_entries


def snapshot(folder: Path) -> dict[str, bytes]:
    """Relative path -> bytes (b'' for folders) of everything under `folder`."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"")
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def previous(tmp_path) -> Path:
    """An earlier dataset at tmp_path/work/dataset that a failed extraction must not touch."""
    target = tmp_path / "work" / "dataset"
    (target / "bounding_box_train").mkdir(parents=True)
    (target / "bounding_box_train" / "0001_c1s1_000001_00.jpg").write_bytes(b"old image")
    return target


def assert_untouched(previous: Path, before: dict[str, bytes]) -> None:
    assert snapshot(previous.parent) == before  # same dataset, no temp folders, nothing new


def make_market_tar(path: Path, mode: str, *extra: tarfile.TarInfo) -> Path:
    """The tiny Market set as a tar (mode 'w' or 'w:gz'), plus data-less `extra` members."""
    with tarfile.open(path, mode) as tf:
        for name, data in market_entries().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info in extra:
            tf.addfile(info)
    return path


def test_good_zip_swapped_in_over_previous(tmp_path, previous):
    archive = make_market_zip(tmp_path / "m.zip")
    counts = extract.extract_dataset(archive, previous)
    assert counts == {"train": 3, "test": 3, "query": 1}
    for folder, files in FILES.items():
        assert sorted(p.name for p in (previous / folder).iterdir()) == sorted(n for n, _ in files)
    assert not (previous / "bounding_box_train" / "0001_c1s1_000001_00.jpg").exists()
    assert sorted(p.name for p in previous.parent.iterdir()) == ["dataset"]  # no temp left
    entries = market_entries()
    name = FILES["query"][0][0]
    assert (previous / "query" / name).read_bytes() == entries[f"{TOP}/query/{name}"]


def test_zip_with_splits_at_root_and_tar_gz(tmp_path):
    flat = make_market_zip(tmp_path / "flat.zip", top="")
    assert extract.extract_dataset(flat, tmp_path / "a")["train"] == 3
    tgz = make_market_tar(tmp_path / "m.tar.gz", "w:gz")
    assert extract.extract_dataset(tgz, tmp_path / "b") == {"train": 3, "test": 3, "query": 1}
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def _special_zip(path: Path, ftype: int) -> Path:
    make_market_zip(path)
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo(f"{TOP}/query/0011_c1s1_002302_00.jpg")
        info.create_system = 3  # unix, so the mode bits below are honoured
        info.external_attr = (ftype | 0o777) << 16
        zf.writestr(info, "../../../../etc/passwd")
    return path


@pytest.mark.parametrize("member, reason", [
    ("../evil.jpg", "'..' component"),
    (f"{TOP}/query/../../../evil.jpg", "'..' component"),
    ("/tmp/evil.jpg", "absolute path"),
    (f"{TOP}\\..\\evil.jpg", "backslash"),
    ("C:/evil.jpg", "drive letter"),
])
def test_unsafe_zip_member_rejected(tmp_path, previous, member, reason):
    archive = make_market_zip(tmp_path / "evil.zip", extra={member: b"pwned"})
    before = snapshot(previous.parent)
    with pytest.raises(extract.ArchiveError, match=reason) as err:
        extract.extract_dataset(archive, previous)
    assert str(archive) in str(err.value)
    assert_untouched(previous, before)
    assert not list(tmp_path.rglob("evil.jpg"))
    assert not Path("/tmp/evil.jpg").exists()


@pytest.mark.parametrize("ftype, reason", [(stat.S_IFLNK, "symlink"), (stat.S_IFIFO, "fifo")])
def test_zip_symlink_or_fifo_member_rejected(tmp_path, previous, ftype, reason):
    archive = _special_zip(tmp_path / "link.zip", ftype)
    before = snapshot(previous.parent)
    with pytest.raises(extract.ArchiveError, match=reason):
        extract.extract_dataset(archive, previous)
    assert_untouched(previous, before)


@pytest.mark.parametrize("kind, reason", [
    (tarfile.SYMTYPE, "link"), (tarfile.LNKTYPE, "link"), (tarfile.FIFOTYPE, "fifo"),
    (tarfile.CHRTYPE, "device"),
])
def test_tar_links_and_special_files_rejected(tmp_path, previous, kind, reason):
    special = tarfile.TarInfo(f"{TOP}/query/0011_c1s1_002302_00.jpg")
    special.type, special.linkname = kind, "/etc/passwd"
    archive = make_market_tar(tmp_path / "bad.tar", "w", special)
    before = snapshot(previous.parent)
    with pytest.raises(extract.ArchiveError, match=reason):
        extract.extract_dataset(archive, previous)
    assert_untouched(previous, before)


def test_duplicate_and_file_folder_clash_rejected(tmp_path):
    dup = tmp_path / "dup.zip"
    with zipfile.ZipFile(dup, "w") as zf:
        zf.writestr("a/x.jpg", b"1")
        with pytest.warns(UserWarning):  # zipfile itself warns about the duplicate
            zf.writestr("a/x.jpg", b"2")
    with pytest.raises(extract.ArchiveError, match="duplicate"):
        extract.list_members(dup)
    clash = make_market_zip(tmp_path / "clash.zip", extra={f"{TOP}/query": b"file"})
    with pytest.raises(extract.ArchiveError, match="both a file and a folder"):
        extract.list_members(clash)


def test_bad_layout_names_archive_and_keeps_previous(tmp_path, previous):
    archive = make_market_zip(tmp_path / "m.zip", extra={f"{TOP}/query/holiday.jpg": b"x"})
    before = snapshot(previous.parent)
    with pytest.raises(market.DatasetError, match=r"m\.zip.*holiday\.jpg"):
        extract.extract_dataset(archive, previous)
    assert_untouched(previous, before)


def test_not_an_archive(tmp_path, previous):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(extract.ArchiveError, match="not a zip or tar archive"):
        extract.extract_dataset(junk, previous)
    with pytest.raises(extract.ArchiveError, match="archive not found"):
        extract.extract_dataset(tmp_path / "missing.zip", previous)


def test_litter_not_extracted(tmp_path):
    archive = make_market_zip(tmp_path / "m.zip", extra={"__MACOSX/._x": b"fork"})
    target = tmp_path / "d"
    extract.extract_dataset(archive, target)
    assert not (target / "bounding_box_test" / "Thumbs.db").exists()
    assert not list(tmp_path.rglob("__MACOSX"))
