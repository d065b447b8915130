"""One index run's decisions: what each prepared file becomes, what waits for the encoder, and
which contents the run already knows.

Content is recognised by its hash. A file whose content a stored row holds is not decoded: its
row is touched (same path), moved (the row's file left the disk) or copied (a duplicate). The
table of known contents grows as the run encodes, and the first worker to meet a new content
claims it: only that file is decoded and encoded, and its twins in the same run wait for its
vector and are copied.

With OCR on, the text of each content is read once too (it is stored by content hash): the
first worker to meet a content whose text is unknown claims the reading, on the image it
decodes for the encoder, or on its own for a stored image whose vector stays (OCR turned on
for an indexed library). The text is written in the transaction that writes the file's row.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from searchkit.engine import Engine
from searchkit.imageio import MAX_PIXELS
from searchkit.library import SkippedFile
from searchkit.ocr import OcrEngine
from searchkit.store import (SKIP_DECODE, SKIP_SCAN, STATUS_OK, Changes, FileRow, Move, RowState,
                             Touch)

from . import writer
from .executors import embed_batch
from .prepare import Decoder, Prepared, WorkItem
from .scan import FileStat, ScanProblem

if TYPE_CHECKING:
    from searchkit.encoders.base import Encoder

ENCODE_BATCH = 32        # images per forward pass
COMMIT_EVERY = 256       # files per transaction


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    duplicates: int = 0
    removed: int = 0
    unchanged: int = 0
    encoded: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    texts_read: int = 0       # images whose text was read (OCR), text found or not
    texts_failed: int = 0     # of those, where reading failed (the image is indexed all the same)
    ocr_problem: str | None = None   # why the library's OCR could not run (then it was not)

    def count_change(self, old: RowState | None) -> None:
        """A file got a new row: added if it had none, else updated."""
        if old is None:
            self.added += 1
        else:
            self.updated += 1


@dataclass(frozen=True)
class Limits:
    encode_batch: int = ENCODE_BATCH
    commit_every: int = COMMIT_EVERY
    max_pixels: int = MAX_PIXELS


class IndexRun:
    """The state of one run. Workers call :meth:`prepare` (thread-safe); the run's thread calls
    :meth:`record_problems`, :meth:`decide` for each prepared file in order, then :meth:`finish`.
    """

    def __init__(self, store: Engine, report: IndexReport, missing: dict[str, RowState],
                 encoder: "Encoder | None" = None, limits: Limits = Limits(),
                 ocr: OcrEngine | None = None):
        """``encoder``: None when the run has no file to read (nothing to decode or encode).
        ``ocr``: reads the text of every content whose text the store lacks (None: no OCR)."""
        self.store, self.report, self.limits, self.encoder = store, report, limits, encoder
        self.decoder = Decoder(encoder, limits.max_pixels, ocr) if encoder is not None else None
        self.text_known = store.local("text in images").ocr_hashes() if ocr is not None and encoder is not None \
            else set()                                # contents whose text is read or claimed
        self.changes = Changes()
        self.pending: list[Prepared] = []             # decoded, waiting for the encoder
        self.missing = missing                        # stored rows whose file is not on disk
        self.missing_by_hash = {r.content_hash: r for r in missing.values()
                                if r.status == STATUS_OK and r.content_hash}
        self.known = store.content_hashes() if encoder is not None else set()  # what ok rows hold
        self.fresh: dict[str, FileRow] = {}           # encoded, not yet flushed, by hash
        self.claimed: dict[str, str] = {}             # hash -> the one file decoding it
        self.undecodable: dict[str, str] = {}         # hash -> why it cannot be decoded
        self.waiting: dict[str, list[Prepared]] = defaultdict(list)  # twins of a claimed one
        self.lock = threading.Lock()                  # guards known, claimed, undecodable

    # ---- the worker side -------------------------------------------------------------------
    def prepare(self, item: WorkItem) -> Prepared:
        return self.decoder.prepare(item, self._claim, self._claim_text)

    def prepare_unencoded(self, item: WorkItem) -> Prepared:
        """:meth:`prepare` for an executor that decodes elsewhere: read, hash and claim as
        :meth:`prepare` does, but decode nothing (see :meth:`holds_claim`)."""
        return self.decoder.prepare(item, self._claim_only, self._claim_text)

    def holds_claim(self, prep: Prepared) -> bool:
        """Whether ``prep``'s file claimed its content: it is the one to decode and embed."""
        with self.lock:
            return prep.content_hash is not None and \
                self.claimed.get(prep.content_hash) == prep.item.stat.path

    def _claim_only(self, item: WorkItem, h: str) -> bool:
        self._claim(item, h)
        return False

    def _claim_text(self, h: str) -> bool:
        """Whether this file's text must be read: its content's is neither stored nor claimed
        (a claim is not released: a content whose reading failed is not read again)."""
        with self.lock:
            if h in self.text_known:
                return False
            self.text_known.add(h)
            return True

    def _claim(self, item: WorkItem, h: str) -> bool:
        """Whether this file must be decoded: its content is neither stored nor claimed."""
        if item.same_content(h):
            return False
        with self.lock:
            if h in self.known or h in self.claimed or h in self.undecodable:
                return False
            self.claimed[h] = item.stat.path
            return True

    def _claim_anyway(self, item: WorkItem, h: str) -> bool:
        with self.lock:
            self.claimed.setdefault(h, item.stat.path)
        return True

    def _release(self, h: str | None, path: str) -> bool:
        """Drop ``path``'s claim on ``h``; whether it held one."""
        with self.lock:
            if h is None or self.claimed.get(h) != path:
                return False
            del self.claimed[h]
            return True

    # ---- decisions -------------------------------------------------------------------------
    def record_problems(self, problems: list[ScanProblem]) -> None:
        """Files the scan could not read: skipped rows (no size, no mtime)."""
        for p in problems:
            self.changes.upserts.append(
                writer.skipped_row(FileStat(p.path, 0, 0), p.reason, SKIP_SCAN))

    def decide(self, prep: Prepared) -> None:
        """What ``prep``'s file becomes: skipped, touched, moved, copied, awaited or encoded."""
        h = prep.content_hash
        self._record_text(prep)
        if prep.error is not None:
            self._skip(prep, prep.error)
        elif prep.item.same_content(h):
            self._touch(prep)
        elif h in self.undecodable:  # the same bytes fail the same way
            self._skip(prep, self.undecodable[h])
        elif not (self._move(prep) or self._copy(prep) or self._await_twin(prep)):
            self._queue(prep)
        self._flush_if_full()

    def finish(self) -> None:
        """Encode what is left, sweep the rows whose files are gone, store everything."""
        if self.pending:
            self._encode()
        self.changes.deletes.extend(r.id for r in self.missing.values())
        self.report.removed = sum(1 for r in self.missing.values() if r.status == STATUS_OK)
        self._flush()

    def _record_text(self, prep: Prepared) -> None:
        """The text read in ``prep``'s image goes with this batch (stored by content)."""
        if prep.ocr is None:
            return
        self.changes.ocr.append(prep.ocr)
        self.report.texts_read += 1
        self.report.texts_failed += prep.ocr.error is not None

    def _skip(self, prep: Prepared, error: str) -> None:
        self.changes.upserts.append(writer.skipped_row(prep.item.stat, error, SKIP_DECODE))
        h = prep.content_hash
        if self._release(h, prep.item.stat.path):
            with self.lock:
                self.undecodable[h] = error
            for twin in self.waiting.pop(h, []):
                self._skip(twin, error)

    def _touch(self, prep: Prepared) -> None:
        st, old = prep.item.stat, prep.item.old
        if (old.size, old.mtime_ns) != (st.size, st.mtime_ns):  # else: read for its text only
            self.changes.touches.append(Touch(old.id, st.size, st.mtime_ns))
        self.report.unchanged += 1

    def _move(self, prep: Prepared) -> bool:
        """A new file with the content of a row whose file left the disk: that row moves."""
        if prep.item.old is not None or prep.content_hash not in self.missing_by_hash:
            return False
        gone = self.missing_by_hash.pop(prep.content_hash)
        del self.missing[gone.path]
        st = prep.item.stat
        self.changes.moves.append(Move(gone.id, st.path, st.size, st.mtime_ns))
        self.report.moved += 1
        return True

    def _copy(self, prep: Prepared) -> bool:
        """A file whose content a row holds (stored, or encoded in this run): a copy of it."""
        h = prep.content_hash
        source = self.fresh.get(h) or (self.store.row_with_content(h) if h in self.known
                                       else None)
        if source is None or source.vector is None:
            return False
        self._add_copy(source, prep)
        return True

    def _add_copy(self, source: FileRow, prep: Prepared) -> None:
        self.changes.upserts.append(writer.copy_row(source, prep.item.stat))
        self.report.duplicates += 1
        self.report.count_change(prep.item.old)

    def _await_twin(self, prep: Prepared) -> bool:
        """A file whose content another file of this run is decoding: it waits for that one's
        vector (or its error)."""
        if prep.pixels is not None or prep.vector is not None \
                or prep.content_hash not in self.claimed:
            return False
        self.waiting[prep.content_hash].append(prep)
        return True

    def _queue(self, prep: Prepared) -> None:
        if prep.vector is not None:  # embedded by an executor's worker
            self._add_encoded(prep, prep.vector)
            return
        if prep.pixels is None:  # its content was known but its row has gone: decode after all
            prep = self.decoder.prepare(prep.item, self._claim_anyway)
            if prep.error is not None:
                self._skip(prep, prep.error)
                return
        self.pending.append(prep)
        if len(self.pending) >= self.limits.encode_batch:
            self._encode()

    # ---- encoding and writing --------------------------------------------------------------
    def _encode(self) -> None:
        for prep, vector in zip(self.pending, embed_batch(self.encoder, self.pending)):
            self._add_encoded(prep, vector)
        self.pending = []

    def _add_encoded(self, prep: Prepared, vector: np.ndarray) -> None:
        row = writer.ok_row(prep.item.stat, prep.content_hash, prep.meta, vector)
        self.changes.upserts.append(row)
        self.report.encoded += 1
        self.report.count_change(prep.item.old)
        self._encoded(row)

    def _encoded(self, row: FileRow) -> None:
        """``row``'s content is known from now on; its waiting twins are copies of it."""
        h = row.content_hash
        self.fresh[h] = row
        with self.lock:
            self.known.add(h)
        self._release(h, row.path)
        for twin in self.waiting.pop(h, []):
            self._add_copy(row, twin)

    def _flush_if_full(self) -> None:
        if len(self.changes) >= self.limits.commit_every:
            self._flush()

    def _flush(self) -> None:
        writer.flush(self.store, self.changes)
        self.changes = Changes()
        self.fresh.clear()  # stored now: found by row_with_content
