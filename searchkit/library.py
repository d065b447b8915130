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
from .store import STATUS_OK, STATUS_SKIPPED, File, LibraryInfo, Store

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
    index_state: str          # "fresh", "stale" or "missing"
    index_device: str
    busy: bool                # an index run holds the write lock
    queries: str = "torch"    # "onnx": queries are encoded without torch (encoders.fast_query)
    skipped_files: list[SkippedFile] = field(default_factory=list)


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
            with _write_lock(directory):
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
        """Hold the library's write lock; a second writer fails at once."""
        with _write_lock(self.directory):
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
        loaded = faiss_index.load(self.directory)
        if loaded is not None and self._stamp_matches(loaded[1], version):
            self._index = faiss_index.SearchIndex(*loaded)
            return self._index
        self._index = self.rebuild_index(save=save, previous=loaded)
        return self._index

    def _stamp_matches(self, stamp: faiss_index.Stamp, version: int) -> bool:
        return (stamp.vectors_version == version and stamp.dim == self.info.dim
                and stamp.model_fingerprint == self.info.model_fingerprint)

    def rebuild_index(self, save: bool = True, previous=None) -> faiss_index.SearchIndex:
        """Build from the store; a stale IVF index lends its trained quantizer."""
        ids, vectors, version = self.store.all_vectors()
        t = time.perf_counter()
        trained, trained_count = None, 0
        if previous is not None and previous[1].dim == self.info.dim:
            trained, trained_count = previous[0], previous[1].trained_count or previous[1].count
        idx = faiss_index.build(ids, vectors, trained=trained, trained_count=trained_count)
        kind = faiss_index.kind_of(idx)
        if kind != "ivf":
            trained_count = 0
        elif not faiss_index.reusable(trained, self.info.dim, len(ids), trained_count):
            trained_count = len(ids)
        stamp = faiss_index.Stamp(version, len(ids), self.info.dim, self.info.model_fingerprint,
                                  kind, trained_count)
        log.info("built %s index of %d vectors in %.2fs", stamp.kind, len(ids),
                 time.perf_counter() - t)
        if save:
            try:
                faiss_index.save(idx, stamp, self.directory)
            except OSError as e:  # a read-only library still answers
                log.warning("cannot save the index (%s)", e)
        return faiss_index.SearchIndex(idx, stamp)

    def index_state(self, loaded=None) -> str:
        """"fresh", "stale" or "missing"; ``loaded`` is a saved index already read."""
        loaded = loaded if loaded is not None else faiss_index.load(self.directory)
        if loaded is None:
            return "missing"
        return "fresh" if self._stamp_matches(loaded[1], self.store.vectors_version()) else "stale"

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
        if f is None or f.status != STATUS_OK or f.vector is None:
            raise SearchkitError(f"no indexed image with id {file_id}")
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
        loaded = faiss_index.load(self.directory)
        state = self.index_state(loaded)
        kind = loaded[1].kind if loaded else faiss_index.choose_kind(counts.get(STATUS_OK, 0))
        skipped = [SkippedFile(f.path, f.reason or "") for f in self.store.skipped()] \
            if with_skipped else []
        return LibraryStatus(
            directory=str(self.directory), model_name=self.info.model_name,
            model_fingerprint=self.info.model_fingerprint, dim=self.info.dim,
            schema_version=self.info.schema_version, indexed=counts.get(STATUS_OK, 0),
            skipped=counts.get(STATUS_SKIPPED, 0), roots=self.store.roots(), index_kind=kind,
            index_state=state, index_device="gpu" if faiss_index.gpu_count() else "cpu",
            busy=self.is_busy(), skipped_files=skipped,
            queries="onnx" if self._uses_registry() and fast_query.available(
                self.info.model_name, self.info.model_fingerprint) else "torch")

    def get(self, file_id: int) -> File | None:
        return self.store.get_file(file_id)


def _exact(index: faiss_index.SearchIndex, qv: np.ndarray, k: int, allowed: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k among ``allowed`` ids (an approximate index may miss rare filtered rows)."""
    vecs = np.stack([index.reconstruct(int(i)) for i in allowed])
    scores = vecs @ qv.astype(np.float32)
    order = np.argsort(-scores)[:k]
    return scores[order], np.asarray(allowed, np.int64)[order]


@contextmanager
def _write_lock(directory: Path) -> Iterator[None]:
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
