"""pipeline.core.fsutil: streamed digests and the atomic folder swap."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline.core.fsutil import file_digest, replace_dir


def test_file_digest_matches_hashlib(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
    assert file_digest(path, "md5") == hashlib.md5(data).hexdigest()


def test_replace_dir_creates_and_replaces(tmp_path):
    target = tmp_path / "t"
    for content in (b"first", b"second"):
        new = tmp_path / "new"
        new.mkdir()
        (new / "f").write_bytes(content)
        replace_dir(new, target)
        assert (target / "f").read_bytes() == content and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_replace_dir_puts_the_old_target_back_when_the_swap_fails(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "f").write_bytes(b"old")
    with pytest.raises(FileNotFoundError):  # the new folder vanished: the rename in fails
        replace_dir(tmp_path / "gone", target)
    assert (target / "f").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_folder_lock_refuses_a_second_holder_and_frees_with_the_process(tmp_path):
    import signal
    import subprocess
    import sys

    from pipeline.core.fsutil import FolderBusy, folder_lock

    folder = tmp_path / "models"
    with folder_lock(folder, "train") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
        busy = pytest.raises(FolderBusy, match=rf"models: in use by another train \(pid {os.getpid()}; ")
        with busy, folder_lock(folder, "train"):
            pass
    # A holder killed with SIGKILL leaves the file but not the lock.
    code = ("import os, signal, sys; from pipeline.core.fsutil import folder_lock; "
            "folder_lock(sys.argv[1], 'train').__enter__(); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with folder_lock(folder, "train") as lock:
        assert lock.read_text() == f"{os.getpid()}\n"
