"""Incremental index maintenance (issue 12): the saved index follows m changed rows in work
proportional to m, answers exactly what a full rebuild answers, is folded past a threshold,
is memory-mapped when large, and `status` never loads it. Rows are written straight through
the store (the indexer's own write path) so that the tests need no images."""

from __future__ import annotations

import time

import numpy as np
import pytest

from searchkit import Library
from searchkit import index as fi
from searchkit.store import STATUS_OK, Changes, FileRow, Move, Store

DIM_SEED = 0


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    return Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add_rows(lib: Library, n: int, seed: int, folder: str = "/photos") -> list[int]:
    """``n`` ok rows with random vectors, in one transaction; their ids."""
    now = time.time()
    paths = [f"{folder}/s{seed}/img_{i:05d}.jpg" for i in range(n)]
    rows = [FileRow(p, 1000 + i, int(now * 1e9), f"{seed:08x}{i:024x}", 64, 48, "JPEG", None,
                    None, None, STATUS_OK, None, None, v.tobytes(), now)
            for i, (p, v) in enumerate(zip(paths, unit(n, lib.info.dim, seed)))]
    lib.store.apply(Changes(upserts=rows))
    return sorted(r.id for r in lib.store.rows_under([f"{folder}/s{seed}"]).values())


def stored(lib: Library) -> tuple[np.ndarray, np.ndarray]:
    sound, _ = lib.store.all_vectors()
    return sound.ids, sound.vectors


def exact(lib: Library, q: np.ndarray, k: int, allowed=None) -> list[int]:
    ids, vecs = stored(lib)
    if allowed is not None:
        keep = np.isin(ids, allowed)
        ids, vecs = ids[keep], vecs[keep]
    return [int(i) for i in ids[np.argsort(-(vecs @ q), kind="stable")[:k]]]


def top(index: fi.SearchIndex, q: np.ndarray, k: int, allowed=None) -> list[int]:
    return [int(i) for i in index.search(q, k, allowed)[1]]


def reopen(lib: Library) -> Library:
    """A new process's view (nothing cached in memory)."""
    return Library.open(lib.directory, encoder=lib.encoder)


class Spy:
    """Counts calls of a method and what they returned (wraps it in place)."""

    def __init__(self, monkeypatch, owner, name: str, forbid: bool = False):
        self.calls: list = []
        real = getattr(owner, name)

        def wrapper(*args, **kwargs):
            if forbid:
                raise AssertionError(f"{name} must not be called here")
            result = real(*args, **kwargs)
            self.calls.append(result)
            return result
        monkeypatch.setattr(owner, name, wrapper)


def changed_ids(lib: Library, monkeypatch) -> Spy:
    return Spy(monkeypatch, Store, "changes_since")


def test_m_changes_are_taken_from_the_log_without_reading_every_vector(lib, monkeypatch):
    add_rows(lib, 300, seed=1)
    assert lib.update_index().action == "rebuilt"   # the first: there was none
    added = add_rows(lib, 20, seed=2)
    gone = added[:2] + stored(lib)[0][:3].tolist()
    lib.store.apply(Changes(deletes=gone))
    kept = stored(lib)[0][10]
    lib.store.apply(Changes(moves=[Move(int(kept), "/elsewhere/moved.jpg", 1, 1)]))

    monkeypatch.setattr(Store, "all_vectors", lambda self: pytest.fail("read every vector"))
    spy = changed_ids(lib, monkeypatch)
    update = lib.update_index()
    assert (update.action, update.changed) == ("none", 20 + 3)  # a move is no vector change
    assert reopen(lib).status().index_pending == 23
    again = reopen(lib)
    index = again.search_index()
    assert [len(rows.changed) for rows in spy.calls] == [23]    # only the changed rows read
    assert len(index) == 300 + 20 - 5 and index.pending == 23
    monkeypatch.undo()
    for seed in range(5):
        q = unit(1, lib.info.dim, 100 + seed)[0]
        assert top(index, q, 10) == exact(again, q, 10)
    assert np.array_equal(index.reconstruct(int(kept)), again.stored_vector(int(kept)))
    with pytest.raises(RuntimeError):
        index.reconstruct(gone[0])


def test_filtered_search_over_base_and_delta_is_the_best_k_that_pass(lib, monkeypatch):
    monkeypatch.setattr(fi, "IVF_THRESHOLD", 200)
    add_rows(lib, 400, seed=1)
    lib.update_index()
    add_rows(lib, 40, seed=2)
    lib.store.apply(Changes(deletes=stored(lib)[0][::9].tolist()))
    index = reopen(lib).search_index()
    assert index.kind == "ivf" and index.pending > 0
    ids = stored(lib)[0]
    rng = np.random.default_rng(3)
    for share in (0.01, 0.1, 0.5):
        allowed = rng.choice(ids, max(1, int(share * len(ids))), replace=False)
        for limit in (fi.EXACT_FILTER_LIMIT, 0):    # exact over the allowed rows; the ANN
            monkeypatch.setattr(fi, "EXACT_FILTER_LIMIT", limit)  # index with a selector
            for seed in range(3):
                q = unit(1, lib.info.dim, 50 + seed)[0]
                got, want = top(index, q, 10, allowed), exact(lib, q, 10, allowed)
                assert set(got) <= set(allowed.tolist())
                if limit:
                    assert got == want
                else:  # more lists probed as the filter narrows: nothing of note lost
                    assert len(set(got) & set(want)) >= len(want) - 1


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_a_folded_index_answers_what_a_full_rebuild_answers(lib, monkeypatch, kind):
    monkeypatch.setattr(fi, "IVF_THRESHOLD", 200 if kind == "ivf" else 10**6)
    monkeypatch.setattr(fi, "FOLD_MIN_ROWS", 10)
    add_rows(lib, 400, seed=1)
    first = lib.update_index()
    trained = fi.read_stamp(lib.directory).stamp.trained_count
    add_rows(lib, 60, seed=2)
    lib.store.apply(Changes(deletes=stored(lib)[0][5:35].tolist()))
    monkeypatch.setattr(Store, "all_vectors", lambda self: pytest.fail("read every vector"))
    update = lib.update_index()
    monkeypatch.undo()
    assert (first.action, update.action, update.changed) == ("rebuilt", "folded", 90)
    saved = fi.read_stamp(lib.directory, verify=True).stamp
    assert saved.count == 430 and saved.kind == kind and saved.trained_count == trained
    state = reopen(lib).saved_index_state()
    assert (state.state, state.pending) == ("fresh", 0)
    folded = reopen(lib).search_index()
    rebuilt = reopen(lib).rebuild_index(save=False)
    for seed in range(5):
        q = unit(1, lib.info.dim, 70 + seed)[0]
        assert top(folded, q, 10) == top(rebuilt, q, 10)
        assert np.allclose(folded.search(q, 10)[0], rebuilt.search(q, 10)[0], atol=1e-6)


