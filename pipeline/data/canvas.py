"""How an image of any size lands on the model's height x width canvas (params image.fit).

    resize  the image is resized to height x width (Market-1501: its crops already have the
            model's aspect, so nothing is stretched);
    pad     the image is first centred on a white canvas of the model's aspect (pad_x columns
            left and right, or pad_y rows above and below), then resized. DeepFashion's
            256x176 images are the In-shop 256x256 white canvas cut to columns 40..215:
            padding puts them back exactly (pad_x = 40), keypoints shifted by the same 40.

Everything that brings pixels or keypoints to model size goes through here, so images,
heatmaps and keypoints always agree. scored_frame() is the inverse for evaluation: the
canvas region that is the image itself, not padding; aspect_frame() the region a benchmark
scores (evaluate.frame), and canvas_image() what an image file looks like there.
"""
from __future__ import annotations

import numpy as np

from pipeline.core.keypoints import present

FITS = ("resize", "pad")
WHOLE = (0, 1 << 30, 0, 1 << 30)  # a (y0, y1, x0, x1) frame that cuts nothing
PAD_VALUE = 255  # white: the In-shop canvas colour


def check_fit(fit: str) -> str:
    if fit not in FITS:
        raise ValueError(f"image.fit must be one of {list(FITS)}, got {fit!r}")
    return fit


def pads(sizes: np.ndarray, height: int, width: int, fit: str) -> np.ndarray:
    """Per image (pad_x, pad_y) in its own pixels, int64 [N, 2], for sizes [N, 2] (width,
    height): zeros for `resize`, the centring margins of the model's aspect for `pad`."""
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    out = np.zeros(sizes.shape, np.int64)
    if check_fit(fit) == "resize":
        return out
    w, h = sizes[:, 0], sizes[:, 1]
    aspect = width / height
    # Narrower than the canvas: widen to h * aspect; wider: heighten to w / aspect.
    out[:, 0] = np.where(w < h * aspect, np.rint((h * aspect - w) / 2), 0)
    out[:, 1] = np.where(w > h * aspect, np.rint((w / aspect - h) / 2), 0)
    return out


def keypoints_to_canvas(kp: np.ndarray, sizes: np.ndarray, height: int, width: int,
                        fit: str = "resize") -> np.ndarray:
    """[N, 18, >=2] (x, y) pixels of images of sizes [N, 2] (width, height) -> float32
    [N, 18, 2] at height x width; missing joints (-1) stay -1."""
    kp = np.asarray(kp, np.float32)[..., :2]
    sizes = np.asarray(sizes, np.float32).reshape(-1, 2)
    pad = pads(sizes, height, width, fit).astype(np.float32)
    padded = sizes + 2 * pad
    scale = np.array([width, height], np.float32) / np.maximum(padded, 1)
    out = (kp + pad[:, None, :]) * scale[:, None, :]
    out[~present(kp)] = -1.0
    return out


def image_to_canvas(image: np.ndarray, height: int, width: int, fit: str = "resize") -> np.ndarray:
    """uint8 [h, w, C] -> [height, width, C]: padded (fit pad, white) then INTER_AREA resized."""
    import cv2

    pad_x, pad_y = (int(v) for v in pads([[image.shape[1], image.shape[0]]], height, width, fit)[0])
    if pad_x or pad_y:
        image = cv2.copyMakeBorder(image, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT,
                                   value=(PAD_VALUE,) * 3)
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image


def scored_frame(sizes: np.ndarray, height: int, width: int, fit: str = "resize"
                 ) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) at height x width: the canvas region every image of sizes [N, 2]
    covers with its own pixels (the whole canvas for `resize`); DeepFashion's 176-wide
    images on a 256x256 canvas -> (0, 256, 40, 216)."""
    sizes = np.asarray(sizes, np.float64).reshape(-1, 2)
    if len(sizes) == 0 or fit == "resize":
        return 0, height, 0, width
    pad = pads(sizes, height, width, fit).astype(np.float64)
    padded = sizes + 2 * pad
    x0 = int(np.ceil(np.max(pad[:, 0] * width / padded[:, 0])))
    y0 = int(np.ceil(np.max(pad[:, 1] * height / padded[:, 1])))
    return y0, height - y0, x0, width - x0


def aspect_frame(height: int, width: int, frame_hw: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the largest centred region of the height x width canvas with the
    aspect of frame_hw (h, w); the whole canvas for None. DeepFashion's 256x176 frame on the
    256x256 canvas -> (0, 256, 40, 216), what the later papers' images are."""
    if not frame_hw:
        return 0, height, 0, width
    fh, fw = frame_hw
    w, h = min(width, round(height * fw / fh)), min(height, round(width * fh / fw))
    x0, y0 = (width - w) // 2, (height - h) // 2
    return y0, y0 + h, x0, x0 + w


def intersect(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The overlap of two (y0, y1, x0, x1) regions."""
    return max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])


def canvas_image(image: np.ndarray, height: int, width: int, fit: str,
                 frame: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 [h, w, C] -> [y1 - y0, x1 - x0, C]: the image brought onto the canvas as the
    model sees it (image_to_canvas), cut to the scored frame, as a generated image is scored."""
    y0, y1, x0, x1 = frame
    return np.ascontiguousarray(image_to_canvas(image, height, width, fit)[y0:y1, x0:x1])


def cut(images: np.ndarray, frame: tuple[int, int, int, int]) -> np.ndarray:
    """[B, H, W, C] -> [B, y1 - y0, x1 - x0, C], contiguous: the scored frame of a batch."""
    y0, y1, x0, x1 = frame
    return np.ascontiguousarray(np.asarray(images)[:, y0:y1, x0:x1])


def keypoints_in_frame(kp: np.ndarray, frame: tuple[int, int, int, int]) -> np.ndarray:
    """Canvas keypoints [B, 18, 2] (x, y) -> the frame's pixels; missing joints stay -1."""
    kp = np.asarray(kp, np.float32)
    out = kp - np.array([frame[2], frame[0]], np.float32)
    out[(kp < 0).any(-1)] = -1.0
    return out
