"""Import and export of precomputed embeddings (Parquet): the format, bad rows, the model check,
upserts by path, resuming, and how the indexer treats imported rows later."""

from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from searchkit import Filters, Library, Query
from searchkit.errors import ModelMismatchError, SearchkitError
from searchkit.indexer import Indexer
from searchkit.parquet_io import FINGERPRINT_KEY, MODEL_KEY, EmbeddingsReader
from searchkit.store import IMPORTED_SIZE
from tests.helpers import make_photos, solid


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


@pytest.fixture
def indexed(tmp_path, lib):
    root = tmp_path / "photos"
    make_photos(root, 6)
    solid(root / "blue.png", (0, 0, 255), (64, 48))
    Indexer(lib).run([str(root)])
    return root


def unit_rows(n, dim, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write(path, columns: dict, lib=None, model=None, fingerprint=None, vector_type=None):
    """A Parquet file of ``columns`` (vector: a list of rows), the model of ``lib`` (or the
    given one) in its metadata unless both are None."""
    model = model if model is not None else lib.info.model_name if lib else None
    fingerprint = (fingerprint if fingerprint is not None
                   else lib.info.model_fingerprint if lib else None)
    arrays = {k: (pa.array([None if v is None else list(map(float, v)) for v in vals],
                           vector_type or pa.list_(pa.float32()))
                  if k == "vector" else pa.array(vals)) for k, vals in columns.items()}
    meta = {MODEL_KEY: model, FINGERPRINT_KEY: fingerprint} if model else None
    pq.write_table(pa.table(arrays).replace_schema_metadata(meta), path)
    return path


def stored(lib):
    """path -> (vector, width, height, format, taken_at, camera_make, camera_model)."""
    out = {}
    for rows in lib.store.export_rows():
        for r in rows:
            out[r.path] = (np.frombuffer(r.vector, np.float32).tolist(), r.width, r.height,
                           r.format, r.taken_at, r.camera_make, r.camera_model)
    return out


def test_export_then_import_into_a_fresh_library_gives_the_same_rows_and_hits(
        tmp_path, lib, indexed, tiny_clip_dir):
    out = tmp_path / "emb.parquet"
    assert lib.export_parquet(out).rows == 7
    fresh = Library.open_for_import(tmp_path / "fresh", out)
    report = fresh.import_parquet(out)
    assert (report.added, report.updated, report.bad, report.renormalised) == (7, 0, 0, 0)
    assert fresh.info == lib.info
    assert stored(fresh) == stored(lib)
    q = Query.image(indexed / "blue.png")
    expect = [(h.path, h.score) for h in lib.search(q, k=7)]
    assert [(h.path, h.score) for h in fresh.search(q, k=7, encoder=lib.encoder)] == expect


def test_a_fresh_library_takes_the_files_model_without_loading_it(tmp_path, lib, indexed):
    out = lib.export_parquet(tmp_path / "emb.parquet").file

    def no_model(name):
        raise AssertionError("the model was loaded")
    fresh = Library.open_for_import(tmp_path / "fresh", out, encoder_factory=no_model)
    assert (fresh.info.model_name, fresh.info.dim) == (lib.info.model_name, lib.info.dim)


def test_importing_the_same_file_again_changes_nothing(tmp_path, lib, indexed):
    out = lib.export_parquet(tmp_path / "emb.parquet").file
    fresh = Library.open_for_import(tmp_path / "fresh", out)
    fresh.import_parquet(out)
    version = fresh.store.vectors_version()
    again = fresh.import_parquet(out)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 7)
    assert fresh.store.vectors_version() == version
    assert fresh.status().indexed == 7


