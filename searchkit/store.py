"""The SQLite store: the one module that owns the schema, its version and its migrations.

SQLite is the source of truth, vectors included (one float32 BLOB per row). Every write that
changes the set of vectors bumps ``vectors_version`` in the same transaction, so the FAISS cache
can tell whether it is stale.

The change log (schema 3): triggers on ``files`` append the id of every ok row inserted,
deleted or whose vector or status changes to ``changes``, in the writing transaction itself,
whoever writes (the indexer, forget, rebind, check, an import, a script). ``changes.seq`` only
grows (AUTOINCREMENT), so "what changed since the index was built at seq S" is a range read of
the rows that changed: the saved index is brought up to date in work proportional to them.

Text read in images (schema 4, ``index --ocr``): ``ocr_text`` holds one text per content hash,
and the FTS5 table ``ocr_fts`` indexes it (external content, kept by triggers in the writing
transaction). Search filters and the hybrid ranking reach files through their content hash.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import random
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import (Float, Index, Integer, LargeBinary, String, Text, bindparam,
                        create_engine, event, exc, func, or_, select, text, update)
from sqlalchemy import literal_column, table  # the full-text index's SQL (schema 4)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, defer, mapped_column,
                            sessionmaker)

from .errors import (DiskFullError, LibraryBusyError, LibraryDamagedError, QueryError,
                     SearchkitError)
from . import ocr
from .paths import absolute, subtree_prefix
from .query import DATE_FIELDS, Filters, stored_formats, time_ns

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
DB_NAME = "library.db"
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
REENCODE_MTIME_NS = -1     # an ok row marked so that the next index run encodes its file again
SKIP_SCAN = "scan"         # skip_source: found by the folder walk (name, stat, empty, unreadable)
SKIP_DECODE = "decode"     # skip_source: the file's bytes could not be read or decoded
SKIP_STORE = "store"       # skip_source: the database refused the row
NORM_TOLERANCE = 1e-2      # a stored vector is L2-normalised: its norm is 1 within this
META_INTS = ("schema_version", "dim", "vectors_version")
META_KEYS = ("model_name", "model_fingerprint") + META_INTS


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Root(Base):
    """A folder the user indexed: `searchkit index` with no path re-scans these."""
    __tablename__ = "roots"
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    added_at: Mapped[float] = mapped_column(Float)


class File(Base):
    __tablename__ = "files"
    __table_args__ = (Index("ix_files_hash", "content_hash"), Index("ix_files_status", "status"),
                      {"sqlite_autoincrement": True})  # ids are never reused: FAISS ids = row ids

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    size: Mapped[int] = mapped_column(Integer)
    mtime_ns: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str | None] = mapped_column(String(32))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(16))
    taken_at: Mapped[datetime | None] = mapped_column()
    camera_make: Mapped[str | None] = mapped_column(Text)
    camera_model: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    indexed_at: Mapped[float] = mapped_column(Float)
    skip_source: Mapped[str | None] = mapped_column(String(8))  # SKIP_*, for skipped rows


class Change(Base):
    """One entry of the change log: an ok row's vector appeared, went or changed (triggers)."""
    __tablename__ = "changes"
    __table_args__ = ({"sqlite_autoincrement": True},)  # seq never goes back, even after pruning
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[int] = mapped_column(Integer)


# The change log's writers: every change to the set of ok vectors, in the same transaction.
LOG_TRIGGERS = {
    "files_log_insert": "AFTER INSERT ON files WHEN NEW.status = 'ok' "
                        "BEGIN INSERT INTO changes (id) VALUES (NEW.id); END",
    "files_log_delete": "AFTER DELETE ON files WHEN OLD.status = 'ok' "
                        "BEGIN INSERT INTO changes (id) VALUES (OLD.id); END",
    "files_log_update": "AFTER UPDATE OF vector, status ON files "
                        "WHEN OLD.status = 'ok' OR NEW.status = 'ok' "
                        "BEGIN INSERT INTO changes (id) VALUES (NEW.id); END",
}
CREATE_LOG = (["CREATE TABLE IF NOT EXISTS changes (seq INTEGER NOT NULL PRIMARY KEY "
               "AUTOINCREMENT, id INTEGER NOT NULL)"]
              + [f"CREATE TRIGGER IF NOT EXISTS {name} {body}"
                 for name, body in LOG_TRIGGERS.items()])


# ---- text read in images (issue 14, schema 4; the engine and matching: searchkit.ocr) -------
class OcrText(Base):
    """What OCR read in one content, by content hash: copies share it, a moved or re-encoded
    file keeps it (and a library switched to another model), a changed file has a new hash and
    is read again. Texts no row holds any more are dropped by :meth:`Store.prune_ocr`."""
    __tablename__ = "ocr_text"
    __table_args__ = ({"sqlite_autoincrement": True},)  # ids are the full-text index's rowids
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(32), unique=True)
    text: Mapped[str] = mapped_column(Text)                  # "" when none was found
    error: Mapped[str | None] = mapped_column(Text)          # why reading failed, if it did
    engine: Mapped[str | None] = mapped_column(String(64))   # "rapidocr 3.10.0"
    read_at: Mapped[float] = mapped_column(Float)


# The full-text index of ``ocr_text.text`` (FTS5, external content): kept in step by triggers
# in the writing transaction, whoever writes. unicode61 folds case and accents and splits at
# every character that is not a letter or digit ("42.50" is the tokens 42 and 50).
OCR_TRIGGERS = {
    "ocr_fts_insert": "AFTER INSERT ON ocr_text BEGIN "
                      "INSERT INTO ocr_fts (rowid, text) VALUES (NEW.id, NEW.text); END",
    "ocr_fts_delete": "AFTER DELETE ON ocr_text BEGIN INSERT INTO ocr_fts (ocr_fts, rowid, "
                      "text) VALUES ('delete', OLD.id, OLD.text); END",
    "ocr_fts_update": "AFTER UPDATE OF text ON ocr_text BEGIN INSERT INTO ocr_fts (ocr_fts, "
                      "rowid, text) VALUES ('delete', OLD.id, OLD.text); "
                      "INSERT INTO ocr_fts (rowid, text) VALUES (NEW.id, NEW.text); END",
}
CREATE_OCR_INDEX = (["CREATE VIRTUAL TABLE IF NOT EXISTS ocr_fts USING fts5(text, "
                     "content='ocr_text', content_rowid='id', "
                     "tokenize='unicode61 remove_diacritics 2')"]
                    + [f"CREATE TRIGGER IF NOT EXISTS {name} {body}"
                       for name, body in OCR_TRIGGERS.items()])
