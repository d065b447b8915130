"""The decode stage: worker threads read, hash and (when asked) decode files ahead of the encoder,
and read the text in them when the library has OCR on (``index --ocr``).

Results come back in the order of the work, with a bounded number in flight, so the encoder is
never waiting on files and memory stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from searchkit.fsinfo import content_hash
from searchkit.imageio import ImageDecodeError, ImageMeta, open_image
from searchkit.ocr import OcrEngine, failure
from searchkit.store import STATUS_OK, OcrRow, RowState

from .scan import FileStat

if TYPE_CHECKING:
    from PIL import Image

    from searchkit.encoders.base import Encoder

log = logging.getLogger(__name__)

PREFETCH_PER_WORKER = 16  # decoded images waiting per worker thread
OCR_DRAFT_SIDE = 1000     # a JPEG read for its text keeps at least this many pixels a side


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
    ocr: OcrRow | None = None     # the text read in it, when asked (or why that failed)
    vector: np.ndarray | None = None  # embedded elsewhere (an executor's worker: see executors)


WantsDecoding = Callable[[WorkItem, str], bool]   # (file, its content hash) -> decode it?
WantsText = Callable[[str], bool]                 # (content hash) -> read its text?


class Decoder:
    """Reads, hashes and, unless its content is known, decodes and preprocesses a file; with
    an OCR engine, reads the text of the contents ``wants_text`` asks for."""

    def __init__(self, encoder: "Encoder", max_pixels: int, ocr: OcrEngine | None = None):
        self.encoder = encoder
        self.max_pixels = max_pixels
        self.ocr = ocr

    def prepare(self, item: WorkItem, wants: WantsDecoding,
                wants_text: WantsText | None = None) -> Prepared:
        try:
            with open(item.stat.path, "rb") as f:
                data = f.read()
        except OSError as e:
            return Prepared(item, error=(e.strerror or type(e).__name__).lower())
        h = content_hash(data)
        encode = wants(item, h)
        read_text = self.ocr is not None and wants_text is not None and wants_text(h)
        if encode:
            return self._decode(item, h, data, read_text)
        if read_text:  # the vector stays: only the text is read
            return Prepared(item, content_hash=h, ocr=self._read_text(item, h, data, None))
        return Prepared(item, content_hash=h)

    def _decode(self, item: WorkItem, h: str, data: bytes, read_text: bool) -> Prepared:
        try:
            image, meta = open_image(data, max_pixels=self.max_pixels)
            pixels = self.encoder.preprocess(image)
        except ImageDecodeError as e:
            return Prepared(item, content_hash=h, error=str(e))
        except Exception as e:  # a decoder bug must not stop the run
            log.warning("unexpected error decoding %s: %r", item.stat.path, e)
            return Prepared(item, content_hash=h, error=f"cannot decode: {type(e).__name__}")
        text = self._read_text(item, h, data, image if _full_size(image, meta) else None) \
            if read_text else None
        return Prepared(item, content_hash=h, pixels=pixels, meta=meta, ocr=text)

    def _read_text(self, item: WorkItem, h: str, data: bytes,
                   image: "Image.Image | None") -> OcrRow:
        """The text in the image (decoded again unless ``image`` is at full size); a failure
        is recorded with its reason and never stops the run."""
        try:
            if image is None:
                image, _ = open_image(data, max_pixels=self.max_pixels,
                                      draft_side=OCR_DRAFT_SIDE)
            text, error = self.ocr.read(image).text, None
        except Exception as e:  # an engine failure costs this image's text, not the run
            log.warning("cannot read the text in %s: %r", item.stat.path, e)
            text, error = "", failure(e)
        return OcrRow(h, text, error, self.ocr.name, time.time())


def _full_size(image: "Image.Image", meta: ImageMeta) -> bool:
    """Whether the decoded image has the file's own size (a JPEG is decoded reduced for the
    encoder, which is too small for text)."""
    return image.size == (meta.width, meta.height)


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
