"""Queries, filters and hits: typed records, and the pure functions that turn a query into one
vector. (The SQL that turns filters into allowed row ids is the store's: ``Store.filter_ids``.)"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

import numpy as np
from PIL import Image

from .errors import QueryError
from .imageio import RAW_FORMATS, SUPPORTED_FORMATS, ImageDecodeError, open_image

if TYPE_CHECKING:
    from .encoders.base import Encoder
    from .store import File

ImageInput = Union[Image.Image, str, Path, bytes]
DEFAULT_NEGATIVE_WEIGHT = 0.5
DATE_FIELDS = ("taken", "modified")


@dataclass
class Query:
    """Text and image terms with weights; negatives are subtracted; ``like`` are row ids
    whose stored vectors join the query ("more like this")."""
    texts: list[tuple[str, float]] = field(default_factory=list)
    images: list[tuple[ImageInput, float]] = field(default_factory=list)
    negatives: list[tuple[str, float]] = field(default_factory=list)
    like: list[tuple[int, float]] = field(default_factory=list)

    @classmethod
    def text(cls, text: str) -> "Query":
        return cls(texts=[(text, 1.0)])

    @classmethod
    def image(cls, image: ImageInput) -> "Query":
        return cls(images=[(image, 1.0)])

    def is_empty(self) -> bool:
        return not (self.texts or self.images or self.like)


@dataclass
class Filters:
    """Metadata restrictions applied inside the search (not after it)."""
    path_prefix: str | None = None
    path_glob: str | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None
    date_field: str = "taken"
    min_width: int | None = None
    min_height: int | None = None
    formats: tuple[str, ...] = ()
    camera: str | None = None
    text_contains: str | None = None   # text read in the image (``index --ocr``) contains this

    def active(self) -> bool:
        return any(v not in (None, (), "") for k, v in asdict(self).items() if k != "date_field")


@dataclass(frozen=True)
class Hit:
    id: int
    path: str
    score: float
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    modified_at: datetime
    camera_make: str | None
    camera_model: str | None
    duplicates: int = 0      # other indexed files with the same content (``searchkit dupes``)

    @classmethod
    def from_row(cls, f: File, score: float, duplicates: int = 0) -> "Hit":
        return cls(f.id, f.path, score, f.width, f.height, f.format, f.taken_at,
                   datetime.fromtimestamp(f.mtime_ns / 1e9), f.camera_make, f.camera_model,
                   duplicates)

    def to_json(self) -> dict:
        d = asdict(self)
        d["score"] = round(self.score, 6)
        for k in ("taken_at", "modified_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


def load_query_image(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, (str, Path)) and not Path(image).is_file():
        raise QueryError(f"query image not found: {image}")
    try:
        return open_image(image)[0]
    except ImageDecodeError as e:
        raise QueryError(f"cannot read query image {_label(image)}: {e}") from None


def _label(image: ImageInput) -> str:
    return "(upload)" if isinstance(image, bytes) else str(image)


def validate(query: Query) -> None:
    """Reject a query that cannot run, before any model is loaded."""
    if query.is_empty():
        raise QueryError("empty query: give a text, an image, or both")
    for text, _ in query.texts + query.negatives:
        if not isinstance(text, str) or not text.strip():
            raise QueryError("empty query text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryError("query text is not valid Unicode (undecodable bytes)") from None
    for image, _ in query.images:
        if isinstance(image, (str, Path)) and not Path(image).is_file():
            raise QueryError(f"query image not found: {image}")


def unknown_terms(query: Query, encoder: "Encoder") -> list[str]:
    """The query's texts (negatives included) of which the model knows no token: each
    encodes to the same vector as any other such text, so its results say nothing about it."""
    texts = [t for t, _ in query.texts + query.negatives]
    check = getattr(encoder, "unknown_texts", None)
    if not texts or check is None:
        return []
    return [t for t, unknown in zip(texts, check(texts)) if unknown]


def combine(query: Query, encoder: "Encoder", stored: Callable[[int], np.ndarray]) -> np.ndarray:
    """Weighted sum of the normalised term vectors minus the negatives, normalised."""
    validate(query)
    parts: list[np.ndarray] = []
    weights: list[float] = []
    if query.texts:
        parts.append(encoder.encode_texts([t for t, _ in query.texts]))
        weights += [w for _, w in query.texts]
    if query.images:
        parts.append(encoder.encode_images([load_query_image(im) for im, _ in query.images]))
        weights += [w for _, w in query.images]
    if query.like:
        parts.append(np.stack([stored(i) for i, _ in query.like]))
        weights += [w for _, w in query.like]
    if query.negatives:
        parts.append(encoder.encode_texts([t for t, _ in query.negatives]))
        weights += [-abs(w) for _, w in query.negatives]
    vecs = np.concatenate(parts).astype(np.float32)
    v = (np.asarray(weights, np.float32)[:, None] * vecs).sum(0)
    norm = float(np.linalg.norm(v))
    if norm < 1e-8:
        raise QueryError("the query terms cancel out (weights sum to nothing)")
    return v / norm


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
# A name users give -> the formats the store records for it (a camera's MPO is a JPEG).
_FORMAT_ALIASES = {"JPG": ("JPEG", "MPO"), "JPEG": ("JPEG", "MPO"), "TIF": ("TIFF",),
                   "HEIC": ("HEIF",), "RAW": tuple(sorted(RAW_FORMATS))}


def format_names() -> frozenset[str]:
    """Every format name a filter accepts (upper case)."""
    return frozenset(SUPPORTED_FORMATS) | frozenset(_FORMAT_ALIASES)


def stored_formats(names) -> list[str]:
    """The stored format values that the format ``names`` stand for."""
    out: set[str] = set()
    for name in names:
        key = name.strip().lstrip(".").upper()
        out.update(_FORMAT_ALIASES.get(key, (key,)))
    return sorted(out)


def time_ns(moment: datetime) -> int:
    """A (naive local or zoned) time as nanoseconds since the epoch, clamped to int64 (the
    store's range, years 1678 to 2262): a bound beyond it keeps or drops everything."""
    try:
        ns = int(moment.timestamp() * 1e9)
    except (OverflowError, ValueError, OSError):  # before year 1 local time, etc.
        return INT64_MIN if moment.year < 1970 else INT64_MAX
    return min(max(ns, INT64_MIN), INT64_MAX)

