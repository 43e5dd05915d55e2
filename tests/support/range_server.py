"""A local HTTP server (127.0.0.1, a thread) that serves one payload with Range, ETag,
cut connections and scripted statuses: the tests of the downloader and of the stage use it."""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

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

