"""Search filters as Milvus filter expressions: the Milvus translation of
:class:`searchkit.query.Filters`, with the meaning of the local one
(:func:`searchkit.store.filter_conditions`, SQL). A filter that a Milvus server cannot express
exactly is refused with one clear error, never approximated or applied after the search.

    field          expression                                        needs
    path_prefix    path == root or root/ <= path < root0 (a range)   any Milvus
    path_glob      "/literal" -> path == ..., "/literal*" -> range;  any Milvus
                   other globs -> path like (* -> %, ? -> _)         LIKE anywhere: Lite, 2.4.3+
                   with a literal % _ or \\ in it                      LIKE escapes: Lite
                   with [...] classes                                 refused everywhere
    date (taken)   taken_at (microseconds) in range, known           any Milvus
    date (modified) mtime_ns in range                                any Milvus
    min_width/height  width >= n (unknown: -1)                       any Milvus
    formats        format in [...]                                   any Milvus
    camera         camera_key like "%text%" (make model, ASCII       LIKE anywhere; a % _ or \\
                   lower case, as SQLite's lower and LIKE compare)   in it: LIKE escapes
    text_contains  refused: text in images is local-only

Milvus 2.3 matches LIKE patterns by prefix only (``ab%``) and treats ``_`` literally; 2.4.3
added infix and suffix patterns and ``_``. Backslash escapes of ``%`` and ``_`` were fixed in
later servers and are trusted on Milvus Lite only (tested there).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import QueryError
from ..paths import absolute, subtree_prefix
from ..query import DATE_FIELDS, INT64_MIN, Filters, stored_formats, time_ns
from ..store import STATUS_OK
from .schema import MISSING_INT, MISSING_TIME, time_to_us

LIKE_ANYWHERE_SINCE = (2, 4, 3)
NOTHING = "id < 0"            # keys are positive: an expression no row meets
_LIKE_SPECIAL = "%_\\"


@dataclass(frozen=True)
class Dialect:
    """What the expressions of one Milvus backend can say."""
    name: str                   # "Milvus Lite 3.2.2", "Milvus 2.3.5"
    like_anywhere: bool         # LIKE with % and _ anywhere (else: prefix only)
    like_escapes: bool          # \\% and \\_ in a LIKE pattern match literally

    @classmethod
    def of(cls, version: str, lite: bool) -> "Dialect":
        """From the server's version string (``v2.3.5``, ``milvus_lite-3.2.2``)."""
        if lite:
            return cls(f"Milvus Lite {_numbers(version) or version}", True, True)
        numbers = tuple(int(x) for x in (_numbers(version) or "0.0.0").split("."))
        return cls(f"Milvus {'.'.join(map(str, numbers))}", numbers >= LIKE_ANYWHERE_SINCE,
                   False)


def _numbers(version: str) -> str | None:
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", version)
    return m.group(0) if m else None


