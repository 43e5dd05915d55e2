"""Reading image files safely: which files count as images, and a decoder that names what
is wrong with a file (missing, empty, truncated, not an image, too large) instead of
returning a half-grey picture or exhausting memory.

Every stage that reads images from a user's disk goes through `decode_image` (BGR uint8
[H, W, 3]) or `image_problem` (the same checks without keeping the pixels).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# A decoded image above this many pixels is refused before decoding: a 1 MB PNG can
# declare 20000x20000 pixels (1.2 GB as BGR). 40 Mpx is far above any person photo.
MAX_PIXELS = 40_000_000


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def truncation(data: bytes) -> str | None:
    """Why a JPEG/PNG byte string is truncated, or None when its end marker is there.

    cv2.imdecode returns a half-grey image for a truncated JPEG (libjpeg only warns), so the
    end-of-image marker is checked here. A little trailing padding after it is tolerated.
    """
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        return "truncated JPEG (no end-of-image marker)"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk)"
    return None


def image_format(head: bytes) -> str | None:
    """The format of an image file from its first bytes, None when it is not one of
    IMAGE_SUFFIXES' formats (JPEG, PNG, BMP, WebP)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) from the header of a `fmt` image, decoding no pixel.

    PIL's format class is used directly, not Image.open: that one refuses large images with
    an error that hides their size, and ultralytics patches it to install a HEIF plugin for
    any file PIL cannot identify, which must never happen for a user's file.
    Raises OSError / SyntaxError / ValueError / EOFError for a broken header."""
    from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

    cls = {"JPEG": JpegImagePlugin.JpegImageFile, "PNG": PngImagePlugin.PngImageFile,
           "BMP": BmpImagePlugin.BmpImageFile, "WEBP": WebPImagePlugin.WebPImageFile}[fmt]
    with cls(io.BytesIO(data)) as image:
        return image.size


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the pixels; None if unknown
    (another format, or a header PIL cannot parse: cv2 decides then)."""
    fmt = image_format(data[:16])
    if fmt is None:
        return None
    try:
        return header_size(data, fmt)
    except Exception:
        return None


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"{path}: file not found"
    except OSError as exc:
        return None, f"{path}: cannot read ({exc.strerror or exc})"
    if not data:
        return None, f"{path}: empty file"
    return data, None


def _header_problem(path: Path | str, data: bytes, max_pixels: int) -> str | None:
    problem = truncation(data)
    if problem:
        return f"{path}: {problem}"
    size = declared_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        return f"{path}: {size[0]}x{size[1]} pixels is over the limit of {max_pixels:,}"
    return None


def decode_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, str | None]:
    """Read one image file -> (BGR uint8 [H, W, 3], None) or (None, message naming the file)."""
    path = Path(path)
    data, error = _read(path)
    if data is None:
        return None, error
    return decode_bytes(data, str(path), max_pixels)


def decode_bytes(data: bytes, label: str, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray | None, str | None]:
    """decode_image of a file's bytes already read -> (BGR uint8 [H, W, 3], None) or (None,
    message starting with `label`)."""
    import cv2

    error = _header_problem(label, data, max_pixels)
    if error:
        return None, error
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None, f"{label}: not a decodable image"
    return image, None


def image_problem(path: str | Path, max_pixels: int = MAX_PIXELS) -> str | None:
    """What is wrong with an image file (as decode_image would say), or None if it reads."""
    return decode_image(path, max_pixels)[1]