def test_import_keeps_existing_rows_and_updates_a_path_it_has(tmp_path, lib, indexed):
    before = stored(lib)
    dim = lib.info.dim
    kept = str(indexed / "blue.png")
    new_vec, other_vec = unit_rows(2, dim, seed=5)
    f = write(tmp_path / "e.parquet", {"path": [kept, "/elsewhere/new.jpg"],
                                       "vector": [new_vec, other_vec], "width": [10, 20]}, lib)
    report = lib.import_parquet(f)
    assert (report.added, report.updated) == (1, 1)
    after = stored(lib)
    assert len(after) == len(before) + 1
    assert after[kept][0] == pytest.approx(new_vec.tolist(), abs=1e-7)
    assert after[kept][1:] == (10,) + before[kept][2:]  # given width, other metadata kept
    assert {p: v for p, v in after.items() if p != kept and p in before} == \
        {p: v for p, v in before.items() if p != kept}
    assert "/elsewhere/new.jpg" in {h.path for h in lib.search(Query.text("x"), k=8)}


def test_a_model_mismatch_is_one_error_and_nothing_is_written(tmp_path, lib, indexed):
    dim = lib.info.dim
    rows = {"path": ["/a.jpg"], "vector": [unit_rows(1, dim)[0]]}
    version, count = lib.store.vectors_version(), lib.status().indexed
    for name, fp in ((lib.info.model_name, "0" * 32), ("other-model", lib.info.model_fingerprint)):
        f = write(tmp_path / f"{name[:5]}.parquet", rows, model=name, fingerprint=fp)
        with pytest.raises(ModelMismatchError, match="--reindex") as e:
            lib.import_parquet(f)
        assert "\n" not in str(e.value)
    assert (lib.store.vectors_version(), lib.status().indexed) == (version, count)


def test_a_file_without_the_model_keys_needs_no_model_check(tmp_path, lib, indexed):
    f = write(tmp_path / "bare.parquet",
              {"path": ["/a.jpg"], "vector": [unit_rows(1, lib.info.dim)[0]]})
    with pytest.raises(SearchkitError, match="--no-model-check"):
        lib.import_parquet(f)
    with pytest.raises(SearchkitError, match="names no model"):
        Library.open_for_import(tmp_path / "fresh", f)
    assert not (tmp_path / "fresh" / "library.db").exists()
    assert lib.import_parquet(f, check_model=False).added == 1


def test_bad_rows_are_reported_and_skipped(tmp_path, lib):
    dim = lib.info.dim
    good = unit_rows(3, dim)
    nan = good[0].copy()
    nan[1] = np.nan
    rows = {"path": ["/ok/a.jpg", "/ok/b.jpg", "/ok/a.jpg", None, "relative.jpg", "/x/nan.jpg",
                     "/x/short.jpg", "/x/none.jpg", "/x/zero.jpg", "/x/wide.jpg", "/x/hash.jpg",
                     "/ok/scaled.jpg"],
            "vector": [good[0], good[1], good[2], good[0], good[0], nan, good[0][:-1], None,
                       np.zeros(dim), good[0], good[1], 3 * good[2]],
            "width": [1, 2, 3, 4, 5, 6, 7, 8, 9, -3, 11, 12],
            "content_hash": [None] * 10 + ["not-a-hash", None]}
    report = lib.import_parquet(write(tmp_path / "bad.parquet", rows, lib))
    reasons = {b.row: b.reason for b in report.bad_rows}
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8, 9, 10} and report.bad == 9
    assert "duplicate" in reasons[2] and reasons[3] == "no path"
    assert "absolute" in reasons[4] and "NaN" in reasons[5]
    assert f"{dim - 1} values, expected {dim}" in reasons[6] and reasons[7] == "no vector"
    assert "zeros" in reasons[8] and "width -3" in reasons[9] and "hex" in reasons[10]
    assert (report.added, report.renormalised) == (3, 1)
    got = stored(lib)
    assert set(got) == {"/ok/a.jpg", "/ok/b.jpg", "/ok/scaled.jpg"}
    assert np.linalg.norm(got["/ok/scaled.jpg"][0]) == pytest.approx(1, abs=1e-6)
    assert got["/ok/a.jpg"][0] == good[0].tolist()  # the first of two rows with one path


def test_a_path_that_is_not_utf8_is_a_bad_row(tmp_path, lib):
    vec = unit_rows(2, lib.info.dim)
    table = pa.table({"path": pa.array([b"/ok.jpg", b"/bad-\xff.jpg"], pa.binary()),
                      "vector": pa.array([v.tolist() for v in vec], pa.list_(pa.float32()))})
    f = tmp_path / "bin.parquet"
    pq.write_table(table.replace_schema_metadata({MODEL_KEY: lib.info.model_name,
                                                  FINGERPRINT_KEY: lib.info.model_fingerprint}),
                   f)
    report = lib.import_parquet(f)
    assert report.added == 1 and [b.reason for b in report.bad_rows] == [
        "path is not valid UTF-8 text"]


