"""What the library stores of a file on disk: its path as text, its mtime as a 64-bit integer and
its content hash.

A POSIX file name is bytes. Python reads a name that is not valid UTF-8 with lone surrogates
(``surrogateescape``), which SQLite cannot store; such a file is recorded as skipped under
:func:`text_path` (its invalid bytes written ``\\xNN``, as ``ls -b`` shows them), with
:data:`NOT_UTF8_REASON`. A file dated after 2262 or before 1678 has an mtime in nanoseconds that
does not fit SQLite's integer; it is stored clamped (:func:`storable_mtime_ns`), and whoever
compares a file on disk with its row compares the clamped values.
"""

from __future__ import annotations

import hashlib
import os

MTIME_NS_MIN = -(2 ** 63)      # SQLite INTEGER (int64): 1677-09-21 ...
MTIME_NS_MAX = 2 ** 63 - 1     # ... 2262-04-11
NOT_UTF8_REASON = "file name is not valid UTF-8: rename it"
CONTENT_HASH_BYTES = 16        # blake2b digest size of ``files.content_hash`` (32 hex digits)


def content_hasher():
    """A hash object for a file's content, as stored in ``files.content_hash`` (moves and
    duplicates are found by it; the server checks a file still is the one indexed)."""
    return hashlib.blake2b(digest_size=CONTENT_HASH_BYTES)


def content_hash(data: bytes) -> str:
    h = content_hasher()
    h.update(data)
    return h.hexdigest()


def storable_mtime_ns(mtime_ns: int) -> int:
    """``st_mtime_ns`` as stored: clamped to the int64 range (the same file always maps to the
    same value, so an unchanged file stays unchanged)."""
    return min(MTIME_NS_MAX, max(MTIME_NS_MIN, mtime_ns))


def is_text_path(path: str) -> bool:
    """Whether ``path`` (as Python read it from the file system) is valid UTF-8 text."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_path(path: str) -> str:
    """``path`` itself when it is valid UTF-8; else its bytes with each invalid one as ``\\xNN``
    (storable, printable, and what ``ls -b`` shows)."""
    if is_text_path(path):
        return path
    return os.fsencode(path).decode("utf-8", "backslashreplace")
