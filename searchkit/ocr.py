"""Text inside images (issue 14): the OCR engine behind ``searchkit index --ocr`` and the pure
functions that give stored text and user input one meaning.

The engine is RapidOCR 3 (PyPI ``rapidocr``, the ``ocr`` extra) on onnxruntime, chosen by
measurement (bench/results/ocr_choice.md: 97 % word recall against 74 % for
rapidocr-onnxruntime and 47 % for Tesseract). Its wheel ships the PP-OCR detection,
classification and recognition models, so nothing is downloaded: only the shipped models are
named here (another language or the server models would be fetched from the network).

RapidOCR keeps per-call state on its detector, so one instance is not safe to share between
threads: :class:`RapidOcrEngine` keeps one instance per thread (the index run's decode
workers), each running onnxruntime on one thread, so OCR uses at most as many cores as there
are workers. The package is imported on the first image read, never at import time.

Matching (:func:`words`, :func:`normalise`, :func:`contains`): SQLite's FTS5 ``unicode61``
tokenizer splits text at every character that is not a letter or a digit and folds case and
diacritics; :func:`words` splits the same way, so a query word is looked up as the index
stores it.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from .errors import SearchkitError

log = logging.getLogger(__name__)

EXTRA_HINT = "install searchkit[ocr] (pip install 'searchkit[ocr]')"
ORT_THREADS = 1            # onnxruntime threads per engine instance (one instance per worker)
MAX_ERROR_CHARS = 200      # of a failure's reason, as stored
LINE_SEPARATOR = "\n"      # between the text boxes of one image, in reading order


class OcrUnavailableError(SearchkitError):
    """No OCR engine can run here (the ``ocr`` extra is not installed)."""


@dataclass(frozen=True)
class TextBox:
    """One line of text found in an image: its corners (x, y in pixels) and confidence."""
    text: str
    box: tuple[tuple[float, float], ...]
    score: float


@dataclass(frozen=True)
class OcrResult:
    """What an engine read in one image."""
    boxes: tuple[TextBox, ...] = ()

    @property
    def text(self) -> str:
        """The boxes' text, one line each, in the engine's reading order."""
        return LINE_SEPARATOR.join(b.text for b in self.boxes if b.text.strip())


class OcrEngine(Protocol):
    """Reads the text in an image. ``read`` is called from many threads at once."""
    name: str

    def read(self, image: Image.Image) -> OcrResult: ...


class RapidOcrEngine:
    """RapidOCR 3 with its shipped models; one instance per calling thread (see the module
    docstring). Build with :func:`default_engine` (which checks the package is there)."""

    def __init__(self, threads: int = ORT_THREADS):
        self.threads = threads
        self.name = f"rapidocr {_version('rapidocr')}"
        self._local = threading.local()

    def _instance(self):
        engine = getattr(self._local, "engine", None)
        if engine is None:
            from rapidocr import RapidOCR
            engine = RapidOCR(params={
                "Global.log_level": "error",  # not a line per image without text
                "EngineConfig.onnxruntime.intra_op_num_threads": self.threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1})
            self._local.engine = engine
        return engine

    def read(self, image: Image.Image) -> OcrResult:
        out = self._instance()(_bgr(image))
        texts, boxes, scores = out.txts or (), out.boxes, out.scores or ()
        if boxes is None:
            boxes = [()] * len(texts)
        return OcrResult(tuple(
            TextBox(str(t), tuple((float(x), float(y)) for x, y in np.asarray(b).reshape(-1, 2)),
                    float(s))
            for t, b, s in zip(texts, boxes, scores)))


def _bgr(image: Image.Image) -> np.ndarray:
    """OpenCV's channel order, which RapidOCR expects of an array."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _version(dist: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def available() -> bool:
    """Whether the default engine's package is installed (nothing is imported)."""
    from importlib.util import find_spec
    return find_spec("rapidocr") is not None and find_spec("onnxruntime") is not None


def default_engine() -> RapidOcrEngine:
    """The engine ``searchkit index --ocr`` uses; :class:`OcrUnavailableError` without the
    extra."""
    if not available():
        raise OcrUnavailableError(f"reading text in images needs RapidOCR: {EXTRA_HINT}")
    return RapidOcrEngine()


def failure(e: BaseException) -> str:
    """One line saying why reading an image's text failed (stored with the image)."""
    line = str(e).splitlines()[0] if str(e) else ""
    reason = f"{type(e).__name__}: {line}" if line else type(e).__name__
    return reason[:MAX_ERROR_CHARS]


# ---- matching: one meaning for stored text, filters and queries -----------------------------
_WORD = re.compile(r"[^\W_]+")   # letters and digits: what FTS5's unicode61 keeps as a token


def words(text: str) -> list[str]:
    """``text``'s tokens as FTS5's unicode61 tokenizer makes them (case and accents kept:
    the index folds them itself)."""
    return _WORD.findall(text)


def normalise(text: str) -> str:
    """Case, accents and runs of whitespace folded: what :func:`contains` compares."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def contains(text: str | None, needle: str | None) -> bool:
    """Whether ``needle`` occurs in ``text``, ignoring case, accents and the kind and number of
    whitespace characters (the lines of an image's text are separated by a line break)."""
    if text is None or needle is None:
        return False
    return normalise(needle) in normalise(text)


def _quoted(token: str) -> str:
    return '"' + token.replace('"', '""') + '"'


def phrase_query(needle: str) -> str | None:
    """An FTS5 query that every text containing ``needle`` at a word's start matches: its
    tokens as one phrase, the last one a prefix ("42.5" -> ``"42 5" *``: finds 42.50).
    None when ``needle`` has no letter or digit (then only :func:`contains` can decide)."""
    tokens = words(needle)
    if not tokens:
        return None
    return _quoted(" ".join(tokens)) + " *"


STOPWORDS = frozenset("""a an and are as at be but by for from has have in into is it its of on
or that the their there this to was were with photo picture image""".split())


def query_words(texts: list[str]) -> list[str]:
    """The words of query texts worth looking up in images' text: distinct (case-folded),
    common English words left out (they would lift any image showing "the")."""
    out: dict[str, None] = {}
    for t in texts:
        for w in words(t):
            folded = normalise(w)
            if folded not in STOPWORDS:
                out.setdefault(folded, None)
    return list(out)


def any_word_query(query_words_: list[str]) -> str | None:
    """An FTS5 query matching text that holds any of the words (bm25 ranks those holding
    more of them, and rarer ones, first); None for no words."""
    return " OR ".join(_quoted(w) for w in query_words_) or None
