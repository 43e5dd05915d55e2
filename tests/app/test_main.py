"""`python -m app` itself: one line and status 2 when nothing can be served; a clean stop that
removes its temp folder."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import shared_path
from support.demo_server import ROOT, demo_server, tiny_generator

pytestmark = pytest.mark.slow


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "--port", "9", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_no_usable_generator_is_one_line_and_status_2(tmp_path):
    shared_path("weights/yolo11n-pose.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint\n")
    done = _run(tmp_path, "--model", str(bad), "--model", str(tmp_path / "absent.pt"))
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no usable generator: ") and "bad.pt: not a generator checkpoint" in last
    assert "absent.pt: checkpoint not found" in last and "Traceback" not in done.stderr
    done = _run(tmp_path, "--model", str(bad), "--pose-weights", str(tmp_path / "nope.pt"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "nope.pt" in done.stderr


def test_stops_cleanly_and_leaves_nothing(tmp_path):
    shared_path("weights/yolo11n-pose.pt")
    model = tiny_generator(tmp_path / "tiny.pt")
    with demo_server(tmp_path / "server", [model]) as server:
        folder = Path(re.search(r"temp folder (\S+)\)", server.log.read_text()).group(1))
        assert server.tmp in folder.parents and any(folder.rglob("*.jpg"))  # the synthetic examples
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=60) == 0, server.log.read_text()[-2000:]
    assert not folder.exists()
    assert not any(server.cwd.iterdir())