@pytest.mark.parametrize("columns, message", [
    ({"vector": [[1.0]]}, "no 'path' column"),
    ({"path": ["/a.jpg"]}, "no 'vector' column"),
    ({"path": ["/a.jpg"], "vector": [[1.0]], "width": ["wide"]}, "column 'width' must be"),
])
def test_a_file_missing_a_column_or_of_a_wrong_type_is_one_error(tmp_path, lib, columns,
                                                                 message):
    f = write(tmp_path / "f.parquet", columns, lib)
    with pytest.raises(SearchkitError, match=message):
        lib.import_parquet(f)


def test_a_file_of_vectors_of_another_size_is_one_error(tmp_path, lib):
    dim = lib.info.dim + 1
    f = write(tmp_path / "f.parquet", {"path": ["/a.jpg"], "vector": [unit_rows(1, dim)[0]]},
              lib, vector_type=pa.list_(pa.float32(), dim))
    with pytest.raises(SearchkitError, match=f"{dim} values"):
        lib.import_parquet(f)


def test_metadata_columns_are_stored_and_filter(tmp_path, lib):
    vec = unit_rows(2, lib.info.dim)
    taken = [datetime(2019, 5, 1, 12, tzinfo=timezone.utc), None]
    f = write(tmp_path / "m.parquet", {
        "path": ["/cam/a.jpg", "/cam/b.png"], "vector": list(vec), "width": [640, 20],
        "height": [480, 10], "format": ["jpeg", "PNG"],
        "taken_at": pa.array(taken, pa.timestamp("ms", "UTC")),
        "camera_make": ["FUJIFILM", None], "camera_model": ["X100V", None]}, lib)
    lib.import_parquet(f)
    assert stored(lib)["/cam/a.jpg"][1:] == (640, 480, "JPEG", datetime(2019, 5, 1, 12),
                                             "FUJIFILM", "X100V")
    q = Query.text("x")
    assert {h.path for h in lib.search(q, k=5, filters=Filters(formats=["jpeg"]))} == \
        {"/cam/a.jpg"}
    assert {h.path for h in lib.search(q, k=5, filters=Filters(camera="x100"))} == \
        {"/cam/a.jpg"}


# A child process imports 10 rows a batch and is killed inside the third batch's transaction,
# after its rows were written and before the commit.
KILL_IN_THIRD_BATCH = """
import os, signal, sys
from searchkit import Library
from searchkit.store import Store
calls = []
bump = Store.bump_version
def bump_then_die(s):
    bump(s)
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
Store.bump_version = staticmethod(bump_then_die)
Library.open(sys.argv[1]).import_parquet(sys.argv[2], batch_rows=10)
"""


