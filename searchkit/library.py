"""A library: one directory holding the SQLite store and its derived FAISS index, bound to one
model. Opening, searching and status live here; ``indexer`` writes into it."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from filelock import FileLock, Timeout

from . import index as faiss_index
from .encoders import fast_query
from .encoders.registry import load_encoder
from .errors import LibraryBusyError, ModelMismatchError, SearchkitError
from .query import Filters, Hit, Query, build_filter_ids, combine, unknown_terms, validate
from .store import STATUS_OK, STATUS_SKIPPED, File, LibraryInfo, Store, vector_problem

if TYPE_CHECKING:
    from .encoders.base import Encoder

log = logging.getLogger(__name__)

LOCK_FILE = "write.lock"
EXACT_FILTER_LIMIT = 20_000  # a filter leaving fewer rows than this is searched exactly

EncoderFactory = Callable[[str], "Encoder"]


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class LibraryStatus:
    directory: str
    model_name: str
    model_fingerprint: str
    dim: int
    schema_version: int
    indexed: int
    skipped: int
    roots: list[str]
    index_kind: str
    index_state: str          # "fresh", "stale", "missing" or "damaged" (rebuilt when used)
    index_device: str
    busy: bool                # an index run holds the write lock
    queries: str = "torch"    # "onnx": queries are encoded without torch (encoders.fast_query)
    skipped_files: list[SkippedFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what `searchkit check` would report


@dataclass
class SearchTimings:
    """Where the last search spent its time (seconds)."""
    encode: float = 0.0
    faiss: float = 0.0
    sqlite: float = 0.0


def reindex_hint(directory: Path, model: str) -> str:
    return f"re-index with: searchkit index --library {directory} --model {model} --reindex"


class Library:
    """Open with :meth:`open`; build objects once and pass them in (tests hand in fakes)."""

    def __init__(self, directory: Path, store: Store, info: LibraryInfo,
                 encoder: "Encoder | None" = None,
                 encoder_factory: EncoderFactory = load_encoder):
        self.directory = Path(directory)
        self.store = store
        self.info = info
        self._encoder = encoder
        self._encoder_factory = encoder_factory
        self._index: faiss_index.SearchIndex | None = None
        self._fast: fast_query.FastQueryEncoder | None | bool = False  # False: not looked up
        self.last_timings = SearchTimings()
        if encoder is not None:
            self._check_encoder(encoder)

    # ---- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: str | Path, model: str | None = None, create: bool = False,
             encoder: "Encoder | None" = None,
             encoder_factory: EncoderFactory = load_encoder) -> "Library":
        """Open the library in ``directory``; with ``create``, make it (bound to ``model``).

        ``model`` given for an existing library must be the one it was indexed with.
        """
        directory = Path(directory).expanduser()
        if not directory.exists():
            if not create:
                raise SearchkitError(f"no library at {directory}: index a folder first "
                                     f"(searchkit index PATH --library {directory})")
            directory.mkdir(parents=True)
        elif not directory.is_dir():
            raise SearchkitError(f"library path {directory} is not a directory")
        store = Store(directory)
        if not store.exists():
            if not create:
                raise SearchkitError(f"no library at {directory}: index a folder first "
                                     f"(searchkit index PATH --library {directory})")
            from .encoders.registry import DEFAULT_MODEL
            encoder = encoder or encoder_factory(model or DEFAULT_MODEL)
            with write_lock(directory):
                if not store.exists():
                    store.create(model or encoder.name, encoder.fingerprint(), encoder.dim)
        store.migrate()
        info = store.info()
        if model is not None and model != info.model_name:
            raise ModelMismatchError(
                f"library {directory} was indexed with model {info.model_name!r}, not {model!r}; "
                + reindex_hint(directory, model))
        return cls(directory, store, info, encoder=encoder, encoder_factory=encoder_factory)

    @property
    def encoder(self) -> "Encoder":
        if self._encoder is None:
            enc = self._encoder_factory(self.info.model_name)
            self._check_encoder(enc)
            self._encoder = enc
        return self._encoder

    def _uses_registry(self) -> bool:
        return self._encoder_factory is load_encoder

    def _query_encoder(self) -> "Encoder":
        """The encoder for queries: while torch is not loaded, the model's exported ONNX query
        side when there is one (see :mod:`fast_query`), else the model itself."""
        if self._encoder is None and self._uses_registry():
            if self._fast is False:
                self._fast = fast_query.load(self.info.model_name, self.info.model_fingerprint)
            if self._fast is not None:
                return self._fast
        return self.encoder

    def prepare_fast_queries(self) -> bool:
        """Export the model's query side for torch-free queries unless already done (loads the
        model if needed); whether queries can now skip torch."""
        if not self._uses_registry() or not fast_query.supported(self.info.model_name):
            return False  # without loading a model that could not be exported anyway
        if fast_query.available(self.info.model_name, self.info.model_fingerprint):
            return True
        return fast_query.export(self.encoder, self.info.model_name) is not None

    def _check_encoder(self, enc: "Encoder") -> None:
        if enc.dim != self.info.dim or enc.fingerprint() != self.info.model_fingerprint:
            raise ModelMismatchError(
                f"model {enc.name!r} has changed since library {self.directory} was indexed "
                f"(weights fingerprint {enc.fingerprint()[:12]} != "
                f"{self.info.model_fingerprint[:12]}); " + reindex_hint(self.directory, enc.name))

    def rebind(self, encoder: "Encoder") -> None:
        """Bind to another model (``--reindex``): all vectors are dropped, files stay listed
        as roots so that the next index run re-encodes them."""
        self.store.rebind(encoder.name, encoder.fingerprint(), encoder.dim)
        self.info = self.store.info()
        self._encoder = encoder
        self._fast = False
        self._index = None

    @contextmanager
    def writer(self) -> Iterator[None]:
        """Hold the library's write lock; a second writer fails at once. Temp files left by
        a killed index save are removed on the way in."""
        with write_lock(self.directory):
            faiss_index.remove_stray_temp_files(self.directory)
            yield

    def is_busy(self) -> bool:
        lock = FileLock(str(self.directory / LOCK_FILE), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            return True
        lock.release()
        return False

    # ---- the FAISS cache -------------------------------------------------------------------
    def search_index(self, save: bool = True) -> faiss_index.SearchIndex:
        """The index, loaded or rebuilt so that it answers with exactly the stored vectors."""
        version = self.store.vectors_version()
        if self._index is not None and self._index.stamp.vectors_version == version:
            return self._index
        saved, damage = self.read_saved_index()
        if damage is not None:
            log.warning("the saved index of library %s is damaged (%s): rebuilding it from "
                        "%s", self.directory, damage, self.store.path.name)
        if saved is not None and self._stamp_matches(saved.stamp, version):
            self._index = faiss_index.SearchIndex(saved.index, saved.stamp)
            return self._index
        self._index = self.rebuild_index(save=save, previous=saved)
        return self._index

    def read_saved_index(self) -> tuple[faiss_index.Saved | None, str | None]:
        """The saved index (None if missing or damaged) and what is damaged, if anything."""
        try:
            return faiss_index.load(self.directory), None
        except faiss_index.DamagedIndexError as e:
            return None, str(e)

    def _stamp_matches(self, stamp: faiss_index.Stamp, version: int) -> bool:
        return (stamp.vectors_version == version and stamp.dim == self.info.dim
                and stamp.model_fingerprint == self.info.model_fingerprint)

    def rebuild_index(self, save: bool = True, previous: faiss_index.Saved | None = None
                      ) -> faiss_index.SearchIndex:
        """Build from the store; a stale IVF index lends its trained quantizer. Rows whose
        stored vector is damaged are left out (and reported)."""
        stored, version = self.store.all_vectors()
        ids, vectors = stored.ids, stored.vectors
        if stored.bad:
            log.warning("%d indexed images of library %s have a damaged vector and are left "
                        "out of search; run: searchkit check --repair --library %s",
                        len(stored.bad), self.directory, self.directory)
        t = time.perf_counter()
        trained, trained_count = None, 0
        if previous is not None and previous.stamp.dim == self.info.dim:
            trained = previous.index
            trained_count = previous.stamp.trained_count or previous.stamp.count
        idx = faiss_index.build(ids, vectors, trained=trained, trained_count=trained_count)
        kind = faiss_index.kind_of(idx)
        if kind != "ivf":
            trained_count = 0
        elif not faiss_index.reusable(trained, self.info.dim, len(ids), trained_count):
            trained_count = len(ids)
        stamp = faiss_index.Stamp(version, len(ids), self.info.dim, self.info.model_fingerprint,
                                  kind, trained_count, left_out=len(stored.bad))
        log.info("built %s index of %d vectors in %.2fs", stamp.kind, len(ids),
                 time.perf_counter() - t)
        if save:
            try:
                faiss_index.save(idx, stamp, self.directory)
            except OSError as e:  # a read-only library or a full disk: still answers
                log.warning("cannot save the index of library %s (%s): it is rebuilt in "
                            "memory until it can be saved", self.directory, e.strerror or e)
        return faiss_index.SearchIndex(idx, stamp)

    def index_state(self) -> str:
        """"fresh", "stale", "missing" or "damaged" (the saved index, as the next search
        would find it)."""
        return self._index_state(*self.read_saved_index())

    def _index_state(self, saved: faiss_index.Saved | None, damage: str | None) -> str:
        if damage is not None:
            return "damaged"
        if saved is None:
            return "missing"
        return "fresh" if self.is_fresh(saved) else "stale"

    def is_fresh(self, saved: faiss_index.Saved) -> bool:
        """Whether a saved index was built from the store as it is now."""
        return self._stamp_matches(saved.stamp, self.store.vectors_version())

    # ---- search ----------------------------------------------------------------------------
    def query_vector(self, query: Query) -> np.ndarray:
        """The one normalised vector a (possibly combined) query stands for."""
        validate(query)
        encoder = self._query_encoder()
        try:
            return combine(query, encoder, self._stored_vector)
        except fast_query.FastQueryError as e:
            log.warning("%s; encoding queries with torch", e)
            self._fast = None
            return combine(query, self.encoder, self._stored_vector)

    def unknown_terms(self, query: Query) -> list[str]:
        """The query's texts of which the model knows no token (they all encode alike, so
        their hits say nothing about them): worth a warning."""
        return unknown_terms(query, self._query_encoder())

    def stored_vector(self, file_id: int) -> np.ndarray:
        """The stored vector of an indexed image ("more like this")."""
        return self._stored_vector(file_id)

    def _stored_vector(self, file_id: int) -> np.ndarray:
        f = self.store.get_file(file_id)
        if f is None or f.status != STATUS_OK:
            raise SearchkitError(f"no indexed image with id {file_id}")
        problem = vector_problem(f.vector, self.info.dim)
        if problem is not None:
            raise self.store.damaged(f"image {file_id} has a damaged vector ({problem})")
        return np.frombuffer(f.vector, dtype=np.float32)

    def search(self, query: Query, k: int = 10, filters: Filters | None = None,
               threshold: float | None = None) -> list[Hit]:
        """Nearest images to ``query``, best first, restricted by ``filters``."""
        if k <= 0:
            raise SearchkitError("k must be at least 1")
        timings = SearchTimings()
        t0 = time.perf_counter()
        qv = self.query_vector(query)
        t1 = time.perf_counter()
        timings.encode = t1 - t0
        scores, ids = self.search_vector(qv, k, filters, timings)
        t2 = time.perf_counter()
        hits = self._hits(scores, ids, threshold)
        timings.sqlite += time.perf_counter() - t2
        self.last_timings = timings
        return hits

    def search_vector(self, qv: np.ndarray, k: int, filters: Filters | None = None,
                      timings: SearchTimings | None = None) -> tuple[np.ndarray, np.ndarray]:
        timings = timings or SearchTimings()
        t = time.perf_counter()
        index = self.search_index()
        allowed = None
        if filters is not None and filters.active():
            allowed = build_filter_ids(self.store, filters)
        timings.sqlite += time.perf_counter() - t
        t = time.perf_counter()
        if allowed is not None and len(allowed) == 0:
            scores, ids = np.zeros(0, np.float32), np.zeros(0, np.int64)
        elif allowed is not None and index.kind != "flat" and len(allowed) <= EXACT_FILTER_LIMIT:
            scores, ids = _exact(index, qv, k, allowed)
        else:
            scores, ids = index.search(qv, k, allowed)
        timings.faiss += time.perf_counter() - t
        return scores, ids

    def hits(self, scores: np.ndarray, ids: np.ndarray, threshold: float | None = None
             ) -> list[Hit]:
        """Hits for the (scores, ids) of :meth:`search_vector` (for callers that encode the
        query themselves, e.g. the web server under its encoder lock)."""
        return self._hits(scores, ids, threshold)

    def _hits(self, scores: np.ndarray, ids: np.ndarray, threshold: float | None) -> list[Hit]:
        files = self.store.get_files([int(i) for i in ids])
        hits = []
        for score, i in zip(scores, ids):
            if threshold is not None and score < threshold:
                continue
            f = files.get(int(i))
            if f is None:  # removed after the index was read
                continue
            hits.append(Hit.from_row(f, float(score)))
        return hits

    # ---- status ----------------------------------------------------------------------------
    def status(self, with_skipped: bool = True) -> LibraryStatus:
        counts = self.store.counts()
        saved, damage = self.read_saved_index()
        state = self._index_state(saved, damage)
        kind = saved.stamp.kind if saved else faiss_index.choose_kind(counts.get(STATUS_OK, 0))
        skipped = [SkippedFile(f.path, f.reason or "") for f in self.store.skipped()] \
            if with_skipped else []
        return LibraryStatus(
            directory=str(self.directory), model_name=self.info.model_name,
            model_fingerprint=self.info.model_fingerprint, dim=self.info.dim,
            schema_version=self.info.schema_version, indexed=counts.get(STATUS_OK, 0),
            skipped=counts.get(STATUS_SKIPPED, 0), roots=self.store.roots(), index_kind=kind,
            index_state=state, index_device="gpu" if faiss_index.gpu_count() else "cpu",
            busy=self.is_busy(), skipped_files=skipped,
            problems=self._problems(saved if state == "fresh" else None, damage),
            queries="onnx" if self._uses_registry() and fast_query.available(
                self.info.model_name, self.info.model_fingerprint) else "torch")

    def _problems(self, fresh: faiss_index.Saved | None, damage: str | None) -> list[str]:
        """What is wrong, cheaply (no full scan of the vectors: `searchkit check` does it)."""
        problems = []
        if damage is not None:
            problems.append(f"the saved index is damaged ({damage}); the next search "
                            "rebuilds it")
        strays = faiss_index.stray_temp_files(self.directory)
        if strays:
            problems.append(faiss_index.describe_temp_files(strays)
                            + "; the next index run removes them")
        if fresh is not None and fresh.stamp.left_out:
            problems.append(f"{fresh.stamp.left_out} indexed images have a damaged vector "
                            "and are left out of search")
        waiting = self.store.awaiting_reencoding()
        if waiting:
            problems.append(f"{waiting} images wait to be encoded again by the next index run")
        return problems

    def get(self, file_id: int) -> File | None:
        return self.store.get_file(file_id)


def _exact(index: faiss_index.SearchIndex, qv: np.ndarray, k: int, allowed: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among ``allowed`` ids (an approximate index may miss rare filtered rows);
    ids the index left out (damaged vectors) are passed over."""
    kept, vecs = [], []
    for i in allowed:
        try:
            vecs.append(index.reconstruct(int(i)))
        except RuntimeError:  # not in the index
            continue
        kept.append(int(i))
    if not kept:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    scores = np.stack(vecs) @ qv.astype(np.float32)
    order = np.argsort(-scores)[:k]
    return scores[order], np.asarray(kept, np.int64)[order]


@contextmanager
def write_lock(directory: Path) -> Iterator[None]:
    lock = FileLock(str(Path(directory) / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LibraryBusyError(f"library is busy: another `searchkit index` is writing to "
                               f"{directory}; wait for it to finish") from None
    try:
        yield
    finally:
        lock.release()
