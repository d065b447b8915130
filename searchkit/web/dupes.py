"""GET /api/dupes: the groups of duplicate images (``searchkit dupes``) for the page's
duplicates view. Thumbnails and files are linked by id only.

Finding the groups reads every vector within the filters (minutes for a million images), so
one request computes at a time and the last few reports are kept, each for the store's
``vectors_version`` it was computed at (any write bumps it: a changed library is looked at
again)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import astuple
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query

from ..dupes import DEFAULT_K, DEFAULT_THRESHOLD, KEEP_RULES, MAX_K, DupesOptions
from ..library import Library
from ..query import Filters
from .params import filter_params
from .schemas import DupesResponse, ErrorOut, ValidationErrorOut, dupes_out

MAX_GROUPS = 1_000           # groups one response lists at most
DEFAULT_GROUPS = 100
CACHED_REPORTS = 4

DupesThreshold = Annotated[float, Query(ge=0, le=1, allow_inf_nan=False, description=(
    "Cosine similarity from which two images are near-duplicates (default 0.99, measured; "
    "0.98 finds more, with more false pairs)"))]
Neighbours = Annotated[int, Query(ge=1, le=MAX_K, description="Neighbours looked at per image")]
Keep = Annotated[Literal[KEEP_RULES], Query(  # type: ignore[valid-type]
    description="Which file of a group to keep: largest (most pixels, then bytes, then "
    "oldest), oldest, newest or shortest-path")]
ExactOnly = Annotated[bool, Query(description="Only files with the same content (bytes)")]
Limit = Annotated[int, Query(ge=1, le=MAX_GROUPS, description="Groups listed (the largest); "
                             "all are counted")]


class ReportCache:
    """The last few reports by (options, filters, store version); one computed at a time."""

    def __init__(self, library: Library, size: int = CACHED_REPORTS):
        self.library = library
        self.size = size
        self._reports: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, options: DupesOptions, filters: Filters):
        with self._lock:
            key = (options, astuple(filters), self.library.engine.vectors_version())
            report = self._reports.get(key)
            if report is None:
                report = self.library.dupes(options.threshold, options.k, options.keep,
                                            filters, options.exact_only)
                self._reports[key] = report
                while len(self._reports) > self.size:
                    self._reports.popitem(last=False)
            self._reports.move_to_end(key)
            return report


def dupes_routes(app: FastAPI, library: Library) -> None:
    cache = ReportCache(library)
    app.state.dupes_cache = cache

    @app.get("/api/dupes", response_model=DupesResponse, tags=["library"], responses={
        400: {"model": ErrorOut}, 422: {"model": ValidationErrorOut}})
    def dupes(threshold: DupesThreshold = DEFAULT_THRESHOLD, k: Neighbours = DEFAULT_K,
              keep: Keep = "largest", exact_only: ExactOnly = False,
              limit: Limit = DEFAULT_GROUPS,
              filters: Filters = Depends(filter_params)) -> DupesResponse:
        """Groups of exact duplicates (same content) and near-duplicates (cosine at or above
        ``threshold``) among the indexed images within the filters, largest first, each with
        the file to keep by the ``keep`` rule. Nothing is deleted."""
        options = DupesOptions.parse(threshold, k, keep, exact_only)
        report = cache.get(options, filters)
        return dupes_out(_limited(report, limit))


def _limited(report, limit: int):
    from dataclasses import replace
    return replace(report, groups=report.groups[:limit])
