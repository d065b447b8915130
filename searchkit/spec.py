"""What a user asks for, parsed once: the query spec and the filters.

The CLI options, each JSON object of ``searchkit search --queries`` and the HTTP API all go
through these functions, so a value means the same everywhere, and anything that cannot be
read is a :class:`FieldError` (a :class:`~searchkit.errors.QueryError`) naming the field,
never another exception.

- A **query spec** is a mapping with ``text``, ``image``, ``not`` and ``like`` (each one value
  or a list), ``text_weight``, ``image_weight``, ``not_weight``, ``like_weight`` (finite
  numbers in [-100, 100]) and ``k`` (a whole number >= 1). A missing or null key takes its
  default; an unknown key is an error.
- **Dates** are ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ISO 8601. An upper bound (``before``)
  given as a year, month or day includes the whole of it. Any year from 1 to 9999 is accepted
  (the store compares it with what files can carry); a time zone is converted to local time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from PIL import Image

from .errors import QueryError
from .query import DATE_FIELDS, DEFAULT_NEGATIVE_WEIGHT, Filters, Query, format_names

MAX_WEIGHT = 100.0
MAX_SIDE = 1_000_000      # pixels: more than any image the indexer takes
MAX_ID = 2**63 - 1        # SQLite's integer range
DEFAULT_K = 10
MAX_NEEDLE = 200          # characters of a text_contains filter


class FieldError(QueryError):
    """One field of a query or filter cannot be read: ``field`` names it (as the query spec
    and :func:`parse_filters` call it), ``problem`` says what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True)
class Weights:
    """Weights of each kind of query term (negatives are subtracted whatever their sign)."""
    text: float = 1.0
    image: float = 1.0
    not_: float = DEFAULT_NEGATIVE_WEIGHT
    like: float = 1.0


@dataclass(frozen=True)
class QuerySpec:
    query: Query
    k: int = DEFAULT_K
    weights: Weights = field(default_factory=Weights)


# ---- query spec --------------------------------------------------------------------------
_TERMS = ("text", "image", "not", "like")
_WEIGHT_KEYS = {"text_weight": "text", "image_weight": "image", "not_weight": "not_",
                "like_weight": "like"}
QUERY_KEYS = _TERMS + tuple(_WEIGHT_KEYS) + ("k",)


def parse_query_spec(obj: Any, default_k: int = DEFAULT_K,
                     default_weights: Weights = Weights()) -> QuerySpec:
    """A query spec (see the module docstring) as a :class:`Query` and its ``k``."""
    if not isinstance(obj, Mapping):
        raise FieldError("query", "must be an object with keys such as \"text\", \"image\"")
    unknown = sorted(str(key) for key in obj if key not in QUERY_KEYS)
    if unknown:
        raise FieldError(unknown[0], f"unknown key (known: {', '.join(QUERY_KEYS)})")
    given = {key: value for key, value in obj.items() if value is not None}
    weights = Weights(**{attr: parse_weight(given.get(key, getattr(default_weights, attr)), key)
                         for key, attr in _WEIGHT_KEYS.items()})
    k = parse_k(given.get("k", default_k))
    query = Query(texts=[(t, weights.text) for t in _terms(given, "text", parse_text)],
                  images=[(i, weights.image) for i in _terms(given, "image", _parse_image)],
                  negatives=[(t, weights.not_) for t in _terms(given, "not", parse_text)],
                  like=[(i, weights.like) for i in _terms(given, "like", _parse_id)])
    return QuerySpec(query, k, weights)


