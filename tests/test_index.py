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


def saved_pair(tmp_path, n=100, kind="flat"):
    ids, v = data(n)
    stamp = fi.Stamp(4, n, 32, "abc", kind)
    fi.save(fi.build(ids, v, kind=kind), stamp, tmp_path)
    return stamp


def overwrite(path, offset, nbytes, seed=0):
    """Random bytes over part of a file (what a bad sector or a stray write does)."""
    data = bytearray(path.read_bytes())
    data[offset:offset + nbytes] = np.random.default_rng(seed).bytes(nbytes)
    path.write_bytes(bytes(data))


def test_save_load_roundtrip_and_corruption(tmp_path):
    stamp = saved_pair(tmp_path)
    saved = fi.load(tmp_path)
    assert saved.stamp == stamp and saved.index.ntotal == 100
    assert not list(tmp_path.glob("*.tmp"))
    (tmp_path / fi.INDEX_FILE).write_bytes(b"\x00" * 10)
    with pytest.raises(fi.DamagedIndexError, match="has 10 bytes"):
        fi.load(tmp_path)


def test_a_save_between_the_two_reads_is_not_taken_for_damage(tmp_path, monkeypatch):
    saved_pair(tmp_path, n=100)
    old_stamp = (tmp_path / fi.STAMP_FILE).read_bytes()
    new = saved_pair(tmp_path, n=60)  # replaces the pair
    reads = []
    real_read = fi._read

    def racing_read(path):  # the first stamp read happened before the save
        reads.append(path.name)
        if reads == [fi.STAMP_FILE]:
            return old_stamp
        return real_read(path)
    monkeypatch.setattr(fi, "_read", racing_read)
    assert fi.load(tmp_path).stamp == new
    assert reads.count(fi.STAMP_FILE) == 2  # read again, under the save lock


@pytest.mark.parametrize("region", ["vectors", "id map"])
def test_random_bytes_over_the_index_file_are_detected_before_use(tmp_path, region):
    saved_pair(tmp_path)
    path = tmp_path / fi.INDEX_FILE
    size = path.stat().st_size
    # IndexIDMap2(IndexFlatIP): header, the vectors, then the id map (8 bytes per id) at the end
    offset = size // 3 if region == "vectors" else size - 8 * 50
    overwrite(path, offset, 64)
    assert path.stat().st_size == size  # same size: only the checksum can tell
    with pytest.raises(fi.DamagedIndexError, match="checksum"):
        fi.load(tmp_path)


@pytest.mark.parametrize("stamp_text", ['{"vectors_version": 4', '[1, 2]', '{"bogus": 1, '
                                        '"checksum": "crc32:0", "size": 3}', 'null'])
def test_unreadable_stamp_is_damage_not_a_missing_index(tmp_path, stamp_text):
    saved_pair(tmp_path)
    (tmp_path / fi.STAMP_FILE).write_text(stamp_text)
    with pytest.raises(fi.DamagedIndexError, match=fi.STAMP_FILE):
        fi.load(tmp_path)


def test_stamp_without_checksum_reads_as_no_saved_index(tmp_path):
    """A stamp written before checksums: rebuilt once, not reported as damage."""
    import json
    stamp = saved_pair(tmp_path)
    (tmp_path / fi.STAMP_FILE).write_text(json.dumps(stamp.__dict__))
    assert fi.load(tmp_path) is None


def test_stamp_that_does_not_describe_the_index_is_damage(tmp_path):
    import json
    saved_pair(tmp_path)
    record = json.loads((tmp_path / fi.STAMP_FILE).read_text())
    (tmp_path / fi.STAMP_FILE).write_text(json.dumps(dict(record, count=99)))
    with pytest.raises(fi.DamagedIndexError, match="stamp says 99"):
        fi.load(tmp_path)


