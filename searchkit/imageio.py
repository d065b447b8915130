"""Safe image decoding: sniff content, guard the pixel count, apply EXIF orientation, read
metadata. Pure functions, safe to run in worker threads.

Formats come from their content, never their name. JPEG, PNG, WebP, GIF, BMP and TIFF decode
through Pillow; HEIC/HEIF (``pillow-heif``), AVIF (Pillow >= 11.3) and camera RAW (``rawpy``,
the embedded JPEG preview) need an optional extra, loaded the first time such a file is met
(never at import), and without it the file is refused with the extra to install
(:class:`MissingCodecError`).
"""

from __future__ import annotations

import io
import logging
import struct
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Callable

from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

MAX_PIXELS = 100_000_000          # a larger image is skipped (decompression-bomb guard)
DRAFT_MIN_SIDE = 448              # JPEG DCT-scaling keeps at least this many pixels a side
MIN_PREVIEW_SIDE = 224            # a RAW preview smaller than this: develop the RAW instead
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".heics", ".heifs", ".hif"})
AVIF_EXTENSIONS = frozenset({".avif", ".avifs"})
RAW_EXTENSIONS = frozenset({".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2",
                            ".dng", ".orf", ".rw2", ".raf", ".pef", ".srw", ".erf", ".3fr",
                            ".iiq", ".mos", ".mef", ".mrw", ".x3f", ".rwl", ".kdc", ".dcr"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib",
                              ".tif", ".tiff", ".jfif"}) | HEIF_EXTENSIONS | AVIF_EXTENSIONS \
    | RAW_EXTENSIONS

# Camera RAW formats (the name stored for a file): content decides, as for the others.
TIFF_RAW_BY_MAKER = {"NIKON": "NEF", "SONY": "ARW", "PENTAX": "PEF", "RICOH": "PEF",
                     "SAMSUNG": "SRW", "HASSELBLAD": "3FR", "PHASE ONE": "IIQ", "LEAF": "MOS",
                     "MAMIYA": "MEF", "SEIKO EPSON": "ERF", "EPSON": "ERF", "KODAK": "DCR"}
TIFF_RAW_FORMATS = frozenset(TIFF_RAW_BY_MAKER.values()) | {"DNG", "RAW"}  # TIFF magic
RAW_FORMATS = TIFF_RAW_FORMATS | {"CR2", "CR3", "CRW", "RAF", "ORF", "RW2", "X3F", "MRW"}
PILLOW_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF", "AVIF"})
SUPPORTED_FORMATS = PILLOW_FORMATS | RAW_FORMATS
DRAFT_FORMATS = frozenset({"JPEG", "MPO", "HEIF"})  # decode at a reduced scale / a thumbnail

# Magic numbers of the formats we take (content decides, not the file name).
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"), (b"BM", "BMP"), (b"FUJIFILMCCD-RAW", "RAF"), (b"IIRO", "ORF"),
    (b"IIRS", "ORF"), (b"MMOR", "ORF"), (b"IIU\x00", "RW2"), (b"FOVb", "X3F"),
    (b"\x00MRM", "MRW"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)
# ISO-BMFF (HEIF family): the ftyp box's brands, bytes 8..12 (major) and 16.. (compatible).
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm",
                         b"hevs"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIF_CONTAINER_BRANDS = frozenset({b"mif1", b"msf1"})  # still images of either codec
CR3_BRAND = b"crx "
SNIFF_BYTES = 32
# A stored format -> what its file's first bytes announce (sniff), where they differ.
ANNOUNCED_AS = {"MPO": "JPEG", **dict.fromkeys(TIFF_RAW_FORMATS, "TIFF")}

EXIF_IFD = 0x8769
TAG_MAKE, TAG_MODEL, TAG_DATETIME, TAG_DATETIME_ORIGINAL = 271, 272, 306, 36867
TAG_ORIENTATION = 0x0112
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
TAG_PHOTOMETRIC, TAG_SUB_IFDS, TAG_DNG_VERSION = 262, 330, 50706
RAW_PHOTOMETRIC = frozenset({32803, 34892})   # colour filter array, linear raw
MAX_TIFF_IFDS, MAX_TIFF_TAGS = 32, 1000
# LibRaw's flip -> the turn that shows the image upright (it never mirrors camera files).
RAW_FLIP_TURNS = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90,
                  6: Image.Transpose.ROTATE_270}


