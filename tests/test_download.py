"""Downloads over real HTTP from a local server (127.0.0.1, http.server in a thread):
resume after a cut connection, a server ignoring Range, checksums, reuse, and the stage."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import download as dl
from pipeline.config import DataConfig, ImageConfig, Params, SyntheticConfig, to_dict
from stages import download as stage
from test_market import make_market_zip

PAYLOAD = bytes(range(256)) * 800  # 200 KiB, every offset distinguishable
ETAG = '"v1"'


class Handler(BaseHTTPRequestHandler):
    """Serves server.payload; honours Range unless server.ranges is False; cuts the first
    response after server.cut_after bytes; answers server.statuses[i] to request i if set."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        srv = self.server
        srv.log.append({"range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")})
        nth = len(srv.log) - 1
        if nth < len(srv.statuses) and srv.statuses[nth] != 200:
            self.send_error(srv.statuses[nth])
            return
        data, start = srv.payload, 0
        rng = self.headers.get("Range")
        if rng and srv.ranges and self.headers.get("If-Range") in (None, ETAG):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", srv.content_type)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", ETAG)
        self.end_headers()
        body = data[start:]
        if nth == 0 and srv.cut_after is not None:
            body = body[: srv.cut_after]  # then the connection closes mid-body
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.payload, srv.ranges, srv.cut_after, srv.statuses = PAYLOAD, True, None, []
    srv.content_type, srv.log = "application/zip", []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/download?id=abc&export=download"
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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


def market_params(tmp_path: Path, **data) -> Params:
    cfg = DataConfig(source="market1501", cache_dir=str(tmp_path / "cache"), timeout=5,
                     retries=1, **data)
    return dataclasses.replace(Params(), data=cfg)


def test_prepare_dataset_over_http(server, tmp_path):
    server.payload = make_market_zip(tmp_path / "src.zip").read_bytes()
    params = market_params(tmp_path, url=server.url, checksum=sha256(server.payload))
    out, man = tmp_path / "data" / "dataset", tmp_path / "data" / "manifest.parquet"
    info = dl.prepare_dataset(params, out, man, progress=False)
    assert info["checksum_verified"] and info["url"] == server.url
    df = pd.read_parquet(man)
    assert df.groupby("split").size().to_dict() == {"query": 1, "test": 3, "train": 3}
    assert set(df.person_id) == {-1, 0, 2, 7, 11}
    side = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert side["counts"]["junk"] == 1 and side["checksum"] == sha256(server.payload)


def test_bad_checksum_writes_no_dataset(server, tmp_path):
    server.payload = make_market_zip(tmp_path / "src.zip").read_bytes()
    params = market_params(tmp_path, url=server.url, checksum="md5:" + "1" * 32)
    out, man = tmp_path / "data" / "dataset", tmp_path / "data" / "manifest.parquet"
    with pytest.raises(dl.ChecksumError):
        dl.prepare_dataset(params, out, man, progress=False)
    assert not (tmp_path / "data").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def write_params(path: Path, params: Params) -> Path:
    path.write_text(yaml.safe_dump(to_dict(params)))
    return path


def test_stage_cli_with_local_archive(tmp_path, capsys):
    archive = make_market_zip(tmp_path / "Market.zip")
    # Default source (synthetic): --archive alone switches to market1501.
    pfile = write_params(tmp_path / "params.yaml", Params())
    out, man = tmp_path / "ds", tmp_path / "m.parquet"
    stage.main(["--params", str(pfile), "--archive", str(archive), "--out", str(out),
                "--summary", str(tmp_path / "m.json"),
                "--manifest", str(man)])
    printed = capsys.readouterr().out
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert f"sha256:{digest}" in printed  # null checksum: computed and printed
    assert "7 images" in printed and str(out) in printed
    assert json.loads((tmp_path / "m.json").read_text())["checksum"] == f"sha256:{digest}"
    assert len(pd.read_parquet(man)) == 7 and (out / "query").is_dir()


def test_stage_cli_bad_archive_exits_with_message(tmp_path):
    archive = make_market_zip(tmp_path / "Market.zip", extra={"../evil.jpg": b"x"})
    pfile = write_params(tmp_path / "params.yaml", market_params(tmp_path, checksum=None))
    out = tmp_path / "ds"
    with pytest.raises(SystemExit, match=r"download: .*Market\.zip.*'\.\.' component"):
        stage.main(["--params", str(pfile), "--archive", str(archive), "--out", str(out),
                "--summary", str(tmp_path / "m.json"),
                    "--manifest", str(tmp_path / "m.parquet")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Market.zip", "params.yaml"]


def test_stage_synthetic_source(tmp_path):
    synthetic = pytest.importorskip("pipeline.synthetic", reason="pipeline.synthetic not written yet")
    if not hasattr(synthetic, "generate"):
        pytest.skip("pipeline.synthetic.generate not available yet")
    params = dataclasses.replace(
        Params(), image=ImageConfig(height=32, width=16),
        data=DataConfig(synthetic=SyntheticConfig(train_ids=2, test_ids=2, images_per_id=2)),
    )
    out, man = tmp_path / "ds", tmp_path / "m.parquet"
    stage.main(["--params", str(write_params(tmp_path / "params.yaml", params)),
                "--out", str(out), "--summary", str(tmp_path / "m.json"), "--manifest", str(man)])
    df = pd.read_parquet(man)
    assert set(df.split) <= {"train", "test", "query"} and (df.split == "train").any()
    assert ((df.width == 16) & (df.height == 32)).all()
    assert all((out / p).is_file() for p in df.path)
    assert json.loads((tmp_path / "m.json").read_text())["source"] == "synthetic"
