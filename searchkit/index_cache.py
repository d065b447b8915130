"""The saved FAISS index kept in step with the store: loaded (memory-mapped when large), brought
up to date with the store's change log, folded, rebuilt, saved. :class:`~searchkit.library.Library`
holds one :class:`IndexCache`; this module owns the decisions, :mod:`searchkit.index` the
mechanics and :mod:`searchkit.store` the SQL.

What each path may do (issue 12):

- a search (:meth:`IndexCache.current`) reads the saved base and the rows changed since it
  (O(changes)), never every vector, unless there is no usable base: then it rebuilds, and says
  so at warning level when the library is large. It folds a delta past the threshold into a
  small library (cheap), never into a large one (it says to run ``searchkit index``).
- an index run, an import, ``forget`` and ``check --repair`` call :meth:`IndexCache.update`
  (under the write lock): verify the base's checksum, fold the delta past the threshold, rebuild
  only when the quantizer must be trained again, save atomically, prune the log.
- ``status`` (:meth:`IndexCache.state`) reads the stamp and counts: no index, no vectors.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import index as faiss_index
from .index import DamagedIndexError, Delta, SearchIndex, Stamp
from .store import ChangedRows, LibraryInfo, Store

log = logging.getLogger(__name__)

PROBE_ON_LOAD = 8    # stored vectors compared with a memory-mapped base when it is loaded


@dataclass(frozen=True)
class IndexUpdate:
    """What :meth:`IndexCache.update` did."""
    action: str          # "none" (the delta stays in the log), "folded" or "rebuilt"
    changed: int         # rows changed since the saved base (all of them, when rebuilt)
    reason: str = ""     # why it rebuilt
    seconds: float = 0.0


@dataclass(frozen=True)
class IndexState:
    """The saved index as the next search would find it, from its stamp and the log."""
    state: str           # "fresh", "stale", "missing" or "damaged"
    stamp: Stamp | None
    pending: int = 0     # rows changed since it was built, answered from the log
    damage: str | None = None


class IndexCache:
    """One library's index: the base (saved, mapped or built) plus the change log's delta."""

    def __init__(self, directory: Path, store: Store, info: LibraryInfo):
        self.directory = Path(directory)
        self.store = store
        self.info = info
        self._index: SearchIndex | None = None
        self._digest: str | None = None     # checksum of the saved file ``_index`` came from
        self._lock = threading.RLock()

    # ---- reading (status) ------------------------------------------------------------------
    def state(self, verify: bool | None = None) -> IndexState:
        """From the stamp and the log only (``verify``: see :func:`index.read_stamp`)."""
        try:
            saved = faiss_index.read_stamp(self.directory, verify)
        except DamagedIndexError as e:
            return IndexState("damaged", None, damage=str(e))
        if saved is None:
            return IndexState("missing", None)
        seq = self._covered_seq(saved.stamp)
        pending = self.store.pending_changes(seq) if seq is not None else None
        if pending is None:
            return IndexState("stale", saved.stamp)
        return IndexState("fresh", saved.stamp, pending)

    def _covered_seq(self, stamp: Stamp) -> int | None:
        """The change log position ``stamp``'s index covers, if it was built with this model
        (a stamp from before the log covers the log's present if its version is current)."""
        if (stamp.dim, stamp.model_fingerprint) != (self.info.dim, self.info.model_fingerprint):
            return None
        if stamp.changes_seq is not None:
            return stamp.changes_seq
        return self.store.seq_if_version(stamp.vectors_version)

    def saved(self, verify: bool | None = None) -> SearchIndex | None:
        """The saved base with the change log's delta, exactly as saved: nothing probed,
        folded, rebuilt or written (``searchkit check``). None if missing or not covered;
        DamagedIndexError if damaged."""
        saved = faiss_index.load(self.directory, verify=verify)
        if saved is None:
            return None
        return self._with_delta(SearchIndex(saved.index, saved.stamp, fetch=self._fetch))

    # ---- the query path --------------------------------------------------------------------
    def current(self, save: bool = True) -> SearchIndex:
        """An index that answers with exactly the stored vectors. Threads share it: after a
        change, the first caller brings it up to date, the others wait."""
        with self._lock:
            version = self.store.vectors_version()
            if self._index is None or self._index.version != version:
                self._index = self._refreshed(save)
            return self._index

    def _refreshed(self, save: bool) -> SearchIndex:
        cached = self._cached_base()
        live = self._with_delta(cached) if cached is not None else None
        if live is None:
            loaded, mapped = self._loaded_base()
            live = self._with_delta(loaded) if loaded is not None else None
            if live is not None and mapped and not self._probe_agrees(live):
                live = None
        if live is None:
            return self._rebuilt_for_query(save)
        return self._folded_if_due(live, save)

    def _cached_base(self) -> SearchIndex | None:
        """The base in memory, unless another process saved a newer one since."""
        if self._index is None:
            return None
        try:
            saved = faiss_index.read_stamp(self.directory, verify=False)
        except DamagedIndexError:
            return self._index
        return self._index if saved is None or saved.checksum == self._digest else None

    def _loaded_base(self) -> tuple[SearchIndex | None, bool]:
        """The saved base (memory-mapped when large) and whether it is mapped."""
        try:
            saved = faiss_index.load(self.directory)
        except DamagedIndexError as e:
            log.warning("the saved index of library %s is damaged (%s): rebuilding it from "
                        "%s", self.directory, e, self.store.path.name)
            return None, False
        if saved is None:
            return None, False
        self._digest = saved.checksum
        return SearchIndex(saved.index, saved.stamp, fetch=self._fetch), saved.mapped

    def _probe_agrees(self, live: SearchIndex) -> bool:
        """A mapped base (its checksum unread on this path) holds a few stored vectors as
        stored (rows changed since it was built aside)."""
        rows = self.store.vectors_of(self.store.spread_ids(PROBE_ON_LOAD))
        keep = ~np.isin(rows.ids, live.delta.changed)
        wrong = faiss_index.probe(live.cpu, rows.ids[keep], rows.vectors[keep])
        if wrong:
            log.warning("the saved index of library %s disagrees with the store on %d of %d "
                        "vectors probed: rebuilding it", self.directory, wrong, int(keep.sum()))
        return not wrong

    def _with_delta(self, base: SearchIndex) -> SearchIndex | None:
        """``base`` with the rows changed since it was built; None if the log no longer
        covers it (pruned past it, or another model)."""
        seq = self._covered_seq(base.stamp)
        if seq is None:
            return None
        rows = self.store.changes_since(seq)
        if not rows.complete:
            return None
        return base.with_delta(_delta(rows))

    def _folded_if_due(self, live: SearchIndex, save: bool) -> SearchIndex:
        if live.pending <= faiss_index.fold_threshold(live.stamp.count):
            return live
        if _large(live.stamp.count):
            log.warning("%d images of library %s changed since its index was saved and are "
                        "searched exactly on every load; `searchkit index --library %s` folds "
                        "them in", live.pending, self.directory, self.directory)
            return live
        folded = self._fold(save)
        return folded[0] if folded is not None else live

    def _rebuilt_for_query(self, save: bool) -> SearchIndex:
        n = self.store.counts().get("ok", 0)
        level = logging.WARNING if _large(n) else logging.INFO
        log.log(level, "building the index of library %s from its %d stored vectors (no saved "
                "index covers the store); `searchkit index` keeps it up to date", self.directory, n)
        return self.rebuild(save)

    def _fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.store.vectors_for(ids)  # the re-rank's read: plain SQL, no ORM session
        return rows.ids, rows.vectors

    # ---- writing (index runs, import, forget, repair) --------------------------------------
    def update(self, rebuild: bool = False) -> IndexUpdate:
        """The store changed: bring the saved index up to date, in work proportional to the
        change unless the quantizer must be trained again. Callers hold the write lock."""
        t0 = time.perf_counter()
        with self._lock:
            state = self.state(verify=True)  # index runs check the whole file
            why = "asked to" if rebuild else _rebuild_reason(state)
            if why is None and state.pending <= faiss_index.fold_threshold(state.stamp.count):
                return IndexUpdate("none", state.pending, seconds=time.perf_counter() - t0)
            if why is None:
                folded = self._fold(save=True, prune=True)
                if folded is not None:
                    return IndexUpdate(folded[1], state.pending, folded[2],
                                       time.perf_counter() - t0)
                why = "it could not be folded"
            if state.damage:
                log.warning("the saved index of library %s is damaged (%s): rebuilding it "
                            "from %s", self.directory, state.damage, self.store.path.name)
            built = self.rebuild(save=True, prune=True)
            return IndexUpdate("rebuilt", len(built), why, time.perf_counter() - t0)

    def _fold(self, save: bool, prune: bool = False
              ) -> tuple[SearchIndex, str, str] | None:
        """Read the saved base into memory (checksummed), fold the delta in, save it: (the
        index, "folded", ""); or ("rebuilt", why) when the quantizer must be trained again.
        None if there is no usable base."""
        try:
            saved = faiss_index.load(self.directory, mmap=False)
        except DamagedIndexError:
            return None
        seq = self._covered_seq(saved.stamp) if saved is not None else None
        if seq is None:
            return None
        rows = self.store.changes_since(seq, count_ok=True)
        if not rows.complete:
            return None
        why = faiss_index.retrain_reason(saved.stamp, rows.ok_rows - len(rows.current.bad))
        if why:
            log.info("rebuilding the index of library %s: %s", self.directory, why)
            return self.rebuild(save, previous=saved, prune=prune), "rebuilt", why
        t = time.perf_counter()
        faiss_index.fold(saved.index, rows.changed, rows.current.ids, rows.current.vectors)
        stamp = self._stamp(rows.version, saved.index, saved.stamp.kind,
                            saved.stamp.trained_count, rows.ok_rows, saved.stamp.spec)
        log.info("folded %d changed rows into the index of library %s in %.2fs",
                 len(rows.changed), self.directory, time.perf_counter() - t)
        return self._keep(saved.index, stamp, save, prune), "folded", ""

    def rebuild(self, save: bool = True, previous: faiss_index.Saved | None = None,
                prune: bool = False) -> SearchIndex:
        """Build from every stored vector (a stale IVF index may lend its quantizer: see
        ``index.rebuild``). Rows whose stored vector is damaged are left out (and reported)."""
        if previous is None:
            previous = self._previous()
        t = time.perf_counter()
        version = self.store.version()  # first: rows read after it can only be newer
        ids = self.store.ok_ids()
        bad: dict[int, str] = {}
        built = faiss_index.rebuild_chunked(len(ids), self.info.dim, self._sampler(ids),
                                            self._chunks(bad), previous)
        if bad:
            log.warning("%d indexed images of library %s have a damaged vector and are left "
                        "out of search; run: searchkit check --repair --library %s",
                        len(bad), self.directory, self.directory)
        stamp = self._stamp(version, built.index, built.kind, built.trained_count,
                            built.index.ntotal + len(bad), built.spec.record())
        log.info("built %s index of %d vectors in %.2fs", built.spec.kind, stamp.count,
                 time.perf_counter() - t)
        return self._keep(built.index, stamp, save, prune)

    def _sampler(self, ids: np.ndarray):
        """``rows`` -> the stored vectors of that many ok rows drawn at random (training)."""
        def sample(rows: int) -> np.ndarray:
            rng = np.random.default_rng(len(ids))
            return self.store.vectors_for(rng.choice(ids, rows, replace=False)).vectors
        return sample

    def _chunks(self, bad: dict[int, str]):
        """(ids, vectors) of every ok row, a chunk at a time; damaged ones go into ``bad``."""
        for part in self.store.ok_vectors():
            bad.update(part.bad)
            yield part.ids, part.vectors

    def _previous(self) -> faiss_index.Saved | None:
        """The saved index, if readable, to lend its quantizer (mapped: nothing is copied)."""
        try:
            return faiss_index.load(self.directory, mmap=True)
        except DamagedIndexError:
            return None

    def _stamp(self, version, index, kind: str, trained_count: int, ok_rows: int,
               spec: dict | None) -> Stamp:
        return Stamp(version.vectors, index.ntotal, self.info.dim, self.info.model_fingerprint,
                     kind, trained_count, left_out=ok_rows - index.ntotal,
                     changes_seq=version.seq, spec=spec)

    def _keep(self, index, stamp: Stamp, save: bool, prune: bool) -> SearchIndex:
        """Use (and save) a new base; with ``prune``, drop the log entries it covers."""
        self._digest = self._save(index, stamp) if save else None
        if self._digest is not None and prune:
            self.store.prune_changes(stamp.changes_seq)
        self._index = SearchIndex(index, stamp, fetch=self._fetch)
        return self._index

    def _save(self, index, stamp: Stamp) -> str | None:
        try:
            return faiss_index.save(index, stamp, self.directory)
        except OSError as e:  # a read-only library or a full disk: still answers
            log.warning("cannot save the index of library %s (%s): it is rebuilt in "
                        "memory until it can be saved", self.directory, e.strerror or e)
            return None

    def forget(self) -> None:
        """Drop what is in memory (the library was bound to another model)."""
        with self._lock:
            self._index, self._digest = None, None


def _rebuild_reason(state: IndexState) -> str | None:
    """Why :meth:`IndexCache.update` cannot bring this saved index up to date incrementally."""
    if state.damage:
        return f"it is damaged ({state.damage})"
    return {"missing": "there is none", "stale": "the change log does not cover it"}.get(
        state.state)


def _delta(rows: ChangedRows) -> Delta:
    return Delta(rows.changed, rows.current.ids, rows.current.vectors, rows.version.vectors,
                 rows.version.seq)


def _large(n: int) -> bool:
    """A library whose full rebuild is slow enough to deserve a warning."""
    return n >= faiss_index.IVF_THRESHOLD
