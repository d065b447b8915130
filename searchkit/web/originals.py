"""Originals on disk, used only while they are still the file that was indexed.

A row names a path, and the path can change after indexing: another file, a hard link, or a
symlink to anything the server can read (``/etc/passwd``). So an original is opened once and
every check is made on that open descriptor, never on the path again (no check-then-use race):
it is a regular file (not a FIFO or a device: the open does not block), its size and mtime are
the row's, its first bytes announce the row's format, and, before its content is used, its
content hash is the row's. Whatever fails is :class:`OriginalUnavailable` (the API's 404).

Symlinks are followed, as the indexer follows them (``indexer/scan.py``): an image indexed
through a link is legitimate, and its row holds the size, mtime and hash of the file the link
led to. A link swapped in later leads to a file whose descriptor fails these checks.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..fsinfo import content_hasher, storable_mtime_ns
from ..imageio import SNIFF_BYTES, announces
from ..store import File

CHUNK_BYTES = 1024 * 1024
OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | \
    getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class OriginalUnavailable(Exception):
    """The row's file cannot be used: gone, unreadable, or no longer what was indexed."""


def changed(row: File) -> OriginalUnavailable:
    return OriginalUnavailable(f"image {row.id} changed since it was indexed; re-index its "
                               "folder (searchkit index)")


def unreadable(row: File, e: OSError) -> OriginalUnavailable:
    return OriginalUnavailable(f"image {row.id} cannot be read "
                               f"({(e.strerror or type(e).__name__).lower()})")


@dataclass
class Original:
    """An open original that matched its row. Close it (or use ``with``)."""
    row: File
    file: BinaryIO

    @property
    def size(self) -> int:
        return self.row.size

    def verify_content(self) -> None:
        """Hash the whole file (as the indexer did) and compare; leaves it at offset 0."""
        if self.row.content_hash is None:
            return
        h = content_hasher()
        try:
            for chunk in self.chunks():
                h.update(chunk)
            grew = bool(self.file.read(1))
            self.file.seek(0)
        except OSError as e:
            raise unreadable(self.row, e) from None
        if grew or h.hexdigest() != self.row.content_hash:
            raise changed(self.row)

    def chunks(self) -> Iterator[bytes]:
        """The file from its start, at most the row's size (what a response announced)."""
        self.file.seek(0)
        left = self.size
        while left > 0 and (chunk := self.file.read(min(CHUNK_BYTES, left))):
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Original":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_original(row: File) -> Original:
    """Open ``row``'s file and check it on the descriptor: a regular file of the row's size,
    mtime and format. Content is checked separately (:meth:`Original.verify_content`)."""
    try:
        fd = os.open(row.path, OPEN_FLAGS)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            raise OriginalUnavailable(f"image {row.id} is no longer on disk") from None
        raise unreadable(row, e) from None
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != row.size or \
                storable_mtime_ns(st.st_mtime_ns) != row.mtime_ns:
            raise changed(row)
        if not announces(row.format or "", f.read(SNIFF_BYTES)):
            raise changed(row)
        f.seek(0)
    except OSError as e:  # EIO and the like, after the open
        f.close()
        raise unreadable(row, e) from None
    except BaseException:
        f.close()
        raise
    return Original(row, f)