CREATE_OCR = (["CREATE TABLE IF NOT EXISTS ocr_text (id INTEGER NOT NULL PRIMARY KEY "
               "AUTOINCREMENT, content_hash VARCHAR(32) NOT NULL UNIQUE, text TEXT NOT NULL, "
               "error TEXT, engine VARCHAR(64), read_at FLOAT NOT NULL)"]
              + CREATE_OCR_INDEX)
OCR_META = "ocr"           # meta key: "1" when index runs read the text in images
CONTAINS_FUNCTION = "searchkit_contains"   # SQL: searchkit.ocr.contains(text, needle)


@dataclass(frozen=True)
class LibraryInfo:
    """What a library is bound to."""
    model_name: str
    model_fingerprint: str
    dim: int
    schema_version: int


# Migrations: MIGRATIONS[v] upgrades a database at version v to v + 1 (SQL statements).
MIGRATIONS: dict[int, list[str]] = {
    # 1 -> 2: where a skip was found gets its own column; scan problems kept their reason in
    # content_hash (so that an unchanged problem was not rewritten), which now holds hashes only
    1: ["ALTER TABLE files ADD COLUMN skip_source VARCHAR(8)",
        (f"UPDATE files SET skip_source = '{SKIP_SCAN}', content_hash = NULL "
         f"WHERE status = '{STATUS_SKIPPED}' AND content_hash IS NOT NULL"),
        (f"UPDATE files SET skip_source = CASE WHEN reason LIKE 'cannot store:%' "
         f"THEN '{SKIP_STORE}' ELSE '{SKIP_DECODE}' END "
         f"WHERE status = '{STATUS_SKIPPED}' AND skip_source IS NULL")],
    # 2 -> 3: the change log (an index saved before it is rebuilt once, at its next change)
    2: CREATE_LOG,
    # 3 -> 4: text read in images and its full-text index (issue 14)
    3: CREATE_OCR,
}
# The columns each version's migration added, by table: a database whose schema_version row
# is damaged is recognised by its columns (searchkit check --repair).
COLUMNS_ADDED: dict[int, dict[str, set[str]]] = {2: {"files": {"skip_source"}},
                                                 3: {"changes": {"seq", "id"}},
                                                 4: {"ocr_text": {"id", "content_hash", "text",
                                                                  "error", "engine",
                                                                  "read_at"}}}


# Pages of a NEW library (issue 12): a row holds a 2 KB float32 vector (512-d), so a 4 KiB page
# held one row and half a page of nothing; 16 KiB pages hold seven (bench/bench_page_size.py).
# An existing library keeps its page size (SQLite ignores this once the file has pages).
PAGE_SIZE = 16_384
VECTOR_READ_CHUNK = 500     # ids a statement of Store.vectors_for reads (SQLite: 32,766 at most)


def _set_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL mode: only then does it apply
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(directory: Path) -> Engine:
    engine = create_engine(f"sqlite:///{directory / DB_NAME}", future=True)
    event.listen(engine, "connect", _set_pragmas)
    event.listen(engine, "connect", _add_functions)
    return engine


def _add_functions(dbapi_conn, _record) -> None:
    """SQL functions the store's statements use (the text filter's exact check)."""
    dbapi_conn.create_function(CONTAINS_FUNCTION, 2, ocr.contains, deterministic=True)


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def blob_to_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32)


@dataclass(frozen=True)
class StoreVersion:
    """What one read saw: ``vectors_version`` and the change log's last ``seq``."""
    vectors: int
    seq: int


@dataclass
class SoundVectors:
    """Stored vectors split into the sound ones and the damaged ones (id -> what is wrong)."""
    ids: np.ndarray
    vectors: np.ndarray
    bad: dict[int, str] = field(default_factory=dict)


def sound_vectors(ids: list[int], blobs: list[bytes | None], dim: int) -> SoundVectors:
    """The one test of a stored vector: ``dim`` float32 values, all finite, of unit norm."""
    bad: dict[int, str] = {}
    good_ids, good_blobs = [], []
    for i, b in zip(ids, blobs):
        if b is None:
            bad[i] = "no vector"
        elif len(b) != dim * 4:
            bad[i] = f"vector of {len(b)} bytes, expected {dim * 4}"
        else:
            good_ids.append(i)
            good_blobs.append(b)
    vecs = np.frombuffer(b"".join(good_blobs), dtype=np.float32).reshape(len(good_blobs), dim)
    with np.errstate(all="ignore"):  # a NaN or a huge value fails the norm test below
        norms = np.sqrt(np.einsum("ij,ij->i", vecs, vecs, dtype=np.float64))
    keep = np.abs(norms - 1) <= NORM_TOLERANCE   # False for NaN and inf as well
    for j in np.flatnonzero(~keep):
        bad[good_ids[j]] = ("vector not finite" if not np.isfinite(vecs[j]).all()
                            else f"vector norm {norms[j]:.3g}, expected 1")
    ids_out = np.asarray(good_ids, dtype=np.int64)
    if keep.all():
        return SoundVectors(ids_out, vecs.copy(), bad)
    return SoundVectors(ids_out[keep], vecs[keep], bad)


@dataclass(frozen=True)
class ChangedRows:
    """Rows changed since an index was built (:meth:`Store.changes_since`)."""
    version: StoreVersion
    changed: np.ndarray          # every id that changed, sorted: the index's copies are stale
    current: SoundVectors        # those still ok now, with their vectors (damaged set apart)
    ok_rows: int | None = None   # ok rows in the store, when asked for
    complete: bool = True        # False: the log was pruned past the position asked for


def vector_problem(blob: bytes | None, dim: int) -> str | None:
    """What is wrong with one stored vector, or None."""
    return sound_vectors([0], [blob], dim).bad.get(0)


