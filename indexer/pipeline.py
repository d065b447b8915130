"""The indexing run: scan -> plan -> decode (worker threads) -> decide -> encode (batched) -> write.

Decoding and preprocessing run in a thread pool ahead of the encoder (bounded prefetch), so the
encoder is never waiting on files. Unchanged files (size, mtime) are not opened; a moved or
renamed file keeps its row and vector (content hash); duplicates copy a vector; files gone from
disk leave the library (mark and sweep). Rows are committed in batches: an interrupted run
loses at most the batch in flight, and the next run resumes.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from searchkit.errors import SearchkitError
from searchkit.fsinfo import NOT_UTF8_REASON, is_text_path, text_path
from searchkit.imageio import MAX_PIXELS, codec_installed_since
from searchkit.library import Library, SkippedFile
from searchkit.ocr import OcrEngine, OcrUnavailableError, default_engine
from searchkit.paths import absolute, is_under
from searchkit.engine import Engine
from searchkit.store import SKIP_SCAN, STATUS_SKIPPED, RowState

from .executors import Executor, LocalExecutor
from .prepare import WorkItem
from .run import COMMIT_EVERY, ENCODE_BATCH, IndexReport, IndexRun, Limits
from .scan import ScanProblem, walk

ProgressFn = Callable[[int, int], None]

__all__ = ["COMMIT_EVERY", "ENCODE_BATCH", "IndexReport", "Indexer", "Plan", "plan"]


@dataclass
class Plan:
    """The disk compared with the store: what to read, what the scan could not, what is gone."""
    work: list[WorkItem] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    missing: dict[str, RowState] = field(default_factory=dict)   # by path
    unchanged: int = 0


def plan(store: Engine, roots: list[str], ocr: bool = False) -> Plan:
    """Walk ``roots``: files new or changed (size, mtime) are work, scan problems not already
    recorded as they are now are problems, and rows whose file was not seen are missing.
    With ``ocr``, an unchanged indexed file whose text was never read is work too (the run
    reads its text and keeps its vector)."""
    known = store.rows_under(roots)
    unread = store.local("text in images").paths_without_ocr(roots) if ocr else set()
    seen: set[str] = set()
    out = Plan()
    readable_now = functools.lru_cache(maxsize=None)(codec_installed_since)  # once per reason
    for entry in (e for root in roots for e in walk(root)):
        if entry.path in seen:
            continue
        seen.add(entry.path)
        old = known.get(entry.path)
        if isinstance(entry, ScanProblem):
            if not _recorded(entry, old):
                out.problems.append(entry)
        elif old is not None and (old.size, old.mtime_ns) == (entry.size, entry.mtime_ns) \
                and not (old.status == STATUS_SKIPPED and readable_now(old.reason)) \
                and entry.path not in unread:
            out.unchanged += 1  # (a file skipped for want of an extra since installed is work)
        else:
            out.work.append(WorkItem(entry, old))
    out.missing = {p: r for p, r in known.items() if p not in seen}
    return out


def _recorded(problem: ScanProblem, old: RowState | None) -> bool:
    """Whether the store already records this scan problem (so it is not rewritten)."""
    return (old is not None and old.status == STATUS_SKIPPED and old.skip_source == SKIP_SCAN
            and old.reason == problem.reason)


class Indexer:
    """Keeps a library in step with folders. Build once, call :meth:`run`."""

    def __init__(self, library: Library, workers: int | None = None,
                 encode_batch: int = ENCODE_BATCH, commit_every: int = COMMIT_EVERY,
                 max_pixels: int = MAX_PIXELS, progress: ProgressFn | None = None,
                 ocr: OcrEngine | None = None, executor: Executor | None = None):
        """``ocr``: the engine that reads the text in images when the library has OCR on
        (default: :func:`searchkit.ocr.default_engine`, built on the first run that needs it).
        ``executor``: who embeds the files (default: this process, see :mod:`.executors`)."""
        self.library = library
        self.executor = executor or LocalExecutor()
        self.ocr = ocr
        self.workers = workers or max(1, min(8, os.cpu_count() or 1))
        self.limits = Limits(encode_batch, commit_every, max_pixels)
        self.progress = progress or (lambda done, total: None)

    def run(self, paths: Iterable[str] | None = None) -> IndexReport:
        """Index ``paths`` (folders or files), or every root the library knows when none."""
        t0 = time.perf_counter()
        report = IndexReport()
        roots = _checked_roots(paths or [])
        with self.library.writer():
            roots = self._roots(roots, report)
            ocr = self._ocr_engine(report)
            self._execute(plan(self.library.engine, roots, ocr is not None), report, ocr)
            if self.library.engine.ocr_on():
                self.library.store.prune_ocr()  # texts of contents no file holds any more
            self.library.update_index()  # the index follows the store (incrementally)
        report.skipped = [SkippedFile(f.path, f.reason or "")
                          for f in self.library.engine.skipped() if any(is_under(f.path, r) for r in roots)]
        report.seconds = time.perf_counter() - t0
        return report

    def _roots(self, given: list[str], report: IndexReport) -> list[str]:
        """The roots to scan: ``given`` (recorded as roots), or the recorded ones on disk."""
        if given:
            self.library.add_roots(given)
            return given
        known = self.library.roots()
        roots = [r for r in known if os.path.exists(r)]
        report.missing_roots = [r for r in known if r not in roots]
        if not roots and not report.missing_roots:
            raise SearchkitError("nothing to index: give a folder (searchkit index PATH)")
        return roots

    def _ocr_engine(self, report: IndexReport) -> OcrEngine | None:
        """The OCR engine when the library has OCR on; without one (the extra uninstalled
        since), the run goes on without reading text and says why."""
        if not self.library.engine.ocr_on():
            return None
        if self.ocr is None:
            try:
                self.ocr = default_engine()
            except OcrUnavailableError as e:
                report.ocr_problem = str(e)
                return None
        return self.ocr

    def _execute(self, todo: Plan, report: IndexReport, ocr: OcrEngine | None = None) -> None:
        report.unchanged += todo.unchanged
        encoder = self.library.encoder if todo.work else None  # no model load for a no-op
        run = IndexRun(self.library.engine, report, todo.missing, encoder, self.limits, ocr)
        run.record_problems(todo.problems)
        self.executor.execute(run, todo.work, self.workers, self.progress)
        run.finish()


def _checked_roots(paths: Iterable[str]) -> list[str]:
    """``paths`` as absolute roots; one that does not exist or cannot be named is an error."""
    roots = [absolute(p) for p in paths]
    for r in roots:
        if not os.path.exists(r):
            raise SearchkitError(f"path does not exist: {text_path(r)}")
        if not is_text_path(r):
            raise SearchkitError(f"cannot index {text_path(r)}: {NOT_UTF8_REASON}")
    return roots
