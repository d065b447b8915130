"""A library: images, their vectors and metadata in one storage engine, bound to one model.
Every operation a user can ask for lives here (open, search, status, roots, forget, reindex,
check, import, export); ``indexer`` writes into it. Storage is the engine's
(:mod:`searchkit.engine`): a local directory (SQLite + FAISS, the default) or a Milvus
collection, chosen by the library's location."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from . import hybrid as hybrid_rank
from . import ocr as ocr_text
from .encoders import fast_query
from .encoders.registry import load_encoder
from .engine import Engine, IndexMaintenance, is_milvus, open_engine
from .errors import ModelMismatchError, SearchkitError
from .fsinfo import text_path
from .index import EXACT_FILTER_LIMIT  # noqa: F401  (where benches have read it)
from .index_cache import IndexState
from .local_engine import LOCK_FILE, LocalEngine, write_lock  # noqa: F401  (their old home)
from .paths import absolute, is_under
from .query import Filters, Hit, Query, combine, unknown_terms, validate
from .store import STATUS_OK, STATUS_SKIPPED, File, vector_problem

if TYPE_CHECKING:
    from .check import CheckReport
    from .dupes import DupesReport
    from .encoders.base import Encoder
    from .index import SearchIndex

log = logging.getLogger(__name__)

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
    index_pending: int = 0    # rows changed since the saved index was built (searched exactly)
    queries: str = "torch"    # "onnx": queries are encoded without torch (encoders.fast_query)
    ocr: bool = False         # index runs read the text in images (index --ocr)
    ocr_with_text: int = 0    # indexed images in which text was found
    ocr_failed: int = 0       # indexed images whose text could not be read
    skipped_files: list[SkippedFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what `searchkit check` would report


@dataclass(frozen=True)
class SearchTimings:
    """Where one search spent its time (seconds): encoding the query, the engine's vector
    search (filters included) and reading the hits' rows."""
    encode: float = 0.0
    faiss: float = 0.0
    sqlite: float = 0.0


@dataclass(frozen=True)
class SearchResult:
    """One search's hits (best first) and where it spent its time."""
    hits: list[Hit]
    timings: SearchTimings


@dataclass(frozen=True)
class ForgetResult:
    """What :meth:`Library.forget` did."""
    root: str       # the folder, as the library records it
    removed: int    # files that left the library (the files on disk are not touched)


@dataclass(frozen=True)
class IndexPlan:
    """What :meth:`Library.open_for_indexing` prepared: the library an index run writes to
    and the paths to give ``Indexer.run`` (empty: every folder the library knows)."""
    library: "Library"
    paths: list[str]


def reindex_hint(location: str | Path, model: str) -> str:
    return f"re-index with: searchkit index --library {location} --model {model} --reindex"


