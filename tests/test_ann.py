"""searchkit.ann: the index kind by size, building in chunks, re-ranking, filters, removal."""

import faiss
import numpy as np
import pytest

from searchkit import ann

DIM = 32
SPECS = {  # one small spec per kind (the sizes choose() picks are too big for a unit test)
    ann.FLAT: ann.IndexSpec(ann.FLAT),
    ann.IVF_FLAT: ann.IndexSpec(ann.IVF_FLAT, nlist=32, nprobe=8),
    ann.IVF_SQ8: ann.IndexSpec(ann.IVF_SQ8, nlist=32, nprobe=8, rerank=30),
    ann.IVF_PQ: ann.IndexSpec(ann.IVF_PQ, nlist=32, nprobe=8, pq_m=4, opq=True, rerank=100),
}


def realistic(n: int, seed: int = 0, dim: int = DIM, clusters: int = 40, rank: int = 4
              ) -> np.ndarray:
    """Unit vectors shaped like embeddings, not isotropic blobs: clusters of unequal size,
    each spread along a few directions of its own plus noise, overlapping. One mixture;
    ``seed`` draws other samples from it."""
    rng = np.random.default_rng(0)
    means = rng.standard_normal((clusters, dim)).astype(np.float32)
    bases = rng.standard_normal((clusters, dim, rank)).astype(np.float32) * 0.45
    weights = rng.dirichlet(np.full(clusters, 0.7))
    rng = np.random.default_rng(seed)
    comp = rng.choice(clusters, size=n, p=weights)
    x = means[comp] + np.einsum("ndr,nr->nd", bases[comp],
                                rng.standard_normal((n, rank)).astype(np.float32))
    x += 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Rows:
    """Stored rows by id, as the library's store is (ids are sparse row ids)."""

    def __init__(self, vectors: np.ndarray, first: int = 5, step: int = 3):
        self.ids = first + step * np.arange(len(vectors), dtype=np.int64)
        self.vectors = vectors
        self._row = {int(i): j for j, i in enumerate(self.ids)}
        self.fetched = 0

    def fetch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = np.array([i for i in ids if int(i) in self._row], dtype=np.int64)
        self.fetched += len(found)
        return found, self.vectors[[self._row[int(i)] for i in found]].reshape(-1, DIM)

    def chunks(self, size: int):
        for start in range(0, len(self.ids), size):
            yield self.ids[start:start + size], self.vectors[start:start + size]

    def exact(self, q: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
        ids, vecs = self.fetch(self.ids if allowed is None else allowed)
        return ids[np.argsort(-(vecs @ q), kind="stable")[:k]]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small indexes: threads only wait for each other on a shared machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def rows() -> Rows:
    return Rows(realistic(6000))


@pytest.fixture(scope="module")
def indexes(rows) -> dict[str, faiss.Index]:
    """One index per kind, built once (tests that change one change a copy)."""
    return {kind: make(rows, kind) for kind in ann.KINDS}


def make(rows: Rows, kind: str, chunk: int = 1000) -> faiss.Index:
    return ann.build(SPECS[kind], DIM, rows.vectors[::2], rows.chunks(chunk))


def copy(index: faiss.Index) -> faiss.Index:
    return faiss.deserialize_index(faiss.serialize_index(index))


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return len(set(got.tolist()) & set(want.tolist())) / len(want)


# ---- choose -----------------------------------------------------------------------------------
def test_choose_is_exact_below_the_flat_crossover():
    assert ann.choose(ann.FLAT_MAX_ROWS - 1, 512) == ann.IndexSpec(ann.FLAT)
    assert ann.choose(0, 512).kind == ann.FLAT


def test_choose_takes_sq8_codes_without_rerank_from_the_flat_crossover():
    spec = ann.choose(ann.FLAT_MAX_ROWS, 512)   # re-ranking from SQLite halved 1M's speed
    assert spec.kind == ann.IVF_SQ8 and spec.compressed and spec.rerank == 0
    assert 1 <= spec.nprobe <= spec.nlist and spec.nlist * ann.MIN_ROWS_PER_LIST <= \
        ann.FLAT_MAX_ROWS
    assert spec.nlist <= spec.train_rows <= ann.FLAT_MAX_ROWS
    assert ann.choose(ann.PQ_MIN_ROWS - 1, 512).kind == ann.IVF_SQ8


def test_choose_moves_the_flat_crossover_when_asked():
    spec = ann.choose(400, 32, flat_max_rows=0)
    assert spec.kind == ann.IVF_SQ8 and 1 <= spec.nprobe <= spec.nlist <= 400 // 39
    assert spec.train_rows <= 400


def test_choose_takes_pq_codes_from_the_pq_crossover():
    spec = ann.choose(ann.PQ_MIN_ROWS, 512)
    assert spec.kind == ann.IVF_PQ and spec.opq and spec.rerank >= 10
    assert spec.code_bytes(512) < ann.choose(ann.PQ_MIN_ROWS - 1, 512).code_bytes(512)
    assert 512 % spec.pq_m == 0
    assert ann.choose(10_000_000, 768).pq_m == 96
    assert 100 % ann.choose(10_000_000, 100).pq_m == 0  # a divisor even when dim / 8 is not


def test_lists_grow_with_the_library_but_slower_than_it():
    sizes = [ann.FLAT_MAX_ROWS, 1_000_000, 10_000_000]
    nlists = [ann.choose(n, 512).nlist for n in sizes]
    assert nlists == sorted(nlists) and len(set(nlists)) == 3
    assert all(n / nl >= ann.MIN_ROWS_PER_LIST for n, nl in zip(sizes, nlists))
    assert nlists[2] / nlists[1] < 10


def test_a_search_scans_about_the_same_number_of_codes_at_every_size():
    for n in (ann.FLAT_MAX_ROWS, 200_000, 1_000_000, 3_000_000):
        spec = ann.choose(n, 512)
        scanned = spec.nprobe * n / spec.nlist
        assert spec.nprobe >= ann.MIN_NPROBE
        assert scanned >= ann.SCAN_ROWS or spec.nprobe == spec.nlist
        assert scanned <= 2 * ann.SCAN_ROWS or spec.nprobe == ann.MIN_NPROBE


def test_spec_round_trips_through_its_record_and_refuses_others():
    spec = ann.choose(ann.PQ_MIN_ROWS, 512)
    assert ann.IndexSpec.of(spec.record()) == spec
    for bad in ({"kind": "hnsw"}, {"kind": "flat", "colour": 1}, {}, ["flat"],
                {"kind": "ivf-sq8", "nlist": 4, "nprobe": 9}):
        with pytest.raises(ValueError):
            ann.IndexSpec.of(bad)


# ---- build ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ann.KINDS)
def test_build_in_chunks_equals_build_at_once(rows, kind, indexes):
    at_once, chunked = make(rows, kind, chunk=len(rows.ids)), indexes[kind]  # chunks of 1000
    assert at_once.ntotal == chunked.ntotal == len(rows.ids)
    q = rows.vectors[:20]
    for a, b in zip(at_once.search(q, 10), chunked.search(q, 10)):
        np.testing.assert_array_equal(a, b)


def test_ivf_needs_a_training_sample():
    with pytest.raises(ValueError, match="training sample"):
        ann.trained(SPECS[ann.IVF_SQ8], DIM, np.zeros((5, DIM), np.float32))


# ---- search -----------------------------------------------------------------------------------
def test_rerank_returns_exact_order_among_candidates(rows):
    q = rows.vectors[7]
    candidates = rows.ids[np.random.default_rng(1).permutation(len(rows.ids))[:300]]
    scores, ids = ann.rerank(q, 25, candidates, rows.fetch)
    np.testing.assert_array_equal(ids, rows.exact(q, 25, candidates))
    assert np.all(np.diff(scores) <= 0)
    np.testing.assert_allclose(scores, rows.fetch(ids)[1] @ q, rtol=1e-6)


def test_rerank_drops_candidates_whose_row_is_gone(rows):
    gone = np.array([10**9, 10**9 + 1], np.int64)
    _, ids = ann.rerank(rows.vectors[0], 5, np.concatenate([gone, rows.ids[:3]]), rows.fetch)
    assert sorted(ids.tolist()) == sorted(rows.ids[:3].tolist())


def test_exact_among_spans_its_chunks(rows, monkeypatch):
    monkeypatch.setattr(ann, "EXACT_CHUNK_ROWS", 97)
    q = rows.vectors[11]
    _, ids = ann.exact_among(q, 10, rows.ids, rows.fetch)
    np.testing.assert_array_equal(ids, rows.exact(q, 10))


@pytest.mark.parametrize("kind", ann.KINDS)
def test_recall_on_realistic_vectors_is_high(rows, kind, indexes):
    index = indexes[kind]
    queries = realistic(100, seed=1)  # not in the library: the same distribution
    got = [recall(ann.search(index, SPECS[kind], q, 10, fetch_vectors=rows.fetch)[1],
                  rows.exact(q, 10)) for q in queries]
    assert np.mean(got) >= 0.9  # measured 0.96-1.0 for these specs


@pytest.mark.parametrize("kind", ann.KINDS)
@pytest.mark.parametrize("fraction", [0.01, 0.10, 0.50])
def test_filtered_search_finds_the_best_allowed_rows(rows, kind, fraction, indexes):
    rng = np.random.default_rng(int(fraction * 100))
    allowed = rows.ids[rng.random(len(rows.ids)) < fraction]
    index = indexes[kind]
    got = []
    for q in realistic(40, seed=2):
        _, ids = ann.search(index, SPECS[kind], q, 10, allowed, rows.fetch)
        assert set(ids.tolist()) <= set(allowed.tolist())
        got.append(recall(ids, rows.exact(q, 10, allowed)))
    assert np.mean(got) >= 0.95  # measured 0.98-1.0


def test_filtered_search_probes_more_lists_the_rarer_the_filter():
    spec = SPECS[ann.IVF_SQ8]
    assert ann.filtered_nprobe(spec, 1000, 1000) == spec.nprobe
    assert spec.nprobe < ann.filtered_nprobe(spec, 300, 1000) < spec.nlist
    assert ann.filtered_nprobe(spec, 3, 1000) == spec.nlist


def test_a_selector_for_dense_or_sparse_ids():
    dense, _ = ann.make_selector(np.arange(0, 1000, 2))
    sparse, _ = ann.make_selector(np.array([3, 10**12]))
    assert isinstance(dense, faiss.IDSelectorBitmap)
    assert isinstance(sparse, faiss.IDSelectorBatch)
    assert dense.is_member(998) and not dense.is_member(999) and not dense.is_member(10**6)
    assert sparse.is_member(10**12) and not sparse.is_member(4)


def test_a_reranking_kind_requires_fetch_vectors(rows, indexes):
    index = indexes[ann.IVF_SQ8]
    with pytest.raises(ValueError, match="fetch_vectors"):
        ann.search(index, SPECS[ann.IVF_SQ8], rows.vectors[0], 5)


def test_empty_searches(rows, indexes):
    index = indexes[ann.IVF_SQ8]
    spec = SPECS[ann.IVF_SQ8]
    for k, allowed in ((0, None), (5, np.zeros(0, np.int64))):
        scores, ids = ann.search(index, spec, rows.vectors[0], k, allowed, rows.fetch)
        assert len(scores) == len(ids) == 0


# ---- remove, direct map, mmap -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ann.KINDS)
def test_removed_ids_are_never_returned(rows, kind, indexes):
    index, spec = copy(indexes[kind]), SPECS[kind]
    gone = rows.ids[:50]
    assert spec.supports_remove
    assert ann.remove(index, np.concatenate([gone, gone[:5], [10**9]])) == len(gone)
    assert index.ntotal == len(rows.ids) - len(gone)
    for q in rows.vectors[:50]:  # each removed row was its own best match
        _, ids = ann.search(index, spec, q, 10, fetch_vectors=rows.fetch)
        assert not set(ids.tolist()) & set(gone.tolist())
    ann.add(index, gone[:1], rows.vectors[:1])
    assert ann.search(index, spec, rows.vectors[0], 1, fetch_vectors=rows.fetch)[1][0] == \
        gone[0]


@pytest.mark.parametrize("kind", ann.KINDS)
def test_reconstruct_by_row_id_through_the_direct_map(rows, kind, indexes):
    index = copy(indexes[kind])
    row = 123
    v = index.reconstruct(int(rows.ids[row]))
    tolerance = 0.5 if kind == ann.IVF_PQ else 0.05 if kind == ann.IVF_SQ8 else 1e-6
    assert np.linalg.norm(v - rows.vectors[row]) < tolerance
    ann.remove(index, rows.ids[row:row + 1])
    with pytest.raises(RuntimeError):
        index.reconstruct(int(rows.ids[row]))


@pytest.mark.parametrize("kind", ann.KINDS)
def test_memory_mapped_index_answers_alike_and_refuses_changes(rows, kind, tmp_path,
                                                               indexes):
    index, spec = indexes[kind], SPECS[kind]
    path = str(tmp_path / "index.faiss")
    faiss.write_index(index, path)
    flags = ann.read_flags(spec, mmap=True)
    assert (flags == faiss.IO_FLAG_MMAP) == spec.supports_mmap == spec.is_ivf
    assert ann.read_flags(spec, mmap=False) == 0
    mapped = faiss.read_index(path, flags)
    assert ann.writable(mapped) == (not spec.supports_mmap)
    assert ann.writable(index)
    q = rows.vectors[3]
    allowed = rows.ids[::7]
    for a in (None, allowed):
        np.testing.assert_array_equal(
            ann.search(mapped, spec, q, 10, a, rows.fetch)[1],
            ann.search(index, spec, q, 10, a, rows.fetch)[1])
    if not ann.writable(mapped):  # FAISS would abort the process on these
        with pytest.raises(ValueError, match="read-only"):
            ann.add(mapped, rows.ids[:1] + 1, rows.vectors[:1])
        with pytest.raises(ValueError, match="read-only"):
            ann.remove(mapped, rows.ids[:1])


@pytest.mark.parametrize("kind", ann.KINDS)
def test_index_bytes_per_vector_as_stated(rows, kind, indexes):
    spec = SPECS[kind]
    size = faiss.serialize_index(indexes[kind]).size
    codes = len(rows.ids) * (spec.code_bytes(DIM) + ann.ID_BYTES)
    assert codes <= size <= 2 * codes + 200_000  # + id map / direct map, centroids, codebooks
