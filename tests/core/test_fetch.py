"""pipeline.core.fetch: downloads over real HTTP from a local server (127.0.0.1): resume
after a cut connection, a server ignoring Range, If-Range, checksums, reuse, HTML pages."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pipeline.core import fetch as dl
from support.range_server import ETAG, PAYLOAD, sha256


def fetch(server, dest: Path, **kw) -> dl.Fetched:
    kw.setdefault("checksum", sha256(server.payload))
    return dl.download(server.url, dest, timeout=5, backoff=0.01, progress=False, **kw)


def test_resume_after_cut_connection(server, tmp_path):
    server.cut_after = 70_000
    dest = tmp_path / "cache" / "a.zip"
    got = fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert got == dl.Fetched(dest, sha256(PAYLOAD), verified=True, reused=False)
    assert [r["range"] for r in server.log] == [None, "bytes=70000-"]
    assert server.log[1]["if_range"] == ETAG
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.zip"]  # no .part left


def test_resume_across_process_restart(server, tmp_path):
    server.cut_after = 50_000
    dest = tmp_path / "a.zip"
    with pytest.raises(dl.DownloadError, match="kept in .*a.zip.part"):
        fetch(server, dest, retries=0)  # first "process" gives up after the cut
    assert not dest.exists() and (tmp_path / "a.zip.part").stat().st_size == 50_000
    fetch(server, dest)  # a new call resumes from the .part file
    assert dest.read_bytes() == PAYLOAD
    assert server.log[1]["range"] == "bytes=50000-"


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ranges, server.cut_after = False, 60_000
    dest = tmp_path / "a.zip"
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD  # not 60 000 bytes + the whole file again
    assert server.log[1]["range"] == "bytes=60000-"


def test_changed_file_restarts_via_if_range(server, tmp_path):
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"stale bytes of an older version")
    (tmp_path / "a.zip.part.json").write_text(json.dumps({"url": server.url, "validator": '"v0"'}))
    fetch(server, dest)
    assert dest.read_bytes() == PAYLOAD
    assert server.log[0]["if_range"] == '"v0"'


def test_part_from_another_url_not_resumed(server, tmp_path):
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD[:1000])
    (tmp_path / "a.zip.part.json").write_text(json.dumps({"url": "http://elsewhere/x", "validator": ETAG}))
    fetch(server, tmp_path / "a.zip")
    assert server.log[0]["range"] is None
    assert (tmp_path / "a.zip").read_bytes() == PAYLOAD


def test_complete_part_file_416(server, tmp_path):
    (tmp_path / "a.zip.part").write_bytes(PAYLOAD)  # finished, but killed before the rename
    fetch(server, tmp_path / "a.zip")
    assert (tmp_path / "a.zip").read_bytes() == PAYLOAD and len(server.log) == 1


def test_checksum_mismatch_rejected(server, tmp_path):
    dest = tmp_path / "a.zip"
    with pytest.raises(dl.ChecksumError, match="sha256 is .*expected 0000"):
        fetch(server, dest, checksum="sha256:" + "0" * 64)
    assert list(tmp_path.iterdir()) == []  # neither a.zip nor a .part to resume from


def test_verified_file_reused_and_md5(server, tmp_path):
    dest = tmp_path / "a.zip"
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    assert fetch(server, dest, checksum=md5).checksum == md5
    again = fetch(server, dest, checksum=md5)
    assert again.reused and len(server.log) == 1  # no second request
    unpinned = fetch(server, dest, checksum=None)
    assert unpinned.checksum == sha256(PAYLOAD) and not unpinned.verified


def test_transient_status_retried_fatal_not(server, tmp_path):
    server.statuses = [503, 502, 200]
    fetch(server, tmp_path / "a.zip")
    assert len(server.log) == 3
    server.statuses, server.log[:] = [404], []
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        fetch(server, tmp_path / "b.zip")
    assert len(server.log) == 1
    server.statuses, server.log[:] = [503] * 3, []
    with pytest.raises(dl.DownloadError, match="giving up after 2 retries"):
        fetch(server, tmp_path / "c.zip", retries=2)
    assert len(server.log) == 3


def test_html_page_instead_of_archive(server, tmp_path):
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(dl.DownloadError, match="HTML page"):
        fetch(server, tmp_path / "a.zip")
    assert len(server.log) == 1


@pytest.mark.parametrize("spec", ["sha1:abcd", "md5", "sha256:xyz", "md5:" + "0" * 31])
def test_malformed_checksum(spec):
    with pytest.raises(ValueError, match="checksum"):
        dl.parse_checksum(spec)


# --------------------------------------------------------------------------- the stage