class Library:
    """Open with :meth:`open`; build objects once and pass them in (tests hand in fakes).

    One instance may serve many threads (the web server): the lazy encoder and the index
    cache are guarded, and a search keeps its timings in its result, not on the instance.
    """

    def __init__(self, engine: Engine, encoder: "Encoder | None" = None,
                 encoder_factory: EncoderFactory = load_encoder, fast_queries: bool = False):
        """``fast_queries``: encode queries with the model's exported torch-free query side
        (:mod:`~searchkit.encoders.fast_query`) when there is one and no encoder is loaded."""
        self.engine = engine
        self.location = engine.location
        self.info = engine.info()
        self._encoder = encoder
        self._encoder_factory = encoder_factory
        self._fast_queries = fast_queries
        self._fast: fast_query.FastQueryEncoder | None | bool = False  # False: not looked up
        self._encoder_lock = threading.Lock()
        if encoder is not None:
            self._check_encoder(encoder)

    @property
    def directory(self) -> Path:
        """The directory of a local library (a Milvus library has none)."""
        return self.engine.local("a library directory").directory

    @property
    def store(self) -> LocalEngine:
        """The SQLite store of a local library, for what only it has (see :mod:`engine`)."""
        return self.engine.local("this")

    # ---- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, location: str | Path, model: str | None = None, create: bool = False,
             encoder: "Encoder | None" = None, encoder_factory: EncoderFactory | None = None,
             fast_queries: bool | None = None) -> "Library":
        """Open the library at ``location`` (a directory, or a ``milvus://`` URI: see
        :mod:`searchkit.engine`); with ``create``, make it (bound to ``model``).

        ``model`` given for an existing library must be the one it was indexed with.
        ``encoder_factory`` builds the model from its name (default: the registry's
        ``load_encoder``); ``fast_queries`` (default: when the factory is the registry's) lets
        queries skip torch, see :class:`Library`.
        """
        engine = open_engine(_location(location), create)
        factory = encoder_factory or load_encoder
        if not engine.exists():
            encoder = encoder or factory(model or _default_model())
            _create(engine, model or encoder.name, encoder.fingerprint(), encoder.dim)
        engine.migrate()
        info = engine.info()
        if model is not None and model != info.model_name:
            raise ModelMismatchError(
                f"library {engine.location} was indexed with model {info.model_name!r}, not "
                f"{model!r}; " + reindex_hint(engine.location, model))
        fast = encoder_factory is None if fast_queries is None else fast_queries
        return cls(engine, encoder=encoder, encoder_factory=factory, fast_queries=fast)

    @classmethod
    def open_for_indexing(cls, directory: str | Path, model: str | None = None,
                          paths: list[str | os.PathLike] | tuple = (), reindex: bool = False,
                          encoder_factory: EncoderFactory | None = None) -> IndexPlan:
        """Open (creating it if needed) the library an index run of ``paths`` writes to.

        With ``reindex`` the library is bound to ``model`` (default: its own model as its
        files are now) and every vector is dropped; ``paths`` join its folders and the run
        encodes every folder it knows again. Without, ``model`` must be the library's.
        """
        for p in paths:
            if not os.path.exists(p):
                raise SearchkitError(f"path does not exist: {text_path(os.fspath(p))}")
        try:
            library = cls.open(directory, model=model, create=True,
                               encoder_factory=encoder_factory)
        except ModelMismatchError:
            if not reindex:
                raise
            library = cls.open(directory, encoder_factory=encoder_factory)
        if not reindex:
            return IndexPlan(library, [os.fspath(p) for p in paths])
        library.reindex(model)
        library.add_roots(paths)
        return IndexPlan(library, [])

    @property
    def encoder(self) -> "Encoder":
        with self._encoder_lock:
            if self._encoder is None:
                enc = self._encoder_factory(self.info.model_name)
                self._check_encoder(enc)
                self._encoder = enc
            return self._encoder

    def _query_encoder(self) -> "Encoder":
        """The encoder for queries: while no model is loaded, the model's exported ONNX query
        side when there is one and ``fast_queries`` is on (see :mod:`fast_query`), else the
        model itself."""
        if self._encoder is None and self._fast_queries:
            with self._encoder_lock:
                if self._fast is False:
                    self._fast = fast_query.load(self.info.model_name,
                                                 self.info.model_fingerprint)
            if self._fast is not None:
                return self._fast
        return self.encoder

    def prepare_fast_queries(self) -> bool:
        """Export the model's query side for torch-free queries unless already done (loads the
        model if needed); whether queries can now skip torch."""
        if not self._fast_queries or not fast_query.supported(self.info.model_name):
            return False  # without loading a model that could not be exported anyway
        if fast_query.available(self.info.model_name, self.info.model_fingerprint):
            return True
        return fast_query.export(self.encoder, self.info.model_name) is not None

    def _check_encoder(self, enc: "Encoder") -> None:
        if enc.dim != self.info.dim or enc.fingerprint() != self.info.model_fingerprint:
            raise ModelMismatchError(
                f"model {enc.name!r} has changed since library {self.location} was indexed "
                f"(weights fingerprint {enc.fingerprint()[:12]} != "
                f"{self.info.model_fingerprint[:12]}); " + reindex_hint(self.location, enc.name))

    # ---- writing ---------------------------------------------------------------------------
    def reindex(self, model: str | None = None) -> None:
        """Bind to ``model`` (default: the library's own, as its files are now) under the
        write lock: every vector is dropped, the folders stay, and the next index run encodes
        every file again (``--reindex``)."""
        with self.writer():
            self.rebind(self._reindex_encoder(model))

    def _reindex_encoder(self, model: str | None) -> "Encoder":
        if model in (None, self.info.model_name) and self._encoder is not None:
            return self._encoder
        return self._encoder_factory(model or self.info.model_name)  # unchecked: it rebinds

    def rebind(self, encoder: "Encoder") -> None:
        """Bind to another model (callers hold the write lock; see :meth:`reindex`)."""
        self.engine.rebind(encoder.name, encoder.fingerprint(), encoder.dim)
        self.info = self.engine.info()
        self._encoder = encoder
        self._fast = False

    def roots(self) -> list[str]:
        """The folders (and files) indexed, as the library records them, sorted."""
        return self.engine.roots()

    def add_roots(self, paths: list[str | os.PathLike] | tuple) -> None:
        """Record folders so that an index run with no paths scans them too."""
        self.engine.add_roots([absolute(p) for p in paths], time.time())

    def forget(self, path: str | os.PathLike) -> ForgetResult:
        """Stop tracking a folder indexed before (or one holding such folders; it may no
        longer exist): its files leave the library and the index. The files are not touched."""
        root = absolute(path)
        with self.writer():
            if not any(is_under(r, root) for r in self.engine.roots()):
                raise SearchkitError(f"{text_path(root)} is not an indexed folder "
                                     "(see searchkit status)")
            removed = self.engine.forget(root)
            self.update_index()
        return ForgetResult(root, removed)

    def writer(self):
        """Hold the library's write lock (a context manager); a second writer fails at once."""
        return self.engine.writer()

    def is_busy(self) -> bool:
        return self.engine.is_busy()

    def update_index(self, rebuild: bool = False) -> IndexMaintenance:
        """The store changed: bring the index up to date in work proportional to the change
        (the one call for index runs, imports, forget and repairs; callers hold the write
        lock). See the engine's ``update_index``."""
        return self.engine.update_index(rebuild)

    # ---- the local FAISS cache (decisions in searchkit.index_cache) ------------------------
    def search_index(self, save: bool = True) -> "SearchIndex":
        """The index, so that it answers with exactly the stored vectors: the saved base
        (memory-mapped when large) and the rows changed since it was built, read from the
        store's change log. Rebuilt (and saved) only when no saved index covers the store."""
        return self._cache().current(save)

    def rebuild_index(self, save: bool = True) -> "SearchIndex":
        """Build from every stored vector. Rows whose stored vector is damaged are left out
        (and reported)."""
        cache = self._cache()
        with cache._lock:
            return cache.rebuild(save)

    def saved_index(self, verify: bool | None = None) -> "SearchIndex | None":
        """The saved index with the changes since, as saved (nothing rebuilt or written);
        None if missing or stale; DamagedIndexError if damaged (``searchkit check``)."""
        return self._cache().saved(verify)

    def index_state(self, verify: bool | None = None) -> str:
        """"fresh", "stale", "missing" or "damaged" (the saved index, as the next search
        would find it; from its stamp and the change log, the index is not loaded)."""
        return self.saved_index_state(verify).state

    def saved_index_state(self, verify: bool | None = None) -> IndexState:
        """:meth:`index_state` with the stamp and the changes pending (``verify``: read the
        whole file to check its checksum; default: when it is small)."""
        return self._cache().state(verify)

    def _cache(self):
        return self.engine.local("the FAISS index cache").cache

    # ---- search ----------------------------------------------------------------------------
    def query_vector(self, query: Query, encoder: "Encoder | None" = None) -> np.ndarray:
        """The one normalised vector a (possibly combined) query stands for, its texts and
        images encoded by ``encoder`` (default: the library's query encoder)."""
        validate(query)
        if encoder is not None:
            return combine(query, encoder, self._stored_vector)
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
        f = self.engine.get_file(file_id)
        if f is None or f.status != STATUS_OK:
            raise SearchkitError(f"no indexed image with id {file_id}")
        problem = vector_problem(f.vector, self.info.dim)
        if problem is not None:
            raise self.engine.damaged(f"image {file_id} has a damaged vector ({problem})")
        return np.frombuffer(f.vector, dtype=np.float32)

    def search(self, query: Query, k: int = 10, filters: Filters | None = None,
               threshold: float | None = None, encoder: "Encoder | None" = None,
               hybrid: bool | None = None) -> list[Hit]:
        """Nearest images to ``query``, best first, restricted by ``filters``. ``hybrid``:
        lift images whose text holds the query's words (see :mod:`searchkit.hybrid`; default:
        when the library has text read in images)."""
        return self.search_with_timings(query, k, filters, threshold, encoder, hybrid).hits

    def search_with_timings(self, query: Query, k: int = 10, filters: Filters | None = None,
                            threshold: float | None = None, encoder: "Encoder | None" = None,
                            hybrid: bool | None = None) -> SearchResult:
        """:meth:`search`, with where it spent its time. ``encoder`` encodes the query
        instead of the library's own (the web server passes its micro-batching one)."""
        if k <= 0:
            raise SearchkitError("k must be at least 1")
        lap = _Laps()
        qv = self.query_vector(query, encoder)
        encode = lap()
        words = self._hybrid_words(query, hybrid)
        scores, ids = self.engine.search(qv, max(k, hybrid_rank.HYBRID_DEPTH) if words else k,
                                         filters)
        faiss = lap()
        if words:
            scores, ids = self._lift_by_text(qv, scores, ids, words, k, filters)
        hits = self._hits(scores, ids, threshold)
        return SearchResult(hits, SearchTimings(encode, faiss, lap()))

    # ---- hybrid ranking (issue 14; the rule: searchkit.hybrid) -------------------------------
    def _hybrid_words(self, query: Query, hybrid: bool | None) -> list[str]:
        """The query's words to look for in images' text; none when the ranking is CLIP's
        alone (``hybrid`` False, no positive text term, or by default no text read)."""
        texts = [t for t, weight in query.texts if weight > 0]
        if hybrid is False or not texts or (hybrid is None and not self._has_text()):
            return []
        return ocr_text.query_words(texts)

    def _lift_by_text(self, qv: np.ndarray, scores: np.ndarray, ids: np.ndarray,
                      words: list[str], k: int, filters: Filters | None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The fused top ``k`` (ids, and their CLIP similarity as the score) of the CLIP
        ranking (``ids``) and the text ranking of ``words`` within ``filters``."""
        text = self.engine.local("text read in images (--hybrid)").ocr_ranking(
            words, max(k, hybrid_rank.HYBRID_DEPTH), filters)
        extra = np.setdiff1d(np.asarray(text, np.int64), ids)
        found = self.engine.vectors_of(extra)
        similarity = dict(zip(found.ids.tolist(), (found.vectors @ qv).tolist()))
        cosine = similarity | dict(zip(ids.tolist(), scores.tolist()))
        text = [i for i in text if i in cosine]  # a damaged vector is out of search
        top = hybrid_rank.fuse(ids.tolist(), scores.tolist(), text, similarity, k)
        return (np.asarray([cosine[i] for i in top], np.float32),
                np.asarray(top, np.int64))

    def _hits(self, scores: np.ndarray, ids: np.ndarray, threshold: float | None) -> list[Hit]:
        files = self.engine.get_files([int(i) for i in ids])
        hits = []
        for score, i in zip(scores, ids):
            if threshold is not None and score < threshold:
                continue
            f = files.get(int(i))
            if f is None:  # removed after the index was read
                continue
            hits.append(Hit.from_row(f, float(score)))
        return self._with_duplicates(hits, files)

    # ---- duplicates (issue 14; the logic: searchkit.dupes) ---------------------------------
    def dupes(self, threshold: float | None = None, k: int | None = None,
              keep: str | None = None, filters: Filters | None = None,
              exact_only: bool = False, limit: int | None = None) -> "DupesReport":
        """Groups of exact duplicates (same content hash) and near-duplicates (cosine at or
        above ``threshold``, default 0.99) among the indexed images within ``filters``,
        largest first, each with the file to keep by the ``keep`` rule (largest, oldest,
        newest or shortest-path; default largest). Through a k-NN graph of ``k`` neighbours
        per image, never all pairs (see :mod:`searchkit.dupes`). ``limit``: list only the
        largest groups (all are counted)."""
        from .dupes import DupesOptions, find_dupes
        options = DupesOptions.parse(threshold, k, keep, exact_only, limit)
        return find_dupes(self.engine, self.info.dim, options, filters)

    def _with_duplicates(self, hits: list[Hit], files: dict) -> list[Hit]:
        """``hits`` with how many other indexed files hold each one's content (one indexed
        count for all of them)."""
        hashes = {h.id: files[h.id].content_hash for h in hits}
        copies = self.engine.content_copies([c for c in hashes.values() if c])
        return [replace(h, duplicates=copies.get(hashes[h.id], 1) - 1) if hashes[h.id] else h
                for h in hits]

    # ---- reading ---------------------------------------------------------------------------
    def status(self, with_skipped: bool = True) -> LibraryStatus:
        counts = self.engine.counts()
        index = self.engine.index()
        skipped = [SkippedFile(f.path, f.reason or "") for f in self.engine.skipped()] \
            if with_skipped else []
        return LibraryStatus(
            directory=self.location, model_name=self.info.model_name,
            model_fingerprint=self.info.model_fingerprint, dim=self.info.dim,
            schema_version=self.info.schema_version, indexed=counts.get(STATUS_OK, 0),
            skipped=counts.get(STATUS_SKIPPED, 0), roots=self.roots(), index_kind=index.kind,
            index_state=index.state, index_pending=index.pending, index_device=index.device,
            busy=self.is_busy(), skipped_files=skipped, problems=self.engine.problems(),
            queries="onnx" if self._fast_queries and fast_query.available(
                self.info.model_name, self.info.model_fingerprint) else "torch",
            **self._ocr_status())

    def _ocr_status(self) -> dict:
        if not isinstance(self.engine, LocalEngine):
            return {}
        counts = self.engine.ocr_counts()
        return dict(ocr=self.engine.ocr_on(), ocr_with_text=counts.with_text,
                    ocr_failed=counts.failed)

    def _has_text(self) -> bool:
        """Whether the library holds text read in its images (only a local one can)."""
        return isinstance(self.engine, LocalEngine) and self.engine.has_ocr_text()

    # ---- text in images (issue 14: index --ocr; the engine: searchkit.ocr) ------------------
    def set_ocr(self, on: bool) -> None:
        """Read the text in images from the next index run on (remembered by the library);
        turned on for an indexed library, that run reads the text of every image it has
        (their vectors stay). Turned off, the text read so far stays searchable."""
        store = self.engine.local("reading the text in images (--ocr)") if on else None
        with self.writer():
            if store is not None:
                store.set_ocr(True)
            elif isinstance(self.engine, LocalEngine):
                self.engine.set_ocr(False)

    def ocr_on(self) -> bool:
        return self.engine.ocr_on()

    @staticmethod
    def check(directory: str | Path, repair: bool = False) -> "CheckReport":
        """Verify the library in ``directory`` (like ``git fsck``) and, with ``repair``, fix
        what can be fixed without losing a stored row: see :mod:`searchkit.check`. It does
        not open the library first, since it must work on a damaged one."""
        if is_milvus(directory):
            raise SearchkitError(f"searchkit check verifies local libraries; {directory} is on "
                                 "Milvus, which keeps its own data safe (searchkit status "
                                 "shows its counts)")
        from .check import check_library
        return check_library(directory, repair=repair)

    def get(self, file_id: int) -> File | None:
        return self.engine.get_file(file_id)

    def indexed_file(self, file_id: int) -> File | None:
        """An indexed image's row, without its vector; None unless an ok row has this id."""
        f = self.engine.get_files([file_id]).get(file_id)
        return f if f is not None and f.status == STATUS_OK else None

    def formats(self) -> list[str]:
        """The image formats of the indexed files, sorted."""
        return self.engine.formats()

    # ---- import and export of embeddings (issue 12; the format: searchkit.parquet_io) -------
    @classmethod
    def open_for_import(cls, location: str | Path, file: str | os.PathLike,
                        encoder_factory: EncoderFactory | None = None) -> "Library":
        """The library at ``location``, or a new one bound to the model ``file`` names. The
        model is loaded only when the file's vectors do not state their dimension (a list of
        variable size); then its fingerprint must be the file's."""
        from .parquet_io import EmbeddingsReader
        reader = EmbeddingsReader(file)  # a file that cannot be imported makes no library
        engine = open_engine(_location(location), create=True)
        if engine.exists():
            return cls.open(location, encoder_factory=encoder_factory)
        model = reader.model
        if not model.named:
            raise SearchkitError(f"cannot make library {engine.location} from "
                                 f"{os.fspath(file)}: its schema metadata names no model "
                                 "(searchkit.model, searchkit.model_fingerprint); index a "
                                 "folder first")
        if reader.dim is None:
            encoder = (encoder_factory or load_encoder)(model.name)
            if encoder.fingerprint() != model.fingerprint:
                raise ModelMismatchError(_file_model_mismatch(
                    file, model.name, model.fingerprint, encoder.name, encoder.fingerprint(),
                    engine.location))
            return cls.open(location, model=model.name, create=True, encoder=encoder)
        _create(engine, model.name, model.fingerprint, reader.dim)
        return cls.open(location, encoder_factory=encoder_factory)

    def import_parquet(self, file: str | os.PathLike, check_model: bool = True,
                       batch_rows: int | None = None, update_index: bool = True
                       ) -> "ImportReport":
        """Add (or update, by path) the embeddings of a Parquet ``file`` (see
        :mod:`searchkit.parquet_io`) under the write lock, a batch per transaction: a crash
        leaves every batch before it stored, and importing the file again finishes the job
        (rows already stored as the file has them are left alone). Bad rows are reported and
        skipped. ``check_model=False`` trusts that the vectors come from the library's model
        even if the file names no model or another one (the dimension is still checked).
        ``update_index=False`` leaves the index to the next search (benches time the two
        apart)."""
        from .parquet_io import BATCH_ROWS, EmbeddingsReader
        t0 = time.perf_counter()
        reader = EmbeddingsReader(file)
        if check_model:
            self._check_file_model(file, reader.model)
        report = ImportReport(os.fspath(file), reader.rows)
        with self.writer():
            for batch in reader.batches(self.info.dim, batch_rows or BATCH_ROWS):
                self._import_batch(batch, report)
            if update_index:
                self.update_index()  # bring the index up to date with the imported rows
        report.seconds = time.perf_counter() - t0
        return report

    def _check_file_model(self, file: str | os.PathLike, model) -> None:
        if not model.named:
            raise SearchkitError(
                f"cannot import {os.fspath(file)}: its schema metadata does not name the model "
                "of its vectors (searchkit.model, searchkit.model_fingerprint; searchkit export "
                f"writes them); to import it into library {self.location} as vectors of "
                f"{self.info.model_name!r} anyway, pass --no-model-check")
        if (model.name, model.fingerprint) != (self.info.model_name,
                                               self.info.model_fingerprint):
            raise ModelMismatchError(_file_model_mismatch(
                file, model.name, model.fingerprint, self.info.model_name,
                self.info.model_fingerprint, self.location))

    def _import_batch(self, batch, report: "ImportReport") -> None:
        """Store one batch's rows that differ from what is stored at their paths."""
        stored = self.engine.rows_at(batch.paths)
        rows = []
        for row in _imported_rows(batch, stored, time.time()):
            old = stored.get(row.path)
            if old is not None and _same_import(old, row):
                report.unchanged += 1
                continue
            rows.append(row)
            if old is None:
                report.added += 1
            else:
                report.updated += 1
        self.engine.upsert_rows(rows)
        report.absent += sum(1 for p in batch.paths if not os.path.exists(p))
        report.renormalised += batch.renormalised
        report.add_bad(batch.bad)

    def export_parquet(self, file: str | os.PathLike, overwrite: bool = False
                       ) -> "ExportReport":
        """Write every indexed image's path, vector and metadata to a Parquet ``file`` that
        :meth:`import_parquet` reads, streaming, from one consistent snapshot; the file appears
        under its name only when complete. Rows whose stored vector is damaged are left out
        (and counted)."""
        from .parquet_io import EmbeddingsWriter, FileModel
        from .store import EXPORT_COLUMNS, sound_vectors
        if os.path.exists(file) and not overwrite:
            raise SearchkitError(f"{os.fspath(file)} exists: pass --force to replace it")
        report = ExportReport(os.fspath(file))
        model = FileModel(self.info.model_name, self.info.model_fingerprint)
        with EmbeddingsWriter(file, self.info.dim, model) as out:
            for rows in self.engine.export_rows():
                sound = sound_vectors([r.id for r in rows], [r.vector for r in rows],
                                      self.info.dim)
                rows = [r for r in rows if r.id not in sound.bad]
                out.write([r.path for r in rows], sound.vectors,
                          {c: [getattr(r, c) for r in rows] for c in EXPORT_COLUMNS})
                report.left_out += len(sound.bad)
            report.rows = out.rows
        return report

    def absent_files(self, sample: int | None = None) -> "AbsentFiles":
        """How many indexed images have no file at their path on this machine (imported rows,
        files deleted since the last index run): exact for a library of at most ``sample``
        rows, else counted on ``sample`` (default ``ABSENT_SAMPLE``) row ids drawn at random
        (`searchkit check` counts them all)."""
        sample = sample or ABSENT_SAMPLE
        indexed = self.engine.counts().get(STATUS_OK, 0)
        paths = self.engine.sample_ok_paths(sample) if indexed else []
        return AbsentFiles(len(paths), sum(1 for p in paths if not os.path.exists(p)), indexed)


