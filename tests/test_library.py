import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searchkit.indexer import Indexer
from searchkit import Filters, Library, Query
from searchkit.library import ForgetResult, SearchTimings
from searchkit.errors import (LibraryBusyError, LibraryDamagedError, ModelMismatchError,
                              QueryError, SearchkitError)
from tests import damage
from tests.helpers import make_photos, solid


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


@pytest.fixture
def mixed(tmp_path, lib):
    """A library with varied formats, sizes, dates and cameras."""
    root = tmp_path / "m"
    make_photos(root / "trip", 6)
    solid(root / "shots" / "big.png", (0, 0, 255), (300, 200))
    solid(root / "shots" / "small.png", (0, 255, 0), (20, 10))
    cam = Image.new("RGB", (64, 48), (255, 128, 0))
    exif = cam.getexif()
    exif[271], exif[272] = "FUJIFILM", "X100V"
    exif.get_ifd(0x8769)[36867] = "2019:05:01 12:00:00"
    cam.save(root / "cam.jpg", exif=exif.tobytes())
    old = root / "shots" / "small.png"
    os.utime(old, (946684800, 946684800))  # 2000-01-01
    Indexer(lib).run([str(root)])
    return root


def paths(hits):
    return {Path(h.path).name for h in hits}


def test_text_image_and_combined_queries_return_sorted_hits(lib, mixed):
    for q in (Query.text("a photo"), Query.image(mixed / "cam.jpg"),
              Query(texts=[("orange", 1.0)], images=[(mixed / "cam.jpg", 0.5)],
                    negatives=[("blue", 0.5)])):
        hits = lib.search(q, k=5)
        assert len(hits) == 5
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    top = lib.search(Query.image(mixed / "cam.jpg"), k=1)[0]
    assert Path(top.path).name == "cam.jpg" and top.score == pytest.approx(1.0, abs=1e-5)


def test_negative_term_lowers_its_matches(lib, mixed, tiny_encoder):
    q = Query(texts=[("x", 1.0)], negatives=[("y", 1.0)])
    v = lib.query_vector(q)
    e = tiny_encoder.encode_texts(["x", "y"])
    expected = (e[0] - e[1]) / np.linalg.norm(e[0] - e[1])
    assert np.allclose(v, expected, atol=1e-6)


def test_filters(lib, mixed):
    q = Query.text("anything")
    assert paths(lib.search(q, k=50, filters=Filters(formats=("png",)))) == {"big.png", "small.png"}
    assert paths(lib.search(q, k=50, filters=Filters(min_width=100))) == {"big.png"}
    assert paths(lib.search(q, k=50, filters=Filters(camera="x100"))) == {"cam.jpg"}
    assert paths(lib.search(q, k=50, filters=Filters(path_prefix=str(mixed / "shots")))) == \
        {"big.png", "small.png"}
    assert len(lib.search(q, k=50, filters=Filters(path_glob="*/trip/*"))) == 6
    taken = Filters(date_from=datetime(2019, 1, 1), date_to=datetime(2019, 12, 31))
    assert paths(lib.search(q, k=50, filters=taken)) == {"cam.jpg"}
    modified = Filters(date_to=datetime(2001, 1, 1), date_field="modified")
    assert paths(lib.search(q, k=50, filters=modified)) == {"small.png"}
    assert lib.search(q, k=50, filters=Filters(formats=("gif",))) == []


def test_threshold_and_k(lib, mixed):
    hits = lib.search(Query.image(mixed / "cam.jpg"), k=3, threshold=0.999)
    assert [Path(h.path).name for h in hits] == ["cam.jpg"]
    with pytest.raises(SearchkitError):
        lib.search(Query.text("x"), k=0)


def test_query_errors(lib, mixed, tmp_path):
    with pytest.raises(QueryError, match="empty"):
        lib.search(Query(), k=3)
    with pytest.raises(QueryError, match="empty"):
        lib.search(Query.text("   "), k=3)
    with pytest.raises(QueryError, match="not found"):
        lib.search(Query.image(tmp_path / "nope.jpg"))
    (tmp_path / "bad.jpg").write_text("nope")
    with pytest.raises(QueryError, match="cannot read query image"):
        lib.search(Query.image(tmp_path / "bad.jpg"))


