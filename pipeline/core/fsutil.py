"""Small file-system helpers shared by the stages: streamed digests and atomic folder swaps."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file, streamed (never loaded whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def replace_dir(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing what was there with renames only.

    The old target is renamed aside, the new one renamed in, then the old one deleted; if
    the second rename fails the old target is put back. `target` never holds a partial
    folder (between the two renames it is briefly absent). `new` must be on target's
    filesystem.
    """
    new, target = Path(new), Path(target)
    old = None
    if target.exists() or target.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        old.rmdir()
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)
        raise
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)  # the new folder is in place already
        else:
            old.unlink()
