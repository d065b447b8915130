"""The SQLite store: the one module that owns the schema, its version and its migrations.

SQLite is the source of truth, vectors included (one float32 BLOB per row). Every write that
changes the set of vectors bumps ``vectors_version`` in the same transaction, so the FAISS cache
can tell whether it is stale.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import (Float, ForeignKey, Index, Integer, LargeBinary, String, Text, create_engine,
                        event, func, select, text)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, defer, mapped_column,
                            sessionmaker)

from .errors import SearchkitError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "library.db"
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"


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


@dataclass(frozen=True)
class LibraryInfo:
    """What a library is bound to."""
    model_name: str
    model_fingerprint: str
    dim: int
    schema_version: int


# Migrations: MIGRATIONS[v] upgrades a database at version v to v + 1 (SQL statements).
MIGRATIONS: dict[int, list[str]] = {}


def _set_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(directory: Path) -> Engine:
    engine = create_engine(f"sqlite:///{directory / DB_NAME}", future=True)
    event.listen(engine, "connect", _set_pragmas)
    return engine


def vector_to_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype=np.float32).tobytes()


def blob_to_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32)


class Store:
    """Typed access to one library's database."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.engine = make_engine(self.directory)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)

    # ---- lifecycle -------------------------------------------------------------------------
    def exists(self) -> bool:
        with self.engine.connect() as c:
            return c.execute(text(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'")).first() is not None

    def create(self, model_name: str, fingerprint: str, dim: int) -> None:
        Base.metadata.create_all(self.engine)
        with self.session() as s:
            for k, v in (("schema_version", SCHEMA_VERSION), ("model_name", model_name),
                         ("model_fingerprint", fingerprint), ("dim", dim), ("vectors_version", 0)):
                s.merge(Meta(key=k, value=str(v)))

    def migrate(self) -> None:
        version = int(self.get_meta("schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise SearchkitError(f"library {self.directory} has schema version {version}, newer "
                                 f"than this searchkit ({SCHEMA_VERSION}): upgrade searchkit")
        while version < SCHEMA_VERSION:
            log.info("migrating library schema %d -> %d", version, version + 1)
            with self.session() as s:
                for stmt in MIGRATIONS[version]:
                    s.execute(text(stmt))
                version += 1
                s.merge(Meta(key="schema_version", value=str(version)))

    def info(self) -> LibraryInfo:
        with self.session() as s:
            meta = {m.key: m.value for m in s.scalars(select(Meta))}
        return LibraryInfo(meta["model_name"], meta["model_fingerprint"], int(meta["dim"]),
                           int(meta["schema_version"]))

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
        with self.Session() as s, s.begin():
            yield s

    # ---- meta ------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.engine.connect() as c:
            try:
                row = c.execute(text("SELECT value FROM meta WHERE key=:k"), {"k": key}).first()
            except Exception:  # no meta table yet
                return None
        return row[0] if row else None

    def vectors_version(self) -> int:
        return int(self.get_meta("vectors_version") or 0)

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
        import os
        prefix = root.rstrip(os.sep) + os.sep
        with self.session() as s:
            gone = s.execute(File.__table__.delete().where(
                (File.path == root) | File.path.startswith(prefix, autoescape=True))).rowcount
            s.execute(Root.__table__.delete().where(
                (Root.path == root) | Root.path.startswith(prefix, autoescape=True)))
            self.bump_version(s)
        return gone

    def roots(self) -> list[str]:
        with self.session() as s:
            return list(s.scalars(select(Root.path).order_by(Root.path)))

    # ---- reading ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(File.status, func.count()).group_by(File.status)).all()
        return {status: n for status, n in rows}

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(ids, vectors, vectors_version) of every ok row, read in one transaction."""
        dim = int(self.get_meta("dim"))
        with self.session() as s:
            version = int(s.execute(text(
                "SELECT value FROM meta WHERE key='vectors_version'")).scalar_one())
            rows = s.execute(select(File.id, File.vector).where(File.status == STATUS_OK)
                             .order_by(File.id)).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
        return ids, vecs.reshape(len(rows), dim).copy(), version

    def get_files(self, ids: list[int]) -> dict[int, File]:
        """Rows by id, without their vectors (what hits need)."""
        with self.session() as s:
            q = select(File).where(File.id.in_(ids)).options(defer(File.vector))
            return {f.id: f for f in s.scalars(q)}

    def get_file(self, file_id: int) -> File | None:
        with self.session() as s:
            return s.get(File, file_id)

    def skipped(self) -> list[File]:
        with self.session() as s:
            return list(s.scalars(select(File).where(File.status == STATUS_SKIPPED)
                                  .order_by(File.path)))
