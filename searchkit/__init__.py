"""searchkit: multimodal semantic search over image folders.

    from searchkit import Library, Query, Filters
    lib = Library.open("~/photos-lib")
    for hit in lib.search(Query.text("a red bicycle leaning on a wall"), k=5):
        print(hit.score, hit.path)
"""

__version__ = "0.1.0"

from .errors import SearchkitError  # noqa: E402
from .library import Library, LibraryStatus  # noqa: E402
from .query import Filters, Hit, Query  # noqa: E402

__all__ = ["Library", "LibraryStatus", "Filters", "Hit", "Query", "SearchkitError"]