def test_library_is_bound_to_its_model(tmp_path, lib, mixed, tiny_clip_dir):
    from searchkit.testing import make_tiny_clip
    with pytest.raises(ModelMismatchError, match="--reindex"):
        Library.open(lib.directory, model="clip-vit-b32")
    other = make_tiny_clip(tmp_path / "other", seed=1)
    # same name, other weights: the fingerprint catches it
    import shutil
    shutil.rmtree(tiny_clip_dir.parent / "swap", ignore_errors=True)
    from searchkit.encoders import load_encoder
    enc = load_encoder(str(other))
    enc.name = lib.info.model_name
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        Library.open(lib.directory, encoder=enc)


def test_second_writer_fails_at_once(lib):
    with lib.writer():
        with pytest.raises(LibraryBusyError, match="library is busy"):
            with Library.open(lib.directory).writer():
                pass
        assert lib.is_busy()
    assert not lib.is_busy()


def test_an_index_the_change_log_no_longer_covers_is_rebuilt(lib, mixed):
    from sqlalchemy import text
    lib.search(Query.text("x"))
    assert lib.index_state() == "fresh"
    with lib.store.session() as s:  # a change the saved index has not seen...
        s.execute(text("UPDATE files SET status = 'ok' WHERE status = 'ok'"))
        lib.store.bump_version(s)
    lib.store.prune_changes(10**9)  # ... and that the log no longer holds
    fresh = Library.open(lib.directory, encoder=lib.encoder)
    assert fresh.index_state() == "stale"
    assert len(fresh.search(Query.text("x"), k=100)) == lib.status().indexed
    assert fresh.index_state() == "fresh"


def test_open_missing_library_is_a_clear_error(tmp_path):
    with pytest.raises(SearchkitError, match="no library"):
        Library.open(tmp_path / "nothing")


def test_schema_version_newer_than_code_is_a_clear_error(lib):
    from sqlalchemy import text
    with lib.store.session() as s:
        s.execute(text("UPDATE meta SET value='99' WHERE key='schema_version'"))
    with pytest.raises(SearchkitError, match="newer than this searchkit"):
        Library.open(lib.directory)


def test_migrations_run_in_order(lib, monkeypatch):
    from sqlalchemy import text

    from searchkit import store
    now = store.SCHEMA_VERSION
    monkeypatch.setattr(store, "SCHEMA_VERSION", now + 1)
    monkeypatch.setattr(store, "MIGRATIONS", {
        **store.MIGRATIONS, now: ["ALTER TABLE files ADD COLUMN rating INTEGER"]})
    Library.open(lib.directory)
    assert lib.store.get_meta("schema_version") == str(now + 1)
    with lib.store.session() as s:
        s.execute(text("SELECT rating FROM files"))


# ---- damaged state ---------------------------------------------------------------------------
def reopen(lib):
    """A new process's view of the library (no index cached in memory)."""
    return Library.open(lib.directory, encoder=lib.encoder)


def ranked(hits):
    return [(h.path, round(h.score, 4)) for h in hits]


@pytest.mark.parametrize("region", ["vectors", "id map"])
def test_damaged_index_file_is_detected_rebuilt_and_answers_correctly(lib, mixed, region):
    q = Query.image(mixed / "cam.jpg")
    expected = ranked(lib.search(q, k=5))
    damage.damage_index(lib, region)
    again = reopen(lib)
    st = again.status()
    assert st.index_state == "damaged" and any("damaged" in p for p in st.problems)
    assert ranked(again.search(q, k=5)) == expected
    assert again.index_state() == "fresh" and again.status().problems == []


def test_unreadable_stamp_is_reported_as_damage_and_rebuilt(lib, mixed):
    q = Query.text("a photo")
    expected = ranked(lib.search(q, k=5))
    (lib.directory / "index.json").write_text("{not json")
    again = reopen(lib)
    assert again.index_state() == "damaged"
    assert ranked(again.search(q, k=5)) == expected
    assert again.index_state() == "fresh"


def test_noop_index_run_repairs_a_damaged_index(lib, mixed, caplog):
    damage.damage_index(lib, "vectors")
    report = Indexer(reopen(lib)).run([str(mixed)])
    assert report.encoded == 0 and report.unchanged == lib.status().indexed
    assert reopen(lib).index_state() == "fresh"
    assert "damaged" in caplog.text and "rebuilding" in caplog.text  # said so


def test_stray_temp_files_are_reported_then_removed_by_the_next_index_run(lib, mixed):
    stray = lib.directory / "index.faiss.k1ll3d.tmp"
    stray.write_bytes(b"\0" * 4096)
    assert any("1 temp files" in p for p in reopen(lib).status().problems)
    Indexer(reopen(lib)).run([str(mixed)])
    assert not stray.exists() and reopen(lib).status().problems == []


