"""The web demo (`python -m app`) as a real server on 127.0.0.1 for tests and the benchmark,
plus the files they feed it (a tiny generator, a huge PNG)."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import requests

from support.mlflow_server import free_port

ROOT = Path(__file__).resolve().parents[2]
START_LIMIT_S = 240  # a bound against a hang, not a speed expectation (busy CI machines)
UPLOAD_CAP_MB = 2  # the tests' --max-upload-mb


@dataclass
class DemoServer:
    url: str
    proc: subprocess.Popen
    cwd: Path  # the server's working directory (it must stay empty)
    tmp: Path  # the server's TMPDIR
    log: Path

    def rss_peak_mb(self) -> float:
        """The server process's peak resident memory so far (VmHWM), MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def tiny_generator(path: Path, height: int = 128, width: int = 64) -> Path:
    """A randomly initialised generator at a tenth of the quickstart widths (0.1 MB), saved
    as the train stage saves one: what the demo loads, at test speed."""
    import torch

    from pipeline.core.config import ImageConfig, ModelConfig
    from pipeline.model.checkpoint import save_generator
    from pipeline.model.generator import Generator

    torch.manual_seed(0)
    cfg = ModelConfig(encoder_widths=(4, 8, 8, 8, 8, 8), decoder_widths=(8, 8, 8, 8, 4))
    return save_generator(path, Generator(cfg, height, width), cfg,
                          ImageConfig(height=height, width=width), {"run_id": None})


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid grey PNG of width x height pixels in a few hundred KB (zeros compress): a
    decompression bomb for anything that decodes before checking the size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(1)
    row = bytes(width + 1)  # filter byte 0 + one grey byte per pixel
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/config", timeout=10).status_code == 200:
                return
        except requests.RequestException:  # refused or reset: still starting
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the demo did not answer within {START_LIMIT_S} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def demo_server(root: Path, models: Sequence[Path], *args: str) -> Iterator[DemoServer]:
    """Run `python -m app --model M... ARGS` from an empty folder under root with its own
    TMPDIR; yield it once it serves; stop it with SIGINT (as Ctrl-C) at the end."""
    cwd, tmp = root / "cwd", root / "tmp"
    cwd.mkdir(parents=True)
    tmp.mkdir()
    port = free_port()
    log_path = root / "demo.log"
    cmd = [sys.executable, "-m", "app", "--port", str(port), *args]
    for m in models:
        cmd += ["--model", str(m)]
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = DemoServer(f"http://127.0.0.1:{port}", proc, cwd, tmp, log_path)
        try:
            _wait_ready(proc, server.url, log_path)
            yield server
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
