"""Searching for the server: many request threads share one :class:`Library`. Queries go
through :meth:`Library.search_with_timings` (one search path; its timings come with its hits),
encoded by a micro-batcher (one forward pass at a time, concurrent queries merged)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..library import Library
from ..query import Filters, Hit, Query
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
    library refreshes its index under its own lock, so concurrent requests after a change
    rebuild it once, not once each.
    """

    def __init__(self, library: Library):
        self.library = library
        self._encoder: BatchingEncoder | None = None
        self._init_lock = threading.Lock()

    @property
    def encoder(self) -> BatchingEncoder:
        with self._init_lock:
            if self._encoder is None:
                self._encoder = BatchingEncoder(self.library.encoder)
            return self._encoder

    def warm(self) -> None:
        """Load the model and the index now, so the first request is answered warm."""
        self.library.engine.warm()
        self.encoder.encode_texts(["warm up"])

    def search(self, query: Query, k: int, filters: Filters | None = None,
               threshold: float | None = None, hybrid: bool | None = None
               ) -> tuple[list[Hit], RequestTimings]:
        t0 = time.perf_counter()
        enc = self.encoder
        enc.reset_stats()  # its queueing time is counted per thread
        result = self.library.search_with_timings(query, k, filters, threshold, encoder=enc,
                                                  hybrid=hybrid)
        t = result.timings
        return result.hits, RequestTimings(queue=enc.last_wait, encode=t.encode - enc.last_wait,
                                           faiss=t.faiss, sqlite=t.sqlite,
                                           total=time.perf_counter() - t0)
