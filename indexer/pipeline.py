"""The indexing run: scan -> decide -> decode (worker threads) -> encode (batched) -> write.

Decoding and preprocessing run in a thread pool ahead of the encoder (bounded prefetch), so the
encoder is never waiting on files. Unchanged files (size, mtime) are not opened; a moved or
renamed file keeps its row and vector (content hash); duplicates copy a vector; files gone from
disk leave the library (mark and sweep). Rows are committed in batches: an interrupted run
loses at most the batch in flight, and the next run resumes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from searchkit.errors import SearchkitError
from searchkit.fsinfo import NOT_UTF8_REASON, is_text_path, text_path
from searchkit.imageio import MAX_PIXELS, ImageDecodeError, ImageMeta, open_image
from searchkit.library import Library, SkippedFile
from searchkit.store import STATUS_OK

from . import writer
from .scan import FileStat, ScanProblem, normalize_root, walk

if TYPE_CHECKING:
    from searchkit.encoders.base import Encoder

log = logging.getLogger(__name__)

ENCODE_BATCH = 32        # images per forward pass
COMMIT_EVERY = 256       # files per transaction
PREFETCH_PER_WORKER = 16  # decoded images waiting per worker thread

ProgressFn = Callable[[int, int], None]


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


@dataclass(frozen=True)
class WorkItem:
    stat: FileStat
    old: writer.RowState | None      # the row at this path, if any


@dataclass
class Prepared:
    """A worker's answer for one file."""
    item: WorkItem
    content_hash: str | None = None
    pixels: np.ndarray | None = None
    meta: ImageMeta | None = None
    reuse_id: int | None = None      # a row with identical content: copy or move it
    error: str | None = None


