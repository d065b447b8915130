"""Thread-safe searching for the server: one encoder call at a time, one index refresh at a
time, per-request timings (``Library.last_timings`` is shared between threads)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..library import Library, SearchTimings
from ..query import Filters, Hit, Query


@dataclass(frozen=True)
class RequestTimings:
    """Seconds spent by one request in each stage."""
    queue: float      # waiting for the encoder lock
    encode: float
    faiss: float
    sqlite: float
    total: float


class Searcher:
    """Runs queries against one :class:`Library` from many server threads.

    Encoder calls are serialised: HF fast tokenizers are not safe to call from two threads
    at once, and on a small CPU two concurrent forward passes only compete for the same cores.
    The index is refreshed under a lock (``search_index`` reloads after another process indexed
    more files), so concurrent requests after a change rebuild it once, not once each.
    """

    def __init__(self, library: Library):
        self.library = library
        self._encode_lock = threading.Lock()
        self._index_lock = threading.Lock()

    def warm(self) -> None:
        """Load the model and the index now, so the first request is answered warm."""
        self.refresh()
        with self._encode_lock:
            self.library.encoder.encode_texts(["warm up"])

    def refresh(self) -> None:
        with self._index_lock:
            self.library.search_index()

    def search(self, query: Query, k: int, filters: Filters | None = None,
               threshold: float | None = None) -> tuple[list[Hit], RequestTimings]:
        t0 = time.perf_counter()
        with self._encode_lock:
            t1 = time.perf_counter()
            qv = self.library.query_vector(query)
        t2 = time.perf_counter()
        st = SearchTimings()
        t = time.perf_counter()
        self.refresh()
        st.sqlite += time.perf_counter() - t
        scores, ids = self.library.search_vector(qv, k, filters, st)
        t = time.perf_counter()
        hits = self.library.hits(scores, ids, threshold)
        st.sqlite += time.perf_counter() - t
        return hits, RequestTimings(queue=t1 - t0, encode=t2 - t1, faiss=st.faiss,
                                    sqlite=st.sqlite, total=time.perf_counter() - t0)
