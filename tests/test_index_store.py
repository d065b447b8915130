"""The store's side of the index (issue 12): the page size of a new library, and the plain-SQL
vector read that re-ranking uses on the query path."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from searchkit import Library
from searchkit import store as store_module
from searchkit.store import STATUS_OK, STATUS_SKIPPED, Changes, FileRow, Store
from tests.helpers import unit_rows as unit


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


def row(path: str, vector: bytes | None, status: str = STATUS_OK) -> FileRow:
    now = time.time()
    return FileRow(path, 1000, int(now * 1e9), None, 64, 48, "JPEG", None, None, None, status,
                   None if status == STATUS_OK else "unreadable", None, vector, now)


def write(lib: Library, rows: list[FileRow]) -> dict[str, int]:
    lib.store.apply(Changes(upserts=rows))
    return {p: r.id for p, r in lib.store.rows_under(["/p"]).items()}


def page_size(db) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("PRAGMA page_size").fetchone()[0]


def test_a_new_library_packs_several_vector_rows_into_a_page(lib):
    rows = [row(f"/p/{i:04d}.jpg", v.tobytes()) for i, v in enumerate(unit(300, 512, 0))]
    write(lib, rows)
    with sqlite3.connect(lib.store.path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = c.execute("SELECT count(*) FROM dbstat WHERE name = 'files'").fetchone()[0]
    assert page_size(lib.store.path) == store_module.PAGE_SIZE
    # 2 KB vectors: one row to a 4 KiB page before; several to a page now
    assert pages * store_module.PAGE_SIZE < 300 * 4096 * 0.75


def test_an_existing_library_keeps_its_page_size(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setattr(store_module, "PAGE_SIZE", 4096)
    old = Library.open(tmp_path / "old", encoder=tiny_encoder, create=True)
    ids = write(old, [row("/p/a.jpg", unit(1, old.info.dim, 1).tobytes())])
    monkeypatch.undo()
    again = Store(tmp_path / "old")
    assert page_size(again.path) == 4096
    assert again.vectors_for(np.array(list(ids.values()))).ids.tolist() == list(ids.values())


def test_vectors_for_reads_what_vectors_of_reads(lib):
    dim = lib.info.dim
    good = unit(3, dim, 2)
    ids = write(lib, [row("/p/a.jpg", good[0].tobytes()), row("/p/b.jpg", good[1].tobytes()),
                      row("/p/c.jpg", good[2].tobytes()[:-4]),           # damaged: short
                      row("/p/d.jpg", None, STATUS_SKIPPED)])
    wanted = np.array([ids["/p/b.jpg"], ids["/p/d.jpg"], 10_000, ids["/p/c.jpg"],
                       ids["/p/a.jpg"], ids["/p/a.jpg"]])
    fast, slow = lib.store.vectors_for(wanted), lib.store.vectors_of(np.unique(wanted))
    assert fast.ids.tolist() == slow.ids.tolist() == sorted([ids["/p/a.jpg"], ids["/p/b.jpg"]])
    np.testing.assert_array_equal(fast.vectors, slow.vectors)
    assert fast.bad == slow.bad and set(fast.bad) == {ids["/p/c.jpg"]}


def test_vectors_for_reads_more_ids_than_one_statement_takes(lib, monkeypatch):
    monkeypatch.setattr(store_module, "VECTOR_READ_CHUNK", 7)
    vectors = unit(40, lib.info.dim, 3)
    ids = write(lib, [row(f"/p/{i:02d}.jpg", v.tobytes()) for i, v in enumerate(vectors)])
    got = lib.store.vectors_for(np.array(sorted(ids.values()))[::-1])
    assert got.ids.tolist() == sorted(ids.values())
    np.testing.assert_array_equal(got.vectors, vectors)


def test_the_rerank_of_a_compressed_index_reads_vectors_without_the_orm(lib, monkeypatch):
    from searchkit import ann
    from searchkit import index as fi
    monkeypatch.setattr(fi, "IVF_THRESHOLD", 200)
    monkeypatch.setattr(ann, "SQ8_RERANK", 20)   # IVF-SQ8 that re-ranks, as IVF-PQ does
    vectors = unit(600, lib.info.dim, 4)
    write(lib, [row(f"/p/{i:03d}.jpg", v.tobytes()) for i, v in enumerate(vectors)])
    lib.update_index(rebuild=True)
    index = lib.search_index()
    assert index.rerank > 0
    monkeypatch.setattr(Store, "vectors_of", lambda *a: pytest.fail("ORM read on a query"))
    scores, _ = index.search(vectors[5], 5)
    assert abs(scores[0] - 1.0) < 1e-5   # the exact cosine of the stored vector itself
