"""One storage interface, two engines: the same operations and the same filters on the local
engine (SQLite + FAISS) and on the Milvus engine (a Milvus Lite folder) give the same rows.

One filter definition (searchkit.query.Filters), two translations (SQL in searchkit.store,
Milvus expressions in searchkit.milvus.filters): every filter both engines support keeps the
same files, ranked alike. The Milvus cases are skipped when the milvus extra is not installed.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from searchkit.query import Filters
from searchkit.store import STATUS_OK, Changes, Move, Touch
from tests.engine_rows import (CATALOG, ENGINE_KINDS, ENGINE_PARAMS, FILTERS, catalog_rows,
                               filters_name, needs_milvus, new_engine, paths_of, ranked,
                               state_dir)
from tests.helpers import assert_same_ranking


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """Both engines holding the catalog (the Milvus one only with the milvus extra)."""
    from tests.engine_rows import milvus_available
    base = tmp_path_factory.mktemp("contract")
    out = {}
    with state_dir(base):
        for kind in ENGINE_KINDS:
            if kind == "milvus" and not milvus_available():
                continue
            engine = new_engine(kind, base)
            engine.apply(Changes(upserts=catalog_rows()))
            engine.update_index()
            out[kind] = engine
        yield out
    for engine in out.values():
        engine.close()


@pytest.fixture
def fresh(request, tmp_path):
    """An empty engine of the kind the test is parametrized with."""
    with state_dir(tmp_path):
        engine = new_engine(request.param, tmp_path)
        try:
            yield engine
        finally:
            engine.close()


@needs_milvus
@pytest.mark.parametrize("filters", FILTERS, ids=filters_name)
def test_each_filter_keeps_the_same_rows_on_both_engines(engines, filters):
    local, milvus = engines["local"], engines["milvus"]
    expected = ranked(local, filters)
    assert_same_ranking(ranked(milvus, filters), expected)
    assert milvus.count_ok(filters) == local.count_ok(filters) == len(expected)


@needs_milvus
@pytest.mark.parametrize("filters", [Filters(), Filters(path_prefix="/photos/2021"),
                                     Filters(formats=("jpeg",))], ids=filters_name)
def test_duplicates_and_content_vectors_agree_on_both_engines(engines, filters):
    def groups(engine):
        return sorted(sorted(paths_of(engine, g)) for g in engine.duplicate_contents(filters))

    def contents(engine):
        rows = [r for chunk in engine.content_vectors(filters, chunk=4) for r in chunk]
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)   # by id, as dupes reads
        return sorted((p, h, v) for p, (_, h, v) in zip(paths_of(engine, [r[0] for r in rows]),
                                                        rows))
    local, milvus = engines["local"], engines["milvus"]
    assert groups(milvus) == groups(local) and groups(local)
    assert contents(milvus) == contents(local)


@needs_milvus
def test_reads_agree_on_both_engines(engines):
    local, milvus = engines["local"], engines["milvus"]
    assert milvus.counts() == local.counts()
    assert milvus.formats() == local.formats()
    assert milvus.content_hashes() == local.content_hashes()
    hashes = sorted(local.content_hashes()) + ["no-such-hash"]
    assert milvus.content_copies(hashes) == local.content_copies(hashes)

    def state(engine, roots):
        return {p: dataclasses.replace(r, id=0) for p, r in engine.rows_under(roots).items()}
    for roots in (["/photos"], ["/photos/2020"], ["/other", "/nowhere"]):
        assert state(milvus, roots) == state(local, roots)
    assert [f.path for f in milvus.skipped()] == [f.path for f in local.skipped()]
    paths = [c[0] for c in CATALOG[:5]] + ["/not/stored.jpg"]
    assert milvus.rows_at(paths) == local.rows_at(paths)


# ---- the same writes, on each engine -----------------------------------------------------
def stored(engine) -> dict[str, tuple]:
    """What an engine holds, by path, ids aside."""
    return {p: (r.size, r.mtime_ns, r.content_hash, r.status, r.skip_source)
            for p, r in engine.rows_under(["/"]).items()}


@pytest.mark.parametrize("fresh", ENGINE_PARAMS, indirect=True)
def test_a_retried_batch_stores_each_row_once(fresh):
    rows = catalog_rows()
    fresh.apply(Changes(upserts=rows))
    first = stored(fresh)
    fresh.apply(Changes(upserts=rows))                 # the same batch again (a retry)
    assert stored(fresh) == first and len(first) == len(rows)
    assert fresh.counts() == dict(Counter(r.status for r in rows))


@pytest.mark.parametrize("fresh", ENGINE_PARAMS, indirect=True)
def test_moves_touches_and_deletes_apply_alike(fresh):
    rows = catalog_rows()
    fresh.apply(Changes(upserts=rows))
    known = fresh.rows_under(["/"])
    moved, touched, deleted = rows[0], rows[1], rows[2]
    new_path = "/photos/moved/IMG_0001.jpg"
    fresh.apply(Changes(moves=[Move(known[moved.path].id, new_path, 5, 6)],
                        touches=[Touch(known[touched.path].id, 7, 8)],
                        deletes=[known[deleted.path].id]))
    after = fresh.rows_under(["/"])
    assert moved.path not in after and deleted.path not in after
    assert (after[new_path].size, after[new_path].mtime_ns) == (5, 6)
    assert after[new_path].content_hash == moved.content_hash
    assert (after[touched.path].size, after[touched.path].mtime_ns) == (7, 8)
    assert len(after) == len(rows) - 1
    vector = fresh.vectors_of(np.asarray([after[new_path].id]))
    assert vector.vectors[0].tobytes() == moved.vector    # the moved row kept its vector


@pytest.mark.parametrize("fresh", ENGINE_PARAMS, indirect=True)
def test_forget_removes_a_folder_and_its_rows(fresh):
    rows = catalog_rows()
    fresh.apply(Changes(upserts=rows))
    fresh.add_roots(["/photos", "/other"], 1.0)
    under = [r for r in rows if r.path.startswith("/other/")]
    version = fresh.vectors_version()
    assert fresh.forget("/other") == len(under)
    assert fresh.roots() == ["/photos"]
    assert not fresh.rows_under(["/other"]) and len(stored(fresh)) == len(rows) - len(under)
    assert fresh.vectors_version() != version


@pytest.mark.parametrize("fresh", ENGINE_PARAMS, indirect=True)
def test_imported_rows_replace_by_path_and_export_back(fresh):
    rows = [r for r in catalog_rows() if r.status == STATUS_OK]
    fresh.upsert_rows(rows)
    fresh.upsert_rows([dataclasses.replace(rows[0], size=-1)])   # again: replaced, not added
    assert fresh.count_ok() == len(rows)
    assert fresh.rows_at([rows[0].path])[rows[0].path].size == -1
    exported = [f for chunk in fresh.export_rows(chunk=5) for f in chunk]
    assert sorted(f.path for f in exported) == sorted(r.path for r in rows)
    by_path = {r.path: r for r in rows}
    assert all(f.vector == by_path[f.path].vector for f in exported)


@pytest.mark.parametrize("fresh", ENGINE_PARAMS, indirect=True)
def test_rebind_drops_every_vector_and_keeps_the_folders(fresh):
    fresh.apply(Changes(upserts=catalog_rows()))
    fresh.add_roots(["/photos"], 1.0)
    fresh.rebind("another-model", "fingerprint-2", 4)
    info = fresh.info()
    assert (info.model_name, info.model_fingerprint, info.dim) == ("another-model",
                                                                   "fingerprint-2", 4)
    assert fresh.counts() == {} and fresh.roots() == ["/photos"]


@pytest.mark.parametrize("fresh", ENGINE_PARAMS, indirect=True)
def test_a_row_moved_and_touched_in_one_batch_is_one_row(fresh):
    rows = catalog_rows()
    fresh.apply(Changes(upserts=rows))
    row_id = fresh.rows_under([rows[0].path])[rows[0].path].id
    fresh.apply(Changes(moves=[Move(row_id, "/elsewhere/x.jpg", 5, 6)],
                        touches=[Touch(row_id, 7, 8)]))
    after = stored(fresh)
    assert after["/elsewhere/x.jpg"][:2] == (7, 8) and rows[0].path not in after
    assert len(after) == len(rows)
