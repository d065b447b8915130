import os
import shutil

import numpy as np
import pytest

from searchkit.indexer import Indexer
from searchkit import Library, Query
from searchkit.store import STATUS_OK, blob_to_vector
from tests.helpers import make_hostile, make_photos


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


def ok_rows(lib):
    from sqlalchemy import select

    from searchkit.store import File
    with lib.store.session() as s:
        return {f.path: f for f in s.scalars(select(File).where(File.status == STATUS_OK))}


def test_index_then_noop_then_changes(tmp_path, lib):
    photos = make_photos(tmp_path / "photos", 12)
    r = Indexer(lib).run([str(tmp_path / "photos")])
    assert (r.added, r.encoded, r.skipped) == (12, 12, [])
    r = Indexer(lib).run([str(tmp_path / "photos")])
    assert (r.added, r.encoded, r.unchanged) == (0, 0, 12)

    before = ok_rows(lib)
    # move one, rename one, delete one, change one, duplicate one, add one
    moved = tmp_path / "photos" / "elsewhere" / "moved.jpg"
    moved.parent.mkdir()
    shutil.move(photos[0], moved)
    os.rename(photos[1], photos[1].with_name("renamed.jpg"))
    photos[2].unlink()
    from PIL import Image
    Image.new("RGB", (40, 32), (1, 2, 3)).save(photos[3])
    shutil.copy(photos[4], tmp_path / "photos" / "copy.jpg")
    make_photos(tmp_path / "photos" / "new", 1, offset=1000)
    r = Indexer(lib).run()  # no path: the known roots
    after = ok_rows(lib)
    assert r.moved == 2 and r.removed == 1 and r.updated == 1
    assert r.duplicates >= 1 and r.encoded == 1 + 1  # the changed file and the 13th new one
    assert after[str(moved)].id == before[str(photos[0])].id  # moved rows keep id and vector
    assert after[str(moved)].vector == before[str(photos[0])].vector
    assert str(photos[2]) not in after
    assert after[str(tmp_path / "photos" / "copy.jpg")].vector == before[str(photos[4])].vector
    assert len(after) == len(set(after))


def test_index_answers_with_exactly_the_stored_vectors(tmp_path, lib):
    make_photos(tmp_path / "p", 20)
    Indexer(lib).run([str(tmp_path / "p")])
    for path, row in ok_rows(lib).items():
        hits = lib.search(Query(like=[(row.id, 1.0)]), k=1)
        assert hits[0].id == row.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(lib.search_index().reconstruct(row.id), blob_to_vector(row.vector))


def test_hostile_folder(tmp_path, lib):
    h = make_hostile(tmp_path / "hostile")
    r = Indexer(lib).run([str(tmp_path / "hostile")])
    rows = ok_rows(lib)
    assert set(rows) == set(h.good)
    for path, (w, hgt) in h.good.items():
        assert (rows[path].width, rows[path].height) == (w, hgt), path
    st = lib.status()
    skipped = {s.path: s.reason for s in st.skipped_files}
    assert set(skipped) == h.bad
    assert all(skipped.values())
    assert {s.path for s in r.skipped} == h.bad
    # a second run does not retry unchanged bad files nor re-encode good ones
    r2 = Indexer(lib).run()
    assert r2.encoded == 0 and r2.added == 0


def test_deleting_everything_empties_the_library(tmp_path, lib):
    make_photos(tmp_path / "p", 5)
    Indexer(lib).run([str(tmp_path / "p")])
    shutil.rmtree(tmp_path / "p")
    (tmp_path / "p").mkdir()
    r = Indexer(lib).run([str(tmp_path / "p")])
    assert r.removed == 5 and lib.status().indexed == 0
    assert lib.search(Query.text("anything"), k=3) == []


def test_missing_root_is_left_alone(tmp_path, lib):
    make_photos(tmp_path / "p", 4)
    Indexer(lib).run([str(tmp_path / "p")])
    shutil.move(tmp_path / "p", tmp_path / "unmounted")
    r = Indexer(lib).run()
    assert r.missing_roots == [str(tmp_path / "p")] and lib.status().indexed == 4
