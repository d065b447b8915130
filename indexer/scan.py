"""Walking folders (the reader stage): pure functions over the filesystem, no database."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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
        yield ScanProblem(root, _reason(e))
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
            yield ScanProblem(folder, _reason(e))
            continue
        key = (dst.st_dev, dst.st_ino)
        if key in seen_dirs:
            log.debug("already visited %s (symlink loop or duplicate link)", folder)
            continue
        seen_dirs.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            yield ScanProblem(folder, _reason(e))
            continue
        subdirs = []
        for entry in entries:
            try:
                est = entry.stat(follow_symlinks=True)
            except OSError as e:  # dangling symlink, loop, permission
                if entry.is_symlink():
                    log.debug("skipping broken symlink %s (%s)", entry.path, e)
                    continue
                yield ScanProblem(entry.path, _reason(e))
                continue
            if stat.S_ISDIR(est.st_mode):
                subdirs.append(entry.path)
            elif stat.S_ISREG(est.st_mode):
                yield from _candidate(entry.path, est)
        stack.extend(reversed(subdirs))


def _candidate(path: str, st: os.stat_result) -> Iterator[FileStat | ScanProblem]:
    if st.st_size == 0:
        if looks_like_image(Path(path), b""):
            yield ScanProblem(path, "empty file")
        return
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        if looks_like_image(Path(path), b""):
            yield ScanProblem(path, _reason(e))
        return
    if looks_like_image(Path(path), head):
        yield FileStat(path, st.st_size, st.st_mtime_ns)


def _reason(e: OSError) -> str:
    return (e.strerror or type(e).__name__).lower()
