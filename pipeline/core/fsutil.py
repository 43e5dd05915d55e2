"""File-system helpers shared by every stage: streamed digests, the one atomic file write
(and its JSON / text forms), atomic folder swaps and their scratch folders, and the lock
that keeps two writers out of one folder."""
from __future__ import annotations

import hashlib
import json
import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def file_digest(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file, streamed (never loaded whole)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algo).hexdigest()


def table_digest(path: str | Path) -> str:
    """sha256 of a Parquet table's schema and rows, not of its file: key-value metadata
    (provenance, labels) does not count, so equal contents give equal digests."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path).replace_schema_metadata(None).combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def atomic_write(dest: str | Path, write: Callable[[Path], None], *, fsync: bool = False) -> Path:
    """write(tmp) into a temporary sibling of `dest`, then rename it onto `dest` (atomic on
    one filesystem). On any failure the temporary file is removed and `dest` is untouched,
    so a crash or a full disk never leaves a truncated file. fsync: flush to the device
    before the rename (checkpoints; a power cut then keeps the old or the new file)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp leaves 0600; give what open() would
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write `text` (UTF-8) to `path`."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """Atomically write `obj` as indented JSON plus a newline (json.dumps options pass on)."""
    return write_text(path, json.dumps(obj, indent=2, **dumps) + "\n")


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
        old = scratch_dir(target, "old")
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


# --------------------------------------------------------------------------- scratch folders

SCRATCH_KINDS = ("new", "old", "tmp")


def scratch_dir(target: str | Path, kind: str = "new") -> Path:
    """A fresh hidden folder beside `target` for building (or setting aside) its next version:
    .<name>.<kind>-<pid>-<random>. The pid lets a later run tell a folder left by a killed
    process (removed here first, by remove_stale_scratch) from one still being built."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.{kind}-{os.getpid()}-", dir=target.parent))


def remove_stale_scratch(target: str | Path) -> list[Path]:
    """Delete the scratch folders of `target` whose process is gone (a kill during a download,
    an extraction or a heatmap build leaves one, a whole dataset big); returns them."""
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:{'|'.join(SCRATCH_KINDS)})-(?:(\d+)-)?")
    removed = []
    for entry in target.parent.glob(f".{target.name}.*-*") if target.parent.is_dir() else ():
        m = pattern.match(entry.name)
        if m is None or (m.group(1) and _alive(int(m.group(1)))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (a name without a pid, from older versions, counts as gone)."""
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM  # exists, owned by someone else
    return True


# --------------------------------------------------------------------------- the folder lock


class FolderBusy(ValueError):
    """Another process holds the folder's lock (a user error: two runs on one folder)."""


@contextlib.contextmanager
def folder_lock(folder: str | Path, user: str) -> Iterator[Path]:
    """Hold an exclusive lock on `folder` (created if needed) for `user` (e.g. "train") while
    the block runs: <folder>/.<user>.lock, locked with fcntl.flock, its holder's pid inside.
    A second holder gets FolderBusy at once (one line naming the folder and the pid) instead
    of waiting or writing over the first one's files. The kernel drops the lock when the
    process ends, however it ends, so a killed run never leaves the folder locked; the
    file itself stays (removing it would race with a process opening it)."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".{user}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderBusy(f"{folder}: in use by another {user} (pid {holder}; lock {path}); "
                             f"wait for it or give another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
