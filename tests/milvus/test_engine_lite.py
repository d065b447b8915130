"""The Milvus engine on Milvus Lite folders (no server): what is particular to Milvus — stable
keys and upserts, the order of a move's writes, scans in key ranges, the index chosen by size,
the local write lock, filters a server cannot express, locations and credentials."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from searchkit.errors import (LibraryBusyError, ModelMismatchError, QueryError,
                              SearchkitError)
from searchkit.query import Filters
from searchkit.store import STATUS_OK, STATUS_SKIPPED, Changes, Move, OcrRow
from tests.engine_rows import (MODEL, catalog_rows, needs_milvus, new_engine, state_dir,
                               unit_vectors)

lite = needs_milvus


@pytest.fixture
def engine(tmp_path):
    with state_dir(tmp_path):
        e = new_engine("milvus", tmp_path)
        try:
            yield e
        finally:
            e.close()


def location(tmp_path, collection: str = "lib") -> str:
    return f"milvus://{tmp_path}/lite.db/{collection}"


# ---- binding -------------------------------------------------------------------------------
@lite
def test_a_missing_library_is_one_clear_error_and_create_binds_the_model(tmp_path):
    from searchkit.milvus import open_milvus_engine
    with state_dir(tmp_path):
        with pytest.raises(SearchkitError, match="no library at milvus://.*index a folder"):
            open_milvus_engine(location(tmp_path))
        e = open_milvus_engine(location(tmp_path), create=True)
        assert not e.exists()
        e.create(*MODEL, 8)
        again = open_milvus_engine(location(tmp_path))   # another process opening it
        info = again.info()
        assert (info.model_name, info.model_fingerprint, info.dim) == (*MODEL, 8)
        with pytest.raises(SearchkitError, match="no library at"):
            open_milvus_engine(location(tmp_path, "other"))   # same folder, no such library
        e.close()
        again.close()


@lite
def test_another_model_is_a_model_mismatch_error(tmp_path):
    from searchkit import Library
    with state_dir(tmp_path):
        new_engine("milvus", tmp_path).close()
        with pytest.raises(ModelMismatchError, match="was indexed with model"):
            Library.open(location(tmp_path), model="some-other-model")


@lite
def test_a_library_from_a_newer_searchkit_is_refused(engine):
    engine._set_meta({"schema_version": 99})
    with pytest.raises(SearchkitError, match="newer than this searchkit"):
        engine.migrate()


@lite
def test_damaged_meta_says_so(engine):
    engine._set_meta({"dim": "eight"})
    with pytest.raises(SearchkitError, match="damaged: meta 'dim' is 'eight'"):
        engine.info()


# ---- writes --------------------------------------------------------------------------------
def test_row_keys_are_stable_positive_63_bit_hashes_of_the_path():
    from searchkit.milvus.schema import path_key
    paths = [r.path for r in catalog_rows()]
    keys = [path_key(p) for p in paths]
    assert keys == [path_key(p) for p in paths]                 # the same every time
    assert len(set(keys)) == len(keys) and all(0 <= k < 2 ** 63 for k in keys)


@lite
def test_a_move_writes_the_new_row_before_deleting_the_old_one(engine, monkeypatch):
    rows = catalog_rows()
    engine.apply(Changes(upserts=rows))
    old = engine.rows_under([rows[0].path])[rows[0].path]

    def crash(keys):
        raise RuntimeError("killed between the upsert and the delete")
    monkeypatch.setattr(engine, "_delete", crash)
    with pytest.raises(RuntimeError):
        engine.apply(Changes(moves=[Move(old.id, "/new/place.jpg", 1, 2)]))
    both = engine.rows_under(["/"])
    assert rows[0].path in both and "/new/place.jpg" in both   # nothing lost, one extra row
    monkeypatch.undo()
    engine.apply(Changes(deletes=[old.id]))   # what the next run does: the old file is gone
    assert rows[0].path not in engine.rows_under(["/"])


@lite
def test_a_row_milvus_cannot_store_is_recorded_as_skipped(engine):
    from searchkit.indexer.writer import flush
    good, bad = (r for r in catalog_rows()[:2])
    bad = dataclasses.replace(bad, vector=np.full(8, np.nan, np.float32).tobytes())
    flush(engine, Changes(upserts=[good, bad]))
    rows = engine.rows_under(["/"])
    assert rows[good.path].status == STATUS_OK
    assert rows[bad.path].status == STATUS_SKIPPED
    assert "not finite" in rows[bad.path].reason


@lite
def test_text_in_images_is_refused_on_milvus(engine):
    with pytest.raises(SearchkitError, match="not available on Milvus"):
        engine.apply(Changes(ocr=[OcrRow("h", "text", None, "engine", 1.0)]))
    with pytest.raises(QueryError, match="not available on Milvus"):
        engine.search(unit_vectors(1, 1)[0], 3, Filters(text_contains="exit"))
    with pytest.raises(SearchkitError, match="searchkit check is not available on Milvus"):
        engine.local("searchkit check")
    assert engine.ocr_on() is False


# ---- reads ---------------------------------------------------------------------------------
@lite
def test_scans_walk_key_ranges_past_the_query_window(engine, monkeypatch):
    from searchkit.milvus import engine as module
    rows = catalog_rows()
    engine.apply(Changes(upserts=rows))
    monkeypatch.setattr(module, "QUERY_WINDOW", 3)   # ranges holding more are halved
    monkeypatch.setattr(module, "SCAN_CHUNK", 2)
    assert sorted(engine.rows_under(["/"])) == sorted(r.path for r in rows)
    ids = [r[0] for chunk in engine.content_vectors() for r in chunk]
    assert ids == sorted(ids) and len(ids) == sum(r.status == STATUS_OK for r in rows)


@lite
def test_skipped_rows_are_stored_but_never_found(engine):
    rows = catalog_rows()
    engine.apply(Changes(upserts=rows))
    skipped = {r.path for r in rows if r.status == STATUS_SKIPPED}
    assert {f.path for f in engine.skipped()} == skipped
    scores, ids = engine.search(unit_vectors(1, 3)[0], len(rows))
    found = {f.path for f in engine.get_files(ids.tolist()).values()}
    assert len(ids) == len(rows) - len(skipped) and not found & skipped


@lite
def test_a_sample_of_paths_is_drawn_from_the_ok_rows(engine):
    rows = catalog_rows()
    engine.apply(Changes(upserts=rows))
    ok = {r.path for r in rows if r.status == STATUS_OK}
    assert set(engine.sample_ok_paths(1000)) == ok
    some = engine.sample_ok_paths(3)
    assert 0 < len(some) <= 3 and set(some) <= ok and len(set(some)) == len(some)


# ---- the index -----------------------------------------------------------------------------
@lite
def test_the_index_is_rebuilt_when_the_library_crosses_a_size_threshold(tmp_path):
    with state_dir(tmp_path):
        e = new_engine("milvus", tmp_path, flat_max_rows=5, exact_on_lite=False)
        assert e.index().kind == "flat"
        e.apply(Changes(upserts=catalog_rows()))
        query = unit_vectors(1, 5)[0]
        before = e.search(query, 3)
        assert e.index().state == "stale" and e.problems()
        done = e.update_index()
        assert done.action == "rebuilt" and e.index().kind == "ivf-sq8"
        assert e.index().state == "fresh" and not e.problems()
        assert e.update_index().action == "none"
        after = e.search(query, 3)
        assert after[1].tolist() == before[1].tolist()
        np.testing.assert_allclose(after[0], before[0], atol=1e-5)
        e.close()


@lite
def test_a_lite_library_stays_exact_at_any_size(tmp_path):
    with state_dir(tmp_path):
        e = new_engine("milvus", tmp_path, flat_max_rows=5)
        e.apply(Changes(upserts=catalog_rows()))
        assert e.update_index().action == "none" and e.index().kind == "flat"
        e.close()


def test_index_kind_by_size_follows_the_local_thresholds():
    from searchkit import ann
    from searchkit.milvus.schema import FLAT, IVF_SQ8, choose_index
    assert choose_index(ann.FLAT_MAX_ROWS - 1).kind == FLAT
    for n in (ann.FLAT_MAX_ROWS, ann.PQ_MIN_ROWS):
        ivf = choose_index(n)
        assert ivf.kind == IVF_SQ8 and 1 <= ivf.nprobe <= ivf.nlist


# ---- the write lock ------------------------------------------------------------------------
@lite
def test_a_second_writer_on_this_machine_fails_at_once(engine, tmp_path):
    assert not engine.is_busy()
    with engine.writer():
        assert engine.is_busy()
        assert str(engine.state_dir).startswith(str(tmp_path / "state"))
        with pytest.raises(LibraryBusyError, match="is busy"):
            with engine.writer():
                pass
    assert not engine.is_busy()


# ---- filters a server cannot express -------------------------------------------------------
SERVER_23 = ("v2.3.5-lite", False)


@pytest.mark.parametrize("filters, needle", [
    (Filters(path_glob="*.jpg"), "2.4.3"),
    (Filters(camera="canon"), "camera filter"),
    (Filters(path_glob="/a/[ab]*"), "character classes"),
    (Filters(text_contains="x"), "text-in-images"),
])
def test_a_filter_a_milvus_23_server_cannot_express_is_refused(filters, needle):
    from searchkit.milvus.filters import Dialect, search_expression
    with pytest.raises(QueryError, match=needle):
        search_expression(filters, Dialect.of(*SERVER_23))


@pytest.mark.parametrize("filters", [
    Filters(path_glob="/photos/2020/*"), Filters(path_glob="/photos/IMG_1.jpg"),
    Filters(path_prefix="/photos", formats=("jpg",), min_width=10,
            date_from=__import__("datetime").datetime(2020, 1, 1)),
])
def test_prefix_globs_and_plain_filters_need_no_like_on_a_server(filters):
    from searchkit.milvus.filters import Dialect, search_expression
    assert " like " not in search_expression(filters, Dialect.of(*SERVER_23))


def test_like_escapes_are_trusted_on_lite_only():
    from searchkit.milvus.filters import Dialect, search_expression
    newer = Dialect.of("v2.5.4", False)
    assert "like" in search_expression(Filters(camera="canon"), newer)
    with pytest.raises(QueryError, match="literally"):
        search_expression(Filters(camera="d_x"), newer)
    assert "\\\\_" in search_expression(Filters(camera="d_x"), Dialect.of("3.2.2", True))


# ---- locations and credentials -------------------------------------------------------------
def test_locations_name_a_server_or_a_lite_folder():
    from searchkit.milvus.config import parse_location
    server = parse_location("milvus://db.example.org/photos")
    assert (server.host, server.port, server.collection, server.is_lite) == (
        "db.example.org", 19530, "photos", False)
    assert parse_location("milvus://127.0.0.1:19531/c").port == 19531
    lite_folder = parse_location("milvus:///data/my%20libs/lite.db/photos_2")
    assert (lite_folder.lite_file, lite_folder.collection) == ("/data/my libs/lite.db",
                                                               "photos_2")


@pytest.mark.parametrize("bad, needle", [
    ("milvus://host:port/c", "bad Milvus location"),
    ("milvus://host/", "collection name"),
    ("milvus://host/a/b", "bad Milvus location"),
    ("milvus://host/9lives", "collection name"),
    ("milvus://user:secret@host/c", "credentials do not belong"),
    ("milvus://relative.db/c/d", "bad Milvus location"),
])
def test_a_bad_location_is_one_clear_error(bad, needle):
    from searchkit.milvus.config import parse_location
    with pytest.raises(SearchkitError, match=needle):
        parse_location(bad)


def test_credentials_and_tls_come_from_the_config_file_and_the_environment(tmp_path,
                                                                          monkeypatch):
    from searchkit.milvus.config import load_settings, parse_location
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    config = tmp_path / "milvus.toml"
    config.write_text(f'user = "reader"\npassword = "pw"\ndb = "photos"\n'
                      f'["db.example.org:19530"]\ntls = true\nca_cert = "{ca}"\n')
    monkeypatch.setenv("SEARCHKIT_MILVUS_CONFIG", str(config))
    where = parse_location("milvus://db.example.org/c")
    kwargs = load_settings(where).client_kwargs(where)
    assert kwargs["uri"] == "https://db.example.org:19530"
    assert (kwargs["user"], kwargs["password"], kwargs["db_name"],
            kwargs["server_pem_path"]) == ("reader", "pw", "photos", str(ca))
    other = parse_location("milvus://elsewhere:19530/c")           # the table is per server
    assert load_settings(other).client_kwargs(other)["uri"] == "http://elsewhere:19530"
    monkeypatch.setenv("SEARCHKIT_MILVUS_TOKEN", "root:Milvus")    # the environment wins
    kwargs = load_settings(where).client_kwargs(where)
    assert kwargs["token"] == "root:Milvus" and "user" not in kwargs


@pytest.mark.parametrize("env, needle", [
    ({"SEARCHKIT_MILVUS_TLS": "maybe"}, "tls has a bad value"),
    ({"SEARCHKIT_MILVUS_CA_CERT": "/no/such/ca.pem"}, "not a file"),
    ({"SEARCHKIT_MILVUS_CONFIG": "/no/such/milvus.toml"}, "not a file"),
])
def test_bad_settings_are_one_clear_error(env, needle, monkeypatch):
    from searchkit.milvus.config import load_settings, parse_location
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SearchkitError, match=needle):
        load_settings(parse_location("milvus://h/c"))


def test_without_the_extra_a_milvus_location_says_what_to_install(tmp_path, monkeypatch):
    from searchkit.milvus import open_milvus_engine
    monkeypatch.setitem(sys.modules, "pymilvus", None)   # as if not installed
    with pytest.raises(SearchkitError, match=r"pip install 'searchkit\[milvus\]'"):
        open_milvus_engine(location(tmp_path), create=True)


def test_searchkit_imports_pymilvus_only_for_a_milvus_location():
    code = ("import sys, searchkit.engine, searchkit.milvus, searchkit.milvus.engine; "
            "print('pymilvus' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@lite
def test_a_lite_folder_another_process_holds_is_one_clear_error(tmp_path):
    from searchkit.milvus import open_milvus_engine
    with state_dir(tmp_path):
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tests.engine_rows import new_engine;"
             f" e = new_engine('milvus', __import__('pathlib').Path({str(tmp_path)!r}));"
             " print('open', flush=True); sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "open"
            with pytest.raises(SearchkitError, match="one process at a time"):
                open_milvus_engine(location(tmp_path))
        finally:
            holder.kill()
            holder.wait()
