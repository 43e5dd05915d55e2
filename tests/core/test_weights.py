"""pipeline.core.weights: search order, checksummed atomic download, caching, the one-line error.

A 127.0.0.1 HTTP server stands in for the canonical URLs ($DEFORMABLE_GAN_WEIGHTS_URL).
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import torch

from pipeline.core import fetch, weights
from pipeline.core.weights import Entry, WeightsError

from support.http_files import serve

BLOB = b"weights-bytes-" * 1000


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache and weights folder, and a test entry pinned to BLOB's sha256."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "folder"
    folder.mkdir()
    monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS", str(folder))
    entry = Entry("test_blob", "a test file", "https://example.invalid/blob.bin", "blob.bin",
                  "sha256:" + hashlib.sha256(BLOB).hexdigest(), aliases=("blob_alias.bin",))
    monkeypatch.setitem(weights.REGISTRY, entry.name, entry)
    return entry, folder, weights.cache_dir()


def test_download_checksum_cache_and_reuse(env, monkeypatch):
    entry, _, cache = env
    with serve({"blob.bin": BLOB}) as (base, hits):
        monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS_URL", base)
        first = weights.resolve("test_blob", "loss.test_weights")
        second = weights.resolve("test_blob", "loss.test_weights")
    assert first == second == cache / "blob.bin"
    assert first.read_bytes() == BLOB
    assert hits == {"/blob.bin": 1}  # the second call used the cache
    assert sorted(p.name for p in cache.iterdir()) == ["blob.bin"]  # no temporary left


def test_published_sha256_prefix_is_accepted(env, monkeypatch):
    entry, _, cache = env
    monkeypatch.setitem(weights.REGISTRY, "test_blob",
                        Entry(entry.name, entry.what, entry.url, entry.file, entry.checksum[:15]))
    with serve({"blob.bin": BLOB}) as (base, _):
        monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS_URL", base)
        assert weights.resolve("test_blob", "p").read_bytes() == BLOB


def test_checksum_mismatch_rejected_nothing_cached(env, monkeypatch):
    _, _, cache = env
    with serve({"blob.bin": BLOB + b"tampered"}) as (base, _):
        monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS_URL", base)
        with pytest.raises(WeightsError, match=r"loss\.test_weights.*sha256.*nothing was cached"):
            weights.resolve("test_blob", "loss.test_weights")
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_gives_one_line_naming_param_and_file(env, monkeypatch):
    with serve({}) as (base, hits):  # online but nothing served: a 404
        monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS_URL", base)
        with pytest.raises(WeightsError) as info:
            weights.resolve("test_blob", "evaluate.test_weights")
    assert hits == {"/blob.bin": 1}
    for message in (str(info.value), _offline_message()):
        assert "\n" not in message
        assert message.startswith("evaluate.test_weights: ")
        assert "blob.bin" in message and "$DEFORMABLE_GAN_WEIGHTS" in message
        assert "set evaluate.test_weights to a local file" in message
    assert isinstance(info.value, FileNotFoundError)  # the stages' one-line handler


def _offline_message() -> str:
    # conftest points the URL base at a closed local port: connection refused at once.
    with pytest.raises(WeightsError) as info:
        weights.resolve("test_blob", "evaluate.test_weights")
    assert "Connection refused" in str(info.value)
    return str(info.value)


def test_download_disabled(env):
    with pytest.raises(WeightsError, match="downloading is disabled"):
        weights.resolve("test_blob", "evaluate.test_weights", allow_download=False)


def test_env_folder_wins_over_cache_and_accepts_aliases(env):
    _, folder, cache = env
    cache.mkdir(parents=True)
    (cache / "blob.bin").write_bytes(b"cached")
    assert weights.resolve("test_blob", "p") == cache / "blob.bin"
    (folder / "blob_alias.bin").write_bytes(b"alias")
    assert weights.resolve("test_blob", "p") == folder / "blob_alias.bin"
    (folder / "blob.bin").write_bytes(b"folder")
    assert weights.resolve("test_blob", "p") == folder / "blob.bin"


def test_local_path_wins_over_everything(env, tmp_path):
    _, folder, _ = env
    (folder / "blob.bin").write_bytes(b"folder")
    local = tmp_path / "mine.bin"
    local.write_bytes(b"mine")
    assert weights.resolve(str(local), "p") == local
    with pytest.raises(WeightsError, match=r"p: .*missing\.pt.* neither an existing file"):
        weights.resolve(str(tmp_path / "missing.pt"), "p")
    with pytest.raises(WeightsError, match="no weights given"):
        weights.resolve("", "p")


def test_converter_entry_converts_once_into_the_cache(env, monkeypatch):
    entry, folder, cache = env
    calls = []

    def convert(src: Path) -> dict:
        calls.append(src)
        return {"reversed": torch.frombuffer(bytearray(src.read_bytes()[::-1]), dtype=torch.uint8)}

    monkeypatch.setitem(weights.REGISTRY, "test_blob", Entry(
        entry.name, entry.what, entry.url, entry.file, entry.checksum, product="blob.converted"))
    with pytest.raises(ValueError, match="needs a converter"):
        weights.resolve("test_blob", "p")
    with serve({"blob.bin": BLOB}) as (base, hits):
        monkeypatch.setenv("DEFORMABLE_GAN_WEIGHTS_URL", base)
        out = weights.resolve("test_blob", "p", convert=convert)
        assert weights.resolve("test_blob", "p", convert=convert) == out == cache / "blob.converted"
    saved = torch.load(out, weights_only=True)["reversed"]
    assert bytes(saved.numpy()) == BLOB[::-1] and hits == {"/blob.bin": 1} and len(calls) == 1
    # A raw file in the weights folder is converted without any download.
    out.unlink()
    (cache / "blob.bin").unlink()
    (folder / "blob.bin").write_bytes(BLOB)
    assert weights.resolve("test_blob", "p", convert=convert) == out and calls[-1] == folder / "blob.bin"


def test_registry_entries_are_well_formed():
    for name, entry in weights.REGISTRY.items():
        assert name == entry.name
        fetch.parse_checksum(entry.checksum)
        assert entry.url.startswith("https://") and entry.file and "/" not in entry.file
    assert weights.lookup("imagenet") is weights.REGISTRY["vgg19_torchvision"]
    # torchvision and torch-fidelity cache these under the same names in the same folder.
    assert weights.REGISTRY["vgg19_torchvision"].file == "vgg19-dcbb9e9d.pth"
    assert weights.REGISTRY["inception_fid"].file.endswith("6726825d.pth")


def test_lpips_alex_from_the_installed_package():
    spec = importlib.util.find_spec("lpips")  # no import: it loads torchvision, slowly
    if spec is None or not spec.origin:
        pytest.skip("lpips not installed")
    bundled = Path(spec.origin).parent / "weights" / "v0.1" / "alex.pth"
    if not bundled.is_file():
        pytest.skip("lpips installed without its weights")
    got = weights.resolve("lpips_alex", "evaluate.lpips_weights")
    assert got.read_bytes() == bundled.read_bytes()
    assert hashlib.sha256(bundled.read_bytes()).hexdigest() == \
        weights.REGISTRY["lpips_alex"].checksum.split(":")[1]


def test_shared_copies_match_their_pins(shared):
    yolo = shared("weights/yolo11n-pose.pt")
    assert "sha256:" + hashlib.sha256(yolo.read_bytes()).hexdigest() == \
        weights.REGISTRY["yolo11n-pose.pt"].checksum


def test_pose_stage_offline_exits_with_one_line(tmp_path, monkeypatch, capsys):
    """stages.pose with a weights name found nowhere: exit 2, one line naming the param."""
    import numpy as np
    from PIL import Image

    from stages import pose as stage

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DEFORMABLE_GAN_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)  # no params.yaml, no yolo11n-pose.pt in the working folder
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((128, 64, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    for extra, param in (([], "pose.weights"), (["--weights", "yolo11n-pose.pt"], "--weights"),
                         (["--weights", "no_such_weights"], "--weights")):
        rc = stage.main(["--images", str(tmp_path / "images"), "--out", "kp.parquet", *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and "Traceback" not in err
        assert err.startswith(f"pose: error: {param}: "), err
        assert (extra[-1] if extra else "yolo11n-pose.pt") in err