@pytest.mark.parametrize("kind", ["short", "null", "nan", "not unit"])
def test_row_with_a_damaged_vector_is_left_out_of_search_and_reported(lib, mixed, kind):
    cam = str(mixed / "cam.jpg")
    total = lib.status().indexed
    row_id = damage.set_vector(lib, cam, kind)
    damage.drop_saved_index(lib)  # the next rebuild meets the damaged row
    again = reopen(lib)
    hits = again.search(Query.text("a photo"), k=100)
    assert len(hits) == total - 1 and cam not in {h.path for h in hits}
    assert ranked(again.search(Query.image(cam), k=3))  # others still answer
    assert any("1 indexed images have a damaged vector" in p for p in again.status().problems)
    with pytest.raises(LibraryDamagedError, match="check --repair"):
        again.search(Query(like=[(row_id, 1.0)]))


def test_filtered_exact_search_passes_over_rows_left_out_of_an_ivf_index(lib, mixed,
                                                                         monkeypatch):
    from searchkit import index as faiss_index
    monkeypatch.setattr(faiss_index, "choose_kind", lambda n, threshold=0: "ivf")
    damage.set_vector(lib, str(mixed / "shots" / "big.png"), "null")
    damage.drop_saved_index(lib)
    again = reopen(lib)
    hits = again.search(Query.text("x"), k=10, filters=Filters(formats=("png",)))
    assert again.search_index().kind == "ivf" and paths(hits) == {"small.png"}


@pytest.mark.parametrize("key", ["schema_version", "dim", "vectors_version"])
def test_meta_value_that_is_not_a_number_is_a_damaged_library_error(lib, mixed, key):
    damage.set_meta(lib, key, "seven")
    with pytest.raises(LibraryDamagedError, match=f"'{key}' is 'seven'.*check --repair"):
        reopen(lib).search(Query.text("x"))


@pytest.mark.parametrize("how", ["truncated", "bad header"])
def test_damaged_database_file_is_a_damaged_library_error(lib, mixed, how):
    (damage.truncate_db if how == "truncated" else damage.break_db_header)(lib)
    with pytest.raises(LibraryDamagedError, match="is damaged.*restore"):
        reopen(lib).search(Query.text("x"))


def test_full_disk_during_a_database_write_is_one_error_and_loses_nothing(small_pages, lib,
                                                                          mixed, tmp_path):
    from sqlalchemy import event

    from searchkit.errors import DiskFullError
    before = lib.status().indexed
    make_photos(mixed / "more", 40, offset=100)
    again = reopen(lib)
    with again.store.engine.connect() as c:
        pages = c.exec_driver_sql("PRAGMA page_count").scalar()

    def no_room(dbapi_conn, _record):  # the disk holds exactly what is there now
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")
    event.listen(again.store.engine, "connect", no_room)
    again.store.engine.dispose()
    with pytest.raises(DiskFullError, match="no space left.*nothing written before was lost"):
        Indexer(again).run([str(mixed)])
    event.remove(again.store.engine, "connect", no_room)
    again.store.engine.dispose()
    assert reopen(lib).status().indexed == before
    assert Indexer(reopen(lib)).run([str(mixed)]).added == 40  # resumes


def test_full_disk_during_index_save_still_answers_and_keeps_no_temp_file(lib, mixed,
                                                                          monkeypatch, caplog):
    import errno

    from searchkit import index as faiss_index
    expected = ranked(lib.search(Query.text("a photo"), k=20))
    damage.drop_saved_index(lib)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(faiss_index.os, "fsync", full)
    again = reopen(lib)
    assert ranked(again.search(Query.text("a photo"), k=20)) == expected
    assert "cannot save the index" in caplog.text and "No space left" in caplog.text
    assert not list(lib.directory.glob("*.tmp")) and again.index_state() == "missing"
    monkeypatch.undo()
    reopen(lib).search(Query.text("a photo"))
    assert reopen(lib).index_state() == "fresh"


@pytest.mark.parametrize("leftover", [None, b"", b"not sqlite at all, just some text"])
def test_opening_a_folder_that_is_not_a_library_creates_nothing(tmp_path, leftover):
    folder = tmp_path / "photos"
    make_photos(folder, 2)
    if leftover is not None:  # e.g. the empty library.db older versions left behind
        (folder / "library.db").write_bytes(leftover)
    before = sorted(p for p in folder.rglob("*"))
    with pytest.raises(SearchkitError, match="no library|damaged"):
        Library.open(folder)
    assert sorted(p for p in folder.rglob("*")) == before


