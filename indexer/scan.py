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
from typing import Generator, Iterator

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


def walk(root: str) -> Iterator[FileStat | ScanProblem]:
    """Every candidate image file under ``root`` (a folder or a single file), recursively.

    Symlinks are followed; each directory is entered once (by device and inode), so symlink
    loops end. Candidates are files whose content or name says image; others are ignored.
    """
    try:
        st = os.stat(root)
    except OSError as e:
        yield ScanProblem.at(root, _reason(e))
        return
    if not stat.S_ISDIR(st.st_mode):
        yield from _candidate(root, st)
        return
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        subdirs = yield from _folder(stack.pop(), seen_dirs)
        stack.extend(reversed(subdirs))


def _folder(folder: str, seen_dirs: set[tuple[int, int]]
            ) -> Generator[FileStat | ScanProblem, None, list[str]]:
    """The candidates directly in ``folder``; returns its subfolders."""
    subdirs = []
    for entry in (yield from _entries(folder, seen_dirs)):
        try:
            est = entry.stat(follow_symlinks=True)
        except OSError as e:  # dangling symlink, loop, permission
            if entry.is_symlink():
                log.debug("skipping broken symlink %s (%s)", entry.path, e)
            else:
                yield ScanProblem.at(entry.path, _reason(e))
            continue
        if stat.S_ISDIR(est.st_mode):
            subdirs.append(entry.path)
        elif stat.S_ISREG(est.st_mode):
            yield from _candidate(entry.path, est)
    return subdirs


def _entries(folder: str, seen_dirs: set[tuple[int, int]]
             ) -> Generator[ScanProblem, None, list[os.DirEntry]]:
    """``folder``'s entries by name; none if it was entered before or cannot be read."""
    try:
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen_dirs:
            log.debug("already visited %s (symlink loop or duplicate link)", folder)
            return []
        seen_dirs.add((st.st_dev, st.st_ino))
        return sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        yield ScanProblem.at(folder, _reason(e))
        return []


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
