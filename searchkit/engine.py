"""The narrow storage interface a library sits on, and the choice of engine by location.

What the indexer and search need from storage, and nothing else: the model a library is bound
to, the folders it tracks, the rows it knows (to plan an index run against), writes of a run's
changes (upserts with vectors, moves, touches, deletes), reads of rows and vectors, search with
the filters inside the query, counts and the state of the index. Two engines implement it:

- the local engine (:mod:`searchkit.local_engine`): SQLite as the source of truth and FAISS as
  a derived, incrementally maintained cache, in one directory (the default);
- the Milvus engine (:mod:`searchkit.milvus`): one collection per library on a Milvus server
  (or a Milvus Lite file), selected by a ``milvus://HOST:PORT/COLLECTION`` location.

Everything a user can ask for is the library's (:class:`searchkit.library.Library`); features
that only the local engine has (text read in images, ``searchkit check``, the FAISS files)
are asked for through :meth:`Engine.local`, which says clearly when the engine is another.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .query import Filters
    from .errors import LibraryDamagedError
    from .local_engine import LocalEngine
    from .store import Changes, File, FileRow, LibraryInfo, RowState, SoundVectors

MILVUS_SCHEME = "milvus://"


@dataclass(frozen=True)
class EngineIndex:
    """The state of an engine's vector index, from stamps and counts (nothing loaded)."""
    kind: str            # e.g. "flat", "ivf-sq8", "opq-ivf-pq", "HNSW"
    state: str           # "fresh", "stale", "missing" or "damaged" (rebuilt when used)
    pending: int = 0     # rows changed since it was built (answered all the same)
    damage: str | None = None
    left_out: int = 0    # rows whose stored vector is damaged, left out of search
    device: str = "cpu"


@dataclass(frozen=True)
class IndexMaintenance:
    """What bringing the index up to date after a write did (:meth:`Engine.update_index`)."""
    action: str          # "none", "folded", "rebuilt" or "flushed"
    changed: int = 0
    reason: str = ""
    seconds: float = 0.0


@runtime_checkable
class Engine(Protocol):
    """Storage for one library. Methods raise :class:`~searchkit.errors.SearchkitError`
    subclasses with one clear line; none prints."""

    location: str        # as the user names it: a directory or a milvus:// URI
    state_dir: Path      # this machine's directory for the library's locks and caches
                         # (thumbnails); the local engine's is the library directory

    # ---- the model it is bound to ----------------------------------------------------------
    def exists(self) -> bool: ...
    def create(self, model_name: str, fingerprint: str, dim: int) -> None: ...
    def migrate(self) -> None:
        """Bring what is stored to this searchkit's layout (an older library's)."""
    def info(self) -> "LibraryInfo": ...
    def damaged(self, what: str) -> "LibraryDamagedError":
        """The one wording of "this library is damaged", with what to do about it."""
    def rebind(self, model_name: str, fingerprint: str, dim: int) -> None:
        """Bind to another model: every vector is dropped, the rows wait to be encoded."""

    # ---- writers ---------------------------------------------------------------------------
    def writer(self) -> AbstractContextManager[None]:
        """Hold the library's write lock (a second writer fails at once)."""
    def is_busy(self) -> bool: ...

    # ---- folders ---------------------------------------------------------------------------
    def roots(self) -> list[str]: ...
    def add_roots(self, paths: list[str], now: float) -> None: ...
    def forget(self, root: str) -> int:
        """Remove every row under ``root`` (and the root); how many indexed images left."""

    # ---- what an index run plans against, and writes ---------------------------------------
    def rows_under(self, roots: list[str]) -> dict[str, "RowState"]: ...
    def content_hashes(self) -> set[str]:
        """The contents ok rows hold."""
    def row_with_content(self, content_hash: str) -> "FileRow | None":
        """An ok row holding this content, with its vector."""
    def apply(self, changes: "Changes") -> None:
        """Store an index run's batch of changes; retried or resumed, never duplicated."""
    def skipped(self) -> list["File"]: ...

    # ---- import and export -----------------------------------------------------------------
    def rows_at(self, paths: list[str]) -> dict[str, "FileRow"]: ...
    def upsert_rows(self, rows: list["FileRow"]) -> None: ...
    def export_rows(self, chunk: int = 10_000) -> Iterator[list["File"]]:
        """The ok rows with their vectors, in chunks, from one consistent snapshot."""

    # ---- reading ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Rows by status (``STATUS_OK``, ``STATUS_SKIPPED``)."""
    def get_files(self, ids: list[int]) -> dict[int, "File"]: ...
    def get_file(self, file_id: int) -> "File | None": ...
    def formats(self) -> list[str]: ...
    def vectors_of(self, ids: np.ndarray) -> "SoundVectors": ...
    def content_copies(self, hashes: list[str]) -> dict[str, int]:
        """How many indexed files hold each content."""
    def sample_ok_paths(self, n: int) -> list[str]:
        """The paths of up to ``n`` ok rows drawn at random (all of them when fewer)."""

    # ---- duplicates (searchkit.dupes) ------------------------------------------------------
    def count_ok(self, filters: "Filters | None" = None) -> int: ...
    def duplicate_contents(self, filters: "Filters | None" = None) -> list[list[int]]: ...
    def content_vectors(self, filters: "Filters | None" = None, chunk: int = 10_000
                        ) -> Iterator[list[tuple[int, str, bytes | None]]]:
        """(id, content hash, vector) of one ok row per content within ``filters``, in
        chunks (:func:`searchkit.dupes.read_contents` checks the vectors)."""
    def vectors_version(self) -> int:
        """A number any write changes (caches of derived results key on it)."""

    # ---- search ----------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, filters: "Filters | None" = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` ok rows for a normalised ``vector`` among those ``filters`` keep
        (inside the query, not after it): (scores, ids), best first."""
    def warm(self) -> None:
        """Load what search needs (a server does it before its first query)."""
    def update_index(self, rebuild: bool = False) -> IndexMaintenance:
        """The rows changed: bring the index up to date (callers hold the write lock)."""
    def index(self) -> EngineIndex: ...
    def problems(self) -> list[str]:
        """What is wrong, cheaply (``searchkit status``)."""

    # ---- what only some engines have -------------------------------------------------------
    def ocr_on(self) -> bool:
        """Whether index runs read the text in images (only the local engine can)."""
    def local(self, feature: str) -> "LocalEngine":
        """This engine, for features only the local engine has (text read in images,
        ``searchkit check``, the FAISS cache); any other raises a SearchkitError naming
        ``feature`` ("... is not available on Milvus libraries")."""
    def close(self) -> None: ...


def is_milvus(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and location.startswith(MILVUS_SCHEME)


def open_engine(location: str | os.PathLike, create: bool = False) -> Engine:
    """The engine of the library at ``location``: a ``milvus://`` URI (needs the
    ``searchkit[milvus]`` extra) or a directory (with ``create``, made if missing)."""
    if is_milvus(location):
        from .milvus import open_milvus_engine
        return open_milvus_engine(str(location), create=create)
    from .local_engine import LocalEngine
    return LocalEngine.at(Path(location).expanduser(), create=create)