# ---- the operations a user can ask for (issue 11: each is a Library method) ------------------
def test_forget_drops_a_folder_not_its_namesakes_and_says_how_many(tmp_path, lib):
    make_photos(tmp_path / "a", 3)
    make_photos(tmp_path / "a_b", 2, offset=50)  # shares the prefix "a", is not under it
    Indexer(lib).run([str(tmp_path / "a"), str(tmp_path / "a_b")])
    result = lib.forget(tmp_path / "a")
    assert result == ForgetResult(str(tmp_path / "a"), 3)
    assert lib.roots() == [str(tmp_path / "a_b")]
    assert lib.status().indexed == 2 and lib.index_state() == "fresh"


def test_forget_a_parent_folder_drops_the_folders_under_it(tmp_path, lib):
    make_photos(tmp_path / "all" / "x", 2)
    make_photos(tmp_path / "all" / "y", 2, offset=50)
    Indexer(lib).run([str(tmp_path / "all" / "x"), str(tmp_path / "all" / "y")])
    assert lib.forget(tmp_path / "all").removed == 4
    assert lib.roots() == [] and lib.status().indexed == 0


def test_forget_a_folder_never_indexed_is_an_error_and_changes_nothing(tmp_path, lib, mixed):
    before = lib.status()
    with pytest.raises(SearchkitError, match="is not an indexed folder"):
        lib.forget(tmp_path / "elsewhere")
    with pytest.raises(SearchkitError, match="is not an indexed folder"):
        lib.forget(mixed / "shots")  # under an indexed folder: forget the folder, or move it
    assert lib.status() == before


def test_forget_while_an_index_run_writes_is_busy_and_changes_nothing(lib, mixed):
    with lib.writer():
        with pytest.raises(LibraryBusyError):
            reopen(lib).forget(mixed)
    assert lib.roots() == [str(mixed)]


