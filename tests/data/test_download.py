"""Downloads over real HTTP from a local server (127.0.0.1, http.server in a thread):
resume after a cut connection, a server ignoring Range, checksums, reuse, and the stage."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import yaml

from pipeline.data import download as dl
from pipeline.core.config import DataConfig, ImageConfig, Params, SyntheticConfig, to_dict
from stages import download as stage
from support.market_files import make_market_zip

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
    synthetic = pytest.importorskip("pipeline.datasets.synthetic", reason="pipeline.datasets.synthetic not written yet")
    if not hasattr(synthetic, "generate"):
        pytest.skip("pipeline.datasets.synthetic.generate not available yet")
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


# --------------------------------------------------------------------------- Google Drive

DRIVE_ID = "0B8-rUzbwVRk0c054eEozWG9COHM"
DRIVE_URL = f"https://drive.usercontent.google.com/download?id={DRIVE_ID}&export=download&confirm=t"
UUID = "5bd4c2a5-0f7e-4a8e-9d61-2f0d3a6c9e11"


def confirmation_page(file_id: str) -> bytes:
    """drive.usercontent.google.com's large-file warning as served today: one line whose
    form#download-form carries the hidden id/export/confirm/uuid fields gdown reads."""
    return (
        '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>'
        '<body><div class="uc-main"><p class="uc-warning-caption">Google Drive can\'t scan '
        'this file for viruses.</p><form id="download-form" action="https://drive.usercontent'
        '.google.com/download" method="get"><input type="submit" class="goog-inline-block '
        'jfk-button jfk-button-action" id="uc-download-link" value="Download anyway">'
        f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" '
        'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
        f'name="uuid" value="{UUID}"></form></div></body></html>\n'
    ).encode()


class DriveHandler(BaseHTTPRequestHandler):
    """Plays Google Drive: /uc?id= redirects to drive.usercontent's /download, which answers
    with the confirmation page until confirm and uuid are given, then with the file.
    server.mode: "file" | "html_attachment" (an HTML body sent as the file) | "quota"."""

    def do_GET(self):  # noqa: N802
        srv = self.server
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        srv.log.append((parts.path, query))
        if parts.path == "/uc":
            self.send_response(303)
            self.send_header("Location", "https://drive.usercontent.google.com/download?id="
                             f"{query.get('id')}&export=download")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if parts.path != "/download" or query.get("id") != DRIVE_ID:
            self.send_error(404)
            return
        if srv.mode == "quota":
            body = (b'<html><head><title>Google Drive - Quota exceeded</title></head><body>'
                    b'<p class="uc-error-subcaption">Too many users have viewed or downloaded '
                    b'this file recently.</p></body></html>\n')
            self._send(body, "text/html; charset=utf-8")
        elif query.get("confirm") != "t" or query.get("uuid") != UUID:
            self._send(confirmation_page(DRIVE_ID), "text/html; charset=utf-8")
        elif srv.mode == "html_attachment":
            self._send(b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html",
                       attachment=True)
        else:
            self._send(srv.payload, "application/x-zip-compressed", attachment=True)

    def _send(self, body: bytes, content_type: str, attachment: bool = False):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if attachment:
            self.send_header("Content-Disposition",
                             'attachment; filename="Market-1501-v15.09.15.zip"')
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def drive(monkeypatch, tmp_path):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), DriveHandler)
    srv.payload = make_market_zip(tmp_path / "src.zip").read_bytes()
    srv.mode, srv.log = "file", []
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    monkeypatch.setenv(dl.ENV_DRIVE_URL, f"http://127.0.0.1:{srv.server_address[1]}")
    yield srv
    srv.shutdown()
    srv.server_close()


def test_drive_file_id():
    assert dl.drive_file_id(DRIVE_URL) == DRIVE_ID
    assert dl.drive_file_id("https://drive.google.com/file/d/1aB-c_9/view?usp=sharing") == "1aB-c_9"
    assert dl.drive_file_id("https://drive.google.com/uc?id=XYZ&export=download") == "XYZ"
    assert dl.drive_file_id("https://example.org/download?id=abc") is None
    with pytest.raises(dl.DownloadError, match="without a file id"):
        dl.drive_file_id("https://drive.google.com/drive/my-drive")


def test_drive_confirmation_page_then_file(drive, tmp_path):
    params = market_params(tmp_path, url=DRIVE_URL, checksum="md5:" + hashlib.md5(drive.payload).hexdigest())
    out, man = tmp_path / "data" / "dataset", tmp_path / "data" / "manifest.parquet"
    info = dl.prepare_dataset(params, out, man, progress=False)
    assert info["checksum_verified"] and info["url"] == DRIVE_URL
    assert pd.read_parquet(man).groupby("split").size().to_dict() == {"query": 1, "test": 3, "train": 3}
    # uc -> the confirmation page -> the form's fields sent back -> the file.
    assert [p for p, _ in drive.log] == ["/uc", "/download", "/download"]
    assert drive.log[-1][1] == {"id": DRIVE_ID, "export": "download", "confirm": "t", "uuid": UUID}
    cache = tmp_path / "cache"
    assert (cache / "Market-1501-v15.09.15.zip").read_bytes() == drive.payload
    assert not list(cache.glob("*.drive*"))  # the partial file was renamed into place
    again = dl.fetch_archive(params.data, progress=False)  # verified copy: no request
    assert again.reused and len(drive.log) == 3


def test_drive_html_instead_of_zip_rejected_before_extraction(drive, tmp_path):
    drive.mode = "html_attachment"
    params = market_params(tmp_path, url=DRIVE_URL, checksum=None)
    out, man = tmp_path / "data" / "dataset", tmp_path / "data" / "manifest.parquet"
    with pytest.raises(dl.DownloadError) as info:
        dl.prepare_dataset(params, out, man, progress=False)
    message = str(info.value)
    assert "HTML page" in message and "data.archive" in message and "\n" not in message
    assert not (tmp_path / "data").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".gdown")] == []


def test_drive_quota_page_is_one_line(drive, tmp_path):
    drive.mode = "quota"
    with pytest.raises(dl.DownloadError) as info:
        dl.download(DRIVE_URL, tmp_path / "a.zip", timeout=5, retries=0, progress=False)
    message = str(info.value)
    assert "\n" not in message and "Too many users" in message and "data.archive" in message
    assert not (tmp_path / "a.zip").exists()


def test_mirror_html_body_rejected_whatever_its_content_type(server, tmp_path):
    server.payload = b"\n  <!DOCTYPE html><html><body>Please sign in</body></html>"
    server.content_type = "application/octet-stream"
    with pytest.raises(dl.DownloadError, match="is an HTML page"):
        fetch(server, tmp_path / "a.zip", checksum=None)
    assert list(tmp_path.iterdir()) == []


def test_local_html_archive_rejected(tmp_path):
    page = tmp_path / "Market-1501-v15.09.15.zip"
    page.write_bytes(b"<html><head><title>Google Drive</title></head></html>")
    params = market_params(tmp_path, archive=str(page), checksum=None)
    with pytest.raises(dl.DownloadError, match=r"data\.archive\) is an HTML page"):
        dl.prepare_dataset(params, tmp_path / "ds", tmp_path / "m.parquet", progress=False)
    assert not (tmp_path / "ds").exists()
