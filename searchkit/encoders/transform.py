"""Torch-free encoder helpers: eval-time image preprocessing and L2 normalisation (the ONNX query
path uses them without importing torch).

Preprocessing never allocates more than a small multiple of the model's input size, whatever
the source's shape: a 1x65535 image must not become a 224x14.7M intermediate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ImageTransform:
    """Eval-time image preprocessing as plain data: resize shortest side, centre crop, normalise."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = Image.BICUBIC
    crop: bool = True

    def __call__(self, image: Image.Image) -> np.ndarray:
        image = image.convert("RGB")
        if self.crop:
            image = resize_centre_crop(image, self.size, self.resample)
        else:
            image = image.resize((self.size, self.size), self.resample)
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))


def resize_centre_crop(image: Image.Image, size: int, resample: int) -> Image.Image:
    """Resize the shortest side to ``size`` and centre-crop a square, resampling only the region
    the crop keeps: no intermediate is larger than ``size`` x the source's shorter side.

    Two one-dimensional passes, each over just the rows or columns it needs; the pixels equal
    the plain resize-then-crop up to the rounding of the 8-bit intermediate (a level or two).
    """
    w, h = image.size
    x0, y0, x1, y1 = centre_crop_box(w, h, size)
    margin = math.ceil(RESAMPLE_MARGIN * max(1.0, (y1 - y0) / size))
    top, bottom = max(0, math.floor(y0) - margin), min(h, math.ceil(y1) + margin)
    rows = image if (top, bottom) == (0, h) else image.crop((0, top, w, bottom))
    rows = rows.resize((size, bottom - top), resample, box=(x0, 0, x1, bottom - top))
    return rows.resize((size, size), resample, box=(0, y0 - top, size, y1 - top))


def centre_crop_box(w: int, h: int, size: int) -> tuple[float, float, float, float]:
    """The source region (left, top, right, bottom) that "resize the shortest side to ``size``,
    then centre-crop ``size`` x ``size``" keeps, with the same rounding as doing it in two steps.
    Resampling just this box gives the same pixels without the full-size intermediate."""
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    sx, sy = w / nw, h / nh
    return left * sx, top * sy, (left + size) * sx, (top + size) * sy


RESAMPLE_MARGIN = 8  # output pixels of context kept around the crop (> any Pillow filter's reach)
MAX_ASPECT_RATIO = 8  # longer side / shorter side that third-party preprocessing may receive


def limit_aspect(image: Image.Image, max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Centre-crop the longer side to ``max_ratio`` times the shorter one.

    For preprocessing we do not control (a transformers image processor), so that resizing the
    shortest side to the model's size cannot make the other side unbounded. A "resize shortest
    side + centre crop" pipeline keeps the centre square, which this leaves intact; an image that
    is resized to a square without cropping is distorted beyond use at such ratios anyway.
    """
    w, h = image.size
    short = min(w, h)
    limit = max(1, int(short * max_ratio))
    if max(w, h) <= limit:
        return image
    if w > h:
        left = (w - limit) // 2
        return image.crop((left, 0, left + limit, h))
    top = (h - limit) // 2
    return image.crop((0, top, w, top + limit))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