_DAMAGED_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_MESSAGE_CODES = {"file is not a database": sqlite3.SQLITE_NOTADB,  # Python < 3.11
                  "malformed": sqlite3.SQLITE_CORRUPT, "disk is full": sqlite3.SQLITE_FULL,
                  "database is locked": sqlite3.SQLITE_BUSY}


def _sqlite_code(e: BaseException) -> int | None:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF  # the primary code of an extended one
    return next((c for m, c in _MESSAGE_CODES.items() if m in str(e)), None)


# ---- folders and search filters as SQL (issue 11: the store owns every SQL statement) -------
def path_under(column, root: str):
    """SQL: ``column`` is ``root`` or a path under it (:func:`searchkit.paths.is_under`).

    A range, not LIKE: SQLite's LIKE ignores case (``/photos`` would take ``/Photos`` along)
    and gives ``%`` and ``_`` meanings. The paths that start with ``root/`` are exactly those
    from ``root/`` up to ``root`` followed by the character after the separator (text compares
    by code point, as UTF-8 bytes do); the unique index on ``path`` serves the range.
    """
    prefix = subtree_prefix(root)
    after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return (column == root) | ((column >= prefix) & (column < after))


def filter_conditions(filters: Filters) -> list:
    """SQL conditions on ``files`` for each active field of ``filters``."""
    conds = []
    if filters.path_prefix:
        conds.append(path_under(File.path, absolute(filters.path_prefix)))
    if filters.path_glob:
        pattern = filters.path_glob
        if not pattern.startswith(("*", os.sep)):
            pattern = "*" + pattern  # a glob matches the end of the path, like rglob
        conds.append(File.path.op("GLOB")(pattern))
    conds += _date_conditions(filters)
    if filters.min_width:
        conds.append(File.width >= filters.min_width)
    if filters.min_height:
        conds.append(File.height >= filters.min_height)
    if filters.formats:
        conds.append(File.format.in_(stored_formats(filters.formats)))
    if filters.camera:
        conds.append(_camera_condition(filters.camera))
    if filters.text_contains:
        conds.append(_text_condition(filters.text_contains))
    return conds


def _date_conditions(filters: Filters) -> list:
    if filters.date_field not in DATE_FIELDS:
        raise QueryError(f"date field must be one of {', '.join(DATE_FIELDS)}")
    lo, hi = filters.date_from, filters.date_to
    if filters.date_field == "taken":
        col = File.taken_at
    else:  # mtime is stored in nanoseconds
        col = File.mtime_ns
        lo, hi = (time_ns(d) if d is not None else None for d in (lo, hi))
    return ([col >= lo] if lo is not None else []) + ([col <= hi] if hi is not None else [])


def _camera_condition(camera: str):
    """Make, model or "make model" contains ``camera``, literally (% and _ are no wildcards)."""
    part = camera.lower()
    return or_(*(func.lower(col).contains(part, autoescape=True) for col in (
        File.camera_make, File.camera_model,
        func.coalesce(File.camera_make, "") + " " + func.coalesce(File.camera_model, ""))))


# ---- text read in images as SQL (issue 14, schema 4) ----------------------------------------
_FTS = literal_column("ocr_fts")
_FTS_ROWID = literal_column("ocr_fts.rowid")


def _fts_rowids(match: str):
    """SQL: the ``ocr_text`` ids whose text the FTS5 query ``match`` matches."""
    return select(_FTS_ROWID).select_from(table("ocr_fts")).where(_FTS.op("MATCH")(match))


def _text_condition(needle: str):
    """Files whose content's text contains ``needle`` (searchkit.ocr.contains: case, accents
    and whitespace folded). The full-text index finds the texts holding its words as a phrase
    at a word's start (``42.5`` finds ``42.50``); the exact check keeps those that contain it
    as written (``42.50`` is not ``42,50``). A needle without letters or digits is checked
    against every text."""
    texts = select(OcrText.content_hash).where(
        getattr(func, CONTAINS_FUNCTION)(OcrText.text, needle))
    match = ocr.phrase_query(needle)
    if match is not None:
        texts = texts.where(OcrText.id.in_(_fts_rowids(match)))
    return File.content_hash.in_(texts)


_CONTENT_COPIES = text(
    "SELECT content_hash, count(*) FROM files INDEXED BY ix_files_hash "
    "WHERE status = :ok AND content_hash IN :hashes GROUP BY content_hash"
).bindparams(bindparam("hashes", expanding=True))


def _id_span(s: Session) -> tuple[int | None, int | None]:
    """The smallest and largest row id, each from the primary key (O(log n)): SQLite answers
    ``SELECT min(id), max(id)`` by scanning an index, 0.09 s at 1M rows (issue 12)."""
    return s.execute(select(select(func.min(File.id)).scalar_subquery(),
                            select(func.max(File.id)).scalar_subquery())).one()


class Store:
    """Typed access to one library's database."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.engine = make_engine(self.directory)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    # ---- errors ----------------------------------------------------------------------------
    @contextmanager
    def errors(self) -> Iterator[None]:
        """SQLite failures a user can meet (damaged file, full disk, busy) as one-line errors."""
        try:
            yield
        except (exc.DBAPIError, sqlite3.Error) as e:
            error = self._user_error(getattr(e, "orig", None) or e)
            if error is None:
                raise
            raise error from e

    def _user_error(self, e: BaseException) -> SearchkitError | None:
        code = _sqlite_code(e)
        if code in _DAMAGED_CODES:
            return self.damaged(f"{DB_NAME} cannot be read ({e})", restore=True)
        if code == sqlite3.SQLITE_FULL:
            return DiskFullError(f"no space left to write library {self.directory} ({e}): "
                                 "nothing written before was lost; free some space and run "
                                 "the command again")
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return LibraryBusyError(f"library {self.directory} is busy ({e}); try again")
        if code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
            return SearchkitError(f"cannot use library {self.directory}: {DB_NAME}: {e}")
        return None

    def damaged(self, what: str, restore: bool = False) -> LibraryDamagedError:
        """The one wording of "this library is damaged", with what to do about it."""
        todo = (f"restore {self.path} from a backup, or move it away and index again"
                if restore else f"run: searchkit check --repair --library {self.directory}")
        return LibraryDamagedError(f"library {self.directory} is damaged: {what}; {todo}")

    # ---- lifecycle -------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether a library lives here; creates nothing (reads the file read-only)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with self.errors():
            c = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                return c.execute("SELECT 1 FROM sqlite_master WHERE type='table' "
                                 "AND name='meta'").fetchone() is not None
            finally:
                c.close()

    def create(self, model_name: str, fingerprint: str, dim: int) -> None:
        with self.errors():
            Base.metadata.create_all(self.engine)
        with self.session() as s:
            for stmt in CREATE_LOG + CREATE_OCR_INDEX:
                s.execute(text(stmt))
            for k, v in (("schema_version", SCHEMA_VERSION), ("model_name", model_name),
                         ("model_fingerprint", fingerprint), ("dim", dim), ("vectors_version", 0)):
                s.merge(Meta(key=k, value=str(v)))

    def migrate(self) -> None:
        version = self.meta_int("schema_version")
        if version > SCHEMA_VERSION:
            raise SearchkitError(f"library {self.directory} has schema version {version}, newer "
                                 f"than this searchkit ({SCHEMA_VERSION}): upgrade searchkit")
        while version < SCHEMA_VERSION:
            with self.errors():
                version = self._migrate_step()

    def _migrate_step(self) -> int:
        """Apply the migration from the version stored now; returns the version reached.

        One immediate transaction that reads the version first (SQLite's DDL is transactional,
        but the driver would commit an ALTER on its own): a crash leaves the old schema or the
        new one, and a second process migrating at the same time waits, then finds it done.
        """
        c = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                version = int(c.execute("SELECT value FROM meta WHERE key = 'schema_version'")
                              .fetchone()[0])
                if version < SCHEMA_VERSION:
                    log.info("migrating library schema %d -> %d", version, version + 1)
                    for stmt in MIGRATIONS[version]:
                        c.execute(stmt)
                    version += 1
                    c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                              (str(version),))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        finally:
            c.close()
        return version

    def info(self) -> LibraryInfo:
        meta = self.meta()
        for key in META_KEYS:
            if key not in meta:
                raise self.damaged(f"meta has no {key!r}")
        return LibraryInfo(meta["model_name"], meta["model_fingerprint"],
                           self._parse_int("dim", meta["dim"]),
                           self._parse_int("schema_version", meta["schema_version"]))

    def rebind(self, model_name: str, fingerprint: str, dim: int) -> None:
        """Bind the library to another model: every vector is dropped (files are re-indexed)."""
        with self.session() as s:
            s.execute(File.__table__.delete())
            for k, v in (("model_name", model_name), ("model_fingerprint", fingerprint),
                         ("dim", dim)):
                s.merge(Meta(key=k, value=str(v)))
            self.bump_version(s)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.errors(), self.Session() as s, s.begin():
            yield s

    # ---- meta ------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        with self.session() as s:
            return {m.key: m.value for m in s.scalars(select(Meta))}

    def get_meta(self, key: str) -> str | None:
        with self.session() as s:
            return s.scalar(select(Meta.value).where(Meta.key == key))

    def set_meta(self, key: str, value: str | int) -> None:
        with self.session() as s:
            s.merge(Meta(key=key, value=str(value)))

    def meta_int(self, key: str) -> int:
        """A numeric meta value; a missing or non-numeric one means the library is damaged."""
        value = self.get_meta(key)
        if value is None:
            raise self.damaged(f"meta has no {key!r}")
        return self._parse_int(key, value)

    def _parse_int(self, key: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise self.damaged(f"meta {key!r} is {value[:40]!r}, not a number") from None

    def vectors_version(self) -> int:
        return self.meta_int("vectors_version")

    @staticmethod
    def bump_version(s: Session) -> None:
        s.execute(text("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                       "WHERE key='vectors_version'"))

    # ---- roots -----------------------------------------------------------------------------
    def add_roots(self, paths: list[str], now: float) -> None:
        with self.session() as s:
            for p in paths:
                if s.get(Root, p) is None:
                    s.add(Root(path=p, added_at=now))

    def forget(self, root: str) -> int:
        """Drop a folder and every row under it; returns the number of rows removed."""
        with self.session() as s:
            gone = s.execute(File.__table__.delete().where(path_under(File.path, root))).rowcount
            s.execute(Root.__table__.delete().where(path_under(Root.path, root)))
            self._prune_ocr(s)
            self.bump_version(s)
        return gone

    def roots(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(Root.path).order_by(Root.path)))

    # ---- search filters (issue 11: moved here from searchkit.query) -------------------------
    def filter_ids(self, filters: Filters) -> np.ndarray:
        """Row ids of ok files that pass ``filters`` (SQL does the work)."""
        conds = [File.status == STATUS_OK, *filter_conditions(filters)]
        with self.session() as s:
            ids = s.scalars(select(File.id).where(*conds)).all()
        return np.asarray(ids, dtype=np.int64)

    # ---- reading ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(File.status, func.count()).group_by(File.status)).all()
        return {status: n for status, n in rows}

    def all_vectors(self) -> tuple[SoundVectors, StoreVersion]:
        """The vectors of every ok row (damaged ones set apart) and the version they belong
        to. Read version first, rows after (as every read here): a commit in between can only
        make the rows newer than the version says, which the next refresh corrects."""
        dim = self.meta_int("dim")
        with self.session() as s:
            version = self._version(s)
            rows = s.execute(select(File.id, File.vector).where(File.status == STATUS_OK)
                             .order_by(File.id)).all()
        return sound_vectors([r[0] for r in rows], [r[1] for r in rows], dim), version

    def _version(self, s: Session) -> StoreVersion:
        value = s.scalar(select(Meta.value).where(Meta.key == "vectors_version"))
        if value is None:
            raise self.damaged("meta has no 'vectors_version'")
        return StoreVersion(self._parse_int("vectors_version", value), self._log_top(s))

    # ---- the change log (schema 3) ---------------------------------------------------------
    @staticmethod
    def _log_top(s: Session) -> int:
        return s.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")) or 0

    def changes_since(self, seq: int, count_ok: bool = False) -> ChangedRows:
        """The rows changed after ``seq``: their ids and the current vectors of those still
        ok (O(changes)); ``count_ok`` adds the number of ok rows (an index-sized count)."""
        dim = self.meta_int("dim")
        with self.session() as s:
            version = self._version(s)
            changed = np.sort(np.asarray(s.scalars(select(Change.id).where(
                Change.seq > seq).distinct()).all(), dtype=np.int64))  # rows come sorted
            rows = self._vectors(s, changed)
            ok = s.scalar(select(func.count()).select_from(File)
                          .where(File.status == STATUS_OK)) if count_ok else None
            complete = self._covers(s, seq)  # read last: a prune meanwhile shows here
        return ChangedRows(version, changed,
                           sound_vectors([r[0] for r in rows], [r[1] for r in rows], dim), ok,
                           complete)

    def _covers(self, s: Session, seq: int) -> bool:
        """Whether the log holds every change after ``seq`` (none was pruned, and ``seq`` is
        not from a future this store never reached: a library restored from a backup)."""
        top = self._log_top(s)
        oldest = s.scalar(select(func.min(Change.seq)))
        floor = top if oldest is None else oldest - 1
        return floor <= seq <= top

    def pending_changes(self, seq: int) -> int | None:
        """How many rows changed after ``seq`` (what an index built at ``seq`` lacks); None if
        the log no longer covers ``seq``."""
        with self.session() as s:
            n = s.scalar(select(func.count(Change.id.distinct())).where(Change.seq > seq))
            return n if self._covers(s, seq) else None

    def seq_if_version(self, vectors_version: int) -> int | None:
        """The log's position now if ``vectors_version`` is the store's (an index stamped
        before the log existed covers exactly that); else None. Position read first: a
        commit in between makes the version differ, never the position too new."""
        with self.session() as s:
            top = self._log_top(s)
            return top if self._version(s).vectors == vectors_version else None

    def prune_changes(self, upto: int) -> None:
        """Drop the log entries an index built at ``upto`` covers."""
        with self.session() as s:
            s.execute(Change.__table__.delete().where(Change.seq <= upto))

    def log_complete(self) -> bool:
        """Whether the change log's table and triggers are all there."""
        with self.session() as s:
            names = set(s.scalars(text("SELECT name FROM sqlite_master WHERE type IN "
                                       "('table', 'trigger')")))
        return {"changes", *LOG_TRIGGERS} <= names

    def restore_log(self) -> None:
        """Recreate the change log's table and triggers (`searchkit check --repair`)."""
        with self.session() as s:
            for stmt in CREATE_LOG:
                s.execute(text(stmt))

    def vectors_of(self, ids: np.ndarray) -> SoundVectors:
        """The vectors of the ok rows among ``ids`` (damaged ones set apart)."""
        dim = self.meta_int("dim")
        with self.session() as s:
            rows = self._vectors(s, np.asarray(ids, dtype=np.int64))
        return sound_vectors([r[0] for r in rows], [r[1] for r in rows], dim)

    @staticmethod
    def _vectors(s: Session, ids: np.ndarray, chunk: int = 500) -> list:
        rows = []
        for start in range(0, len(ids), chunk):
            part = [int(i) for i in ids[start:start + chunk]]
            rows += s.execute(select(File.id, File.vector).where(
                File.id.in_(part), File.status == STATUS_OK).order_by(File.id)).all()
        return rows

    def spread_ids(self, n: int) -> np.ndarray:
        """Up to ``n`` ok row ids spread over the id range (a probe; O(n log rows))."""
        with self.session() as s:
            lo, hi = _id_span(s)
            if lo is None:
                return np.zeros(0, np.int64)
            found = {s.scalar(select(File.id).where(File.id >= int(start),
                                                    File.status == STATUS_OK)
                              .order_by(File.id).limit(1))
                     for start in np.linspace(lo, hi, n)}
        return np.asarray(sorted(i for i in found if i is not None), dtype=np.int64)

    def ok_rows(self, chunk: int = 10_000) -> Iterator[list[tuple[int, str, bytes | None]]]:
        """(id, path, vector) of every ok row, ``chunk`` rows at a time (bounded memory)."""
        last = -1
        while True:
            with self.session() as s:
                rows = s.execute(select(File.id, File.path, File.vector)
                                 .where(File.status == STATUS_OK, File.id > last)
                                 .order_by(File.id).limit(chunk)).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [tuple(r) for r in rows]

    # ---- chunked reads for building the index (issue 12: searchkit.index_cache) ------------
    def version(self) -> StoreVersion:
        """The vectors_version and change log position now (read before the rows it covers)."""
        with self.session() as s:
            return self._version(s)

    def ok_ids(self) -> np.ndarray:
        """Every ok row id, sorted (8 bytes a row: no vectors)."""
        with self.session() as s:
            ids = s.scalars(select(File.id).where(File.status == STATUS_OK)
                            .order_by(File.id)).all()
        return np.asarray(ids, dtype=np.int64)

    def ok_vectors(self, chunk: int = 10_000) -> Iterator[SoundVectors]:
        """The vectors of every ok row, ``chunk`` rows at a time (damaged ones set apart)."""
        dim = self.meta_int("dim")
        for rows in self.ok_rows(chunk):
            yield sound_vectors([r[0] for r in rows], [r[2] for r in rows], dim)

    def vectors_for(self, ids: np.ndarray) -> SoundVectors:
        """:meth:`vectors_of` for the query path (a re-rank reads 50-200 rows a query): plain
        SQL on a pooled connection, ``VECTOR_READ_CHUNK`` ids a statement. The ORM session
        cost about 2 ms a call at 1M rows, more than the approximate search itself."""
        ids = sorted({int(i) for i in np.asarray(ids).reshape(-1)})  # (np.unique hashes: slow)
        found, blobs = [], []
        with self.errors():
            conn = self.engine.raw_connection()
            try:
                cur = conn.cursor()
                dim = cur.execute("SELECT value FROM meta WHERE key = 'dim'").fetchone()
                if dim is None:
                    raise self.damaged("meta has no 'dim'")
                dim = self._parse_int("dim", dim[0])
                for start in range(0, len(ids), VECTOR_READ_CHUNK):
                    part = ids[start:start + VECTOR_READ_CHUNK]
                    cur.execute(f"SELECT id, vector FROM files WHERE id IN "
                                f"({','.join('?' * len(part))}) AND status = ?",
                                (*part, STATUS_OK))
                    for row_id, blob in cur:
                        found.append(row_id)
                        blobs.append(blob)
                cur.close()
            finally:
                conn.close()
        return sound_vectors(found, blobs, dim)

    def get_files(self, ids: list[int]) -> dict[int, File]:
        """Rows by id, without their vectors (what hits need)."""
        with self.session() as s:
            q = select(File).where(File.id.in_(ids)).options(defer(File.vector))
            return {f.id: f for f in s.scalars(q)}

    def get_file(self, file_id: int) -> File | None:
        with self.session() as s:
            return s.get(File, file_id)

    def awaiting_reencoding(self) -> int:
        """Ok rows marked by :meth:`mark_for_reencoding` that no index run has redone yet."""
        with self.session() as s:  # marked rows have no content hash: its index finds them
            return s.execute(text(
                "SELECT count(*) FROM files INDEXED BY ix_files_hash WHERE content_hash IS NULL"
                " AND status = :ok AND mtime_ns = :marked"),
                {"ok": STATUS_OK, "marked": REENCODE_MTIME_NS}).scalar_one()

    # ---- checking and repair ---------------------------------------------------------------
    def quick_check(self) -> list[str]:
        """SQLite's own structural check: empty when the file is sound."""
        with self.errors(), self.engine.connect() as c:
            rows = [r[0] for r in c.execute(text("PRAGMA quick_check"))]
        return [] if rows == ["ok"] else rows

    def schema_matches(self, version: int | None = None) -> bool:
        """Whether the tables have the columns of ``version``'s schema (default: this
        searchkit's)."""
        version = SCHEMA_VERSION if version is None else version
        with self.errors(), self.engine.connect() as c:
            for table in Base.metadata.sorted_tables:
                have = {r[1] for r in c.execute(text(f"PRAGMA table_info({table.name})"))}
                later = set().union(*(added.get(table.name, set()) for v, added
                                      in COLUMNS_ADDED.items() if v > version))
                if have != {col.name for col in table.columns} - later:
                    return False
        return True

    def mark_for_reencoding(self, ids: list[int]) -> None:
        """Make the next index run encode these ok rows' files again (the indexer redoes a
        row whose stored mtime differs from the file's and whose content hash is unknown);
        the rows and their metadata stay until then."""
        with self.session() as s:
            for start in range(0, len(ids), 500):
                s.execute(update(File).where(File.id.in_(ids[start:start + 500]),
                                             File.status == STATUS_OK)
                          .values(mtime_ns=REENCODE_MTIME_NS, content_hash=None))

    def formats(self) -> list[str]:
        """The image formats of the indexed files, sorted."""
        with self.session() as s:
            return sorted(f for f in s.scalars(select(File.format).where(
                File.status == STATUS_OK).distinct()) if f)

    def skipped(self) -> list[File]:
        with self.session() as s:
            return list(s.scalars(select(File).where(File.status == STATUS_SKIPPED)
                                  .order_by(File.path)))

    # ---- the indexer's reads and writes (issue 11: the store owns every SQL statement) -----
    def rows_under(self, roots: list[str]) -> dict[str, RowState]:
        """What is stored of every path under one of ``roots``, by path."""
        columns = [getattr(File, f.name) for f in fields(RowState)]
        out: dict[str, RowState] = {}
        with self.session() as s:
            for root in roots:
                for r in s.execute(select(*columns).where(path_under(File.path, root))):
                    out[r.path] = RowState(*r)
        return out

    def content_hashes(self) -> set[str]:
        """The content hash of every ok row (what a moved or duplicate file can reuse)."""
        with self.session() as s:
            return set(s.scalars(select(File.content_hash).where(
                File.status == STATUS_OK, File.content_hash.is_not(None)).distinct()))

    def row_with_content(self, content_hash: str) -> FileRow | None:
        """An ok row holding this content, vector included, or None."""
        with self.session() as s:
            f = s.scalars(select(File).where(File.content_hash == content_hash,
                                             File.status == STATUS_OK).limit(1)).first()
            return FileRow.of(f) if f is not None else None

    def apply(self, changes: Changes) -> None:
        """Write ``changes`` in one transaction that bumps ``vectors_version``: deletions,
        moves, touches, then the new rows (each replaces the row at its path, if any)."""
        table = File.__table__
        with self.session() as s:
            if changes.deletes:
                s.execute(table.delete().where(File.id.in_(changes.deletes)))
            for m in changes.moves:
                s.execute(update(File).where(File.id == m.id)
                          .values(path=m.path, size=m.size, mtime_ns=m.mtime_ns))
            for t in changes.touches:
                s.execute(update(File).where(File.id == t.id)
                          .values(size=t.size, mtime_ns=t.mtime_ns))
            if changes.upserts:
                rows = [r.values() for r in changes.upserts]
                s.execute(table.delete().where(File.path.in_([r["path"] for r in rows])))
                s.execute(table.insert(), rows)
            self._put_ocr(s, changes.ocr)
            self.bump_version(s)

    # ---- import and export of embeddings (issue 12; searchkit.parquet_io) -------------------
    def upsert_rows(self, rows: list[FileRow]) -> None:
        """Store ``rows`` in one transaction that bumps ``vectors_version``, each an upsert by
        path: a path stored already keeps its row id and takes every other value. What
        :meth:`apply` does with upserts, for many rows at once: one prepared statement run by
        the driver (no per-row SQL building), since an import writes a million rows."""
        if not rows:
            return
        names = [f.name for f in fields(FileRow)]
        sql = (f"INSERT INTO files ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
               " ON CONFLICT(path) DO UPDATE SET "
               + ", ".join(f"{n} = excluded.{n}" for n in names if n != "path"))
        values = operator.attrgetter(*names)
        when = names.index("taken_at")
        as_stored = File.__table__.c.taken_at.type.dialect_impl(
            self.engine.dialect).bind_processor(self.engine.dialect)
        params = []
        for r in rows:
            row = list(values(r))
            row[when] = as_stored(row[when])
            params.append(tuple(row))
        with self.session() as s:
            c = s.connection()
            cache = c.exec_driver_sql("PRAGMA cache_size").scalar()
            c.exec_driver_sql(f"PRAGMA cache_size = -{IMPORT_CACHE_KIB}")  # no spill mid-batch
            try:
                c.exec_driver_sql(sql, params)
                self.bump_version(s)
            finally:
                c.exec_driver_sql(f"PRAGMA cache_size = {int(cache)}")

    def rows_at(self, paths: list[str]) -> dict[str, FileRow]:
        """The stored row (vector included) at each of ``paths`` that has one, by path."""
        columns = [getattr(File, f.name) for f in fields(FileRow)]
        # an expanding parameter: the list is bound as it is, not turned into 10,000 literals
        q = select(*columns).where(File.path.in_(bindparam("paths", expanding=True)))
        out: dict[str, FileRow] = {}
        with self.session() as s:
            for start in range(0, len(paths), 10_000):
                for r in s.execute(q, {"paths": paths[start:start + 10_000]}):
                    out[r.path] = FileRow(*r)
        return out

    def export_rows(self, chunk: int = 10_000) -> Iterator[list]:
        """Every ok row (path, vector, the metadata columns, content_hash), ``chunk`` rows at a
        time, by id, all read in one transaction: one consistent snapshot while writers go on."""
        columns = [File.id, File.path, File.vector, *(getattr(File, c) for c in EXPORT_COLUMNS)]
        last = -1
        with self.session() as s:
            while True:
                rows = s.execute(select(*columns).where(File.status == STATUS_OK,
                                                        File.id > last)
                                 .order_by(File.id).limit(chunk)).all()
                if not rows:
                    return
                last = rows[-1].id
                yield rows

    def sample_ok_paths(self, n: int) -> list[str]:
        """The paths of up to ``n`` ok rows drawn at random (every one when the ids span at
        most ``n``): row ids are drawn from the id range, so it costs ``n`` lookups."""
        with self.session() as s:
            lo, hi = _id_span(s)
            if lo is None:
                return []
            ids = range(lo, hi + 1)
            if len(ids) > n:
                ids = sorted(random.Random(hi).sample(ids, n))
            return [p for start in range(0, len(ids), 500) for p in s.scalars(
                select(File.path).where(File.id.in_(list(ids[start:start + 500])),
                                        File.status == STATUS_OK))]

    # ---- duplicates (issue 14; the logic: searchkit.dupes) -----------------------------------
    def count_ok(self, filters: Filters | None = None) -> int:
        """Ok rows within ``filters``."""
        conds = filter_conditions(filters) if filters is not None else []
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(File)
                            .where(File.status == STATUS_OK, *conds))

    def duplicate_contents(self, filters: Filters | None = None) -> list[list[int]]:
        """The ids of the ok rows within ``filters`` that hold one content (content hash), for
        each content two or more such rows hold (ids ascending; contents in hash order)."""
        conds = [File.status == STATUS_OK, File.content_hash.is_not(None),
                 *(filter_conditions(filters) if filters is not None else [])]
        shared = (select(File.content_hash).where(*conds).group_by(File.content_hash)
                  .having(func.count() > 1))
        q = (select(File.content_hash, File.id).where(*conds, File.content_hash.in_(shared))
             .order_by(File.content_hash, File.id))
        groups: list[list[int]] = []
        last = None
        with self.session() as s:
            for h, i in s.execute(q):
                if h != last:
                    groups.append([])
                    last = h
                groups[-1].append(i)
        return groups

    def content_copies(self, hashes: list[str]) -> dict[str, int]:
        """How many ok rows hold each of these contents (by content hash; the hash index
        counts them), for those some row holds. The hash index is named: for ten hashes
        SQLite chose the status index and read every row (21 s a search at 10M rows)."""
        wanted = sorted({h for h in hashes if h})
        out: dict[str, int] = {}
        with self.session() as s:
            for start in range(0, len(wanted), 500):
                out.update(s.execute(_CONTENT_COPIES, {
                    "ok": STATUS_OK, "hashes": wanted[start:start + 500]}).all())
        return out

    def content_vectors(self, filters: Filters | None = None, chunk: int = 10_000
                        ) -> Iterator[list[tuple[int, str | None, bytes | None]]]:
        """(id, content_hash, vector) of every ok row within ``filters``, by id, ``chunk``
        rows at a time (bounded memory; each chunk its own read)."""
        conds = [File.status == STATUS_OK,
                 *(filter_conditions(filters) if filters is not None else [])]
        last = -1
        while True:
            with self.session() as s:
                rows = s.execute(select(File.id, File.content_hash, File.vector)
                                 .where(*conds, File.id > last)
                                 .order_by(File.id).limit(chunk)).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [tuple(r) for r in rows]

    # ---- text read in images (issue 14, schema 4; searchkit.ocr) ---------------------------
    def ocr_on(self) -> bool:
        """Whether index runs read the text in this library's images (``index --ocr``)."""
        return self.get_meta(OCR_META) == "1"

    def set_ocr(self, on: bool) -> None:
        self.set_meta(OCR_META, "1" if on else "0")

    def has_ocr_text(self) -> bool:
        """Whether text was found in any content (then text queries are hybrid by default)."""
        with self.session() as s:
            return s.scalar(select(OcrText.id).where(OcrText.text != "").limit(1)) is not None

    def ocr_hashes(self) -> set[str]:
        """The contents whose text was read (or failed to be)."""
        with self.session() as s:
            return set(s.scalars(select(OcrText.content_hash)))

    def paths_without_ocr(self, roots: list[str]) -> set[str]:
        """Paths of ok rows under ``roots`` whose content's text was never read (OCR turned on
        for a library indexed without it: an index run reads them, nothing else)."""
        read = select(OcrText.id).where(OcrText.content_hash == File.content_hash)
        with self.session() as s:
            return {p for root in roots for p in s.scalars(select(File.path).where(
                path_under(File.path, root), File.status == STATUS_OK,
                File.content_hash.is_not(None), ~read.exists()))}

    def prune_ocr(self) -> int:
        """Drop the texts of contents no row holds any more; how many."""
        with self.session() as s:
            return self._prune_ocr(s)

    @staticmethod
    def _prune_ocr(s: Session) -> int:
        held = select(File.id).where(File.content_hash == OcrText.content_hash)
        return s.execute(OcrText.__table__.delete().where(~held.exists())).rowcount

    @staticmethod
    def _put_ocr(s: Session, rows: list[OcrRow]) -> None:
        """Store texts (an upsert by content hash; triggers keep the full-text index)."""
        if not rows:
            return
        s.execute(text(
            "INSERT INTO ocr_text (content_hash, text, error, engine, read_at) "
            "VALUES (:content_hash, :text, :error, :engine, :read_at) "
            "ON CONFLICT(content_hash) DO UPDATE SET text = excluded.text, "
            "error = excluded.error, engine = excluded.engine, read_at = excluded.read_at"),
            [dataclasses.asdict(r) for r in rows])

    def ocr_counts(self) -> OcrCounts:
        """Indexed images whose text was read, found some, or failed to be read. Driven from
        the text table through the content-hash index (CROSS JOIN fixes the order, ``+`` keeps
        the status index out): joined the other way it read every row, 0.5 s at 1M (issue 12:
        `status` stays as fast as on a small library)."""
        with self.session() as s:
            row = s.execute(text(
                "SELECT count(o.id), count(o.id) FILTER (WHERE o.text != ''), count(o.error) "
                "FROM ocr_text AS o CROSS JOIN files AS f ON f.content_hash = o.content_hash "
                "WHERE +f.status = :ok"), {"ok": STATUS_OK}).one()
        return OcrCounts(*row)

    def ocr_texts(self, ids: list[int]) -> dict[int, str]:
        """The text read in each of these rows' images that has one, by row id."""
        with self.session() as s:
            return dict(s.execute(select(File.id, OcrText.text)
                                  .join(OcrText, OcrText.content_hash == File.content_hash)
                                  .where(File.id.in_(ids), OcrText.text != "")).all())

    def ocr_ranking(self, words: list[str], limit: int,
                    filters: Filters | None = None) -> list[int]:
        """Ok row ids whose image's text holds any of ``words``, best first by FTS5's bm25
        (more of the words, rarer words, shorter texts first), at most ``limit``, within
        ``filters``."""
        match = ocr.any_word_query(words)
        if match is None:
            return []
        conds = filter_conditions(filters) if filters is not None else []
        q = (select(File.id).select_from(table("ocr_fts"))
             .join(OcrText, OcrText.id == _FTS_ROWID)
             .join(File, File.content_hash == OcrText.content_hash)
             .where(_FTS.op("MATCH")(match), File.status == STATUS_OK, *conds)
             .order_by(func.bm25(_FTS), File.id).limit(limit))
        with self.session() as s:
            return list(s.scalars(q))


