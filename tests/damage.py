"""Ways a library gets damaged, for the tests of detection and repair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import text

from searchkit import Library
from searchkit.index import INDEX_FILE
from searchkit.store import DB_NAME

SQLITE_HEADER = 16  # "SQLite format 3\0"


def overwrite(path: Path, offset: int, nbytes: int, seed: int = 0) -> None:
    """Random bytes over part of a file, its size unchanged (a bad sector, a stray write)."""
    data = bytearray(path.read_bytes())
    data[offset:offset + nbytes] = np.random.default_rng(seed).bytes(nbytes)
    path.write_bytes(bytes(data))


def index_region(lib: Library, region: str) -> tuple[int, int]:
    """(offset, length) of the vectors or the id map in a saved flat index (IndexIDMap2 over
    IndexFlatIP: headers, the vectors, the id map's length, then 8 bytes per id)."""
    size = (lib.directory / INDEX_FILE).stat().st_size
    n = lib.search_index().stamp.count
    ids = 8 * n
    if region == "id map":
        return size - ids, ids
    vectors = 4 * lib.info.dim * n
    return size - ids - 8 - vectors, vectors


def damage_index(lib: Library, region: str) -> None:
    offset, length = index_region(lib, region)
    overwrite(lib.directory / INDEX_FILE, offset, min(length, 256))


def checkpoint(lib: Library) -> Path:
    """Move everything into library.db itself (no WAL left) and close; the file's path."""
    with lib.store.engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    lib.store.engine.dispose()
    return lib.directory / DB_NAME


def truncate_db(lib: Library) -> None:
    db = checkpoint(lib)
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])


def break_db_header(lib: Library) -> None:
    overwrite(checkpoint(lib), 0, SQLITE_HEADER)


def set_meta(lib: Library, key: str, value: str) -> None:
    with lib.store.session() as s:
        s.execute(text("UPDATE meta SET value=:v WHERE key=:k"), {"k": key, "v": value})


def set_vector(lib: Library, path: str, kind: str) -> int:
    """Damage the stored vector of the row at ``path`` (short, null, nan, not unit), as a
    bad write would (nothing else changes); the row's id."""
    with lib.store.session() as s:
        row_id, blob = s.execute(text("SELECT id, vector FROM files WHERE path=:p"),
                                 {"p": path}).one()
        v = np.frombuffer(blob, np.float32).copy()
        bad = {"short": blob[:12], "null": None,
               "nan": np.where(np.arange(len(v)) == 0, np.nan, v).astype(np.float32).tobytes(),
               "not unit": (v * 3.0).astype(np.float32).tobytes()}[kind]
        s.execute(text("UPDATE files SET vector=:b WHERE id=:i"), {"b": bad, "i": row_id})
    return row_id


def drop_saved_index(lib: Library) -> None:
    """As if the index had never been saved: the next use rebuilds it from the store."""
    (lib.directory / INDEX_FILE).unlink()
