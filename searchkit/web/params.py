"""Request parameters shared by the search endpoints, typed so that the OpenAPI schema says
exactly what is accepted (and FastAPI answers 422 for anything else)."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Annotated, Literal

from fastapi import Query
from pydantic import Field

from ..query import Filters

MAX_ID = 2**63 - 1                  # SQLite's integer range
MAX_TEXT = 1000                     # characters of one query term
MAX_TERMS = 16
MAX_SIDE = 1_000_000
# No file has a date outside this range (mtime_ns fits int64 from 1678 to 2262).
EARLIEST, LATEST = date(1900, 1, 1), date(2200, 12, 31)
FORMATS = ("jpeg", "png", "webp", "gif", "bmp", "tiff")

RowId = Annotated[int, Field(ge=0, le=MAX_ID)]
Weight = Annotated[float, Query(ge=-100, le=100, allow_inf_nan=False)]
TextTerm = Annotated[str | None, Query(max_length=MAX_TEXT, description="What to look for, "
                                       "in words")]


def _day_start(d: date | None) -> datetime | None:
    return None if d is None else datetime.combine(min(max(d, EARLIEST), LATEST), time.min)


def _day_end(d: date | None) -> datetime | None:
    return None if d is None else datetime.combine(min(max(d, EARLIEST), LATEST), time.max)


def filter_params(
    folder: Annotated[str | None, Query(max_length=4096, description="Only files under this "
                                        "indexed folder (absolute path)")] = None,
    glob: Annotated[str | None, Query(max_length=1024, description="Only paths matching this "
                                      "glob, e.g. '*.png' or '*/2024/*'")] = None,
    after: Annotated[date | None, Query(description="Taken/modified on or after (YYYY-MM-DD)")]
    = None,
    before: Annotated[date | None, Query(description="Taken/modified on or before (YYYY-MM-DD)")]
    = None,
    date_field: Annotated[Literal["taken", "modified"], Query(
        description="Which date 'after'/'before' apply to: taken (EXIF) or modified")] = "taken",
    min_width: Annotated[int | None, Query(ge=1, le=MAX_SIDE)] = None,
    min_height: Annotated[int | None, Query(ge=1, le=MAX_SIDE)] = None,
    format: Annotated[list[Literal[FORMATS]] | None, Query(  # type: ignore[valid-type]
        max_length=len(FORMATS), description="Only these formats (repeatable)")] = None,
    camera: Annotated[str | None, Query(max_length=200, description="Camera make/model "
                                        "contains")] = None,
) -> Filters:
    """The CLI's filters (``searchkit search --path/--glob/--after/...``) as query parameters."""
    return Filters(path_prefix=folder or None, path_glob=glob or None,
                   date_from=_day_start(after), date_to=_day_end(before), date_field=date_field,
                   min_width=min_width, min_height=min_height, formats=tuple(format or ()),
                   camera=camera or None)
