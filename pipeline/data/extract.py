"""Safe extraction of a dataset archive (zip, tar, tar.gz/bz2/xz) into place.

Every member is validated before a single byte is written: absolute paths, drive letters,
backslashes, `..` components, links, devices and fifos are rejected, as is anything that
would resolve outside the target. Extraction goes to a temporary folder beside the target,
the Market-1501 layout is checked there, and only then is the result swapped in by renames,
so a bad archive leaves an existing dataset untouched.
"""
from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from pipeline.datasets.base import Dataset, DatasetError, is_ignored
from pipeline.datasets.market1501 import MARKET1501
from pipeline.core.fsutil import replace_dir, scratch_dir


class ArchiveError(ValueError):
    """An archive that cannot be read or holds a member that is unsafe to extract."""


@dataclass(frozen=True)
class Member:
    """One archive entry after validation: a safe relative path and its kind."""

    parts: tuple[str, ...]  # path components, none empty / '.' / '..'
    is_dir: bool
    size: int
    source: object  # the ZipInfo / TarInfo to read the data from


def _safe_parts(archive: Path, name: str) -> tuple[str, ...]:
    """Split a member name into components, rejecting anything that could escape."""
    if not name or "\x00" in name:
        raise ArchiveError(f"{archive}: member with an empty or NUL-containing name {name!r}")
    if "\\" in name:
        # A Windows separator would become a '..' or absolute path on another OS.
        raise ArchiveError(f"{archive}: member {name!r} contains a backslash")
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if not parts:
        raise ArchiveError(f"{archive}: member {name!r} names the archive root")
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {name!r} has a '..' component (path traversal)")
    if ":" in parts[0]:
        raise ArchiveError(f"{archive}: member {name!r} starts with a drive letter")
    return parts


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> Iterator[Member]:
    for info in zf.infolist():
        parts = _safe_parts(archive, info.filename)
        # Unix mode in the high 16 bits; the file-type bits are often 0 (plain permissions,
        # or a zip made on Windows), which means a regular file or folder.
        ftype = stat.S_IFMT(info.external_attr >> 16)
        if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR):
            kind = "symlink" if ftype == stat.S_IFLNK else "device, fifo or special file"
            raise ArchiveError(f"{archive}: member {info.filename!r} is a {kind}")
        yield Member(parts, info.is_dir() or ftype == stat.S_IFDIR, info.file_size, info)


def _tar_members(archive: Path, tf: tarfile.TarFile) -> Iterator[Member]:
    for info in tf.getmembers():
        parts = _safe_parts(archive, info.name)
        if info.issym() or info.islnk():
            raise ArchiveError(f"{archive}: member {info.name!r} is a link to {info.linkname!r}")
        if not (info.isfile() or info.isdir()):
            raise ArchiveError(f"{archive}: member {info.name!r} is a device, fifo or special file")
        yield Member(parts, info.isdir(), info.size, info)


def list_members(archive: Path) -> list[Member]:
    """Validate every member of `archive` (nothing is written). Raises ArchiveError."""
    archive = Path(archive)
    if not archive.is_file():
        raise ArchiveError(f"{archive}: archive not found")
    members: list[Member] = []
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                members = list(_zip_members(archive, zf))
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                members = list(_tar_members(archive, tf))
        else:
            raise ArchiveError(f"{archive}: not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(f"{archive}: unreadable archive: {exc}") from exc

    # A file listed twice would silently overwrite; a file and a folder of one name clash.
    files = [m.parts for m in members if not m.is_dir]
    dup = [p for p, n in Counter(files).items() if n > 1]
    if dup:
        raise ArchiveError(f"{archive}: duplicate member(s) {sorted('/'.join(p) for p in dup)[:3]}")
    prefixes = {m.parts[:i] for m in members for i in range(1, len(m.parts))}
    clash = [p for p in files if p in prefixes]
    if clash:
        raise ArchiveError(f"{archive}: member {'/'.join(clash[0])!r} is both a file and a folder")
    return members


def safe_extract(archive: Path, dest: Path, skip: Callable[[tuple[str, ...]], bool] | None = None) -> int:
    """Extract `archive` into the existing empty folder `dest`; returns the files written.

    All members are validated first (list_members). `skip(parts)` drops members (e.g. OS
    litter). Permissions and timestamps from the archive are not applied.
    """
    archive, dest = Path(archive), Path(dest)
    members = [m for m in list_members(archive) if not (skip and skip(m.parts))]
    root = dest.resolve()
    for m in members:  # defence in depth: the joined path must stay under dest
        target = (root / Path(*m.parts)).resolve()
        if target != root and root not in target.parents:
            raise ArchiveError(f"{archive}: member {'/'.join(m.parts)!r} resolves outside {dest}")

    written = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                written = _write(members, root, lambda m: zf.open(m.source))
        else:
            with tarfile.open(archive) as tf:
                written = _write(members, root, lambda m: tf.extractfile(m.source))
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"{archive}: corrupt member data: {exc}") from exc
    return written


def _write(members: list[Member], root: Path, open_member: Callable[[Member], object]) -> int:
    count = 0
    for m in members:
        target = root.joinpath(*m.parts)
        if m.is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(m) as src, open(target, "xb") as dst:  # "x": never follow/overwrite
            shutil.copyfileobj(src, dst, 1 << 20)
        count += 1
    return count


def skip_litter(parts: tuple[str, ...]) -> bool:
    return any(is_ignored(p) for p in parts)


def extract_dataset(archive: Path, target: Path, dataset: Dataset = MARKET1501) -> dict[str, int]:
    """Safely extract a dataset archive so that `target` holds the dataset's split folders.

    The archive's single top folder (Market-1501-v15.09.15/) or its root must hold the
    split folders (Market: bounding_box_train/, bounding_box_test/, query/). Returns image
    counts per split. On any error (ArchiveError, DatasetError) `target` is left as it was.
    """
    archive, target = Path(archive), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = scratch_dir(target)  # sweeps folders left by a killed run first
    try:
        safe_extract(archive, tmp, skip=skip_litter)
        try:
            root = dataset.find_root(tmp)
            counts = dataset.check_layout(root)
        except DatasetError as exc:
            # Name the archive, not the throwaway temp folder.
            raise DatasetError(f"{archive}: {str(exc).replace(str(tmp), '<archive>')}") from exc
        replace_dir(root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts
