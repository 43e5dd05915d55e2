"""Fetching one file over HTTP or from Google Drive, resumable and checksum-verified: the one
downloader of the project (dataset archives, weights).

download() streams a URL into `<dest>.part` and renames it to `dest` only once it is
complete and its checksum matches. A cut connection is resumed with an HTTP Range request
(also after a process restart, since the .part file stays on disk); the server's ETag /
Last-Modified is sent as If-Range so a changed file restarts instead of being spliced. A
server that ignores Range (200 instead of 206) restarts the file from byte 0. Transient
failures are retried with exponential backoff.

Google Drive URLs (drive.google.com, drive.usercontent.google.com) go through gdown instead:
a large Drive file answers a plain GET with an HTML confirmation page (a form carrying
confirm/uuid fields) that gdown parses and follows. Its partial file resumes too. Either
way the result is checked before it is used: an HTML page instead of the file is rejected
with one line, then the checksum is verified, then the file is renamed into place.
$DEFORMABLE_GAN_DRIVE_URL (tests only) sends every request for the Drive hosts to another
base URL, e.g. a 127.0.0.1 server that plays Drive.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import requests
import urllib3
from tqdm import tqdm

from pipeline.core.fsutil import file_digest

ALGORITHMS = ("sha256", "md5")
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF = 60.0  # seconds; cap on the exponential wait between attempts
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")
DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")
ENV_DRIVE_URL = "DEFORMABLE_GAN_DRIVE_URL"  # tests: base URL standing in for the Drive hosts
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<meta", b"<title")


class DownloadError(RuntimeError):
    """A download that failed for good (bad status, too many retries, HTML instead of data)."""


class ChecksumError(DownloadError):
    """A file whose digest differs from the expected `algo:hex`."""


class _Transient(Exception):
    """A failed attempt worth retrying (cut connection, short body, 5xx)."""


@dataclass(frozen=True)
class Fetched:
    """An archive on disk and what is known about it."""

    path: Path
    checksum: str  # actual digest as "algo:hex" (the expected algo, else sha256)
    verified: bool  # True when compared against a configured checksum
    reused: bool  # True when no bytes were transferred


# --------------------------------------------------------------------------- checksums


def parse_checksum(spec: str | None) -> tuple[str, str] | None:
    """"md5:65005a..." -> ("md5", "65005a..."); None stays None. A sha256 may be given by a
    prefix of 8 or more hex digits (the one torchvision embeds in its file names). Raises
    ValueError if malformed."""
    if spec is None:
        return None
    algo, sep, digest = spec.strip().partition(":")
    algo, digest = algo.lower(), digest.lower()
    if not sep or algo not in ALGORITHMS:
        raise ValueError(f"checksum {spec!r}: expected 'algo:hex' with algo one of {ALGORITHMS}")
    want = hashlib.new(algo).digest_size * 2
    prefix_ok = algo == "sha256" and 8 <= len(digest) < want
    if (len(digest) != want and not prefix_ok) or not re.fullmatch(r"[0-9a-f]+", digest):
        raise ValueError(f"checksum {spec!r}: expected {want} hex digits for {algo}")
    return algo, digest


def verify_file(path: Path, checksum: str | None) -> str:
    """Digest `path` as "algo:hex"; with a checksum, raise ChecksumError on mismatch."""
    expected = parse_checksum(checksum)
    algo = expected[0] if expected else "sha256"
    actual = file_digest(path, algo)
    if expected and not actual.startswith(expected[1]):
        short = "..." if len(expected[1]) < len(actual) else ""
        raise ChecksumError(f"{path}: {algo} is {actual}, expected {expected[1]}{short}")
    return f"{algo}:{actual}"


# --------------------------------------------------------------------------- download


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _validator(headers: requests.structures.CaseInsensitiveDict) -> str | None:
    """A value usable in If-Range: a strong ETag, else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """'bytes 100-199/1000' -> (100, 1000); 'bytes */1000' -> (None, 1000)."""
    m = _CONTENT_RANGE.match((value or "").strip())
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return start, total


def _discard(*paths: Path) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _resume_state(part: Path, meta: Path, url: str) -> tuple[int, str | None]:
    """(bytes already in `part`, If-Range validator). A .part recorded for another URL, or
    with an unreadable record, is discarded rather than spliced onto."""
    if not part.exists():
        return 0, None
    if not meta.exists():
        return part.stat().st_size, None  # the final checksum still guards the result
    try:
        record = json.loads(meta.read_text())
        if record.get("url") == url:
            return part.stat().st_size, record.get("validator")
    except (ValueError, AttributeError):
        pass
    _discard(part, meta)
    return 0, None


