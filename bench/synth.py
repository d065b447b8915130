"""Synthetic bench data made from the shared images: near-duplicates and images that carry text.

Used by bench/bench_dupes.py (``NEAR_DUP_TRANSFORMS``) and bench/bench_ocr.py
(``make_text_images``). Everything is deterministic for a given seed; nothing is written to disk
unless a caller asks (``variant_bytes`` returns encoded file bytes, as a user's copy would be).

Only the shared ``align`` train/validation images are used (GUIDE.md: never the evaluation-only
sets).
"""

from __future__ import annotations

import colorsys
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont

ALIGN = Path("/work/shared/datasets/align")
SPLITS = ("validation", "train")
FONT_DIRS = (Path("/usr/share/fonts/truetype"),)
WATERMARK_FONT = "DejaVuSans.ttf"
LOSSLESS = "PNG"  # a transform other than JPEG is saved losslessly, so it is measured alone


# ---------------------------------------------------------------------------------------------
# the shared images

@dataclass(frozen=True)
class SharedImage:
    path: Path
    source: str          # openclipart | fluent3d | noto
    text: str            # caption (title / CLDR name)
    category: str        # openclipart / noto category, "" for fluent3d
    keywords: tuple[str, ...]

    @property
    def base_name(self) -> str:
        """The item's name without a variant suffix ("woman: medium skin tone" -> "woman")."""
        return self.text.split(":")[0].strip().lower()


def shared_images(root: Path = ALIGN, splits: tuple[str, ...] = SPLITS) -> list[SharedImage]:
    out = []
    for split in splits:
        folder = root / split
        with open(folder / "metadata.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                out.append(SharedImage(folder / row["file_name"], row.get("source", ""),
                                       row.get("text", ""), row.get("category", "") or "",
                                       tuple(row.get("keywords", ()) or ())))
    return out


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


# ---------------------------------------------------------------------------------------------
# near-duplicates

@dataclass(frozen=True)
class Variant:
    """A transformed copy: the image and how a user's file of it would be encoded."""
    image: Image.Image
    fmt: str = LOSSLESS
    quality: int = 95


Transform = Callable[[Image.Image, np.random.Generator], Variant]


def jpeg(quality: int) -> Transform:
    return lambda im, rng: Variant(im, "JPEG", quality)


def resize(factor: float) -> Transform:
    def f(im: Image.Image, rng: np.random.Generator) -> Variant:
        w, h = im.size
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return Variant(im.resize(size, Image.LANCZOS))
    return f


def crop(fraction: float) -> Transform:
    """Keep (1 - fraction) of the width and of the height, at a random offset."""
    def f(im: Image.Image, rng: np.random.Generator) -> Variant:
        w, h = im.size
        cw, ch = max(1, round(w * (1 - fraction))), max(1, round(h * (1 - fraction)))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return Variant(im.crop((x, y, x + cw, y + ch)))
    return f


def rotate(degrees: float) -> Transform:
    """Rotate by +-degrees (random sign), same canvas, corners filled with the corner colour."""
    def f(im: Image.Image, rng: np.random.Generator) -> Variant:
        sign = 1 if rng.random() < 0.5 else -1
        return Variant(im.rotate(sign * degrees, Image.BICUBIC, expand=False,
                                 fillcolor=im.getpixel((0, 0))))
    return f


def brightness(change: float) -> Transform:
    """Brighter or darker by ``change`` (random sign): on a white background, darker is grey."""
    def f(im: Image.Image, rng: np.random.Generator) -> Variant:
        factor = 1 + change if rng.random() < 0.5 else 1 - change
        return Variant(ImageEnhance.Brightness(im).enhance(factor))
    return f


def contrast(im: Image.Image, rng: np.random.Generator) -> Variant:
    return Variant(ImageEnhance.Contrast(im).enhance(1.4 if rng.random() < 0.5 else 0.7))


def hue(degrees: float) -> Transform:
    """Rotate the hue by +-degrees (random sign)."""
    def f(im: Image.Image, rng: np.random.Generator) -> Variant:
        shift = round((degrees if rng.random() < 0.5 else -degrees) / 360 * 256)
        h, s, v = im.convert("HSV").split()
        h = h.point(lambda x: (x + shift) % 256)
        return Variant(Image.merge("HSV", (h, s, v)).convert("RGB"))
    return f