class ImageDecodeError(Exception):
    """Why a file is not indexed (the message is the reason stored in the library)."""


class MissingCodecError(ImageDecodeError):
    """An image in a format whose optional decoder is not installed; names the extra."""

    def __init__(self, message: str, extra: str):
        super().__init__(message)
        self.extra = extra


@dataclass(frozen=True)
class ImageMeta:
    width: int
    height: int
    format: str
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None


# ---- recognising content ---------------------------------------------------------------------
def sniff(head: bytes) -> str | None:
    """The image format that a file's first bytes announce, or None.

    A TIFF-structured camera RAW (DNG, NEF, ARW, ...) announces TIFF here; :func:`detect`,
    given the whole file, tells it apart.
    """
    if head[:4] == b"II*\x00" and head[8:10] == b"CR":
        return "CR2"
    if head[:2] == b"II" and head[6:14] == b"HEAPCCDR":
        return "CRW"
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _ftyp_format(head)
    return None


def _ftyp_format(head: bytes) -> str | None:
    """HEIF, AVIF or CR3 from an ISO-BMFF ftyp box: the major brand, then the compatible ones
    (``mif1``/``msf1`` only say "HEIF container", with either codec inside)."""
    major = head[8:12]
    if major == CR3_BRAND:
        return "CR3"
    box_end = min(len(head), int.from_bytes(head[:4], "big"))
    brands = [major] + [head[i:i + 4] for i in range(16, box_end - 3, 4)]
    for brand in brands:
        if brand in AVIF_BRANDS:
            return "AVIF"
        if brand in HEIF_BRANDS:
            return "HEIF"
    return "HEIF" if major in HEIF_CONTAINER_BRANDS else None


def detect(data: bytes) -> str | None:
    """The format of a whole file's content: :func:`sniff`, with TIFF-structured RAWs told
    apart from plain TIFFs by their image data (a colour filter array or linear raw in some
    IFD) or a DNG version tag."""
    fmt = sniff(data[:SNIFF_BYTES])
    if fmt == "TIFF":
        return _tiff_raw_format(data) or "TIFF"
    return fmt


def announces(fmt: str, head: bytes) -> bool:
    """Whether a file's first bytes are those of the stored format ``fmt``."""
    found = sniff(head)
    return found is not None and found == ANNOUNCED_AS.get(fmt, fmt)


def looks_like_image(path: Path, head: bytes) -> bool:
    """Worth trying: announced by content, or named like an image (then it must decode)."""
    return sniff(head) is not None or path.suffix.lower() in IMAGE_EXTENSIONS


def _tiff_raw_format(data: bytes) -> str | None:
    """DNG, the maker's RAW name (NEF, ARW, ...) or RAW for a TIFF that holds sensor data;
    None for a plain TIFF. Walks IFD0, its chain and sub-IFDs, bounded, tolerating junk."""
    order = "<" if data[:2] == b"II" else ">"

    def u(fmt: str, at: int) -> int | None:
        size = struct.calcsize(fmt)
        return struct.unpack_from(order + fmt, data, at)[0] if 0 <= at <= len(data) - size \
            else None

    todo, seen, make, sensor = [u("I", 4)], set(), None, False
    while todo and len(seen) < MAX_TIFF_IFDS:
        at = todo.pop()
        if not at or at in seen or u("H", at) is None:
            continue
        seen.add(at)
        count = min(u("H", at) or 0, MAX_TIFF_TAGS)
        for entry in range(at + 2, at + 2 + 12 * count, 12):
            tag, kind, n = u("H", entry), u("H", entry + 2), u("I", entry + 4)
            if tag is None or kind is None or n is None:
                break
            if tag == TAG_DNG_VERSION:
                return "DNG"
            if tag == TAG_PHOTOMETRIC:
                sensor |= (u("H", entry + 8) if kind == 3 else u("I", entry + 8)) \
                    in RAW_PHOTOMETRIC
            elif tag == TAG_SUB_IFDS and kind in (4, 13):
                first = entry + 8 if n == 1 else u("I", entry + 8)
                todo.extend(u("I", first + 4 * i) for i in range(min(n, MAX_TIFF_IFDS))
                            if first is not None)
            elif tag == TAG_MAKE and kind == 2 and make is None:
                where = entry + 8 if n <= 4 else u("I", entry + 8)
                make = data[where:where + n] if where is not None else b""
        todo.append(u("I", at + 2 + 12 * count))
    if not sensor:
        return None
    maker = (make or b"").split(b"\x00")[0].decode("latin-1").strip().upper()
    return next((f for m, f in TIFF_RAW_BY_MAKER.items() if maker.startswith(m)), "RAW")


