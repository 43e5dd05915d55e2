"""Shared fixtures: offline environment, the ../shared reference folder, tiny configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Offline, quiet, no telemetry: set before any test imports ultralytics/mlflow/dvc.
for _key, _value in {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "YOLO_VERBOSE": "False",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
}.items():
    os.environ.setdefault(_key, _value)


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
