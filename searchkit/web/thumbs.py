"""Thumbnails: made once per (file version, size), cached as JPEG under the library."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from contextlib import nullcontext
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from ..imageio import ImageDecodeError, open_image
from ..store import File
from .batching import DecodeSlots
from .originals import open_original

log = logging.getLogger(__name__)

THUMB_QUALITY = 82
LOCK_STRIPES = 64


class ThumbnailError(Exception):
    """The original does not decode: the caller answers 404."""


class ThumbnailCache:
    """``get(row)`` returns the bytes of a JPEG thumbnail, right way up (EXIF applied).

    Only while the original is still the file that was indexed (:mod:`.originals`): checked
    on every request, cached or not, so a file replaced on disk (by a symlink to a secret, say)
    is neither thumbnailed nor stands for its old thumbnail; a new thumbnail is made from the
    descriptor that passed the checks, content hash included. Raises ``OriginalUnavailable``.
    The cache key holds the row's size and mtime. Concurrent requests for one image make it once
    (striped locks), at most ``slots`` decodes run at once. A read-only library still answers:
    thumbnails are then made in memory each time.
    """

    def __init__(self, directory: Path, size: int, max_pixels: int,
                 slots: DecodeSlots | None = None):
        self.directory = Path(directory)
        self.size = size
        self.max_pixels = max_pixels
        self.slots = slots
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self.made = 0  # thumbnails generated (not served from the cache)

    def path_for(self, f: File) -> Path:
        name = f"{f.id}-{f.size}-{f.mtime_ns}-{self.size}.jpg"
        return self.directory / f"{f.id // 1000:04d}" / name

    def get(self, f: File) -> bytes:
        with open_original(f) as original:
            path = self.path_for(f)
            cached = _read(path)
            if cached is not None:
                return cached
            with self._locks[f.id % LOCK_STRIPES]:
                cached = _read(path)
                if cached is not None:
                    return cached
                with self.slots.hold() if self.slots else nullcontext():
                    original.verify_content()
                    data = make_thumbnail(original.file, self.size, self.max_pixels)
                self.made += 1
                self._store(path, data)
                return data

    def _store(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".thumb.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as e:
            log.warning("cannot cache thumbnail %s (%s)", path, e)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def make_thumbnail(source: Path | BinaryIO, size: int, max_pixels: int) -> bytes:
    """JPEG bytes of ``source`` (a path or an open file) scaled to fit ``size`` x ``size``
    (orientation applied; JPEGs decoded at a reduced scale)."""
    try:
        im, _ = open_image(source, max_pixels=max_pixels, draft_side=size)  # type: ignore[arg-type]
    except ImageDecodeError as e:
        raise ThumbnailError(str(e)) from None
    im.thumbnail((size, size))
    buf = BytesIO()
    im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return buf.getvalue()