# ---- optional decoders, loaded on first use --------------------------------------------------
def _load_heif() -> object:
    import pillow_heif
    pillow_heif.register_heif_opener()
    return pillow_heif


def _load_avif() -> object:
    from PIL import features
    if features.check("avif"):     # Pillow >= 11.3 wheels
        return features
    import pillow_avif             # pillow-avif-plugin registers itself on import
    return pillow_avif


def _load_raw() -> object:
    import rawpy
    return rawpy


@dataclass(frozen=True)
class Codec:
    label: str                     # what a user calls these files
    extra: str                     # pip install 'searchkit[extra]'
    load: Callable[[], object]     # imports (and registers) it; ImportError when absent

    @property
    def hint(self) -> str:
        return f"install searchkit[{self.extra}] to read it"

    def missing(self, fmt: str) -> MissingCodecError:
        label = self.label if fmt in ("HEIF", "AVIF") else f"{self.label} ({fmt})"
        return MissingCodecError(f"{label} image: {self.hint}", self.extra)


HEIF_CODEC = Codec("HEIC/HEIF", "heif", _load_heif)
AVIF_CODEC = Codec("AVIF", "avif", _load_avif)
RAW_CODEC = Codec("camera RAW", "raw", _load_raw)
CODECS = {"HEIF": HEIF_CODEC, "AVIF": AVIF_CODEC, **dict.fromkeys(RAW_FORMATS, RAW_CODEC)}
_loaded: dict[str, object] = {}    # extra -> its loaded module (successes only)
_load_lock = threading.Lock()


def require_codec(fmt: str | None):
    """Load the optional decoder that ``fmt`` needs (once) and return its module; None for a
    format Pillow reads alone. Raises :class:`MissingCodecError` naming the extra."""
    codec = CODECS.get(fmt or "")
    return None if codec is None else _load(codec, fmt)


def codec_installed_since(reason: str | None) -> bool:
    """Whether a file skipped for a missing extra (its stored ``reason``) can be read now, the
    extra being installed since: worth decoding again although the file did not change."""
    codec = next((c for c in (HEIF_CODEC, AVIF_CODEC, RAW_CODEC) if reason and c.hint in reason),
                 None)
    if codec is None:
        return False
    try:
        _load(codec, codec.label)
    except MissingCodecError:
        return False
    return True


def _load(codec: Codec, fmt: str):
    with _load_lock:
        if codec.extra not in _loaded:
            try:
                _loaded[codec.extra] = codec.load()
            except ImportError as e:
                log.debug("no decoder for %s: %s", fmt, e)
                raise codec.missing(fmt) from None
            log.debug("loaded the %s decoder", codec.extra)
        return _loaded[codec.extra]


# ---- decoding --------------------------------------------------------------------------------
def open_image(source: str | Path | bytes | BinaryIO, max_pixels: int = MAX_PIXELS,
               draft_side: int | None = DRAFT_MIN_SIDE) -> tuple[Image.Image, ImageMeta]:
    """Decode an image fully into RGB (first frame; EXIF orientation applied) and its metadata.

    ``source`` is the file's bytes, its path, or an open binary file. Raises
    :class:`ImageDecodeError` with a short reason for anything that is not a usable image
    (:class:`MissingCodecError` when its format's optional extra is not installed).
    """
    try:
        data = _read(source)
        if not data:
            raise ImageDecodeError("empty file")
        fmt = detect(data)
        codec = require_codec(fmt)
        if fmt in RAW_FORMATS:
            return _open_raw(codec, data, fmt, max_pixels, draft_side)
        return _open_pillow(data, max_pixels, draft_side)
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
        raise ImageDecodeError(f"cannot decode: {_first_line(e)}") from None


