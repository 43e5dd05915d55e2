"""pipeline.core.images: every problem of an image file is named, nothing decoded half-way."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.core.images import decode_bytes, decode_image, image_problem, is_image_file, truncation


@pytest.fixture
def jpeg(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "person.jpg"
    cv2.imwrite(str(path), rng.integers(0, 255, (128, 64, 3), dtype=np.uint8))
    return path


def test_a_good_image_decodes_to_bgr(jpeg):
    image, error = decode_image(jpeg)
    assert error is None and image.shape == (128, 64, 3) and image.dtype == np.uint8
    assert image_problem(jpeg) is None and is_image_file(jpeg)


def test_truncated_files_are_refused_by_their_end_marker(tmp_path, jpeg):
    data = jpeg.read_bytes()
    assert truncation(data) is None
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert cv2.imread(str(cut)) is not None  # what the check exists for: cv2 decodes it grey
    assert image_problem(cut) == f"{cut}: truncated JPEG (no end-of-image marker)"
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), np.zeros((8, 8, 3), np.uint8))
    png.write_bytes(png.read_bytes()[:-20])
    assert "truncated PNG" in image_problem(png)


def test_missing_empty_and_foreign_files_are_named(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    assert image_problem(tmp_path / "gone.jpg") == f"{tmp_path / 'gone.jpg'}: file not found"
    assert image_problem(tmp_path / "empty.jpg") == f"{tmp_path / 'empty.jpg'}: empty file"
    assert image_problem(tmp_path / "text.jpg") == f"{tmp_path / 'text.jpg'}: not a decodable image"
    assert not is_image_file(tmp_path / "gone.jpg")


def test_a_huge_declared_size_is_refused_before_decoding(tmp_path):
    from PIL import Image

    path = tmp_path / "big.png"
    Image.new("1", (8000, 6000)).save(path)  # a few KB on disk, 144 MB as BGR
    assert path.stat().st_size < 100_000
    assert image_problem(path) == f"{path}: 8000x6000 pixels is over the limit of 40,000,000"
    assert image_problem(path, max_pixels=50_000_000) is None  # the cap is a parameter
    huge = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(huge)  # 1.2 GB as BGR; past PIL's own bomb guard too
    assert image_problem(huge) == f"{huge}: 20000x20000 pixels is over the limit of 40,000,000"


def test_bytes_already_read_decode_as_the_file_does(jpeg):
    data = jpeg.read_bytes()
    image, error = decode_bytes(data, "upload/a.jpg")
    assert error is None and (image == decode_image(jpeg)[0]).all()
    assert decode_bytes(data[:1500], "upload/a.jpg") == (None, "upload/a.jpg: truncated JPEG (no end-of-image marker)")