from .store import IMPORTED_MTIME_NS, IMPORTED_SIZE, META_COLUMNS, FileRow  # noqa: E402

ABSENT_SAMPLE = 1_000   # rows whose file `searchkit status` looks for
MAX_REPORTED_BAD = 100  # bad rows an import report lists (all are counted)


@dataclass
class ImportReport:
    """What :meth:`Library.import_parquet` did."""
    file: str
    rows: int                 # rows in the file
    added: int = 0
    updated: int = 0          # a row at the same path was replaced
    unchanged: int = 0        # stored as the file has them already (a repeated import)
    renormalised: int = 0     # vectors not of unit norm, stored normalised
    absent: int = 0           # imported paths with no file on this machine (allowed)
    bad: int = 0              # rows skipped
    bad_rows: list = field(default_factory=list)  # the first MAX_REPORTED_BAD (parquet_io.BadRow)
    seconds: float = 0.0

    def add_bad(self, rows: list) -> None:
        self.bad += len(rows)
        self.bad_rows.extend(rows[:max(0, MAX_REPORTED_BAD - len(self.bad_rows))])


@dataclass
class ExportReport:
    """What :meth:`Library.export_parquet` wrote."""
    file: str
    rows: int = 0
    left_out: int = 0         # rows whose stored vector is damaged (searchkit check --repair)