def _read(source: str | Path | bytes | BinaryIO) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (str, Path)):
        return Path(source).read_bytes()
    return source.read()


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _open_pillow(data: bytes, max_pixels: int, draft_side: int | None,
                 orient: bool = True) -> tuple[Image.Image, ImageMeta]:
    """Pillow's decode: ``orient`` applies the EXIF orientation (a RAW's preview takes the
    RAW's instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))
        fmt = im.format or "?"
        if fmt not in PILLOW_FORMATS:
            raise ImageDecodeError(f"unsupported image format {fmt}")
        w, h = im.size
        _check_pixels(w, h, max_pixels)
        taken, make, model, orientation = _exif_meta(im)
        if draft_side and fmt in DRAFT_FORMATS:
            im.draft("RGB", (draft_side, draft_side))
        im.seek(0)
        im.load()
        if orient:
            im = ImageOps.exif_transpose(im)
        im = _to_rgb(im)
    if orient and orientation in SWAPPING_ORIENTATIONS:
        w, h = h, w
    return im, ImageMeta(w, h, fmt, taken, make, model)


def _check_pixels(w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageDecodeError(f"image too large ({w}x{h} pixels, limit {max_pixels:,})")


def _open_raw(rawpy, data: bytes, fmt: str, max_pixels: int, draft_side: int | None
              ) -> tuple[Image.Image, ImageMeta]:
    """A camera RAW through its embedded preview (fast), turned by the RAW's flip; developed
    at half size when it has no usable preview. Dates and camera as for JPEG."""
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            _check_pixels(sizes.width, sizes.height, max_pixels)
            im, preview_meta = _raw_preview(rawpy, raw, max_pixels, draft_side)
            if im is None:   # developing applies the flip itself
                im = Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True,
                                                     output_bps=8))
            elif sizes.flip in RAW_FLIP_TURNS:
                im = im.transpose(RAW_FLIP_TURNS[sizes.flip])
            stamp = _raw_timestamp(raw)
    except rawpy.LibRawError as e:  # LibRaw's message comes as a bytes repr: b'...'
        reason = _first_line(e).removeprefix("b'").removesuffix("'")
        raise ImageDecodeError(f"cannot decode {fmt}: {reason}") from None
    w, h = (sizes.height, sizes.width) if sizes.flip in (5, 6) else (sizes.width, sizes.height)
    taken, make, model = _first_known(preview_meta, _tiff_header_meta(data, fmt))
    return _to_rgb(im), ImageMeta(w, h, fmt, taken or stamp, make, model)


def _raw_preview(rawpy, raw, max_pixels: int, draft_side: int | None
                 ) -> tuple[Image.Image | None, ImageMeta | None]:
    """The RAW's embedded preview unturned, with its own EXIF; (None, None) when it has none
    or it is too small to stand for the picture."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None, None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            im, meta = _open_pillow(thumb.data, max_pixels, draft_side, orient=False)
        except (ImageDecodeError, UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None, None
    else:
        im, meta = Image.fromarray(thumb.data), None
    return (im, meta) if min(im.size) >= MIN_PREVIEW_SIDE else (None, None)


def _raw_timestamp(raw) -> datetime | None:
    """LibRaw's capture time (camera-local, as EXIF dates), None when unset."""
    try:
        stamp = raw.other.timestamp     # rawpy >= 0.24
    except (AttributeError, OSError, OverflowError, ValueError):
        return None
    return stamp.replace(tzinfo=None) if stamp and stamp.year > 1970 else None


def _tiff_header_meta(data: bytes, fmt: str) -> ImageMeta | None:
    """Dates and camera from a TIFF-structured RAW's own IFDs (Pillow reads tags, no pixels)."""
    if sniff(data[:SNIFF_BYTES]) not in ("TIFF", "CR2"):
        return None
    try:
        with Image.open(io.BytesIO(data), formats=["TIFF"]) as im:
            taken, make, model, _ = _exif_meta(im)
    except Exception:  # any oddity of a RAW's TIFF costs only the metadata
        return None
    return ImageMeta(0, 0, fmt, taken, make, model)


def _first_known(*metas: ImageMeta | None) -> tuple[datetime | None, str | None, str | None]:
    """(taken_at, camera_make, camera_model): each the first one known."""
    found = [m for m in metas if m is not None]
    return (next((m.taken_at for m in found if m.taken_at), None),
            next((m.camera_make for m in found if m.camera_make), None),
            next((m.camera_model for m in found if m.camera_model), None))


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
