"""Training views of an image, in PIL + numpy (no torchvision).

Every random choice comes from a ``numpy.random.Generator`` the caller passes in; the trainer
derives it from (seed, epoch, item), so a resumed run draws exactly the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps


@dataclass(frozen=True)
class AugmentConfig:
    """Each augmentation is off when its probability / strength is 0."""

    crop_scale: tuple[float, float] = (0.6, 1.0)   # random resized crop area fraction; (1, 1) off
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: float = 0.2          # brightness / contrast / saturation strength
    hue: float = 0.0             # hue shift as a fraction of the colour wheel
    grayscale_p: float = 0.05
    blur_p: float = 0.1
    blur_radius: tuple[float, float] = (0.1, 1.5)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(crop_scale=(1.0, 1.0), flip_p=0.0, jitter=0.0, hue=0.0, grayscale_p=0.0,
                   blur_p=0.0)

    @property
    def enabled(self) -> bool:
        return self != AugmentConfig.off()


def random_resized_crop_box(w: int, h: int, scale: tuple[float, float],
                            ratio: tuple[float, float], rng: np.random.Generator
                            ) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a crop with random area and aspect ratio (torchvision's)."""
    area = w * h
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_r))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return left, top, left + cw, top + ch
    side = min(w, h)  # fallback: centre square
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def _jitter(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    ops = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
    for k in rng.permutation(len(ops)):
        image = ops[k](image).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return image


def _hue(image: Image.Image, shift: float) -> Image.Image:
    h, s, v = image.convert("HSV").split()
    h = h.point(lambda x: (x + int(shift * 255)) % 256)
    return Image.merge("HSV", (h, s, v)).convert("RGB")


def augment(image: Image.Image, size: int, cfg: AugmentConfig,
            rng: np.random.Generator) -> Image.Image:
    """One random training view of ``image`` as a ``size`` x ``size`` RGB image."""
    image = image.convert("RGB")
    if cfg.crop_scale != (1.0, 1.0):
        box = random_resized_crop_box(*image.size, cfg.crop_scale, cfg.crop_ratio, rng)
        image = image.resize((size, size), Image.BICUBIC, box=box)
    else:
        image = ImageOps.fit(image, (size, size), Image.BICUBIC)
    if rng.random() < cfg.flip_p:
        image = ImageOps.mirror(image)
    if cfg.jitter > 0:
        image = _jitter(image, cfg.jitter, rng)
    if cfg.hue > 0:
        image = _hue(image, float(rng.uniform(-cfg.hue, cfg.hue)))
    if rng.random() < cfg.grayscale_p:
        image = ImageOps.grayscale(image).convert("RGB")
    if rng.random() < cfg.blur_p:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*cfg.blur_radius))))
    return image


def to_array(image: Image.Image, mean, std) -> np.ndarray:
    """RGB image -> normalised CHW float32."""
    arr = np.asarray(image, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))
