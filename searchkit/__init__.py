"""searchkit: multimodal semantic search over image folders.

    from searchkit import Library, Query, Filters
    lib = Library.open("~/photos-lib")
    for hit in lib.search(Query.text("a red bicycle leaning on a wall"), k=5):
        print(hit.score, hit.path)
"""

__version__ = "0.1.0"

from .errors import SearchkitError  # noqa: E402

__all__ = ["Library", "LibraryStatus", "Filters", "Hit", "Query", "QuerySpec", "SearchkitError",
           "parse_filters", "parse_query_spec"]

# The library (SQLAlchemy, FAISS) loads on first use, so that code which only needs an encoder
# (``searchkit.encoders``, ``searchkit classify``) does not pay for it.
_LAZY = {"Library": ".library", "LibraryStatus": ".library", "Filters": ".query", "Hit": ".query",
         "Query": ".query", "QuerySpec": ".spec", "parse_filters": ".spec",
         "parse_query_spec": ".spec"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
