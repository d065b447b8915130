"""A library's write lock: a file lock in a directory of this machine (the library's own, or
a Milvus library's state directory). A second writer fails at once, never waits."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import LibraryBusyError

LOCK_FILE = "write.lock"


@contextmanager
def write_lock(directory: Path, location: str | None = None) -> Iterator[None]:
    """Hold the lock in ``directory`` (made if missing); busy: a LibraryBusyError naming
    ``location`` (default: the directory)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(Path(directory) / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LibraryBusyError(f"library is busy: another `searchkit index` is writing to "
                               f"{location or directory}; wait for it to finish") from None
    try:
        yield
    finally:
        lock.release()


def is_locked(directory: Path) -> bool:
    """Whether a writer holds the lock in ``directory`` (taken and given back at once)."""
    path = Path(directory) / LOCK_FILE
    if not path.exists():
        return False
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True
    lock.release()
    return False
