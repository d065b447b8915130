"""Sharing the server's compute between request threads.

Micro-batching for the encoder: one forward pass at a time, and the queries that arrive while
one runs are encoded together in the next (a batch of 16 short texts costs far less than 16
passes of one). Callers see the plain ``Encoder`` calls. :class:`DecodeSlots` bounds how many
images are decoded at once."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image


@dataclass
class _Request:
    items: Any                       # a list of texts, or an (n, ...) array of pixels
    done: bool = False
    result: np.ndarray | None = None
    error: BaseException | None = None
    wait: float = 0.0                # seconds queued behind other batches
    run: float = 0.0                 # seconds of the batch it rode in
    created: float = field(default_factory=time.perf_counter)


class _Batcher:
    """Leader/follower: the first waiting caller runs everything pending as one call."""

    def __init__(self, fn: Callable[[Any], np.ndarray], run_lock: threading.Lock,
                 join: Callable[[list], Any]):
        self.fn, self.run_lock, self.join = fn, run_lock, join
        self.cv = threading.Condition()
        self.pending: list[_Request] = []
        self.leading = False

    def __call__(self, items) -> _Request:
        req = _Request(items)
        with self.cv:
            self.pending.append(req)
            self.cv.notify_all()  # for wait_pending
            while self.leading and not req.done:
                self.cv.wait()
            if req.done:
                return req
            self.leading = True
            batch, self.pending = self.pending, []
        self._run(batch)
        return req

    def wait_pending(self, n: int, timeout: float) -> bool:
        with self.cv:
            return self.cv.wait_for(lambda: len(self.pending) >= n, timeout)

    def _run(self, batch: list[_Request]) -> None:
        try:
            with self.run_lock:
                start = time.perf_counter()
                out = self.fn(self.join([r.items for r in batch]))
                ran = time.perf_counter() - start
            at = 0
            for r in batch:
                n = len(r.items)
                r.result, at = out[at:at + n], at + n
                r.wait, r.run = start - r.created, ran
        except BaseException as e:  # every caller in the batch sees the error
            for r in batch:
                r.error = e
        finally:
            with self.cv:
                for r in batch:
                    r.done = True
                self.leading = False
                self.cv.notify_all()


class BatchingEncoder:
    """Wraps an :class:`~searchkit.encoders.base.Encoder` for use from many threads.

    Never two encoder calls at once (HF fast tokenizers are not thread-safe); image
    preprocessing runs in the calling threads, in parallel. ``last_wait`` / ``last_run`` give
    the calling thread's queueing and encoding time of its latest calls (summed since
    :meth:`reset_stats`).
    """

    def __init__(self, encoder):
        self.encoder = encoder
        self.name, self.dim = encoder.name, encoder.dim
        lock = threading.Lock()  # one forward pass at a time, texts and images alike
        self._texts = _Batcher(encoder.encode_texts, lock, lambda parts: sum(parts, []))
        self._pixels = _Batcher(encoder.encode_pixels, lock, np.concatenate)
        self._local = threading.local()

    def fingerprint(self) -> str:
        return self.encoder.fingerprint()

    def wait_pending_texts(self, n: int, timeout: float) -> bool:
        """Whether ``n`` text calls came to wait for the running pass (for tests and probes)."""
        return self._texts.wait_pending(n, timeout)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.encoder.preprocess(image)

    def reset_stats(self) -> None:
        self._local.wait = self._local.run = 0.0

    @property
    def last_wait(self) -> float:
        return getattr(self._local, "wait", 0.0)

    @property
    def last_run(self) -> float:
        return getattr(self._local, "run", 0.0)

    def _result(self, req: _Request) -> np.ndarray:
        self._local.wait = self.last_wait + req.wait
        self._local.run = self.last_run + req.run
        if req.error is not None:
            raise req.error
        return req.result

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return self._result(self._texts(texts))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self._result(self._pixels(np.asarray(pixels)))

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))


class DecodeSlots:
    """At most ``size`` images decoded (and preprocessed, and encoded) at once, however many
    request threads there are.

    A decoded image costs up to width x height x 3 bytes plus its preprocessing buffers, so the
    server's peak memory grows with how many decodes run together; glibc keeps what a burst of
    threads allocated in per-thread arenas, so the peak also becomes the lasting RSS. Sized to
    the cores, the bound costs no throughput: more decodes at once would only share the cores.
    """

    def __init__(self, size: int | None = None):
        self.size = size or default_decode_slots()
        self._cv = threading.Condition()
        self.waiting = 0      # threads queued for a slot
        self.busy = 0         # threads holding one
        self._tickets = self._served = 0   # first come, first served: no upload starves

    @contextmanager
    def hold(self):
        with self._cv:
            ticket, self._tickets = self._tickets, self._tickets + 1
            self.waiting += 1
            self._cv.notify_all()
            self._cv.wait_for(lambda: self.busy < self.size and ticket == self._served)
            self._served += 1
            self.waiting -= 1
            self.busy += 1
            self._cv.notify_all()  # the next ticket may fit too
        try:
            yield
        finally:
            with self._cv:
                self.busy -= 1
                self._cv.notify_all()

    def wait_for(self, predicate: Callable[["DecodeSlots"], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds (for probes and tests)."""
        with self._cv:
            return self._cv.wait_for(lambda: predicate(self), timeout)


def default_decode_slots() -> int:
    """One decode per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
