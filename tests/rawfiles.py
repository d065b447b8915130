"""Camera files for tests, written byte by byte: a minimal DNG (what LibRaw reads: an IFD0
holding a JPEG preview and the camera's tags, one sub-IFD holding an 8-bit RGGB colour filter
array) and the phone formats through Pillow's plugins."""

from __future__ import annotations

import io
import struct

from PIL import Image

BYTE, ASCII, SHORT, LONG, SRATIONAL = 1, 2, 3, 4, 10
ITEM_BYTES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, SRATIONAL: 8}
GREEN = (30, 200, 30)   # the top-left corner mark of every picture made here
RED = (200, 30, 30)


def marked_picture(size: tuple[int, int]) -> Image.Image:
    """A red picture with a green square in its top-left corner (shows how it was turned)."""
    im = Image.new("RGB", size, RED)
    im.paste(GREEN, (0, 0, size[0] // 4, size[1] // 4))
    return im


def camera_exif(orientation: int, make="Apple", model="iPhone 15",
                taken="2023:05:06 07:08:09") -> bytes:
    exif = Image.Exif()
    exif[271], exif[272], exif[0x0112] = make, model, orientation
    exif.get_ifd(0x8769)[36867] = taken
    return exif.tobytes()


def phone_file(fmt: str, orientation: int = 6) -> bytes:
    """A 64x32 HEIF or AVIF (the codec must be loaded) with camera EXIF."""
    buf = io.BytesIO()
    marked_picture((64, 32)).save(buf, fmt, exif=camera_exif(orientation), quality=90)
    return buf.getvalue()


def _value_bytes(kind: int, values) -> bytes:
    if kind == ASCII:
        return values.encode() + b"\0"
    if kind == BYTE:
        return bytes(values)
    if kind == SRATIONAL:
        return b"".join(struct.pack("<ii", n, d) for n, d in values)
    return struct.pack(f"<{len(values)}{'H' if kind == SHORT else 'I'}", *values)


def _ifd(entries: list[tuple[int, int, object]], at: int) -> bytes:
    """One little-endian IFD placed at offset ``at``, its long values right after it."""
    entries = sorted(entries)
    extra_at = at + 2 + 12 * len(entries) + 4
    table, extra = b"", b""
    for tag, kind, values in entries:
        data = _value_bytes(kind, values)
        count = len(data) // ITEM_BYTES[kind]
        if len(data) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, kind, count, extra_at + len(extra))
            extra += data + b"\0" * (len(data) % 2)
    return struct.pack("<H", len(entries)) + table + struct.pack("<I", 0) + extra


def tiff_raw(raw_size=(64, 48), preview_size=(320, 240), orientation: int = 6,
             dng: bool = True, make: str = "Canon", model: str = "EOS R5") -> bytes:
    """A camera RAW in a TIFF structure: a DNG, or (``dng=False``) a maker's TIFF RAW
    (no DNG tags, sensor data in a sub-IFD, as NEF or ARW)."""
    w, h = raw_size
    cfa = bytes([200, 60, 60, 30][(y % 2) * 2 + x % 2] for y in range(h) for x in range(w))
    buf = io.BytesIO()
    marked_picture(preview_size).save(buf, "JPEG", quality=95)
    jpeg = buf.getvalue()
    jpeg_at = 8
    cfa_at = jpeg_at + len(jpeg) + len(jpeg) % 2
    ifd0_at = cfa_at + len(cfa) + len(cfa) % 2
    pw, ph = preview_size
    raw_entries = [
        (254, LONG, [0]), (256, LONG, [w]), (257, LONG, [h]), (258, SHORT, [8]),
        (259, SHORT, [1]), (262, SHORT, [32803]), (273, LONG, [cfa_at]), (277, SHORT, [1]),
        (278, LONG, [h]), (279, LONG, [len(cfa)]), (33421, SHORT, [2, 2]),
        (33422, BYTE, [0, 1, 1, 2]), (50717, LONG, [255]),
    ]

    def ifd0(sub_at: int) -> bytes:
        entries = [
            (254, LONG, [1]), (256, LONG, [pw]), (257, LONG, [ph]), (258, SHORT, [8, 8, 8]),
            (259, SHORT, [7]), (262, SHORT, [6]), (273, LONG, [jpeg_at]), (277, SHORT, [3]),
            (278, LONG, [ph]), (279, LONG, [len(jpeg)]), (271, ASCII, make),
            (272, ASCII, model), (274, SHORT, [orientation]),
            (306, ASCII, "2022:03:04 05:06:07"), (330, LONG, [sub_at]),
        ]
        if dng:
            entries += [(50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 1, 0, 0]),
                        (50708, ASCII, f"{make} {model}"), (50778, SHORT, [21]),
                        (50721, SRATIONAL, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1),
                                            (0, 1), (0, 1), (1, 1)])]
        return _ifd(entries, ifd0_at)

    size0 = len(ifd0(0))
    sub_at = ifd0_at + size0 + size0 % 2
    first = ifd0(sub_at)
    return b"".join([b"II*\x00", struct.pack("<I", ifd0_at), jpeg, b"\0" * (len(jpeg) % 2),
                     cfa, b"\0" * (len(cfa) % 2), first, b"\0" * (len(first) % 2),
                     _ifd(raw_entries, sub_at)])