@dataclass(frozen=True)
class AbsentFiles:
    """Indexed images whose file is not on disk (:meth:`Library.absent_files`)."""
    checked: int              # ok rows looked for
    absent: int               # of those, not found
    indexed: int              # ok rows in all

    @property
    def exact(self) -> bool:
        return self.checked == self.indexed

    @property
    def estimate(self) -> int:
        return round(self.absent * self.indexed / self.checked) if self.checked else 0


def _file_model_mismatch(file: str | os.PathLike, file_model: str, file_fingerprint: str,
                         model: str, fingerprint: str, location: str) -> str:
    return (f"{os.fspath(file)} holds vectors of model {file_model!r} (weights fingerprint "
            f"{file_fingerprint[:12]}), library {location} is bound to {model!r} "
            f"({fingerprint[:12]}); nothing was imported. To switch the library to the file's "
            f"model, " + reindex_hint(location, file_model) + ", then import again")


def _imported_rows(batch, stored: dict, now: float) -> Iterator[FileRow]:
    """The rows that store ``batch``: never stat'ed here (IMPORTED_SIZE), the content hash
    only if the file gives it, the metadata the file lacks kept from the ``stored`` row at the
    path (by path). Built column by column: an import makes a million of them."""
    n = len(batch.paths)

    def column(name: str) -> list:
        if name in batch.columns:
            return batch.columns[name]
        if not stored:
            return [None] * n
        return [getattr(stored.get(p), name, None) for p in batch.paths]
    hashes = batch.columns.get("content_hash") or [None] * n
    blobs = [v.tobytes() for v in batch.vectors]
    for path, h, width, height, fmt, taken_at, make, model, blob in zip(
            batch.paths, hashes, *(column(c) for c in META_COLUMNS), blobs):
        yield FileRow(path=path, size=IMPORTED_SIZE, mtime_ns=IMPORTED_MTIME_NS, content_hash=h,
                      width=width, height=height, format=fmt, taken_at=taken_at,
                      camera_make=make, camera_model=model, status=STATUS_OK, reason=None,
                      skip_source=None, vector=blob, indexed_at=now)


def _same_import(old, row) -> bool:
    """Whether the stored ``old`` already holds what ``row`` imports (then it stays as it is,
    stat and content hash of an indexed file included)."""
    return (old.status == STATUS_OK and old.vector == row.vector
            and all(getattr(old, c) == getattr(row, c) for c in META_COLUMNS)
            and row.content_hash in (None, old.content_hash))


def _default_model() -> str:
    from .encoders.registry import DEFAULT_MODEL
    return DEFAULT_MODEL


def _location(location: str | os.PathLike) -> str | Path:
    """A ``milvus://`` URI as given, anything else as a directory path."""
    return location if is_milvus(location) else Path(location).expanduser()


def _create(engine: Engine, model_name: str, fingerprint: str, dim: int) -> None:
    """Make the library bound to this model unless another process just did."""
    with engine.writer():
        if not engine.exists():
            engine.create(model_name, fingerprint, dim)


class _Laps:
    """Seconds since the previous call (the first: since it was made)."""

    def __init__(self):
        self._last = time.perf_counter()

    def __call__(self) -> float:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        return elapsed