def literal(text: str) -> str:
    """A string literal of the expression language, for any text (quotes, backslashes and
    line breaks escaped; the rest as it is)."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def status_is(status: str) -> str:
    return f"status == {literal(status)}"


def all_of(conditions: list[str]) -> str:
    return " and ".join(f"({c})" for c in conditions) if conditions else "id >= 0"


def keys_in(ids) -> str:
    return f"id in [{', '.join(str(int(i)) for i in ids)}]"


def path_under(root: str) -> str:
    """``path`` is ``root`` or lies under it (:func:`searchkit.store.path_under`: a range of
    text, not LIKE, so no character in a name is a wildcard)."""
    return f"path == {literal(root)} or ({_starts_with(subtree_prefix(root))})"


def _starts_with(prefix: str) -> str:
    """``path`` starts with ``prefix``: from ``prefix`` up to ``prefix`` with its last
    character raised by one (text compares by code point, as UTF-8 bytes do)."""
    after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return f"path >= {literal(prefix)} and path < {literal(after)}"


def unavailable(what: str, dialect: Dialect, since: str = "") -> QueryError:
    where = f"this {dialect.name} server" if since else "Milvus libraries"
    return QueryError(f"{what} is not available on {where}{since}")


def filter_conditions(filters: Filters, dialect: Dialect) -> list[str]:
    """Expressions for each active field of ``filters`` (every one must hold)."""
    conds: list[str] = []
    if filters.text_contains:
        raise unavailable("the text-in-images filter (--text-contains, index --ocr)", dialect)
    if filters.path_prefix:
        conds.append(path_under(absolute(filters.path_prefix)))
    if filters.path_glob:
        conds += _glob_conditions(filters.path_glob, dialect)
    conds += _date_conditions(filters)
    if filters.min_width:
        conds += _at_least("width", filters.min_width)
    if filters.min_height:
        conds += _at_least("height", filters.min_height)
    if filters.formats:
        names = [f for f in stored_formats(filters.formats) if f]
        conds.append(f"format in [{', '.join(map(literal, names))}]" if names else NOTHING)
    if filters.camera:
        conds.append(f"camera_key like {_like_contains(filters.camera.lower(), dialect)}")
    return conds


def search_expression(filters: Filters | None, dialect: Dialect) -> str:
    """Ok rows that ``filters`` keep, as one expression."""
    conds = [status_is(STATUS_OK)]
    if filters is not None:
        conds += filter_conditions(filters, dialect)
    return all_of(conds)


def _glob_conditions(pattern: str, dialect: Dialect) -> list[str]:
    """SQLite's GLOB (case-sensitive; ``*`` any text, ``?`` one character) as expressions."""
    if not pattern.startswith(("*", os.sep)):
        pattern = "*" + pattern  # a glob matches the end of the path, like rglob
    if "[" in pattern:
        raise unavailable("a path glob with [...] character classes", dialect)
    head = pattern.rstrip("*")
    if not any(c in head for c in "*?"):   # a literal path, or a literal start
        if head == pattern:
            return [f"path == {literal(pattern)}"]
        return [_starts_with(head)] if head else []
    if not dialect.like_anywhere:
        raise unavailable(f"the path glob {pattern!r} (only '/literal' and '/literal*' "
                          "globs)", dialect, since=": it needs Milvus 2.4.3 or later")
    like = "".join("%" if c == "*" else "_" if c == "?" else _like_char(c, dialect)
                   for c in pattern)
    return [f"path like {literal(like)}"]


def _like_char(c: str, dialect: Dialect) -> str:
    if c not in _LIKE_SPECIAL:
        return c
    if not dialect.like_escapes:
        raise unavailable(f"a filter text holding {c!r} (a LIKE wildcard)", dialect,
                          since=": it cannot match it literally")
    return "\\" + c


def _like_contains(part: str, dialect: Dialect) -> str:
    if not dialect.like_anywhere:
        raise unavailable("the camera filter", dialect,
                          since=": it needs Milvus 2.4.3 or later (LIKE '%text%')")
    return literal("%" + "".join(_like_char(c, dialect) for c in part) + "%")


def _date_conditions(filters: Filters) -> list[str]:
    if filters.date_field not in DATE_FIELDS:
        raise QueryError(f"date field must be one of {', '.join(DATE_FIELDS)}")
    lo, hi = filters.date_from, filters.date_to
    if lo is None and hi is None:
        return []
    if filters.date_field == "taken":  # a row with no time taken is in no date range
        field, lo, hi = "taken_at", *(None if d is None else time_to_us(d) for d in (lo, hi))
        conds = [f"taken_at != {MISSING_TIME}"]
    else:
        field, lo, hi = "mtime_ns", *(None if d is None else time_ns(d) for d in (lo, hi))
        conds = []
    if lo is not None and lo != INT64_MIN:        # >= the smallest int64: every row
        conds.append(f"{field} >= {lo}")
    if hi is not None:  # Milvus cannot read the literal -2**63: "<= min" is "< min + 1"
        conds.append(f"{field} < {hi + 1}" if hi == INT64_MIN else f"{field} <= {hi}")
    return conds


def _at_least(field: str, n: int) -> list[str]:
    """``field >= n`` where unknown values (``MISSING_INT``) never pass, as NULL in SQL."""
    conds = [f"{field} >= {int(n)}"]
    if n <= MISSING_INT:
        conds.append(f"{field} != {MISSING_INT}")
    return conds
