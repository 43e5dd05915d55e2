"""pipeline.core.fsutil: streamed digests and the atomic folder swap."""
from __future__ import annotations

import hashlib

import pytest

from pipeline.core.fsutil import file_digest, replace_dir


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()


def test_replace_dir_creates_and_replaces(tmp_path):
    target = tmp_path / "t"
    for content in (b"first", b"second"):
        new = tmp_path / "new"
        new.mkdir()
        (new / "f").write_bytes(content)
        replace_dir(new, target)
        assert (target / "f").read_bytes() == content and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_replace_dir_puts_the_old_target_back_when_the_swap_fails(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "f").write_bytes(b"old")
    with pytest.raises(FileNotFoundError):  # the new folder vanished: the rename in fails
        replace_dir(tmp_path / "gone", target)
    assert (target / "f").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
