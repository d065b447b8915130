"""A library written by schema 1 opens with schema 2 without losing a row (issue 11, item 3).

Schema 1 kept the reason of a scan problem in ``content_hash`` (so that an unchanged problem
was not rewritten); schema 2 records where a skip was found in ``skip_source``. The schema-1
library is built here with schema 1's own statements, rows as its indexer wrote them.
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searchkit.indexer import Indexer
from searchkit.fsinfo import content_hash
from searchkit import Library, Query, store
from searchkit.check import check_library
from searchkit.fsinfo import NOT_UTF8_REASON, text_path
from searchkit.store import SKIP_DECODE, SKIP_SCAN, SKIP_STORE
from tests.helpers import make_photos

V1_SCHEMA = [
    'CREATE TABLE meta ("key" VARCHAR NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"))',
    "CREATE TABLE roots (path TEXT NOT NULL, added_at FLOAT NOT NULL, PRIMARY KEY (path))",
    """CREATE TABLE files (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,
        size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, content_hash VARCHAR(32),
        width INTEGER, height INTEGER, format VARCHAR(16), taken_at DATETIME, camera_make TEXT,
        camera_model TEXT, status VARCHAR(8) NOT NULL, reason TEXT, vector BLOB,
        indexed_at FLOAT NOT NULL, UNIQUE (path))""",
    "CREATE INDEX ix_files_hash ON files (content_hash)",
    "CREATE INDEX ix_files_status ON files (status)",
]
V1_COLUMNS = ("path", "size", "mtime_ns", "content_hash", "width", "height", "format", "taken_at",
              "camera_make", "camera_model", "status", "reason", "vector", "indexed_at")
VECTORS_VERSION = 7


def v1_library(directory: Path, folder: Path, encoder) -> dict[str, str]:
    """A schema-1 library of ``folder`` as schema 1's indexer left it; returns, by path, the
    kind of each row: ok, decode (a file that failed to decode), scan (a scan problem: the
    reason in content_hash) or store (a row SQLite refused)."""
    photos = make_photos(folder, 4)
    dup = folder / "dup.jpg"
    dup.write_bytes(photos[0].read_bytes())
    buf = io.BytesIO()
    Image.new("RGB", (200, 200), (9, 9, 9)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[:300])
    (folder / "empty.jpg").write_bytes(b"")
    bad_name = os.fsencode(folder) + b"/bad\xff.png"
    Image.new("RGB", (20, 10)).save(bad_name)
    kinds = {str(p): "ok" for p in photos[:3]} | {str(dup): "ok", str(photos[3]): "store",
                                                  str(folder / "truncated.jpg"): "decode",
                                                  str(folder / "empty.jpg"): "scan",
                                                  text_path(os.fsdecode(bad_name)): "scan"}
    rng = np.random.default_rng(0)
    vectors = {}
    c = sqlite3.connect(directory / "library.db")
    c.execute("PRAGMA journal_mode=WAL")
    for stmt in V1_SCHEMA:
        c.execute(stmt)
    meta = dict(schema_version=1, model_name=encoder.name, model_fingerprint=encoder.fingerprint(),
                dim=encoder.dim, vectors_version=VECTORS_VERSION)
    c.executemany("INSERT INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in meta.items()])
    c.execute("INSERT INTO roots VALUES (?, ?)", (str(folder), time.time()))
    for path, kind in sorted(kinds.items()):
        values = dict.fromkeys(V1_COLUMNS)
        values.update(path=path, indexed_at=time.time(), status="skipped")
        if kind != "scan":
            st = os.stat(path)
            values.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if kind == "ok":
            h = content_hash(Path(path).read_bytes())
            v = vectors.setdefault(h, rng.standard_normal(encoder.dim).astype(np.float32))
            values.update(content_hash=h, width=40, height=32, format="JPEG", status="ok",
                          vector=(v / np.linalg.norm(v)).astype(np.float32).tobytes())
        elif kind == "scan":
            reason = "empty file" if path.endswith("empty.jpg") else NOT_UTF8_REASON
            values.update(size=0, mtime_ns=0, reason=reason, content_hash=reason[:32])
        else:
            values.update(reason="image file is truncated" if kind == "decode"
                          else "cannot store: OverflowError: Python int too large")
        c.execute(f"INSERT INTO files ({', '.join(V1_COLUMNS)}) VALUES "
                  f"({', '.join('?' * len(V1_COLUMNS))})", [values[k] for k in V1_COLUMNS])
    c.commit()
    c.close()
    return kinds


def table(directory: Path) -> dict[str, dict]:
    c = sqlite3.connect(directory / "library.db")
    c.row_factory = sqlite3.Row
    try:
        return {r["path"]: dict(r) for r in c.execute("SELECT * FROM files")}
    finally:
        c.close()


def columns(directory: Path) -> set[str]:
    c = sqlite3.connect(directory / "library.db")
    try:
        return {r[1] for r in c.execute("PRAGMA table_info(files)")}
    finally:
        c.close()


@pytest.fixture
def v1(tmp_path, tiny_encoder) -> tuple[Path, Path, dict[str, str]]:
    directory, folder = tmp_path / "lib", tmp_path / "photos"
    directory.mkdir()
    kinds = v1_library(directory, folder, tiny_encoder)
    return directory, folder, kinds


def test_v1_library_opens_as_v2_with_every_row_and_vector(v1, tiny_encoder):
    directory, _, kinds = v1
    before = table(directory)
    assert set(before) == set(kinds) and columns(directory) == set(V1_COLUMNS) | {"id"}

    lib = Library.open(directory, encoder=tiny_encoder)
    assert lib.info.schema_version == store.SCHEMA_VERSION
    assert lib.store.schema_matches() and lib.store.vectors_version() == VECTORS_VERSION
    after = table(directory)
    assert set(after) == set(before)
    sources = {"ok": None, "scan": SKIP_SCAN, "decode": SKIP_DECODE, "store": SKIP_STORE}
    for path, old in before.items():
        new = after[path]
        assert new["skip_source"] == sources[kinds[path]], path
        moved_out = kinds[path] == "scan"   # the reason left the hash column
        assert new["content_hash"] == (None if moved_out else old["content_hash"]), path
        assert {k: new[k] for k in old if k != "content_hash"} == \
            {k: old[k] for k in old if k != "content_hash"}, path   # ids and vectors too


def test_v1_library_after_upgrade_needs_no_work(v1, tiny_encoder):
    directory, folder, kinds = v1
    lib = Library.open(directory, encoder=tiny_encoder)
    upgraded = table(directory)
    r = Indexer(lib).run()
    assert (r.added, r.updated, r.moved, r.removed, r.duplicates, r.encoded) == (0,) * 6
    assert r.unchanged == sum(1 for k in kinds.values() if k != "scan")
    assert {s.path for s in r.skipped} == {p for p, k in kinds.items() if k != "ok"}
    assert table(directory) == upgraded   # not one row rewritten
    assert lib.store.vectors_version() == VECTORS_VERSION
    row = upgraded[str(folder / "sub0" / "img_0000.jpg")]
    hits = lib.search(Query(like=[(row["id"], 1.0)]), k=2)
    assert {h.path for h in hits} == {row["path"], str(folder / "dup.jpg")}


def test_check_notes_a_v1_library_and_repair_migrates_it(v1):
    directory, _, _ = v1
    report = check_library(directory)
    assert report.healthy and columns(directory) == set(V1_COLUMNS) | {"id"}  # read only
    assert any("schema version 1" in f.message and not f.problem for f in report.findings)
    report = check_library(directory, repair=True)
    assert report.healthy and "skip_source" in columns(directory)
    assert check_library(directory).findings == []


def test_a_migration_that_fails_midway_leaves_the_v1_schema(v1, tiny_encoder, monkeypatch):
    directory, _, _ = v1
    before = table(directory)
    broken = {1: [store.MIGRATIONS[1][0], "UPDATE no_such_table SET x = 1"]}
    monkeypatch.setattr(store, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        Library.open(directory, encoder=tiny_encoder)
    assert columns(directory) == set(V1_COLUMNS) | {"id"} and table(directory) == before
    monkeypatch.undo()
    assert Library.open(directory, encoder=tiny_encoder).info.schema_version == \
        store.SCHEMA_VERSION


def test_a_second_process_migrating_at_once_finds_the_work_done(v1, monkeypatch):
    directory, _, _ = v1
    first, second = store.Store(directory), store.Store(directory)
    monkeypatch.setattr(second, "meta_int", lambda key: 1)  # read before the first migrated
    first.migrate()
    second.migrate()
    assert first.get_meta("schema_version") == str(store.SCHEMA_VERSION) and "skip_source" in columns(directory)


def test_repair_recognises_a_v1_library_whose_version_row_is_damaged(v1, tiny_encoder):
    directory, _, _ = v1
    before = table(directory)
    c = sqlite3.connect(directory / "library.db")
    c.execute("UPDATE meta SET value = 'NaN-ish' WHERE key = 'schema_version'")
    c.commit()
    c.close()
    report = check_library(directory, repair=True)
    assert report.healthy
    assert any(f.repaired == "set schema_version to 1" for f in report.findings)
    lib = Library.open(directory, encoder=tiny_encoder)
    assert lib.info.schema_version == store.SCHEMA_VERSION and set(table(directory)) == set(before)
