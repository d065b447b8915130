"""Thread-safe searching for the server: encoder calls go through a micro-batcher (one forward
pass at a time, concurrent queries merged), the index is refreshed under a lock, and timings
are kept per request (``Library.last_timings`` is shared between threads)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..library import Library, SearchTimings
from ..query import Filters, Hit, Query, combine, validate
from .batching import BatchingEncoder


@dataclass(frozen=True)
class RequestTimings:
    """Seconds spent by one request in each stage."""
    queue: float      # waiting for other queries' encoder passes
    encode: float     # the encoder pass(es) this query rode in
    faiss: float
    sqlite: float
    total: float


class Searcher:
    """Runs queries against one :class:`Library` from many server threads.

    HF fast tokenizers are not safe to call from two threads at once, and on a small CPU two
    concurrent forward passes only compete for the same cores: the :class:`BatchingEncoder`
    runs one pass at a time and encodes the queries that queued meanwhile as one batch. The
    index is refreshed under a lock (``search_index`` reloads after another process indexed
    more files), so concurrent requests after a change rebuild it once, not once each.
    """

    def __init__(self, library: Library):
        self.library = library
        self._encoder: BatchingEncoder | None = None
        self._init_lock = threading.Lock()
        self._index_lock = threading.Lock()

    @property
    def encoder(self) -> BatchingEncoder:
        with self._init_lock:
            if self._encoder is None:
                self._encoder = BatchingEncoder(self.library.encoder)
            return self._encoder

    def warm(self) -> None:
        """Load the model and the index now, so the first request is answered warm."""
        self.refresh()
        self.encoder.encode_texts(["warm up"])

    def refresh(self) -> None:
        with self._index_lock:
            self.library.search_index()

    def query_vector(self, query: Query):
        validate(query)  # before any model is loaded
        return combine(query, self.encoder, self.library.stored_vector)

    def search(self, query: Query, k: int, filters: Filters | None = None,
               threshold: float | None = None) -> tuple[list[Hit], RequestTimings]:
        t0 = time.perf_counter()
        enc = self.encoder
        enc.reset_stats()
        qv = self.query_vector(query)
        t1 = time.perf_counter()
        st = SearchTimings()
        self.refresh()
        st.sqlite += time.perf_counter() - t1
        scores, ids = self.library.search_vector(qv, k, filters, st)
        t = time.perf_counter()
        hits = self.library.hits(scores, ids, threshold)
        st.sqlite += time.perf_counter() - t
        return hits, RequestTimings(queue=enc.last_wait, encode=(t1 - t0) - enc.last_wait,
                                    faiss=st.faiss, sqlite=st.sqlite,
                                    total=time.perf_counter() - t0)
