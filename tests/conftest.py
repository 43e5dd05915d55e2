"""Shared fixtures: offline environment, the ../shared reference folder, tiny configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The reference folder: ../shared beside the clone, or wherever $DEFORMABLE_GAN_SHARED says
# (a worktree or a clone elsewhere).
SHARED = Path(os.environ.get("DEFORMABLE_GAN_SHARED") or ROOT.parent / "shared")

# Offline, quiet, no telemetry: set before any test imports ultralytics/mlflow/dvc.
for _key, _value in {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "YOLO_VERBOSE": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}.items():
    os.environ.setdefault(_key, _value)

# Weights (pipeline/core/weights.py): the offline copies in ../shared/weights when present, and
# never a real download: the canonical URLs' base points at a closed local port (the
# discard port), so a stray download fails at once instead of hanging or going online.
# Tests that exercise downloads point it at their own 127.0.0.1 server.
if (SHARED / "weights").is_dir():
    os.environ.setdefault("DEFORMABLE_GAN_WEIGHTS", str(SHARED / "weights"))
os.environ.setdefault("DEFORMABLE_GAN_WEIGHTS_URL", "http://127.0.0.1:9/no-downloads-in-tests")
# Likewise Google Drive (pipeline/data/download.py): its hosts are routed to the closed port.
os.environ.setdefault("DEFORMABLE_GAN_DRIVE_URL", "http://127.0.0.1:9")


def shared_path(relative: str) -> Path:
    """A file under ../shared, or skip the test with a message naming what is missing."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs {path} (the ../shared reference folder beside the repo); not present")
    return path


@pytest.fixture
def shared():
    return shared_path


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: tiny models gain nothing from intra-op threads, and on
    a busy 2-core machine spinning OpenMP workers make such tests several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The local Range/ETag HTTP server fixture, shared by the downloader and stage tests.
from support.range_server import server  # noqa: E402,F401
