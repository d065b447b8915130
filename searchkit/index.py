"""The FAISS index: a cache derived from the store, rebuilt whenever it does not match.

Ids are row ids; the metric is inner product on L2-normalised vectors (cosine). Exact (flat)
while small, IVF above ``IVF_THRESHOLD`` rows (see ``bench/bench_search.py`` for where the two
cross). Saved atomically (temp file, fsync, rename) with a JSON stamp of what it was built from.
Searches run on the GPU when faiss has one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
STAMP_FILE = "index.json"
IVF_THRESHOLD = 50_000       # rows; below it exact search is fast enough (bench_search.py)
IVF_LISTS_PER_SQRT = 4       # nlist = 4 * sqrt(n), the usual FAISS guidance
IVF_NPROBE = 16
TRAIN_SAMPLE_PER_LIST = 64
RETRAIN_RATIO = 2.0          # reuse a trained IVF quantizer until the size changes this much
SEARCH_THREADS = 1           # one query is too small to split; parallelism is across queries


@dataclass(frozen=True)
class Stamp:
    """What an index file was built from."""
    vectors_version: int
    count: int
    dim: int
    model_fingerprint: str
    kind: str
    trained_count: int = 0   # rows the IVF quantizer was trained on (0: flat)


def gpu_count() -> int:
    try:
        return faiss.get_num_gpus()
    except AttributeError:  # faiss-cpu builds without the symbol
        return 0


def choose_kind(n: int, threshold: int = IVF_THRESHOLD) -> str:
    return "flat" if n < threshold else "ivf"


def build(ids: np.ndarray, vectors: np.ndarray, kind: str | None = None,
          threshold: int = IVF_THRESHOLD, trained: faiss.Index | None = None,
          trained_count: int = 0) -> faiss.Index:
    """A new CPU index over ``vectors`` (float32, normalised) with the given ids.

    ``trained`` is a previous IVF index whose coarse quantizer is reused (no k-means) while
    the row count stays within ``RETRAIN_RATIO`` of ``trained_count``.
    """
    n, dim = vectors.shape if vectors.ndim == 2 else (0, vectors.shape[-1])
    kind = kind or choose_kind(n, threshold)
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "ivf" and reusable(trained, dim, n, trained_count):
        index = faiss.clone_index(trained)
        index.reset()
    elif kind == "ivf":
        nlist = max(1, min(int(IVF_LISTS_PER_SQRT * math.sqrt(max(n, 1))), max(1, n // 39)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, nlist * TRAIN_SAMPLE_PER_LIST), replace=False)]
        index.train(sample)
        index.nprobe = min(IVF_NPROBE, nlist)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct() by row id
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32),
                           np.ascontiguousarray(ids, np.int64))
    return index


def reusable(trained: faiss.Index | None, dim: int, n: int, trained_count: int) -> bool:
    if trained is None or trained.d != dim or kind_of(trained) != "ivf" or trained_count <= 0:
        return False
    return 1 / RETRAIN_RATIO <= n / trained_count <= RETRAIN_RATIO


def kind_of(index: faiss.Index) -> str:
    return "ivf" if isinstance(faiss.downcast_index(index), faiss.IndexIVF) else "flat"


def save(index: faiss.Index, stamp: Stamp, directory: Path) -> None:
    """Write index and stamp atomically: a crash leaves the old pair or the new one."""
    directory = Path(directory)
    _atomic_write(directory / INDEX_FILE, faiss.serialize_index(index).tobytes())
    _atomic_write(directory / STAMP_FILE, json.dumps(asdict(stamp)).encode())


def load(directory: Path) -> tuple[faiss.Index, Stamp] | None:
    """The saved index and its stamp, or None if missing or unreadable."""
    directory = Path(directory)
    try:
        stamp = Stamp(**json.loads((directory / STAMP_FILE).read_bytes()))
        data = np.frombuffer((directory / INDEX_FILE).read_bytes(), dtype=np.uint8)
        index = faiss.deserialize_index(data)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        log.info("no usable saved index in %s (%s)", directory, e)
        return None
    if index.ntotal != stamp.count:
        return None
    return index, stamp


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


class SearchIndex:
    """A loaded index, mirrored to the GPU when faiss has one."""

    def __init__(self, index: faiss.Index, stamp: Stamp):
        self.cpu = index
        self.stamp = stamp
        self.gpu = None
        if gpu_count() > 0 and index.ntotal:
            try:
                self.gpu = faiss.index_cpu_to_all_gpus(index)
            except RuntimeError as e:  # pragma: no cover - depends on the GPU build
                log.warning("cannot move the index to the GPU (%s); searching on the CPU", e)

    @property
    def kind(self) -> str:
        return self.stamp.kind

    @property
    def device(self) -> str:
        return "gpu" if self.gpu is not None else "cpu"

    def __len__(self) -> int:
        return self.cpu.ntotal

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one query vector; ``allowed`` restricts to those ids."""
        faiss.omp_set_num_threads(SEARCH_THREADS)  # per calling thread (OpenMP semantics)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        k = min(k, self.cpu.ntotal if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if allowed is None:
            index = self.gpu if self.gpu is not None else self.cpu
            scores, ids = index.search(q, k)
        else:  # ID selectors run on the CPU index
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64))
            params = (faiss.SearchParametersIVF(sel=sel, nprobe=self._nprobe())
                      if self.kind == "ivf" else faiss.SearchParameters(sel=sel))
            scores, ids = self.cpu.search(q, k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _nprobe(self) -> int:
        return faiss.extract_index_ivf(self.cpu).nprobe

    def reconstruct(self, row_id: int) -> np.ndarray:
        return self.cpu.reconstruct(int(row_id))
