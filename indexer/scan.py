"""Walking folders (the reader stage): pure functions over the filesystem, no database.

Every path and mtime this yields can be stored as it is (:mod:`searchkit.fsinfo`): a candidate
whose name is not valid UTF-8 comes as a :class:`ScanProblem` under its printable form, and a
mtime outside the int64 range is clamped.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from searchkit.fsinfo import NOT_UTF8_REASON, is_text_path, storable_mtime_ns, text_path
from searchkit.imageio import SNIFF_BYTES, looks_like_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileStat:
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    """A file or folder that cannot be read; recorded as skipped with this reason."""
    path: str
    reason: str

    @classmethod
    def at(cls, path: str, reason: str) -> ScanProblem:
        """A problem recorded under ``path``'s storable text form."""
        return cls(text_path(path), reason)


def normalize_root(path: str | os.PathLike) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def walk(root: str) -> Iterator[FileStat | ScanProblem]:
    """Every candidate image file under ``root`` (a folder or a single file), recursively.

    Symlinks are followed; each directory is entered once (by device and inode), so symlink
    loops end. Candidates are files whose content or name says image; others are ignored.
    """
    seen_dirs: set[tuple[int, int]] = set()
    try:
        st = os.stat(root)
    except OSError as e:
        yield ScanProblem.at(root, _reason(e))
        return
    if not stat.S_ISDIR(st.st_mode):
        yield from _candidate(root, st)
        return
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            dst = os.stat(folder)
        except OSError as e:
            yield ScanProblem.at(folder, _reason(e))
            continue
        key = (dst.st_dev, dst.st_ino)
        if key in seen_dirs:
            log.debug("already visited %s (symlink loop or duplicate link)", folder)
            continue
        seen_dirs.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            yield ScanProblem.at(folder, _reason(e))
            continue
        subdirs = []
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=True)
            except OSError as e:  # dangling symlink, loop, permission
                if entry.is_symlink():
                    log.debug("skipping broken symlink %s (%s)", entry.path, e)
                    continue
                yield ScanProblem.at(entry.path, _reason(e))
                continue
            if stat.S_ISDIR(est.st_mode):
                subdirs.append(entry.path)
            elif stat.S_ISREG(est.st_mode):
                yield from _candidate(entry.path, est)
        stack.extend(reversed(subdirs))


def _candidate(path: str, st: os.stat_result) -> Iterator[FileStat | ScanProblem]:
    if st.st_size == 0:
        if looks_like_image(Path(path), b""):
            yield ScanProblem.at(path, "empty file")
        return
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        if looks_like_image(Path(path), b""):
            yield ScanProblem.at(path, _reason(e))
        return
    if not looks_like_image(Path(path), head):
        return
    if is_text_path(path):
        yield FileStat(path, st.st_size, storable_mtime_ns(st.st_mtime_ns))
    else:
        yield ScanProblem.at(path, NOT_UTF8_REASON)


def _reason(e: OSError) -> str:
    return (e.strerror or type(e).__name__).lower()
