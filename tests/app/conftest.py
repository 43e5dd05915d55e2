"""One demo server for the app tests: `python -m app` serving a tiny generator and a file
that is not a checkpoint, uploads capped at 2 MB, photos from ../shared's Market-1501 sample."""
from __future__ import annotations

import pytest

from conftest import shared_path
from support.demo_server import UPLOAD_CAP_MB, demo_server, tiny_generator

SAMPLE = "data/market1501-sample"



@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    photos = sorted(shared_path(SAMPLE).glob("*.jpg"))
    shared_path("weights/yolo11n-pose.pt")  # found through $DEFORMABLE_GAN_WEIGHTS (tests/conftest.py)
    root = tmp_path_factory.mktemp("demo")
    good = tiny_generator(root / "tiny.pt")
    bad = root / "bad.pt"
    bad.write_text("not a checkpoint\n")
    with demo_server(root / "server", [good, bad], "--max-upload-mb", str(UPLOAD_CAP_MB)) as server:
        server.photos, server.good, server.bad = photos, str(good), str(bad)
        yield server


@pytest.fixture(scope="session")
def client(demo, tmp_path_factory):
    from gradio_client import Client

    return Client(demo.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
