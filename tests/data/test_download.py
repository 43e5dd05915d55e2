"""pipeline.data.download and the download stage over real HTTP from a local server
(127.0.0.1): the dataset's archive, Google Drive's confirmation page, the stage CLI."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import yaml

from pipeline.core import fetch
from pipeline.data import download as dl
from pipeline.datasets.market1501 import MARKET1501
from support.range_server import sha256
from pipeline.core.config import DataConfig, ImageConfig, Params, SyntheticConfig, to_dict
from stages import download as stage
from support.market_files import make_market_zip



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
    with pytest.raises(fetch.ChecksumError):
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


def test_stage_cli_bad_archive_exits_with_message(tmp_path, capsys):
    archive = make_market_zip(tmp_path / "Market.zip", extra={"../evil.jpg": b"x"})
    pfile = write_params(tmp_path / "params.yaml", market_params(tmp_path, checksum=None))
    out = tmp_path / "ds"
    assert stage.main(["--params", str(pfile), "--archive", str(archive), "--out", str(out),
                       "--summary", str(tmp_path / "m.json"), "--manifest", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"download: error: .*Market\.zip.*'\.\.' component.*\n", err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Market.zip", "params.yaml"]


def test_stage_synthetic_source(tmp_path):
    synthetic = pytest.importorskip("pipeline.datasets.synthetic", reason="pipeline.datasets.synthetic not written yet")
    if not hasattr(synthetic, "generate"):
        pytest.skip("pipeline.datasets.synthetic.generate not available yet")
    params = dataclasses.replace(
        Params(), image=ImageConfig(height=64, width=32),
        data=DataConfig(synthetic=SyntheticConfig(train_ids=2, test_ids=2, images_per_id=2)),
    )
    out, man = tmp_path / "ds", tmp_path / "m.parquet"
    stage.main(["--params", str(write_params(tmp_path / "params.yaml", params)),
                "--out", str(out), "--summary", str(tmp_path / "m.json"), "--manifest", str(man)])
    df = pd.read_parquet(man)
    assert set(df.split) <= {"train", "test", "query"} and (df.split == "train").any()
    assert ((df.width == 32) & (df.height == 64)).all()
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
    monkeypatch.setenv(fetch.ENV_DRIVE_URL, f"http://127.0.0.1:{srv.server_address[1]}")
    yield srv
    srv.shutdown()
    srv.server_close()


def test_drive_file_id():
    assert fetch.drive_file_id(DRIVE_URL) == DRIVE_ID
    assert fetch.drive_file_id("https://drive.google.com/file/d/1aB-c_9/view?usp=sharing") == "1aB-c_9"
    assert fetch.drive_file_id("https://drive.google.com/uc?id=XYZ&export=download") == "XYZ"
    assert fetch.drive_file_id("https://example.org/download?id=abc") is None
    with pytest.raises(dl.DownloadError, match="without a file id"):
        fetch.drive_file_id("https://drive.google.com/drive/my-drive")


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
    again = dl.fetch_archive(params.data, MARKET1501, progress=False)  # verified copy: no request
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
        fetch.download(DRIVE_URL, tmp_path / "a.zip", timeout=5, retries=0, progress=False)
    message = str(info.value)
    assert "\n" not in message and "Too many users" in message and "data.archive" in message
    assert not (tmp_path / "a.zip").exists()


def test_mirror_html_body_rejected_whatever_its_content_type(server, tmp_path):
    server.payload = b"\n  <!DOCTYPE html><html><body>Please sign in</body></html>"
    server.content_type = "application/octet-stream"
    with pytest.raises(dl.DownloadError, match="is an HTML page"):
        fetch.download(server.url, tmp_path / "a.zip", checksum=None, timeout=5, backoff=0.01,
                       progress=False)
    assert list(tmp_path.iterdir()) == []


def test_local_html_archive_rejected(tmp_path):
    page = tmp_path / "Market-1501-v15.09.15.zip"
    page.write_bytes(b"<html><head><title>Google Drive</title></head></html>")
    params = market_params(tmp_path, archive=str(page), checksum=None)
    with pytest.raises(dl.DownloadError, match=r"data\.archive\) is an HTML page"):
        dl.prepare_dataset(params, tmp_path / "ds", tmp_path / "m.parquet", progress=False)
    assert not (tmp_path / "ds").exists()


def _killed_mid_build(target: Path) -> Path:
    """A real process that starts the next version of `target` and is killed (SIGKILL) there."""
    import os
    import signal
    import subprocess
    import sys

    code = ("import os, signal, sys; from pipeline.core.fsutil import scratch_dir; "
            "d = scratch_dir(sys.argv[1]); (d / 'half.jpg').write_bytes(b'x' * 1000); print(d, flush=True); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == -signal.SIGKILL
    left = Path(proc.stdout.strip())
    assert left.is_dir() and left.name.startswith(f".{target.name}.new-")
    return left


def test_next_run_removes_folders_left_by_a_killed_download(tmp_path):
    archive = make_market_zip(tmp_path / "Market.zip")
    out = tmp_path / "ds"
    killed = _killed_mid_build(out)
    older = tmp_path / ".ds.old-x1y2z3"  # an older version's name, without a pid
    older.mkdir()
    live = tmp_path / f".ds.new-{__import__('os').getpid()}-abc"  # a build still running here
    live.mkdir()
    pfile = write_params(tmp_path / "params.yaml", Params())
    assert stage.main(["--params", str(pfile), "--archive", str(archive), "--out", str(out),
                       "--summary", str(tmp_path / "m.json"), "--manifest", str(tmp_path / "m.parquet")]) == 0
    assert not killed.exists() and not older.exists()
    assert live.is_dir()  # its process is alive: not ours to remove
    assert (out / "query").is_dir()
