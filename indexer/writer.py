"""The writer stage: the rows an index run decides on, and how a batch of them is stored.

The store writes a batch in one transaction that bumps ``vectors_version``
(:meth:`searchkit.store.Store.apply`), so a crash at any instant leaves a consistent store and a
FAISS cache that knows it is stale. One row that cannot be stored does not cost its batch: the
batch is written again one change at a time, and that row is recorded as skipped with the error
(see :func:`flush`).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from searchkit.engine import Engine
from searchkit.imageio import ImageMeta
from searchkit.store import (SKIP_STORE, STATUS_OK, STATUS_SKIPPED, Changes, FileRow,
                             is_row_error, short_error, vector_to_blob)

from .scan import FileStat

log = logging.getLogger(__name__)


def ok_row(stat: FileStat, content_hash: str, meta: ImageMeta, vector: np.ndarray) -> FileRow:
    return FileRow(stat.path, stat.size, stat.mtime_ns, content_hash, meta.width, meta.height,
                   meta.format, meta.taken_at, meta.camera_make, meta.camera_model, STATUS_OK,
                   reason=None, skip_source=None, vector=vector_to_blob(vector),
                   indexed_at=time.time())


def skipped_row(stat: FileStat, reason: str, source: str) -> FileRow:
    """A file recorded as skipped: ``reason`` in words, ``source`` one of the store's SKIP_*."""
    return FileRow(stat.path, stat.size, stat.mtime_ns, None, None, None, None, None, None, None,
                   STATUS_SKIPPED, reason=reason, skip_source=source, vector=None,
                   indexed_at=time.time())


def copy_row(source: FileRow, stat: FileStat) -> FileRow:
    """The row of a duplicate of ``source``: same content, so same vector and metadata."""
    return dataclasses.replace(source, path=stat.path, size=stat.size, mtime_ns=stat.mtime_ns,
                               indexed_at=time.time())


def flush(store: Engine, changes: Changes) -> None:
    """Store ``changes`` atomically (one transaction, version bumped).

    If a row's values cannot be stored, the changes are stored again one at a time (each its
    own transaction): the others are kept, the offending file is recorded as skipped with the
    error, and the run goes on.
    """
    if not len(changes):
        return
    try:
        store.apply(changes)
    except Exception as e:
        if not is_row_error(e):
            raise
        log.warning("a batch of %d changes could not be stored at once (%s); storing them one "
                    "by one", len(changes), short_error(e))
        for single in changes.singles():
            _write_single(store, single)


def _write_single(store: Engine, single: Changes) -> None:
    try:
        store.apply(single)
    except Exception as e:
        if not is_row_error(e):
            raise
        if single.upserts:
            _record_unstorable(store, single.upserts[0], e)
        else:  # a move or a touch: the next run finds the file again
            log.warning("could not store a change (%s); the next run retries it", short_error(e))


def _record_unstorable(store: Engine, row: FileRow, error: Exception) -> None:
    """Record the file of a row that cannot be stored as skipped, with the error."""
    log.warning("could not store %r: %s", row.path, short_error(error))
    stat = FileStat(row.path, row.size, row.mtime_ns)
    skipped = skipped_row(stat, f"cannot store: {short_error(error)}", SKIP_STORE)
    try:
        store.apply(Changes(upserts=[skipped]))
    except Exception as e:
        if not is_row_error(e):
            raise
        log.warning("could not record %r as skipped either (%s); the next run retries it",
                    row.path, short_error(e))
