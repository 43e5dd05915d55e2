"""One way for every stage CLI to end: a user error (a bad setting, a missing or corrupt
file, a full disk, a read-only folder) is one line on stderr naming the stage and the file
or setting, exit status 2; a bug keeps its traceback (and DEFORMABLE_GAN_TRACEBACK=1 shows
the traceback of user errors too, for reports)."""
from __future__ import annotations

import errno
import os
import sys
from typing import Callable, Sequence

from pipeline.core.config import ConfigError
from pipeline.core.fetch import DownloadError

USER_ERROR = 2
# Errors a user's input or machine causes; each carries a message naming the file/setting.
# (ValueError covers the pipeline's DataError, DatasetError, ArchiveError, ReposeError.)
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, DownloadError, FileNotFoundError, ValueError)
# OS conditions that are the machine's, not the code's: said in one line with the file.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
               errno.EISDIR, errno.ENOTDIR}


def describe(exc: BaseException) -> str | None:
    """The one line for a user error, or None when `exc` is a bug (or not ours to judge)."""
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    if isinstance(exc, USER_ERRORS):
        return str(exc)
    return None


def run_stage(name: str, body: Callable[[Sequence[str] | None], int | None],
              argv: Sequence[str] | None = None, extra: tuple[type[BaseException], ...] = ()) -> int:
    """body(argv) -> exit status; user errors become `name: error: <line>` and status 2.
    `extra`: a stage's own user-error types (e.g. CheckpointError) beside USER_ERRORS."""
    try:
        return body(argv) or 0
    except SystemExit as exc:  # sys.exit("message") inside a stage is a user error too
        if isinstance(exc.code, str):
            print(f"{name}: error: {exc.code.removeprefix(name + ': ')}", file=sys.stderr)
            return USER_ERROR
        raise
    except Exception as exc:
        line = str(exc) if isinstance(exc, extra) else describe(exc)
        if line is None or os.environ.get("DEFORMABLE_GAN_TRACEBACK") == "1":
            raise
        print(f"{name}: error: {line}", file=sys.stderr)
        return USER_ERROR
