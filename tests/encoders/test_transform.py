"""Eval-time preprocessing: bounded intermediates whatever the image's shape (issue 15, item 1),
and the same pixels as before for ordinary images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from searchkit.encoders.transform import MAX_ASPECT_RATIO, ImageTransform, limit_aspect

SIZE = 224
# A resize may produce at most this many times the model's input pixels (the fix keeps the
# short-side resize of a 1x65535 image at a few rows; before it was 224 x 14.7M).
MAX_RESIZE_FACTOR = MAX_ASPECT_RATIO


class ResizeRecorder:
    """Records the output size of every PIL resize (what each one allocates), and refuses one
    larger than ``limit`` pixels before it is made (a regression must fail, not swap)."""

    def __init__(self, monkeypatch, limit: int):
        self.sizes: list[tuple[int, int]] = []
        real = Image.Image.resize

        def resize(im, size, *args, **kwargs):
            self.sizes.append(tuple(size))
            assert size[0] * size[1] <= limit, f"resize to {size} (limit {limit:,} pixels)"
            return real(im, size, *args, **kwargs)
        monkeypatch.setattr(Image.Image, "resize", resize)


def smooth(w: int, h: int) -> Image.Image:
    """A photo-like test card: gradients and a disc (no per-pixel noise)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    disc = ((x - w / 2) ** 2 + (y - h / 2) ** 2) < (min(w, h) / 3) ** 2
    b = np.where(disc, 230.0, 40.0)
    return Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8))


def resize_then_crop(image: Image.Image, size: int, resample: int) -> np.ndarray:
    """The reference: resize the shortest side to ``size``, then centre-crop (what the transform
    did before it learnt to resample only the kept region)."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255


@pytest.mark.parametrize("shape", [(1, 65535), (65535, 1), (3, 40000)])
def test_tall_thin_image_does_not_blow_up_memory(monkeypatch, shape):
    transform = ImageTransform(SIZE, (0.5,) * 3, (0.5,) * 3)
    image = Image.new("L", shape, 128)
    recorder = ResizeRecorder(monkeypatch, MAX_RESIZE_FACTOR * SIZE * SIZE)
    out = transform(image)
    assert out.shape == (3, SIZE, SIZE) and np.isfinite(out).all()
    assert recorder.sizes  # it did resize, within the limit


@pytest.mark.parametrize("shape", [(640, 480), (480, 640), (1920, 1080), (224, 224), (300, 150),
                                   (100, 75), (37, 60), (4000, 3000)])
@pytest.mark.parametrize("resample", [Image.BICUBIC, Image.BILINEAR])
def test_centre_crop_keeps_the_pixels_of_ordinary_images(shape, resample):
    image = smooth(*shape)
    transform = ImageTransform(SIZE, (0.0,) * 3, (1.0,) * 3, resample=resample)
    got = transform(image).transpose(1, 2, 0)
    want = resize_then_crop(image, SIZE, resample)
    # the same pixels up to the rounding of Pillow's 8-bit intermediate
    assert np.abs(got - want).max() <= 2 / 255 + 1e-6


def test_limit_aspect_keeps_the_centre():
    image = smooth(40, 1000)
    cropped = limit_aspect(image, 4)
    assert cropped.size == (40, 160)
    assert np.array_equal(np.asarray(cropped), np.asarray(image)[420:580])
    assert limit_aspect(smooth(64, 48), 4).size == (64, 48)  # ordinary images are untouched


@pytest.mark.parametrize("shape", [(1, 65535), (65535, 1)])
def test_transformers_processor_gets_a_bounded_image(monkeypatch, tiny_encoder, shape):
    """A hub model preprocesses with transformers' processor, which resizes the shortest side:
    it must not receive an image that would become unbounded."""
    size = tiny_encoder.image_size
    image = Image.new("RGB", shape, (10, 200, 30))
    recorder = ResizeRecorder(monkeypatch, MAX_RESIZE_FACTOR * size * size)
    out = tiny_encoder.preprocess(image)
    assert out.shape == (3, size, size) and np.isfinite(out).all()
    assert recorder.sizes


def test_transformers_processor_output_is_unchanged_for_a_panorama(tiny_encoder):
    """Cropping the long side leaves the processor's centre crop as it was."""
    image = smooth(32 * 20, 32)
    own = tiny_encoder._image_processor(images=image, return_tensors="np")["pixel_values"][0]
    assert np.allclose(tiny_encoder.preprocess(image), own, atol=0.03)  # 2 levels / CLIP std
