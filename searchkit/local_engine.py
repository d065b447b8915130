"""The local engine: one directory holding the SQLite store (the source of truth) and the FAISS
index derived from it (:mod:`searchkit.index_cache`), behind :class:`searchkit.engine.Engine`.

The store's own methods (:class:`~searchkit.store.Store`, which owns every SQL statement) are
most of the interface; this class adds what needs the index or the directory: search with the
filters inside the query, index maintenance and state, and the write lock.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from . import index as faiss_index
from .engine import EngineIndex, IndexMaintenance
from .errors import SearchkitError
from .index_cache import IndexCache, IndexState
from .locks import LOCK_FILE, is_locked, write_lock  # noqa: F401  (LOCK_FILE: tests read it)
from .store import Store

if TYPE_CHECKING:
    from .query import Filters


class LocalEngine(Store):
    """A library directory: its store, and the index cache over it."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.location = str(self.directory)
        self.state_dir = self.directory
        self._cache: IndexCache | None = None
        self._cache_lock = threading.Lock()

    @classmethod
    def at(cls, directory: Path, create: bool = False) -> "LocalEngine":
        """The engine of the library in ``directory`` (with ``create``, the folder is made;
        an existing library is not required)."""
        directory = Path(directory)
        missing = SearchkitError(f"no library at {directory}: index a folder first "
                                 f"(searchkit index PATH --library {directory})")
        if not directory.exists():
            if not create:
                raise missing
            directory.mkdir(parents=True)
        elif not directory.is_dir():
            raise SearchkitError(f"library path {directory} is not a directory")
        engine = cls(directory)
        if not create and not engine.exists():
            raise missing
        return engine

    @property
    def cache(self) -> IndexCache:
        """The FAISS index over the store (built on first use, for the model bound now)."""
        with self._cache_lock:
            if self._cache is None:
                self._cache = IndexCache(self.directory, self, self.info())
            return self._cache

    def rebind(self, model_name: str, fingerprint: str, dim: int) -> None:
        super().rebind(model_name, fingerprint, dim)
        with self._cache_lock:
            if self._cache is not None:
                self._cache.forget()
            self._cache = None

    # ---- writers ---------------------------------------------------------------------------
    @contextmanager
    def writer(self) -> Iterator[None]:
        """The write lock; temp files left by a killed index save are removed on the way in."""
        with write_lock(self.directory):
            faiss_index.remove_stray_temp_files(self.directory)
            yield

    def is_busy(self) -> bool:
        return is_locked(self.directory)

    # ---- search ----------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, filters: "Filters | None" = None
               ) -> tuple[np.ndarray, np.ndarray]:
        index = self.cache.current()
        allowed = self.filter_ids(filters) if filters is not None and filters.active() else None
        return index.search(vector, k, allowed)

    def warm(self) -> None:
        self.cache.current()

    def update_index(self, rebuild: bool = False) -> IndexMaintenance:
        done = self.cache.update(rebuild)
        return IndexMaintenance(done.action, done.changed, done.reason, done.seconds)

    def index(self) -> EngineIndex:
        saved = self.cache.state()
        stamp = saved.stamp
        kind = _kind(stamp) if stamp else faiss_index.choose_kind(self.count_ok())
        return EngineIndex(kind, saved.state, saved.pending, saved.damage,
                           stamp.left_out if stamp and saved.state == "fresh" else 0,
                           "gpu" if faiss_index.gpu_count() else "cpu")

    def problems(self) -> list[str]:
        """What is wrong, cheaply (no full scan of the vectors: `searchkit check` does it)."""
        saved: IndexState = self.cache.state()
        problems = []
        if saved.damage is not None:
            problems.append(f"the saved index is damaged ({saved.damage}); the next search "
                            "rebuilds it")
        strays = faiss_index.stray_temp_files(self.directory)
        if strays:
            problems.append(faiss_index.describe_temp_files(strays)
                            + "; the next index run removes them")
        if saved.state == "fresh" and saved.stamp.left_out:
            problems.append(f"{saved.stamp.left_out} indexed images have a damaged vector "
                            "and are left out of search")
        waiting = self.awaiting_reencoding()
        if waiting:
            problems.append(f"{waiting} images wait to be encoded again by the next index run")
        return problems

    # ---- what only this engine has ---------------------------------------------------------
    def local(self, feature: str) -> "LocalEngine":
        return self

    def close(self) -> None:
        self.engine.dispose()


def _kind(stamp: faiss_index.Stamp) -> str:
    """The index kind a stamp records, as specific as it says (e.g. "ivf-sq8")."""
    return faiss_index.kind_name(stamp)
