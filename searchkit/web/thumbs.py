"""Thumbnails: made once per (file version, size), cached as JPEG under the library."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from io import BytesIO
from pathlib import Path

from ..imageio import ImageDecodeError, open_image
from ..store import File

log = logging.getLogger(__name__)

THUMB_QUALITY = 82
LOCK_STRIPES = 64


class ThumbnailError(Exception):
    """The original cannot be read (gone, unreadable): the caller answers 404."""


class ThumbnailCache:
    """``get(row)`` returns the bytes of a JPEG thumbnail, right way up (EXIF applied).

    The cache key holds the row's size and mtime, so a changed file gets a new thumbnail.
    Concurrent requests for one image make it once (striped locks). A read-only library still
    answers: thumbnails are then made in memory each time.
    """

    def __init__(self, directory: Path, size: int, max_pixels: int):
        self.directory = Path(directory)
        self.size = size
        self.max_pixels = max_pixels
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self.made = 0  # thumbnails generated (not served from the cache)

    def path_for(self, f: File) -> Path:
        return self.directory / f"{f.id // 1000:04d}" / f"{f.id}-{f.size}-{f.mtime_ns}-{self.size}.jpg"

    def get(self, f: File) -> bytes:
        path = self.path_for(f)
        try:
            return path.read_bytes()
        except OSError:
            pass
        with self._locks[f.id % LOCK_STRIPES]:
            try:
                return path.read_bytes()
            except OSError:
                pass
            data = make_thumbnail(Path(f.path), self.size, self.max_pixels)
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


def make_thumbnail(path: Path, size: int, max_pixels: int) -> bytes:
    """JPEG bytes of ``path`` scaled to fit ``size`` x ``size`` (orientation applied)."""
    try:
        im, _ = open_image(path, max_pixels=max_pixels, draft_side=size)
    except ImageDecodeError as e:
        raise ThumbnailError(str(e)) from None
    im.thumbnail((size, size))
    buf = BytesIO()
    im.save(buf, "JPEG", quality=THUMB_QUALITY, optimize=True)
    return buf.getvalue()