def overlay_text(height_fraction: float, band: bool) -> Transform:
    """Text over the image: a small corner watermark, or a caption band across the bottom."""
    def f(im: Image.Image, rng: np.random.Generator) -> Variant:
        im = im.copy()
        w, h = im.size
        size = max(8, round(h * height_fraction))
        font = ImageFont.truetype(str(font_path(WATERMARK_FONT)), size)
        text = "SALE 42.50" if band else f"(c) {int(rng.integers(2000, 2026))} photo"
        draw = ImageDraw.Draw(im)
        tw = draw.textlength(text, font=font)
        if band:
            y = h - round(size * 1.4)
            draw.rectangle((0, y, w, h), fill=(0, 0, 0))
            draw.text(((w - tw) / 2, y + size * 0.15), text, font=font, fill=(255, 255, 255))
        else:
            draw.text((w - tw - 3, h - size * 1.3), text, font=font, fill=(90, 90, 90))
        return Variant(im)
    return f


def reupload(im: Image.Image, rng: np.random.Generator) -> Variant:
    """What a messaging app does: half size and JPEG quality 70."""
    return Variant(resize(0.5)(im, rng).image, "JPEG", 70)


NEAR_DUP_TRANSFORMS: dict[str, Transform] = {
    "jpeg_q90": jpeg(90), "jpeg_q70": jpeg(70), "jpeg_q40": jpeg(40), "jpeg_q20": jpeg(20),
    "resize_0.5x": resize(0.5), "resize_0.25x": resize(0.25), "resize_2x": resize(2.0),
    "crop_5%": crop(0.05), "crop_10%": crop(0.10), "crop_15%": crop(0.15),
    "rotate_3": rotate(3), "rotate_6": rotate(6), "rotate_10": rotate(10),
    "brightness_10%": brightness(0.10),
    "brightness_25%": brightness(0.25), "contrast": contrast, "hue_20": hue(20),
    "text_watermark": overlay_text(0.06, band=False), "text_band": overlay_text(0.12, band=True),
    "reupload_0.5x_q70": reupload,
}


def variant_bytes(v: Variant) -> bytes:
    buf = io.BytesIO()
    if v.fmt == "JPEG":
        v.image.save(buf, "JPEG", quality=v.quality)
    else:
        v.image.save(buf, v.fmt)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# images that carry text

@dataclass(frozen=True)
class TextImage:
    image: Image.Image
    words: tuple[str, ...]   # every token rendered, as rendered
    font: str
    size_px: int
    angle: int
    background: str          # "plain" or "image" (one of the shared images, enlarged)


def font_path(name: str) -> Path:
    for d in FONT_DIRS:
        hits = sorted(d.rglob(name))
        if hits:
            return hits[0]
    raise FileNotFoundError(name)


def available_fonts() -> list[Path]:
    """The DejaVu and Liberation faces on the machine (regular, bold, italic, mono, serif)."""
    wanted = re.compile(r"^(DejaVu(Sans|Serif|SansMono|SansCondensed)(-Bold|-Oblique|-Italic)?"
                        r"|Liberation(Sans|Serif|Mono)-(Regular|Bold|Italic))\.ttf$")
    return sorted({p for d in FONT_DIRS for p in d.rglob("*.ttf") if wanted.match(p.name)})


CLDR_SOURCES = ("noto", "fluent3d")


def vocabulary(images: list[SharedImage], min_len: int = 4, max_len: int = 10) -> list[str]:
    """Distinct alphabetic keywords of the given images (the emoji sets' CLDR keywords are
    real, everyday words)."""
    words = {k.lower() for im in images for k in im.keywords
             if k.isascii() and k.isalpha() and min_len <= len(k) <= max_len}
    return sorted(words)


def number_token(rng: np.random.Generator) -> str:
    kind = rng.integers(0, 3)
    if kind == 0:
        return f"{rng.integers(1, 999)}.{rng.integers(0, 100):02d}"      # a price: 42.50
    if kind == 1:
        return str(int(rng.integers(10, 99999)))                          # a number: 1999
    return f"{rng.integers(10, 99)}-{rng.integers(100, 9999)}"            # a code: 42-1170


def styled(word: str, rng: np.random.Generator) -> str:
    case = rng.integers(0, 3)
    return word if case == 0 else word.upper() if case == 1 else word.capitalize()