def parse_query_line(line: str, default_k: int = DEFAULT_K,
                     default_weights: Weights = Weights()) -> QuerySpec:
    """One line of a queries file: a JSON object (a query spec) when it starts with ``{``,
    else the text to look for."""
    if not line.lstrip().startswith("{"):
        return parse_query_spec({"text": line}, default_k, default_weights)
    try:
        obj = json.loads(line)
    except RecursionError:
        raise FieldError("query", "JSON nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, or an integer with too many digits
        raise FieldError("query", f"not a JSON object ({e})") from None
    return parse_query_spec(obj, default_k, default_weights)


def _terms(given: Mapping, key: str, parse) -> list:
    """One value or a list of them (a string is one term, not a list of letters)."""
    value = given.get(key)
    if value is None:
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    return [parse(v, key) for v in values]


def parse_text(value: Any, name: str = "text") -> str:
    if not isinstance(value, str):
        raise FieldError(name, f"must be text, not {_kind(value)}")
    if not value.strip():
        raise FieldError(name, "is empty")
    _check_unicode(value, name)
    return value


def _parse_image(value: Any, name: str):
    if isinstance(value, (Image.Image, bytes)):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(name, "must be the path of an image file")
    return value


def _parse_id(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise FieldError(name, f"must be an indexed image id (a whole number), not {value!r:.40}")
    return value


def parse_weight(value: Any, name: str) -> float:
    number = _number(value, name)
    if not -MAX_WEIGHT <= number <= MAX_WEIGHT:
        raise FieldError(name, f"must be between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    return number


def parse_k(value: Any, name: str = "k") -> int:
    """How many results: a whole number >= 1 (2.0 is read as 2)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FieldError(name, f"must be a whole number of at least 1, not {value!r:.40}")
    return value


def parse_threshold(value: Any, name: str = "threshold") -> float | None:
    """The minimum score, or None: any finite number."""
    return None if value is None else _number(value, name)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(name, f"must be a number, not {_kind(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        number = math.inf
    if not math.isfinite(number):
        raise FieldError(name, "must be a finite number")
    return number


# ---- filters -----------------------------------------------------------------------------
def parse_filters(path: str | os.PathLike | None = None, glob: str | None = None,
                  after: str | None = None, before: str | None = None,
                  date_field: str = "taken", min_width: int | str | None = None,
                  min_height: int | str | None = None, formats: Iterable[str] | str = (),
                  camera: str | None = None, text_contains: str | None = None) -> Filters:
    """Filter values as users give them (strings; formats repeatable or comma-separated).
    ``text_contains``: the text read in the image holds it (see :func:`searchkit.ocr.contains`);
    blank means no filter."""
    if date_field not in DATE_FIELDS:
        raise FieldError("date_field", f"must be one of {', '.join(DATE_FIELDS)}, "
                         f"not {_show(date_field)}")
    date_from, date_to = parse_date(after, "after"), parse_date(before, "before", end=True)
    if date_from and date_to and date_from > date_to:
        raise FieldError("after", f"{after} is later than before ({before}): nothing can match")
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    return Filters(path_prefix=_optional_text(path, "path"),
                   path_glob=_optional_text(glob, "glob"),
                   date_from=date_from, date_to=date_to, date_field=date_field,
                   min_width=_side(min_width, "min_width"),
                   min_height=_side(min_height, "min_height"),
                   formats=parse_formats(formats), camera=_optional_text(camera, "camera"),
                   text_contains=_text_needle(text_contains))


def _optional_text(value: Any, name: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"must be text, not {_kind(value)}")
    _check_unicode(value, name)
    return value


def _text_needle(value: Any, name: str = "text_contains") -> str | None:
    """The text an image's text must contain; whitespace around it is not part of it."""
    value = _optional_text(value, name)
    if value is None or not value.strip():
        return None
    if len(value) > MAX_NEEDLE:
        raise FieldError(name, f"is longer than {MAX_NEEDLE} characters")
    return value.strip()


def _side(value: Any, name: str) -> int | None:
    """A minimum width or height in pixels; 0 (or nothing) means no minimum."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise FieldError(name, f"must be a whole number of pixels, not {_show(value)}") \
                from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIDE:
        raise FieldError(name, f"must be a whole number of pixels from 0 to {MAX_SIDE:,}")
    return value or None


def parse_formats(values: Iterable[str] | str) -> tuple[str, ...]:
    """Format names, repeatable or comma-separated (``jpeg``, ``.PNG``, ``jpg,tif``)."""
    if values is None or isinstance(values, str):
        values = [values or ""]
    if not isinstance(values, (list, tuple)):
        raise FieldError("format", f"must be text or a list of it, not {_kind(values)}")
    known = format_names()
    out: list[str] = []
    for spec in values:
        if not isinstance(spec, str):
            raise FieldError("format", f"must be text, not {_kind(spec)}")
        for name in (part.strip() for part in spec.split(",")):
            if not name:
                continue
            if name.lstrip(".").upper() not in known:
                raise FieldError("format", f"unknown format {_show(name)} (known: "
                                 f"{', '.join(sorted(k.lower() for k in known))})")
            out.append(name.lstrip(".").lower())
    return tuple(dict.fromkeys(out))


_PERIODS = (("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year"))


def parse_date(value: Any, name: str = "date", end: bool = False) -> datetime | None:
    """A date or time; with ``end``, a year, month or day stands for its last instant."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise FieldError(name, f"must be a date as text, not {_kind(value)}")
    text = value.strip()
    for fmt, period in _PERIODS:
        try:
            start = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return _period_end(start, period) if end else start
    try:
        return _local(datetime.fromisoformat(text))
    except ValueError:
        raise FieldError(name, f"bad date {_show(value)}: use YYYY, YYYY-MM, YYYY-MM-DD or "
                         "ISO 8601") from None


def _period_end(start: datetime, period: str) -> datetime:
    """The last instant of the year, month or day that begins at ``start``."""
    try:
        if period == "year":
            nxt = start.replace(year=start.year + 1)
        elif period == "month":
            nxt = start.replace(year=start.year + (start.month == 12),
                                month=start.month % 12 + 1)
        else:
            nxt = start + timedelta(days=1)
    except (ValueError, OverflowError):  # the period ends with year 9999
        return datetime.max
    return nxt - timedelta(microseconds=1)


def _local(moment: datetime) -> datetime:
    """A time with a zone as local time without one (how dates are stored and compared)."""
    if moment.tzinfo is None:
        return moment
    try:
        return moment.astimezone().replace(tzinfo=None)
    except (OverflowError, ValueError, OSError):  # at the edge of the representable range
        return datetime.min if moment.year < 1970 else datetime.max


# ---- helpers -----------------------------------------------------------------------------
def _check_unicode(value: str, name: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FieldError(name, "is not valid Unicode (undecodable bytes)") from None


def _kind(value: Any) -> str:
    return {list: "a list", dict: "an object", bool: "true/false", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = ["FieldError", "QuerySpec", "Weights", "QUERY_KEYS", "parse_query_spec",
           "parse_query_line",
           "parse_filters", "parse_date", "parse_formats", "parse_k", "parse_threshold",
           "parse_text", "parse_weight"]
