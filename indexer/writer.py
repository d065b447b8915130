"""The writer stage: turns decided changes into rows, one transaction per batch.

Every batch that changes vectors bumps the store's ``vectors_version`` in the same transaction,
so a crash at any instant leaves a consistent store and a FAISS cache that knows it is stale.

One row that cannot be stored does not cost its batch: the batch is written again one change
at a time, and that row is recorded as skipped with the error (see :func:`flush`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, StatementError
from sqlalchemy.orm import Session

from searchkit.imageio import ImageMeta
from searchkit.store import STATUS_OK, STATUS_SKIPPED, File, Store, vector_to_blob

log = logging.getLogger(__name__)

# Errors that one row's values cause (a value SQLite cannot bind, a constraint): the row is
# skipped. Any other error (disk full, damaged or busy database) is the database's and stops
# the run, with nothing lost.
ROW_ERRORS = (IntegrityError, DataError, InterfaceError, ValueError, OverflowError, TypeError)


@dataclass(frozen=True)
class RowState:
    """What the store knows of one path."""
    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str


@dataclass
class Batch:
    """Pending writes, flushed together."""
    upserts: list[dict] = field(default_factory=list)   # full rows for insert or update
    moves: list[tuple[int, dict]] = field(default_factory=list)  # row id -> new path/stat
    touches: list[tuple[int, int, int]] = field(default_factory=list)  # id, size, mtime_ns
    deletes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.upserts) + len(self.moves) + len(self.touches) + len(self.deletes)

    def singles(self) -> Iterator[Batch]:
        """Each change of this batch as a batch of its own, in the order :func:`flush` applies
        them."""
        if self.deletes:
            yield Batch(deletes=self.deletes)  # deleting cannot fail on a row's values
        yield from (Batch(moves=[m]) for m in self.moves)
        yield from (Batch(touches=[t]) for t in self.touches)
        yield from (Batch(upserts=[u]) for u in self.upserts)


def ok_row(path: str, size: int, mtime_ns: int, content_hash: str, meta: ImageMeta,
           vector: np.ndarray | bytes) -> dict:
    blob = vector if isinstance(vector, bytes) else vector_to_blob(vector)
    return dict(path=path, size=size, mtime_ns=mtime_ns, content_hash=content_hash,
                width=meta.width, height=meta.height, format=meta.format, taken_at=meta.taken_at,
                camera_make=meta.camera_make, camera_model=meta.camera_model, status=STATUS_OK,
                reason=None, vector=blob, indexed_at=time.time())


def skipped_row(path: str, size: int, mtime_ns: int, reason: str) -> dict:
    return dict(path=path, size=size, mtime_ns=mtime_ns, content_hash=None, width=None,
                height=None, format=None, taken_at=None, camera_make=None, camera_model=None,
                status=STATUS_SKIPPED, reason=reason, vector=None, indexed_at=time.time())


def copy_row(source: File, path: str, size: int, mtime_ns: int) -> dict:
    """A new row for a duplicate of ``source``: same content, so same vector and metadata."""
    return dict(path=path, size=size, mtime_ns=mtime_ns, content_hash=source.content_hash,
                width=source.width, height=source.height, format=source.format,
                taken_at=source.taken_at, camera_make=source.camera_make,
                camera_model=source.camera_model, status=STATUS_OK, reason=None,
                vector=source.vector, indexed_at=time.time())


def rows_under(store: Store, roots: list[str]) -> dict[str, RowState]:
    """Every stored row whose path lies under one of ``roots``."""
    import os
    out: dict[str, RowState] = {}
    with store.session() as s:
        for root in roots:
            prefix = root.rstrip(os.sep) + os.sep
            q = select(File.id, File.path, File.size, File.mtime_ns, File.content_hash,
                       File.status).where((File.path == root) |
                                          File.path.startswith(prefix, autoescape=True))
            for r in s.execute(q):
                out[r.path] = RowState(*r)
    return out


def ok_hashes(store: Store) -> dict[str, int]:
    """content hash -> a row id holding that content (for moves and duplicates)."""
    with store.session() as s:
        rows = s.execute(select(File.content_hash, File.id).where(File.status == STATUS_OK)).all()
    return {h: i for h, i in rows if h}


def load_row(store: Store, row_id: int) -> File | None:
    with store.session() as s:
        return s.get(File, row_id)


def flush(store: Store, batch: Batch) -> None:
    """Apply a batch atomically (one transaction, version bumped).

    If a row's values cannot be stored, the batch is applied again one change at a time (each
    its own transaction, version bumped): the others are kept, the offending file is recorded
    as skipped with the error, and the run goes on.
    """
    if not len(batch):
        return
    try:
        _write(store, batch)
    except Exception as e:
        if not is_row_error(e):
            raise
        log.warning("a batch of %d changes could not be stored at once (%s); storing them one "
                    "by one", len(batch), short_error(e))
        for single in batch.singles():
            _write_single(store, single)


def _write_single(store: Store, single: Batch) -> None:
    try:
        _write(store, single)
    except Exception as e:
        if not is_row_error(e):
            raise
        if single.upserts:
            _record_unstorable(store, single.upserts[0], e)
        else:  # a move or a touch: the next run finds the file again
            log.warning("could not store a change (%s); the next run retries it", short_error(e))


def _record_unstorable(store: Store, row: dict, error: Exception) -> None:
    """Record the file of a row that cannot be stored as skipped, with the error."""
    log.warning("could not store %r: %s", row["path"], short_error(error))
    skipped = skipped_row(row["path"], row["size"], row["mtime_ns"],
                          f"cannot store: {short_error(error)}")
    try:
        _write(store, Batch(upserts=[skipped]))
    except Exception as e:
        if not is_row_error(e):
            raise
        log.warning("could not record %r as skipped either (%s); the next run retries it",
                    row["path"], short_error(e))


def _write(store: Store, batch: Batch) -> None:
    with store.session() as s:
        _apply(s, batch)


def _apply(s: Session, batch: Batch) -> None:
    if batch.deletes:
        s.execute(delete(File).where(File.id.in_(batch.deletes)))
    for row_id, values in batch.moves:
        s.execute(update(File).where(File.id == row_id).values(**values))
    for row_id, size, mtime_ns in batch.touches:
        s.execute(update(File).where(File.id == row_id).values(size=size, mtime_ns=mtime_ns))
    if batch.upserts:
        paths = [r["path"] for r in batch.upserts]
        s.execute(delete(File).where(File.path.in_(paths)))
        s.execute(insert(File), batch.upserts)
    Store.bump_version(s)


def is_row_error(e: BaseException) -> bool:
    """Whether ``e`` comes from one row's values rather than from the database itself."""
    if isinstance(e, ROW_ERRORS):
        return True
    if isinstance(e, StatementError) and not isinstance(e, DBAPIError):
        return e.orig is not None and is_row_error(e.orig)  # raised while binding a value
    return False


def short_error(e: BaseException) -> str:
    """One line naming the error (the driver's own for a wrapped one, without the SQL)."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).splitlines()[0] if str(orig) else ""
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__