def test_growing_past_what_the_quantizer_was_trained_for_rebuilds(lib, monkeypatch):
    monkeypatch.setattr(fi, "IVF_THRESHOLD", 200)
    monkeypatch.setattr(fi, "FOLD_MIN_ROWS", 10)
    add_rows(lib, 300, seed=1)
    lib.update_index()
    add_rows(lib, 400, seed=2)   # 700 / 300 > RETRAIN_RATIO
    update = lib.update_index()
    assert update.action == "rebuilt" and "trained on 300" in update.reason
    assert fi.read_stamp(lib.directory).stamp.trained_count == 700


def test_status_reads_the_stamp_and_counts_only(lib, monkeypatch):
    add_rows(lib, 50, seed=1)
    lib.update_index()
    add_rows(lib, 7, seed=2)
    for owner, name in ((fi.faiss, "read_index"), (fi.faiss, "deserialize_index"),
                        (Store, "all_vectors"), (Store, "changes_since"), (Store, "vectors_of")):
        Spy(monkeypatch, owner, name, forbid=True)
    st = reopen(lib).status()
    assert (st.indexed, st.index_state, st.index_pending) == (57, "fresh", 7)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_a_large_index_file_is_memory_mapped_not_read(lib, monkeypatch, kind):
    monkeypatch.setattr(fi, "MMAP_MIN_BYTES", 0)
    monkeypatch.setattr(fi, "IVF_THRESHOLD", 50 if kind == "ivf" else 10**6)
    add_rows(lib, 80, seed=1)
    lib.update_index()
    flags, real = [], fi.faiss.read_index
    monkeypatch.setattr(fi.faiss, "read_index",
                        lambda path, f=0: flags.append(f) or real(path, f))
    Spy(monkeypatch, fi.faiss, "deserialize_index", forbid=True)
    Spy(monkeypatch, fi, "file_checksum", forbid=True)  # the query path skips the full CRC
    again = reopen(lib)
    index = again.search_index()
    assert index.kind == kind and flags == [fi._mmap_flags(kind)]
    assert fi._mmap_flags("ivf") == fi.faiss.IO_FLAG_MMAP  # on-disk inverted lists
    q = unit(1, lib.info.dim, 9)[0]
    assert top(index, q, 5) == exact(again, q, 5)


def test_a_mapped_index_that_disagrees_with_the_store_is_rebuilt(lib, monkeypatch, caplog):
    monkeypatch.setattr(fi, "MMAP_MIN_BYTES", 0)
    add_rows(lib, 80, seed=1)
    lib.update_index()
    path = lib.directory / fi.INDEX_FILE
    data = bytearray(path.read_bytes())
    vectors = 80 * lib.info.dim * 4
    start = len(data) - 80 * 8 - 8 - vectors   # IDMap2(Flat): the vectors, then the id map
    data[start:start + vectors] = unit(80, lib.info.dim, 99).tobytes()  # same size, same norm
    path.write_bytes(bytes(data))
    again = reopen(lib)
    q = unit(1, lib.info.dim, 9)[0]
    assert top(again.search_index(), q, 5) == exact(again, q, 5)
    assert "disagrees with the store" in caplog.text
    assert Library.check(lib.directory, repair=False).healthy  # the rebuild was saved


def test_the_query_path_of_a_large_library_does_not_fold(lib, monkeypatch, caplog):
    monkeypatch.setattr(fi, "IVF_THRESHOLD", 100)
    monkeypatch.setattr(fi, "FOLD_MIN_ROWS", 5)
    add_rows(lib, 200, seed=1)
    lib.update_index()
    add_rows(lib, 30, seed=2)   # written without an index run (a script, say)
    before = (lib.directory / fi.STAMP_FILE).read_bytes()
    index = reopen(lib).search_index()
    assert index.pending == 30 and len(index) == 230
    assert (lib.directory / fi.STAMP_FILE).read_bytes() == before
    assert "searchkit index" in caplog.text and "30 images" in caplog.text


def test_a_delta_of_many_rows_in_any_order_gives_back_each_vector(lib):
    add_rows(lib, 300, seed=1)
    lib.update_index()
    add_rows(lib, 600, seed=2)                  # logged first: high ids ...
    lib.store.apply(Changes(deletes=stored(lib)[0][:10].tolist()))   # ... then low ones
    index = reopen(lib).search_index()
    ids, vectors = stored(lib)
    assert index.pending == 610 and len(index) == len(ids) == 890
    for row_id, vector in zip(ids, vectors):
        assert np.array_equal(index.reconstruct(int(row_id)), vector)