@pytest.mark.integration
def test_an_import_killed_mid_batch_keeps_the_batches_before_and_a_new_import_finishes(
        tmp_path, lib):
    import signal
    import subprocess
    import sys
    n = 25
    f = write(tmp_path / "big.parquet", {"path": [f"/p/{i}.jpg" for i in range(n)],
                                         "vector": list(unit_rows(n, lib.info.dim))}, lib)
    r = subprocess.run([sys.executable, "-c", KILL_IN_THIRD_BATCH, str(lib.directory), str(f)],
                       capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    reopened = Library.open(lib.directory, encoder=lib.encoder)
    assert reopened.status().indexed == 20
    report = reopened.import_parquet(f, batch_rows=10)
    assert (report.added, report.unchanged) == (5, 20)
    assert reopened.status().indexed == n and len(stored(reopened)) == n
    assert len(reopened.search(Query.text("x"), k=n)) == n


def test_absent_paths_are_counted_by_import_and_status(tmp_path, lib, indexed):
    vec = unit_rows(2, lib.info.dim)
    f = write(tmp_path / "a.parquet", {"path": ["/nowhere/a.jpg", str(indexed / "blue.png")],
                                       "vector": list(vec)}, lib)
    assert lib.import_parquet(f).absent == 1
    absent = lib.absent_files()
    assert (absent.absent, absent.indexed, absent.exact) == (1, 8, True)
    sampled = lib.absent_files(sample=3)
    assert sampled.checked <= 3 and not sampled.exact


def test_an_index_run_keeps_imported_vectors_whose_content_hash_matches(tmp_path, lib,
                                                                       indexed):
    out = lib.export_parquet(tmp_path / "emb.parquet").file
    fresh = Library.open_for_import(tmp_path / "fresh", out)
    fresh.import_parquet(out)
    assert {r.size for r in _rows(fresh)} == {IMPORTED_SIZE}
    before = stored(fresh)
    report = Indexer(fresh).run([str(indexed)])
    assert (report.encoded, report.unchanged, report.added) == (0, 7, 0)
    assert stored(fresh) == before
    assert IMPORTED_SIZE not in {r.size for r in _rows(fresh)}  # stat'ed now


def test_an_index_run_encodes_imported_files_without_a_content_hash(tmp_path, lib, indexed):
    paths = sorted(str(p) for p in indexed.rglob("*") if p.is_file())
    f = write(tmp_path / "nohash.parquet",
              {"path": paths, "vector": list(unit_rows(len(paths), lib.info.dim))}, lib)
    lib2 = Library.open(tmp_path / "lib2", encoder=lib.encoder, create=True)
    lib2.import_parquet(f)
    report = Indexer(lib2).run([str(indexed)])
    assert (report.encoded, report.updated, report.added) == (7, 7, 0)
    assert stored(lib2) == stored(lib)


def test_export_leaves_out_damaged_vectors_and_refuses_to_overwrite(tmp_path, lib, indexed):
    from sqlalchemy import text
    with lib.store.session() as s:
        s.execute(text("UPDATE files SET vector = x'00' WHERE id = (SELECT min(id) FROM files)"))
    out = tmp_path / "e.parquet"
    report = lib.export_parquet(out)
    assert (report.rows, report.left_out) == (6, 1)
    assert EmbeddingsReader(out).rows == 6
    with pytest.raises(SearchkitError, match="--force"):
        lib.export_parquet(out)
    assert lib.export_parquet(out, overwrite=True).rows == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def _rows(lib):
    return list(lib.store.rows_at(list(stored(lib))).values())


def test_an_index_run_removes_imported_rows_under_its_folder_whose_files_are_not_there(
        tmp_path, lib, indexed):
    vec = unit_rows(2, lib.info.dim)
    gone, outside = str(indexed / "gone.jpg"), "/cluster/kept.jpg"
    lib.import_parquet(write(tmp_path / "g.parquet", {"path": [gone, outside],
                                                      "vector": list(vec)}, lib))
    report = Indexer(lib).run([str(indexed)])
    assert report.removed == 1
    assert outside in stored(lib) and gone not in stored(lib)


def test_reading_a_file_holds_one_row_group_at_a_time(tmp_path):
    """Memory stays flat however many rows the file has (Arrow's pre-buffering would keep
    every row group read until the end)."""
    dim, per_group, groups = 64, 1000, 40
    f = tmp_path / "many.parquet"
    with pq.ParquetWriter(f, pa.schema([("path", pa.string()),
                                         ("vector", pa.list_(pa.float32(), dim))])) as w:
        for g in range(groups):
            flat = pa.array(unit_rows(per_group, dim, seed=g).reshape(-1))
            w.write_table(pa.table({"path": [f"/g{g}/{i}.jpg" for i in range(per_group)],
                                    "vector": pa.FixedSizeListArray.from_arrays(flat, dim)}))
    group_bytes = per_group * dim * 4
    base, peak, rows = pa.total_allocated_bytes(), 0, 0
    for batch in EmbeddingsReader(f).batches(dim, batch_rows=500):
        rows += len(batch.paths)
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert rows == groups * per_group
    assert peak < 10 * group_bytes, (peak, group_bytes)  # pre-buffered: all 40
