"""A real MLflow tracking server (sqlite backend, proxied artifacts) on 127.0.0.1 for tests."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

START_LIMIT_S = 240  # a bound against a hang, not a speed expectation (busy CI machines)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_LIMIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=10).status_code == 200:
                return
        except requests.RequestException:  # refused, reset or read timeout: still starting
            pass
        time.sleep(0.25)
    pytest.fail(f"mlflow server did not answer /health within {START_LIMIT_S} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def mlflow_server(tmp_path: Path, backend: str | None = None) -> Iterator[str]:
    """Start `mlflow server --workers 1` (backend: a sqlite URI, default a fresh one in
    tmp_path); yield its base URL; terminate it (kill when it lingers) at the end."""
    port = free_port()
    exe = Path(sys.executable).parent / "mlflow"
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", backend or f"sqlite:///{tmp_path / 'server.db'}",
             "--artifacts-destination", str(tmp_path / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(proc, url, log_path)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
