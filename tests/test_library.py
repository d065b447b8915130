import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer import Indexer
from searchkit import Filters, Library, Query
from searchkit.errors import LibraryBusyError, ModelMismatchError, QueryError, SearchkitError
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


def test_stale_index_is_rebuilt(lib, mixed):
    lib.search(Query.text("x"))
    assert lib.index_state() == "fresh"
    (lib.directory / "index.faiss").write_bytes(b"garbage")
    fresh = Library.open(lib.directory, encoder=lib.encoder)
    assert fresh.index_state() == "missing"
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
    monkeypatch.setattr(store, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store, "MIGRATIONS", {1: ["ALTER TABLE files ADD COLUMN rating INTEGER"]})
    Library.open(lib.directory)
    assert lib.store.get_meta("schema_version") == "2"
    with lib.store.session() as s:
        s.execute(text("SELECT rating FROM files"))