def _chunks(r: requests.Response, size: int) -> Iterator[bytes]:
    """Body chunks as they arrive. urllib3 2's read1 hands over partial data, so a cut
    connection loses no received bytes (iter_content would drop a partly filled chunk)."""
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from r.iter_content(size)
        return
    while chunk := read1(size, decode_content=True):
        yield chunk


def _attempt(session: requests.Session, url: str, part: Path, meta: Path, timeout: float,
             chunk_size: int, progress: bool) -> None:
    """One request: continue (or restart) `part`. Returns when the body is complete."""
    have, saved = _resume_state(part, meta, url)
    # identity: byte offsets must refer to the file itself, not a gzip transfer encoding.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if saved:
            headers["If-Range"] = saved
    with session.get(url, headers=headers, stream=True, timeout=timeout,
                     allow_redirects=True) as r:
        code = r.status_code
        if code == 416 and have:
            _, total = _content_range(r.headers.get("Content-Range"))
            if total == have:  # the .part already holds the whole file
                return
            _discard(part, meta)
            raise _Transient(f"range {have}- not satisfiable (size {total}); restarting")
        if code in RETRY_STATUS:
            raise _Transient(f"HTTP {code}")
        if code == 206 and have:
            start, total = _content_range(r.headers.get("Content-Range"))
            if start != have:
                _discard(part, meta)
                raise _Transient(f"server resumed at byte {start}, not {have}; restarting")
            mode = "ab"
        elif code == 200:
            if r.headers.get("Content-Type", "").lower().startswith("text/html"):
                raise DownloadError(
                    f"{url}: the server sent an HTML page, not the archive (a login, quota or "
                    "confirmation page?); download it by hand and set data.archive"
                )
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"  # fresh start, also when the server ignored our Range
            meta.write_text(json.dumps({"url": url, "validator": _validator(r.headers)}))
        else:
            raise DownloadError(f"{url}: HTTP {code} {r.reason}")

        with open(part, mode) as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:
            for chunk in _chunks(r, chunk_size):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Transient(f"connection closed at {size} of {total} bytes")
    if total is not None and size > total:
        _discard(part, meta)
        raise _Transient(f"received {size} bytes, more than the announced {total}; restarting")


def download(url: str, dest: Path, *, checksum: str | None = None, timeout: float = 60.0,
             retries: int = 5, backoff: float = 1.0, chunk_size: int = 1 << 20,
             progress: bool = True, session: requests.Session | None = None) -> Fetched:
    """Download `url` to `dest`, resumable and verified; returns a Fetched.

    An existing `dest` that passes the checksum is reused without any request. Each failed
    attempt waits backoff * 2**k seconds (capped at MAX_BACKOFF); the count resets whenever
    an attempt made progress, and after `retries` consecutive failures DownloadError is
    raised with the .part file kept for a later resume. A checksum mismatch deletes the
    download and raises ChecksumError.
    """
    dest = Path(dest)
    parse_checksum(checksum)  # fail on a malformed spec before any network traffic
    if not url:
        raise DownloadError("no URL to download from (data.url is empty); set data.url or data.archive")
    if dest.is_file():
        try:
            return Fetched(dest, verify_file(dest, checksum), checksum is not None, reused=True)
        except ChecksumError:
            dest.unlink()  # a stale or corrupt earlier download: fetch it again
    dest.parent.mkdir(parents=True, exist_ok=True)
    file_id = drive_file_id(url)
    if file_id is not None:
        part = _drive_download(url, file_id, dest, timeout=timeout, retries=retries,
                               progress=progress)
        return _finish(url, part, dest, checksum)
    part, meta = _part_paths(dest)
    own_session = session is None
    session = session or requests.Session()
    failures = 0
    try:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                _attempt(session, url, part, meta, timeout, chunk_size, progress)
                break
            except (_Transient, requests.RequestException, urllib3.exceptions.HTTPError) as exc:
                after = part.stat().st_size if part.exists() else 0
                failures = 1 if after > before else failures + 1
                if failures > retries:
                    raise DownloadError(
                        f"{url}: giving up after {retries} retries ({exc}); "
                        f"{after} bytes kept in {part} for a later resume"
                    ) from exc
                time.sleep(min(backoff * 2 ** (failures - 1), MAX_BACKOFF))
    finally:
        if own_session:
            session.close()
    return _finish(url, part, dest, checksum, meta)