def test_full_disk_during_save_keeps_the_old_index_and_leaves_no_temp_file(tmp_path,
                                                                          monkeypatch):
    import errno
    import os
    old = saved_pair(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(fi.os, "fsync", full)
    ids, v = data(50)
    with pytest.raises(OSError, match="No space left"):
        fi.save(fi.build(ids, v, kind="flat"), fi.Stamp(5, 50, 32, "abc", "flat"), tmp_path)
    monkeypatch.undo()
    assert fi.load(tmp_path).stamp == old
    assert fi.stray_temp_files(tmp_path) == [] and not list(tmp_path.glob("*.tmp"))


def test_temp_files_of_a_killed_save_are_found_and_removed(tmp_path):
    saved_pair(tmp_path)
    strays = [tmp_path / "index.faiss.k1ll3d.tmp", tmp_path / "index.json.k1ll3d.tmp"]
    for p in strays:
        p.write_bytes(b"partial")
    (tmp_path / "photo.tmp").write_bytes(b"not ours")
    assert fi.stray_temp_files(tmp_path) == sorted(strays)
    assert sorted(fi.remove_stray_temp_files(tmp_path)) == sorted(strays)
    assert not any(p.exists() for p in strays) and (tmp_path / "photo.tmp").exists()
    assert fi.load(tmp_path) is not None


def test_temp_file_of_a_save_in_progress_is_not_a_stray(tmp_path):
    saved_pair(tmp_path)
    live = tmp_path / "index.faiss.inprogress.tmp"
    live.write_bytes(b"being written")
    with fi._save_lock(tmp_path, 0):  # what a live save holds
        assert fi.stray_temp_files(tmp_path) == []
        assert fi.remove_stray_temp_files(tmp_path) == []
    assert live.exists()


def ivf_saved(built, count):
    return fi.Saved(built.index, fi.Stamp(1, count, 32, "f", "ivf", built.trained_count))


def test_ivf_quantizer_is_reused_while_size_is_close():
    ids, v = data(5000)
    first = fi.rebuild(ids[:2000], v[:2000], threshold=1000)
    assert first.kind == "ivf" and first.trained_count == 2000
    again = fi.rebuild(ids[:3000], v[:3000], ivf_saved(first, 2000), threshold=1000)
    assert again.index.ntotal == 3000 and again.kind == "ivf"
    assert again.trained_count == 2000  # still the rows the quantizer was trained on
    q1 = faiss_centroids(first.index)
    assert np.array_equal(q1, faiss_centroids(again.index))  # same coarse quantizer: no k-means
    grown = fi.rebuild(ids, v, ivf_saved(again, 3000), threshold=1000)  # 5000 / 2000 > 2
    assert grown.trained_count == 5000 and faiss_centroids(grown.index).shape != q1.shape


def test_the_reuse_rule_reads_the_stamp():
    ids, v = data(2000)
    first = fi.rebuild(ids, v, threshold=1000)
    old_stamp = fi.Saved(first.index, fi.Stamp(1, 2000, 32, "f", "ivf"))  # no trained_count
    assert fi.reusable(old_stamp, 32, 3000) and not fi.reusable(old_stamp, 32, 999)
    assert not fi.reusable(old_stamp, 64, 2000) and not fi.reusable(None, 32, 2000)
    flat = fi.rebuild(ids[:10], v[:10], old_stamp, threshold=1000)
    assert flat.kind == "flat" and flat.trained_count == 0


def faiss_centroids(index):
    import faiss
    ivf = faiss.extract_index_ivf(index)
    return faiss.rev_swig_ptr(faiss.downcast_index(ivf.quantizer).get_xb(),
                              ivf.nlist * ivf.d).copy()


# ---- the kinds of searchkit.ann, recorded in the stamp ------------------------------------
def test_the_index_kind_above_the_threshold_is_chosen_by_ann(monkeypatch):
    from searchkit import ann
    assert fi.choose_spec(10, 32, threshold=1000).kind == ann.FLAT
    assert fi.choose_spec(2000, 32, threshold=1000).kind == ann.IVF_SQ8
    monkeypatch.setattr(ann, "PQ_MIN_ROWS", 1500)
    spec = fi.choose_spec(2000, 32, threshold=1000)
    assert (spec.kind, spec.opq, spec.rerank) == (ann.IVF_PQ, True, ann.PQ_RERANK)
    built = fi.rebuild(*data(2000), threshold=1000)
    assert (built.kind, fi.ann_kind_of(built.index)) == ("ivf", ann.IVF_PQ)


def test_retrain_reason_compares_the_stamped_spec_with_the_kind_for_the_new_size(monkeypatch):
    from searchkit import ann
    sq8 = fi.choose_spec(2000, 32, threshold=1000).record()
    stamp = fi.Stamp(1, 2000, 32, "f", "ivf", 2000, spec=sq8)
    assert fi.retrain_reason(stamp, 2500, threshold=1000) is None
    assert "quantizer" in fi.retrain_reason(stamp, 5000, threshold=1000)
    assert "flat" in fi.retrain_reason(stamp, 900, threshold=1000)
    monkeypatch.setattr(ann, "PQ_MIN_ROWS", 2400)
    assert "ivf-pq" in fi.retrain_reason(stamp, 2500, threshold=1000)
    old = fi.Stamp(1, 2000, 32, "f", "ivf", 2000)   # before specs: an IVF-Flat index
    assert fi.retrain_reason(old, 2500, threshold=1000) is None
    assert fi.retrain_reason(fi.Stamp(1, 10, 32, "f", "flat"), 20, threshold=1000) is None


def test_an_index_file_of_another_kind_than_its_stamped_spec_is_damaged(tmp_path):
    from searchkit import ann
    ids, v = data(2000)
    built = fi.rebuild(ids, v, threshold=1000)
    pq = ann.IndexSpec(ann.IVF_PQ, nlist=44, nprobe=8, pq_m=4, opq=True, rerank=200)
    fi.save(built.index, fi.Stamp(1, 2000, 32, "f", "ivf", 2000, spec=pq.record()), tmp_path)
    with pytest.raises(fi.DamagedIndexError, match="ivf-sq8"):
        fi.load(tmp_path)
    fi.save(built.index, fi.Stamp(2, 2000, 32, "f", "ivf", 2000, spec=built.spec.record()),
            tmp_path)
    assert fi.spec_of(fi.load(tmp_path).stamp) == built.spec


def test_a_sound_pq_index_passes_the_probe_and_a_damaged_one_does_not(monkeypatch):
    from searchkit import ann
    monkeypatch.setattr(ann, "PQ_MIN_ROWS", 1000)
    rng = np.random.default_rng(1)
    v = rng.standard_normal((2000, 64)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)   # isotropic: PQ codes are far from them
    ids = np.arange(2000, dtype=np.int64)
    built = fi.rebuild(ids, v, threshold=1000)
    assert built.spec.kind == ann.IVF_PQ
    assert min(float(built.index.reconstruct(i) @ v[i]) for i in range(20)) < 0.9
    assert fi.probe(built.index, ids[:20], v[:20]) == 0
    assert fi.probe(built.index, ids[:20], v[20:40]) == 20   # other vectors under those ids