# An imported row (issue 12) was never stat'ed on this machine: no file has a negative size, so
# the next index run that meets its path reads the file (and keeps the imported vector only when
# the file's content hash is the one the import gave; see searchkit.parquet_io).
IMPORTED_SIZE = -1
IMPORT_CACHE_KIB = 262_144  # SQLite's page cache while a batch is written: pages written once
IMPORTED_MTIME_NS = 0      # unknown: a "modified" date filter sees 1970-01-01 until then
META_COLUMNS = ("width", "height", "format", "taken_at", "camera_make", "camera_model")
EXPORT_COLUMNS = META_COLUMNS + ("content_hash",)  # what an export writes besides path, vector


# ---- the indexer's records (issue 11) ------------------------------------------------------
@dataclass(frozen=True)
class RowState:
    """What the store knows of one path, to plan an index run against."""
    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    reason: str | None
    skip_source: str | None


@dataclass(frozen=True)
class FileRow:
    """One row to write: every column but the id."""
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    camera_make: str | None
    camera_model: str | None
    status: str
    reason: str | None
    skip_source: str | None
    vector: bytes | None
    indexed_at: float

    @classmethod
    def of(cls, f: File) -> FileRow:
        return cls(**{c.name: getattr(f, c.name) for c in fields(cls)})

    def values(self) -> dict:
        return {c.name: getattr(self, c.name) for c in fields(self)}


