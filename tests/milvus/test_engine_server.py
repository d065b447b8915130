"""The engine contract on a real Milvus 2.3 server (the PyPI standalone, started by the
``milvus_server`` fixture): what Lite cannot show — Strong reads of fresh writes, upserts that
replace on the server (where insert duplicates), and the filters a 2.3 server can express
keeping the same rows as the local engine, the others refused in one line."""

from __future__ import annotations

from collections import Counter

import pytest

from searchkit.errors import QueryError
from searchkit.paths import is_under
from searchkit.store import Changes, Move
from tests.engine_rows import (DIM, FILTERS, MODEL, catalog_rows, filters_name, needs_milvus,
                               new_engine, ranked, state_dir, unit_vectors)

pytestmark = [pytest.mark.integration, needs_milvus]

# The filters a 2.3 server refuses (LIKE there matches by prefix only): globs that are no
# literal path or literal start, and the camera filter (a contains match).
REFUSED_GLOBS_ON_23 = {"*.jpg", "IMG_0*", "*50%*", "*/a?.png", '*q"uote\\*', "*.png"}


def refused_on_23(filters) -> bool:
    return filters.path_glob in REFUSED_GLOBS_ON_23 or filters.camera is not None


@pytest.fixture(scope="module")
def pair(milvus_server, tmp_path_factory):
    from searchkit.milvus import open_milvus_engine
    base = tmp_path_factory.mktemp("server-contract")
    with state_dir(base):
        local = new_engine("local", base)
        server = open_milvus_engine(milvus_server.uri("contract"), create=True)
        server.create(*MODEL, DIM)
        for engine in (local, server):
            engine.apply(Changes(upserts=catalog_rows()))
            engine.update_index()
        yield local, server
        local.close()
        server.close()


@pytest.mark.parametrize("filters", FILTERS, ids=filters_name)
def test_a_23_server_keeps_the_same_rows_or_refuses_the_filter(pair, filters):
    local, server = pair
    if refused_on_23(filters):
        with pytest.raises(QueryError, match="not available on this Milvus 2.3"):
            server.search(unit_vectors(1, 99)[0], 5, filters)
        return
    assert ranked(server, filters) == ranked(local, filters)
    assert server.count_ok(filters) == local.count_ok(filters)


def test_writes_are_read_back_at_once_and_never_duplicated_on_a_server(milvus_server,
                                                                        tmp_path):
    from searchkit.milvus import open_milvus_engine
    rows = catalog_rows()
    with state_dir(tmp_path):
        engine = open_milvus_engine(milvus_server.uri("writes"), create=True)
        engine.create(*MODEL, DIM)
        engine.apply(Changes(upserts=rows))
        assert engine.counts() == dict(Counter(r.status for r in rows))   # no wait
        engine.apply(Changes(upserts=rows))                                 # a retry
        engine.upsert_rows(rows[:3])                                        # an import
        assert engine.counts() == dict(Counter(r.status for r in rows))
        known = engine.rows_under(["/"])
        engine.apply(Changes(moves=[Move(known[rows[0].path].id, "/moved.jpg", 1, 2)]))
        after = engine.rows_under(["/"])
        assert "/moved.jpg" in after and rows[0].path not in after
        assert len(after) == len(rows)
        assert engine.update_index().action == "flushed"
        assert engine.update_index().action == "none"   # nothing written since
        assert engine.forget("/photos") == sum(is_under(p, "/photos") for p in after)
        engine.close()


def test_a_server_library_crossing_the_size_threshold_gets_hnsw(milvus_server, tmp_path):
    from searchkit.milvus import open_milvus_engine
    with state_dir(tmp_path):
        local = new_engine("local", tmp_path)
        engine = open_milvus_engine(milvus_server.uri("grows"), create=True, flat_max_rows=5)
        engine.create(*MODEL, DIM)
        for e in (local, engine):
            e.apply(Changes(upserts=catalog_rows()))
        assert engine.index().state == "stale"
        assert engine.update_index().action == "rebuilt"
        assert (engine.index().kind, engine.index().state) == ("hnsw", "fresh")
        for filters in FILTERS[:4]:
            assert ranked(engine, filters) == ranked(local, filters)
        local.close()
        engine.close()
