"""The writer stage: turns decided changes into rows, one transaction per batch.

Every batch that changes vectors bumps the store's ``vectors_version`` in the same transaction,
so a crash at any instant leaves a consistent store and a FAISS cache that knows it is stale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import delete, insert, select, update

from searchkit.imageio import ImageMeta
from searchkit.store import STATUS_OK, STATUS_SKIPPED, File, Store, vector_to_blob


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
    """Apply a batch atomically (one transaction, version bumped)."""
    if not len(batch):
        return
    with store.session() as s:
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
