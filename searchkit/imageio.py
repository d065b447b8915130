"""Safe image decoding: sniff content, guard the pixel count, apply EXIF orientation, read
metadata. Pure functions, safe to run in worker threads."""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_PIXELS = 100_000_000          # a larger image is skipped (decompression-bomb guard)
DRAFT_MIN_SIDE = 448              # JPEG DCT-scaling keeps at least this many pixels a side
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib",
                              ".tif", ".tiff", ".jfif"})
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO"})

# Magic numbers of the formats we take (content decides, not the file name).
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
SNIFF_BYTES = 16

EXIF_IFD = 0x8769
TAG_MAKE, TAG_MODEL, TAG_DATETIME, TAG_DATETIME_ORIGINAL = 271, 272, 306, 36867
TAG_ORIENTATION = 0x0112
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})


class ImageDecodeError(Exception):
    """Why a file is not indexed (the message is the reason stored in the library)."""


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    format: str
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None


def sniff(head: bytes) -> str | None:
    """The image format that a file's first bytes announce, or None."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def looks_like_image(path: Path, head: bytes) -> bool:
    """Worth trying: announced by content, or named like an image (then it must decode)."""
    return sniff(head) is not None or path.suffix.lower() in IMAGE_EXTENSIONS


def _exif_meta(im: Image.Image) -> tuple[datetime | None, str | None, str | None, int]:
    """(date taken, camera make, camera model, orientation) from EXIF, tolerating junk."""
    try:
        exif = im.getexif()
    except Exception:  # corrupt EXIF must not cost the image
        return None, None, None, 1
    if not exif:
        return None, None, None, 1
    orientation = exif.get(TAG_ORIENTATION, 1)
    try:
        sub = exif.get_ifd(EXIF_IFD)
    except Exception:
        sub = {}
    raw = sub.get(TAG_DATETIME_ORIGINAL) or exif.get(TAG_DATETIME)
    taken = None
    if isinstance(raw, str):
        try:
            taken = datetime.strptime(raw.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
        except ValueError:
            taken = None

    def clean(v) -> str | None:
        return v.strip("\x00 ").strip() or None if isinstance(v, str) else None
    if not isinstance(orientation, int):
        orientation = 1
    return taken, clean(exif.get(TAG_MAKE)), clean(exif.get(TAG_MODEL)), orientation


def open_image(source: str | Path | bytes, max_pixels: int = MAX_PIXELS,
               draft_side: int | None = DRAFT_MIN_SIDE) -> tuple[Image.Image, ImageMeta]:
    """Decode an image fully into RGB (first frame; EXIF orientation applied) and its metadata.

    Raises :class:`ImageDecodeError` with a short reason for anything that is not a usable image.
    """
    data = source if isinstance(source, bytes) else None
    if data is not None and not data:
        raise ImageDecodeError("empty file")
    fp = io.BytesIO(data) if data is not None else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
            fmt = im.format or "?"
            if fmt not in SUPPORTED_FORMATS:
                raise ImageDecodeError(f"unsupported image format {fmt}")
            w, h = im.size
            if w * h > max_pixels:
                raise ImageDecodeError(f"image too large ({w}x{h} pixels, limit {max_pixels:,})")
            taken, make, model, orientation = _exif_meta(im)
            if draft_side and fmt in ("JPEG", "MPO"):
                im.draft("RGB", (draft_side, draft_side))
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except IsADirectoryError:
        raise ImageDecodeError("is a directory") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised content)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageDecodeError(f"image too large ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageDecodeError(f"cannot decode: {msg}") from None
    if orientation in SWAPPING_ORIENTATIONS:
        w, h = h, w
    return im, ImageMeta(w, h, fmt, taken, make, model)


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB with transparency flattened on white; 16-bit and CMYK converted correctly."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L") if im.mode != "I" else \
            im.point(lambda v: v * (1 / 256)).convert("L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    return im.convert("RGB") if im.mode != "RGB" else im