def luminance(rgb) -> float:
    r, g, b = rgb[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def contrasting_colour(bg_lum: float, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random hue, dark on light backgrounds and light on dark ones."""
    h = rng.random()
    v = rng.uniform(0.0, 0.25) if bg_lum > 128 else rng.uniform(0.85, 1.0)
    s = rng.uniform(0.0, 0.8)
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h, s, v))


def plain_background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    light = rng.random() < 0.7
    h, s = rng.random(), rng.uniform(0, 0.4)
    v = rng.uniform(0.8, 1.0) if light else rng.uniform(0.05, 0.3)
    return Image.new("RGB", size, tuple(round(c * 255) for c in colorsys.hsv_to_rgb(h, s, v)))


def image_background(path: Path, rng: np.random.Generator, width: int) -> Image.Image:
    im = load_rgb(path)
    scale = width / im.width
    return im.resize((width, max(64, round(im.height * scale))), Image.BICUBIC)


def render_line(text: str, font: ImageFont.FreeTypeFont, colour, angle: int,
                box: bool, box_colour) -> Image.Image:
    """One line of text on a transparent layer (optionally on a label box), rotated."""
    left, top, right, bottom = font.getbbox(text)
    pad = max(4, font.size // 3)
    layer = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if box:
        draw.rectangle((0, 0, layer.width, layer.height), fill=(*box_colour, 255))
    draw.text((pad - left, pad - top), text, font=font, fill=(*colour, 255))
    return layer.rotate(angle, Image.BICUBIC, expand=True) if angle else layer


def place_lines(canvas: Image.Image, layers: list[Image.Image],
                rng: np.random.Generator) -> bool:
    """Paste layers at random non-overlapping positions; False when they do not fit."""
    taken: list[tuple[int, int, int, int]] = []
    for layer in layers:
        for _ in range(50):
            if layer.width > canvas.width or layer.height > canvas.height:
                return False
            x = int(rng.integers(0, canvas.width - layer.width + 1))
            y = int(rng.integers(0, canvas.height - layer.height + 1))
            r = (x, y, x + layer.width, y + layer.height)
            if all(r[2] <= t[0] or r[0] >= t[2] or r[3] <= t[1] or r[1] >= t[3] for t in taken):
                taken.append(r)
                canvas.paste(layer, (x, y), layer)
                break
        else:
            return False
    return True


SIZES_PX = (12, 16, 20, 24, 32, 48, 64)
ANGLES = (0, 0, 5, -5, 15, -15)


def make_text_image(i: int, rng: np.random.Generator, fonts: list[Path], vocab: list[str],
                    photos: list[SharedImage]) -> TextImage:
    font_file = fonts[int(rng.integers(0, len(fonts)))]
    size = SIZES_PX[int(rng.integers(0, len(SIZES_PX)))]
    angle = ANGLES[int(rng.integers(0, len(ANGLES)))]
    background = "image" if i % 2 else "plain"
    font = ImageFont.truetype(str(font_file), size)
    while True:
        width = int(rng.integers(320, 801))
        canvas = (image_background(photos[int(rng.integers(0, len(photos)))].path, rng, width)
                  if background == "image" else
                  plain_background(rng, (width, int(rng.integers(240, 601)))))
        lines = [[styled(vocab[int(rng.integers(0, len(vocab)))], rng)
                  if rng.random() < 0.65 else number_token(rng)
                  for _ in range(int(rng.integers(1, 3)))]
                 for _ in range(int(rng.integers(1, 3)))]
        box = background == "image" and rng.random() < 0.5
        bg_lum = luminance(np.asarray(canvas).reshape(-1, 3).mean(axis=0))
        box_colour = plain_background(rng, (1, 1)).getpixel((0, 0))
        colour = contrasting_colour(luminance(box_colour) if box else bg_lum, rng)
        layers = [render_line(" ".join(ln), font, colour, angle, box, box_colour)
                  for ln in lines]
        if place_lines(canvas, layers, rng):
            return TextImage(canvas, tuple(w for ln in lines for w in ln), font_file.name,
                             size, angle, background)


def make_text_images(n: int, seed: int = 0) -> list[TextImage]:
    images = shared_images()
    rng = np.random.default_rng(seed)
    fonts = available_fonts()
    vocab = vocabulary([im for im in images if im.source in CLDR_SOURCES])
    photos = [im for im in images if im.source in ("openclipart", "fluent3d")]
    return [make_text_image(i, rng, fonts, vocab, photos) for i in range(n)]


def normalise_tokens(text: str) -> list[str]:
    """OCR output to lower-case tokens; punctuation trimmed at the ends ("42.50," -> "42.50")."""
    return [t for t in (tok.strip(".,;:!?'\"()[]{}").lower() for tok in text.split()) if t]
