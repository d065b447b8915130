import numpy as np
import pytest

from searchkit import index as fi


def data(n=3000, dim=32, seed=0):
    """Clustered unit vectors (embeddings of real collections are clustered, not uniform)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, dim))
    v = (centers[rng.integers(0, 40, n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.arange(10, 10 + n, dtype=np.int64) * 3, v


def test_flat_is_exact_and_ids_are_row_ids():
    ids, v = data(500)
    idx = fi.SearchIndex(fi.build(ids, v, kind="flat"), fi.Stamp(1, 500, 32, "f", "flat"))
    scores, got = idx.search(v[7], 5)
    assert got[0] == ids[7] and scores[0] == pytest.approx(1.0, abs=1e-5)
    exact = np.argsort(-(v @ v[7]))[:5]
    assert list(got) == list(ids[exact])


def test_ivf_recall_and_filters():
    ids, v = data()
    flat = fi.SearchIndex(fi.build(ids, v, kind="flat"), fi.Stamp(1, len(ids), 32, "f", "flat"))
    ivf = fi.SearchIndex(fi.build(ids, v, kind="ivf"), fi.Stamp(1, len(ids), 32, "f", "ivf"))
    assert fi.kind_of(ivf.cpu) == "ivf"
    rng = np.random.default_rng(1)
    recall = []
    for q in v[rng.choice(len(v), 50, replace=False)] + 0.05:
        q = q / np.linalg.norm(q)
        recall.append(len(set(flat.search(q, 10)[1]) & set(ivf.search(q, 10)[1])) / 10)
    assert np.mean(recall) >= 0.9
    allowed = ids[::7]
    for index in (flat, ivf):
        _, got = index.search(v[0], 20, allowed)
        assert set(got) <= set(allowed) and len(got) > 0
    assert np.allclose(ivf.reconstruct(ids[5]), v[5])


def test_choose_kind_by_size():
    assert fi.choose_kind(10) == "flat"
    assert fi.choose_kind(fi.IVF_THRESHOLD) == "ivf"


def test_save_load_roundtrip_and_corruption(tmp_path):
    ids, v = data(100)
    stamp = fi.Stamp(4, 100, 32, "abc", "flat")
    fi.save(fi.build(ids, v, kind="flat"), stamp, tmp_path)
    index, got = fi.load(tmp_path)
    assert got == stamp and index.ntotal == 100
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / fi.INDEX_FILE).write_bytes(b"\x00" * 10)
    assert fi.load(tmp_path) is None


def test_ivf_quantizer_is_reused_while_size_is_close():
    ids, v = data(3000)
    first = fi.build(ids[:2000], v[:2000], kind="ivf")
    again = fi.build(ids, v, kind="ivf", trained=first, trained_count=2000)
    assert again.ntotal == 3000 and fi.kind_of(again) == "ivf"
    q1 = faiss_centroids(first)
    assert np.array_equal(q1, faiss_centroids(again))  # same coarse quantizer: no k-means
    assert not fi.reusable(first, 32, 5000, 2000)


def faiss_centroids(index):
    import faiss
    ivf = faiss.extract_index_ivf(index)
    return faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(),
                              ivf.nlist * ivf.d).copy()
