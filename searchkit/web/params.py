"""Request parameters shared by the search endpoints, typed so that the OpenAPI schema says
what is accepted; their values are read by :mod:`searchkit.spec`, as the CLI's are, and a value
it cannot read is a 422 naming the parameter, like any other invalid parameter."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from fastapi.exceptions import RequestValidationError
from pydantic import Field

from .. import spec
from ..query import Filters

MAX_ID = spec.MAX_ID                # SQLite's integer range
MAX_TEXT = 1000                     # characters of one query term
MAX_TERMS = 16
MAX_SIDE = spec.MAX_SIDE
MAX_DATE = 64                       # characters of a date
FORMATS = ("jpeg", "png", "webp", "gif", "bmp", "tiff", "heic", "heif", "avif", "raw")
DATES = "YYYY, YYYY-MM, YYYY-MM-DD or ISO 8601"

RowId = Annotated[int, Field(ge=0, le=MAX_ID)]
Weight = Annotated[float, Query(ge=-spec.MAX_WEIGHT, le=spec.MAX_WEIGHT, allow_inf_nan=False)]
TextTerm = Annotated[str | None, Query(max_length=MAX_TEXT, description="What to look for, "
                                       "in words")]
Hybrid = Annotated[bool | None, Query(description="Lift images whose text (read by `searchkit "
                                      "index --ocr`) holds the query's words (reciprocal-rank "
                                      "fusion with the image model's ranking); default: when "
                                      "the library has such text; false: the model alone")]


def filter_params(
    folder: Annotated[str | None, Query(max_length=4096, description="Only files under this "
                                        "indexed folder (absolute path)")] = None,
    glob: Annotated[str | None, Query(max_length=1024, description="Only paths matching this "
                                      "glob, e.g. '*.png' or '*/2024/*'")] = None,
    after: Annotated[str | None, Query(max_length=MAX_DATE, description="Taken/modified on or "
                                       f"after ({DATES})", examples=["2024-06"])] = None,
    before: Annotated[str | None, Query(max_length=MAX_DATE, description="Taken/modified on "
                                        f"or before ({DATES}; a year, month or day includes "
                                        "all of it)", examples=["2024"])] = None,
    date_field: Annotated[Literal["taken", "modified"], Query(
        description="Which date 'after'/'before' apply to: taken (EXIF) or modified")] = "taken",
    min_width: Annotated[int | None, Query(ge=0, le=MAX_SIDE)] = None,
    min_height: Annotated[int | None, Query(ge=0, le=MAX_SIDE)] = None,
    format: Annotated[list[Literal[FORMATS]] | None, Query(  # type: ignore[valid-type]
        max_length=len(FORMATS), description="Only these formats (repeatable)")] = None,
    camera: Annotated[str | None, Query(max_length=200, description="Camera make/model "
                                        "contains")] = None,
    text_contains: Annotated[str | None, Query(
        max_length=spec.MAX_NEEDLE, description="Only images whose text (read by `searchkit "
        "index --ocr`) contains this, ignoring case and accents", examples=["42.50"])] = None,
) -> Filters:
    """The CLI's filters (``searchkit search --path/--glob/--after/...``) as query parameters,
    read by the same parser (:func:`searchkit.spec.parse_filters`)."""
    try:
        return spec.parse_filters(path=folder, glob=glob, after=after, before=before,
                                  date_field=date_field, min_width=min_width,
                                  min_height=min_height, formats=format or (), camera=camera,
                                  text_contains=text_contains)
    except spec.FieldError as e:
        name = {"path": "folder"}.get(e.field, e.field)
        raise RequestValidationError([{"loc": ("query", name), "msg": e.problem,
                                       "type": "value_error"}]) from None