@dataclass(frozen=True)
class Move:
    """A stored row whose file now lives at another path."""
    id: int
    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Touch:
    """A stored row whose file has a new size or mtime but the same content."""
    id: int
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class OcrRow:
    """The text read in one content, to write (:class:`OcrText`)."""
    content_hash: str
    text: str
    error: str | None
    engine: str | None
    read_at: float


@dataclass(frozen=True)
class OcrCounts:
    """Indexed images (ok rows) by what reading their text gave."""
    read: int        # read, text found or not
    with_text: int   # some text found
    failed: int      # reading failed (the image is indexed all the same)


@dataclass
class Changes:
    """Writes decided by an index run, applied together by :meth:`Store.apply`."""
    upserts: list[FileRow] = field(default_factory=list)
    moves: list[Move] = field(default_factory=list)
    touches: list[Touch] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)
    ocr: list[OcrRow] = field(default_factory=list)   # text read in images (by content)

    def __len__(self) -> int:
        return (len(self.upserts) + len(self.moves) + len(self.touches) + len(self.deletes)
                + len(self.ocr))

    def singles(self) -> Iterator[Changes]:
        """Each change on its own, in the order :meth:`Store.apply` applies them."""
        if self.deletes:
            yield Changes(deletes=self.deletes)  # deleting cannot fail on a row's values
        yield from (Changes(moves=[m]) for m in self.moves)
        yield from (Changes(touches=[t]) for t in self.touches)
        yield from (Changes(upserts=[u]) for u in self.upserts)
        yield from (Changes(ocr=[o]) for o in self.ocr)


# Errors that one row's values cause (a value SQLite cannot bind, a constraint). Any other
# error (disk full, damaged or busy database) is the database's.
ROW_ERRORS = (exc.IntegrityError, exc.DataError, exc.InterfaceError, ValueError, OverflowError,
              TypeError)


def is_row_error(e: BaseException) -> bool:
    """Whether ``e`` comes from one row's values rather than from the database itself."""
    if isinstance(e, ROW_ERRORS):
        return True
    if isinstance(e, exc.StatementError) and not isinstance(e, exc.DBAPIError):
        return e.orig is not None and is_row_error(e.orig)  # raised while binding a value
    return False


def short_error(e: BaseException) -> str:
    """One line naming the error (the driver's own for a wrapped one, without the SQL)."""
    orig = getattr(e, "orig", None) or e
    line = str(orig).splitlines()[0] if str(orig) else ""
    return f"{type(orig).__name__}: {line}" if line else type(orig).__name__