def _finish(url: str, part: Path, dest: Path, checksum: str | None, *extra: Path) -> Fetched:
    """Check a complete download (not HTML, checksum) and rename it to `dest`; a rejected
    file is deleted with its side files."""
    try:
        check_not_html(part, f"{url}: the download")
        actual = verify_file(part, checksum)
    except DownloadError as exc:
        _discard(part, *extra)
        if isinstance(exc, ChecksumError):
            raise ChecksumError(f"{url}: downloaded file rejected: {exc}") from exc
        raise
    part.replace(dest)
    _discard(*extra)
    return Fetched(dest, actual, checksum is not None, reused=False)


def check_not_html(path: Path, what: str, archive_name: str = "dataset") -> None:
    """Raise DownloadError when `path` holds an HTML page (a login, quota or Drive
    confirmation page saved in place of the archive)."""
    with open(path, "rb") as f:
        head = f.read(2048).lstrip().lower()
    if head.startswith(_HTML_STARTS) or b"<html" in head:
        raise DownloadError(
            f"{what} is an HTML page ({path.stat().st_size} bytes), not the "
            f"{archive_name} archive (a Drive confirmation, quota or login page?); "
            "download the archive by hand and set data.archive"
        )


# --------------------------------------------------------------------------- Google Drive


def drive_file_id(url: str) -> str | None:
    """The file id of a Google Drive URL (?id=ID or /file/d/ID/...); None for other hosts."""
    parts = urlsplit(url)
    if parts.hostname not in DRIVE_HOSTS:
        return None
    ids = parse_qs(parts.query).get("id")
    if ids:
        return ids[0]
    m = re.search(r"/file/(?:u/\d+/)?d/([-\w]+)", parts.path)
    if m:
        return m.group(1)
    raise DownloadError(f"{url}: a Google Drive URL without a file id (?id=... or /file/d/...)")


def _drive_download(url: str, file_id: str, dest: Path, *, timeout: float, retries: int,
                    progress: bool) -> Path:
    """Fetch a Drive file with gdown into `dest`.drive (resumable); returns that path."""
    import gdown

    part = dest.with_name(dest.name + ".drive")
    try:
        with _drive_hosts_redirected(os.environ.get(ENV_DRIVE_URL, "").strip()):
            # resume: gdown continues its own partial file, and skips `part` when complete.
            gdown.download(id=file_id, output=str(part), quiet=not progress, resume=True,
                           timeout=timeout, retries=retries,
                           cookies_file=str(dest.parent / ".gdown-cookies.txt"))
    except gdown.FileURLRetrievalError as exc:
        raise DownloadError(
            f"{url}: Google Drive did not hand out the file ({_one_line(exc)}); "
            "download it by hand and set data.archive"
        ) from exc
    except (gdown.DownloadError, requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise DownloadError(f"{url}: Google Drive download failed ({_one_line(exc)}); "
                            "run again to resume, or set data.archive") from exc
    return part


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # gdown's retrieval error: a header line, then the reason indented below it.
    text = " ".join(lines[1:2] if len(lines) > 1 and lines[0].endswith(":") else lines[:1])
    return (text or type(exc).__name__)[:300]


class _HostRedirect(requests.adapters.HTTPAdapter):
    """Sends each request to `base` + the original path and query (tests stand in for Drive)."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base.rstrip("/")

    def send(self, request, **kwargs):
        parts = urlsplit(request.url)
        request.url = self.base + urlunsplit(("", "", parts.path or "/", parts.query, ""))
        return super().send(request, **kwargs)


@contextlib.contextmanager
def _drive_hosts_redirected(base: str):
    """With a base URL, sessions created meanwhile (gdown makes its own) route the Drive
    hosts to it; without one, nothing changes."""
    if not base:
        yield
        return
    original = requests.session

    def session() -> requests.Session:
        s = original()
        for host in DRIVE_HOSTS:
            s.mount(f"https://{host}/", _HostRedirect(base))
        return s

    requests.session = session
    try:
        yield
    finally:
        requests.session = original