def file_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Indexer:
    """Keeps a library in step with folders. Build once, call :meth:`run`."""

    def __init__(self, library: Library, workers: int | None = None,
                 encode_batch: int = ENCODE_BATCH, commit_every: int = COMMIT_EVERY,
                 max_pixels: int = MAX_PIXELS, progress: ProgressFn | None = None):
        self.library = library
        self.workers = workers or max(1, min(8, os.cpu_count() or 1))
        self.encode_batch = encode_batch
        self.commit_every = commit_every
        self.max_pixels = max_pixels
        self.progress = progress or (lambda done, total: None)

    # ---- the run ---------------------------------------------------------------------------
    def run(self, paths: Iterable[str] | None = None) -> IndexReport:
        """Index ``paths`` (folders or files), or every root the library knows when none."""
        t0 = time.perf_counter()
        report = IndexReport()
        store = self.library.store
        roots = [normalize_root(p) for p in (paths or [])]
        for r in roots:
            if not os.path.exists(r):
                raise SearchkitError(f"path does not exist: {text_path(r)}")
            if not is_text_path(r):
                raise SearchkitError(f"cannot index {text_path(r)}: {NOT_UTF8_REASON}")
        with self.library.writer():
            if roots:
                store.add_roots(roots, time.time())
            else:
                roots = [r for r in store.roots() if os.path.exists(r)]
                report.missing_roots = [r for r in store.roots() if r not in roots]
                if not roots and not report.missing_roots:
                    raise SearchkitError("nothing to index: give a folder (searchkit index PATH)")
            work, problems, missing = self._plan(roots, report)
            self._process(work, problems, missing, report)
            self.library.search_index()  # rebuild and save the cache if anything changed
        report.skipped = [SkippedFile(f.path, f.reason or "") for f in store.skipped()
                          if any(_under(f.path, r) for r in roots)]
        report.seconds = time.perf_counter() - t0
        return report

    def _plan(self, roots: list[str], report: IndexReport
              ) -> tuple[list[WorkItem], list[ScanProblem], dict[str, writer.RowState]]:
        """Compare the disk with the store: what to (re)process, what failed, what is gone."""
        known = writer.rows_under(self.library.store, roots)
        seen: set[str] = set()
        work: list[WorkItem] = []
        problems: list[ScanProblem] = []
        for root in roots:
            for entry in walk(root):
                if entry.path in seen:
                    continue
                seen.add(entry.path)
                old = known.get(entry.path)
                if isinstance(entry, ScanProblem):
                    if old is None or old.status == STATUS_OK or old.content_hash != entry.reason[:32]:
                        problems.append(entry)
                    continue
                if old is not None and old.size == entry.size and old.mtime_ns == entry.mtime_ns:
                    report.unchanged += 1
                    continue
                work.append(WorkItem(entry, old))
        missing = {p: r for p, r in known.items() if p not in seen}
        return work, problems, missing

    def _process(self, work: list[WorkItem], problems: list[ScanProblem],
                 missing: dict[str, writer.RowState], report: IndexReport) -> None:
        store = self.library.store
        hashes = writer.ok_hashes(store)
        missing_by_hash = {r.content_hash: r for r in missing.values()
                           if r.status == STATUS_OK and r.content_hash}
        batch = writer.Batch()
        for p in problems:
            batch.upserts.append(writer.skipped_row(p.path, 0, 0, p.reason))
            _mark_skip_source(batch.upserts[-1], p.reason)
        pending: list[Prepared] = []
        total = len(work)
        done = 0
        encoder = self.library.encoder if work else None
        for prep in self._prepare_all(work, encoder, hashes):
            done += 1
            self._decide(prep, hashes, missing, missing_by_hash, batch, pending, report)
            if len(pending) >= self.encode_batch:
                self._encode(encoder, pending, batch, hashes, report)
            if len(batch) >= self.commit_every:
                writer.flush(store, batch)
                batch = writer.Batch()
            self.progress(done, total)
        if pending:
            self._encode(encoder, pending, batch, hashes, report)
        # sweep: whatever is still missing has left the disk
        batch.deletes.extend(r.id for r in missing.values())
        report.removed = sum(1 for r in missing.values() if r.status == STATUS_OK)
        writer.flush(store, batch)

    def _decide(self, prep: Prepared, hashes: dict[str, int],
                missing: dict[str, writer.RowState],
                missing_by_hash: dict[str, writer.RowState], batch: writer.Batch,
                pending: list[Prepared], report: IndexReport) -> None:
        st, old = prep.item.stat, prep.item.old
        if prep.error is not None:
            batch.upserts.append(writer.skipped_row(st.path, st.size, st.mtime_ns, prep.error))
            return
        h = prep.content_hash
        if old is not None and old.status == STATUS_OK and old.content_hash == h:
            batch.touches.append((old.id, st.size, st.mtime_ns))  # touched, same content
            report.unchanged += 1
            return
        moved_from = missing_by_hash.pop(h, None) if old is None else None
        if moved_from is not None:
            del missing[moved_from.path]
            batch.moves.append((moved_from.id, dict(path=st.path, size=st.size,
                                                    mtime_ns=st.mtime_ns)))
            report.moved += 1
            return
        if h in hashes and prep.pixels is None:
            source = writer.load_row(self.library.store, hashes[h])
            if source is not None and source.vector is not None:
                batch.upserts.append(writer.copy_row(source, st.path, st.size, st.mtime_ns))
                report.duplicates += 1
                _count_change(old, report)
                return
        if prep.pixels is None:  # the reused row vanished under us: decode after all
            prep = self._prepare(prep.item, None, {})
            if prep.error is not None:
                batch.upserts.append(writer.skipped_row(st.path, st.size, st.mtime_ns,
                                                        prep.error))
                return
        pending.append(prep)

    def _encode(self, encoder: "Encoder", pending: list[Prepared], batch: writer.Batch,
                hashes: dict[str, int], report: IndexReport) -> None:
        vectors = encoder.encode_pixels(np.stack([p.pixels for p in pending]))
        report.encoded += len(pending)
        for prep, vec in zip(pending, vectors):
            st = prep.item.stat
            batch.upserts.append(writer.ok_row(st.path, st.size, st.mtime_ns, prep.content_hash,
                                               prep.meta, vec))
            _count_change(prep.item.old, report)
        pending.clear()

    # ---- the worker side -------------------------------------------------------------------
    def _prepare_all(self, work: list[WorkItem], encoder: "Encoder | None",
                     hashes: dict[str, int]) -> Iterator[Prepared]:
        """Worker results in order, with a bounded number in flight."""
        if not work:
            return
        limit = self.workers * PREFETCH_PER_WORKER
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
            inflight: deque[Future] = deque()
            items = iter(work)
            for item in items:
                inflight.append(pool.submit(self._prepare, item, encoder, hashes))
                if len(inflight) >= limit:
                    break
            while inflight:
                result = inflight.popleft().result()
                nxt = next(items, None)
                if nxt is not None:
                    inflight.append(pool.submit(self._prepare, nxt, encoder, hashes))
                yield result

    def _prepare(self, item: WorkItem, encoder: "Encoder | None", hashes: dict[str, int]
                 ) -> Prepared:
        """Read, hash, and (unless the content is already known) decode and preprocess."""
        try:
            with open(item.stat.path, "rb") as f:
                data = f.read()
        except OSError as e:
            return Prepared(item, error=(e.strerror or type(e).__name__).lower())
        h = file_hash(data)
        if h in hashes and not (item.old is not None and item.old.content_hash == h):
            return Prepared(item, content_hash=h)
        if item.old is not None and item.old.status == STATUS_OK and item.old.content_hash == h:
            return Prepared(item, content_hash=h)
        try:
            image, meta = open_image(data, max_pixels=self.max_pixels)
            enc = encoder or self.library.encoder
            pixels = enc.preprocess(image)
        except ImageDecodeError as e:
            return Prepared(item, content_hash=h, error=str(e))
        except Exception as e:  # a decoder bug must not stop the run
            log.warning("unexpected error decoding %s: %r", item.stat.path, e)
            return Prepared(item, content_hash=h, error=f"cannot decode: {type(e).__name__}")
        return Prepared(item, content_hash=h, pixels=pixels, meta=meta)


def _count_change(old: writer.RowState | None, report: IndexReport) -> None:
    if old is None:
        report.added += 1
    else:
        report.updated += 1


def _mark_skip_source(row: dict, reason: str) -> None:
    """Scan problems have no content: keep the reason in the hash column so an unchanged
    problem is not rewritten on every run."""
    row["content_hash"] = reason[:32]


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
