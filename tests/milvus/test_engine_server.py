"""The engine contract on a real Milvus 2.3 server (the PyPI standalone, started by the
``milvus_server`` fixture): what Lite cannot show — Strong reads of fresh writes, upserts that
replace on the server (where insert duplicates), the filters a 2.3 server can express
keeping the same rows as the local engine, the others refused in one line, and filtered
searches on the server's IVF index finding the best rows a filter keeps."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from searchkit.errors import QueryError
from searchkit.paths import is_under
from searchkit.query import Filters
from searchkit.store import STATUS_OK, Changes, FileRow, Move
from tests.engine_rows import (DIM, FILTERS, MODEL, catalog_rows, filters_name, needs_milvus,
                               new_engine, ranked, state_dir, unit_vectors)
from tests.helpers import assert_same_ranking

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
    assert_same_ranking(ranked(server, filters), ranked(local, filters))
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


def test_a_server_library_crossing_the_size_threshold_gets_ivf_sq8(milvus_server, tmp_path):
    from searchkit.milvus import open_milvus_engine
    with state_dir(tmp_path):
        local = new_engine("local", tmp_path)
        engine = open_milvus_engine(milvus_server.uri("grows"), create=True, flat_max_rows=5)
        engine.create(*MODEL, DIM)
        for e in (local, engine):
            e.apply(Changes(upserts=catalog_rows()))
        assert engine.index().state == "stale"
        assert engine.update_index().action == "rebuilt"
        assert (engine.index().kind, engine.index().state) == ("ivf-sq8", "fresh")
        for filters in FILTERS[:4]:
            assert_same_ranking(ranked(engine, filters), ranked(local, filters))
        local.close()
        engine.close()


# ---- filtered search on the server's IVF index ---------------------------------------------
IVF_ROWS, IVF_DIM, PNG_EVERY, TOP = 3_000, 64, 5, 5   # a filter keeping 20 % of the rows


def random_rows(n: int, dim: int) -> tuple[list[FileRow], np.ndarray]:
    """Rows with random unit vectors (in 64 dimensions an IVF list's rows are not each
    other's neighbours, so probing too few lists shows), every ``PNG_EVERY``-th a PNG."""
    v = np.random.default_rng(3).normal(size=(n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    rows = [FileRow(f"/ivf/{i:05d}.{'png' if i % PNG_EVERY == 0 else 'jpg'}", 1, 1, f"h{i}",
                    640, 480, "PNG" if i % PNG_EVERY == 0 else "JPEG", None, None, None,
                    STATUS_OK, None, None, v[i].tobytes(), 1.0) for i in range(n)]
    return rows, v


def indexed_rows(client, collection: str) -> tuple[int, int]:
    """(rows the server's vector index holds, rows it has yet to index)."""
    info = client.describe_index(collection, client.list_indexes(collection)[0])
    return int(info.get("indexed_rows", 0)), int(info.get("pending_index_rows", 0))


def test_a_filtered_search_on_the_servers_ivf_index_finds_the_exact_top_k(milvus_server,
                                                                           tmp_path):
    from pymilvus import MilvusClient
    from searchkit.milvus import open_milvus_engine
    from searchkit.milvus.schema import path_key
    rows, vectors = random_rows(IVF_ROWS, IVF_DIM)
    png = np.arange(IVF_ROWS) % PNG_EVERY == 0
    by_key = {path_key(r.path): i for i, r in enumerate(rows)}
    with state_dir(tmp_path):
        # IVF from 1,000 rows, and an unfiltered search probing the fewest lists (16 of 76)
        engine = open_milvus_engine(milvus_server.uri("ivf"), create=True, flat_max_rows=1_000,
                                    ivf_scan_rows=1)
        engine.create(MODEL[0], MODEL[1], IVF_DIM)
        engine.upsert_rows(rows)
        assert engine.update_index().action == "rebuilt"
        assert engine.index().kind == "ivf-sq8"
        unwidened = MilvusClient(uri=milvus_server.client_uri)
        try:
            # every row sealed before the build, so indexed and loaded with the index at once
            assert indexed_rows(unwidened, "ivf") == (IVF_ROWS, 0)
            queries = np.random.default_rng(4).normal(size=(10, IVF_DIM)).astype(np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            best = np.sort(np.where(png, queries @ vectors.T, -np.inf), axis=1)[:, ::-1][:, :TOP]
            missed = 0
            for q, want in zip(queries, best):
                _, ids = engine.search(q, TOP, Filters(formats=("PNG",)))
                got = [by_key[int(i)] for i in ids]
                assert all(png[got])
                # the same scores as exact search (the rows may differ only where SQ8 ties them)
                np.testing.assert_allclose(np.sort(vectors[got] @ q)[::-1], want, atol=0.01)
                hits = unwidened.search("ivf", data=[q.tolist()], limit=TOP,
                                        filter='format in ["PNG"]', output_fields=[],
                                        search_params={"metric_type": "IP",
                                                       "params": {"nprobe": 16}})[0]
                missed += len({by_key[h["id"]] for h in hits} ^ set(got)) > 0
            assert missed, "the index probing 16 lists found every row too: the test shows nothing"
        finally:
            unwidened.close()
        engine.close()
