"""The decode stage: worker threads read, hash and (when asked) decode files ahead of the encoder.

Results come back in the order of the work, with a bounded number in flight, so the encoder is
never waiting on files and memory stays bounded.
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from searchkit.fsinfo import content_hash
from searchkit.imageio import ImageDecodeError, ImageMeta, open_image
from searchkit.store import STATUS_OK, RowState

from .scan import FileStat

if TYPE_CHECKING:
    from searchkit.encoders.base import Encoder

log = logging.getLogger(__name__)

PREFETCH_PER_WORKER = 16  # decoded images waiting per worker thread


@dataclass(frozen=True)
class WorkItem:
    """A file to read: it is new, or its size or mtime differ from its row's."""
    stat: FileStat
    old: RowState | None      # the row at this path, if any

    def same_content(self, content_hash: str) -> bool:
        """Whether the file's row already holds this content (only its stat changed)."""
        old = self.old
        return old is not None and old.status == STATUS_OK and old.content_hash == content_hash


@dataclass
class Prepared:
    """A worker's answer for one file: its hash, and its pixels if it was decoded."""
    item: WorkItem
    content_hash: str | None = None
    pixels: np.ndarray | None = None
    meta: ImageMeta | None = None
    error: str | None = None


WantsDecoding = Callable[[WorkItem, str], bool]   # (file, its content hash) -> decode it?


class Decoder:
    """Reads, hashes and, unless its content is known, decodes and preprocesses a file."""

    def __init__(self, encoder: "Encoder", max_pixels: int):
        self.encoder = encoder
        self.max_pixels = max_pixels

    def prepare(self, item: WorkItem, wants: WantsDecoding) -> Prepared:
        try:
            with open(item.stat.path, "rb") as f:
                data = f.read()
        except OSError as e:
            return Prepared(item, error=(e.strerror or type(e).__name__).lower())
        h = content_hash(data)
        if not wants(item, h):
            return Prepared(item, content_hash=h)
        return self._decode(item, h, data)

    def _decode(self, item: WorkItem, h: str, data: bytes) -> Prepared:
        try:
            image, meta = open_image(data, max_pixels=self.max_pixels)
            pixels = self.encoder.preprocess(image)
        except ImageDecodeError as e:
            return Prepared(item, content_hash=h, error=str(e))
        except Exception as e:  # a decoder bug must not stop the run
            log.warning("unexpected error decoding %s: %r", item.stat.path, e)
            return Prepared(item, content_hash=h, error=f"cannot decode: {type(e).__name__}")
        return Prepared(item, content_hash=h, pixels=pixels, meta=meta)


def prepare_in_order(work: list[WorkItem], prepare: Callable[[WorkItem], Prepared],
                     workers: int) -> Iterator[Prepared]:
    """``prepare`` of each item, run by ``workers`` threads, yielded in the order of ``work``
    with at most ``workers * PREFETCH_PER_WORKER`` in flight."""
    if not work:
        return
    limit = workers * PREFETCH_PER_WORKER
    items = iter(work)
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        inflight: deque[Future] = deque(pool.submit(prepare, item)
                                        for _, item in zip(range(limit), items))
        while inflight:
            result = inflight.popleft().result()
            nxt = next(items, None)
            if nxt is not None:
                inflight.append(pool.submit(prepare, nxt))
            yield result