def test_added_roots_are_recorded_absolute_and_once(tmp_path, lib, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lib.add_roots(["photos", str(tmp_path / "photos"), "other/"])
    assert lib.roots() == [str(tmp_path / "other"), str(tmp_path / "photos")]


def test_open_for_indexing_with_the_librarys_model_changes_nothing(tmp_path, lib, mixed):
    plan = Library.open_for_indexing(lib.directory, paths=[mixed], encoder_factory=fail_factory)
    assert plan.paths == [str(mixed)] and plan.library.status().indexed == lib.status().indexed
    with pytest.raises(ModelMismatchError, match="--reindex"):
        Library.open_for_indexing(lib.directory, model="another-model")


def test_open_for_indexing_a_path_that_does_not_exist_creates_nothing(tmp_path):
    with pytest.raises(SearchkitError, match="path does not exist"):
        Library.open_for_indexing(tmp_path / "lib", paths=[tmp_path / "nope"])
    assert not (tmp_path / "lib").exists()


def test_reindex_with_another_model_drops_every_vector_and_keeps_every_folder(
        tmp_path, lib, mixed, tiny_clip_dir):
    from searchkit.testing import make_tiny_clip
    other = str(make_tiny_clip(tmp_path / "other", seed=4))
    make_photos(tmp_path / "more", 2, offset=70)
    total = lib.status().indexed + 2
    plan = Library.open_for_indexing(lib.directory, model=other, paths=[tmp_path / "more"],
                                     reindex=True)
    assert plan.paths == []  # the run encodes every folder the library knows again
    assert plan.library.info.model_name == other and plan.library.status().indexed == 0
    assert plan.library.roots() == sorted([str(mixed), str(tmp_path / "more")])
    Indexer(plan.library).run(plan.paths)
    again = Library.open(lib.directory)
    assert again.status().indexed == total
    assert again.info.model_fingerprint != lib.info.model_fingerprint


def test_reindex_after_the_models_weights_changed_rebinds_instead_of_refusing(tmp_path):
    from searchkit.testing import make_tiny_clip
    model = tmp_path / "model"
    make_tiny_clip(model, seed=0)
    make_photos(tmp_path / "p", 3)
    lib = Library.open(tmp_path / "lib", model=str(model), create=True)
    Indexer(lib).run([str(tmp_path / "p")])
    make_tiny_clip(model, seed=9)  # the model's files change under the same name
    with pytest.raises(ModelMismatchError, match="has changed"):
        Library.open(lib.directory).search(Query.text("x"))
    plan = Library.open_for_indexing(lib.directory, reindex=True)
    Indexer(plan.library).run(plan.paths)
    assert len(Library.open(lib.directory).search(Query.text("x"))) == 3


def test_search_with_timings_gives_the_hits_of_search_and_where_the_time_went(
        lib, mixed, monkeypatch):
    import searchkit.library as library_module
    clock = FakeClock()
    monkeypatch.setattr(library_module, "time", clock)
    slow = CountingEncoder(lib.encoder, on_call=lambda: clock.advance(5.0))
    q, only_png = Query.text("a photo"), Filters(formats=("png",))
    result = lib.search_with_timings(q, k=5, filters=only_png, encoder=slow)
    assert result.hits == lib.search(q, k=5, filters=only_png)
    assert paths(result.hits) == {"big.png", "small.png"}
    assert result.timings == SearchTimings(encode=5.0, faiss=0.0, sqlite=0.0)
    assert slow.calls == 1 and not hasattr(lib, "last_timings")


def test_the_query_encoder_is_injected_per_call(lib, mixed, tiny_encoder):
    counting = CountingEncoder(tiny_encoder)
    q = Query(texts=[("a", 1.0)], images=[(mixed / "cam.jpg", 1.0)], negatives=[("b", 1.0)])
    assert ranked(lib.search(q, k=3, encoder=counting)) == ranked(lib.search(q, k=3))
    assert counting.calls == 3  # texts, images, negatives: all through the given encoder


def test_fast_queries_is_an_explicit_choice(lib, mixed, tiny_encoder, monkeypatch):
    from searchkit.encoders import fast_query
    fast = CountingEncoder(tiny_encoder)
    monkeypatch.setattr(fast_query, "load", lambda model, fingerprint=None: fast)
    factory_calls = []

    def factory(name):
        factory_calls.append(name)
        return tiny_encoder
    Library.open(lib.directory, encoder_factory=factory).search(Query.text("x"))
    assert fast.calls == 0 and factory_calls == [lib.info.model_name]  # a factory given: off
    Library.open(lib.directory, encoder_factory=factory, fast_queries=True).search(
        Query.text("x"))
    assert fast.calls == 1 and len(factory_calls) == 1  # on: the model is not even loaded


def test_check_is_a_library_operation(lib, mixed):
    report = Library.check(lib.directory)
    assert report.healthy and report.directory == str(lib.directory)


class FakeClock:
    """Stands for the ``time`` module in searchkit.library: time moves only when told."""

    def __init__(self):
        self.now = 100.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


class CountingEncoder:
    """Wraps an encoder; counts its encode calls (and runs ``on_call`` in each)."""

    def __init__(self, inner, on_call=lambda: None):
        self.inner, self.on_call, self.calls = inner, on_call, 0
        self.name, self.dim = inner.name, inner.dim

    def fingerprint(self):
        return self.inner.fingerprint()

    def encode_texts(self, texts):
        self.calls += 1
        self.on_call()
        return self.inner.encode_texts(texts)

    def encode_images(self, images):
        self.calls += 1
        self.on_call()
        return self.inner.encode_images(images)


def fail_factory(name):
    raise AssertionError(f"no model should be loaded (asked for {name})")


def test_a_folder_whose_name_differs_only_in_case_is_another_folder(tmp_path, lib):
    make_photos(tmp_path / "photos", 2)
    make_photos(tmp_path / "Photos", 3, offset=50)
    Indexer(lib).run([str(tmp_path / "photos"), str(tmp_path / "Photos")])
    only = Filters(path_prefix=str(tmp_path / "photos"))
    assert len(lib.search(Query.text("x"), k=10, filters=only)) == 2
    assert lib.forget(tmp_path / "photos").removed == 2
    assert lib.status().indexed == 3 and lib.roots() == [str(tmp_path / "Photos")]


def test_indexing_a_folder_keeps_the_rows_of_its_namesake_in_another_case(tmp_path, lib):
    make_photos(tmp_path / "photos", 2)
    make_photos(tmp_path / "Photos", 3, offset=50)
    Indexer(lib).run([str(tmp_path / "photos"), str(tmp_path / "Photos")])
    report = Indexer(lib).run([str(tmp_path / "photos")])  # "Photos" rows are not "gone"
    assert report.removed == 0 and lib.status().indexed == 5
