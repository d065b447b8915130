"""Which approximate-nearest-neighbour index a library gets, how it is built, how it is searched.

The FAISS index is a cache of the store's float32 vectors (SQLite is the truth; ids are store
row ids; inner product on L2-normalised vectors, i.e. cosine). This module owns three
decisions and nothing else (loading, saving, stamps and the delta of recent changes are
:mod:`searchkit.index`'s):

* :func:`choose` -- the kind of index for ``n`` vectors, from measurements;
* :func:`build` -- trained on a sample, filled in chunks, so that building never holds more
  than the index plus one chunk (peak memory at most 2x the float32 vector bytes, far less for
  a compressed kind);
* :func:`search` -- the best ``k`` (among ``allowed`` ids, when given); a kind with
  ``rerank`` (IVF-PQ) re-scores its best ``rerank`` candidates exactly from their stored
  float32 vectors, fetched by id through ``fetch_vectors`` (the library reads them from SQLite
  by primary key); IVF-SQ8 returns its SQ8 scores (within 0.003 of the exact cosine at 1M).

Kinds by size, measured on realistic 512-d vectors (a mixture fitted to searchkit-lite
embeddings of the align images: ``bench/realistic_vectors.py``; ``bench/bench_index_choice.py``
-> ``bench/results/index_choice.md``; ``bench/bench_scale.py`` -> ``bench/results/scale.md``;
2 shared cores, one search thread)::

    rows n                        kind      index bytes/vector (d=512)
    n < FLAT_MAX_ROWS (50k)       flat      2,048 (+ id map)   exact
    50k <= n < PQ_MIN_ROWS (4M)   ivf-sq8   512 + 8 id         SQ8 scores, no re-rank
    n >= PQ_MIN_ROWS              ivf-pq    64 + 8 id (OPQ)    re-rank of the best 200

* Below ``FLAT_MAX_ROWS`` exact search takes a few ms (50k x 512 floats, about 10 ms on one
  thread here) and needs no training: nothing approximate is worth its recall loss.
* From ``FLAT_MAX_ROWS``: IVF with nlist = sqrt(n) (1,000 lists at 1M) and ``nprobe`` so that a
  search scans about ``SCAN_ROWS`` codes (:func:`nprobe_for`: 6 lists at 1M). At 1M, without
  re-ranking, 6 lists gave recall@10 0.962 (filters keeping 1 / 10 / 50 %: 0.994 / 0.983 /
  0.976) in 0.27-0.28 ms, 270-273x exact search (73-75 ms at rest), in two bench runs; 8
  lists (8,000 codes, the setting until then) 0.971 (0.995 / 0.983 / 0.977) in 0.33-0.38 ms,
  only 199-202x; at 100k, 19 of 316 lists: 0.968. **IVF-SQ8 returns its SQ8 scores: the
  cosine decoded from one byte per dimension, within 0.003 of the exact one at 1M (median
  0.0008), as Milvus's IVF_SQ8 returns them** (``SQ8_RERANK`` = 0). Re-ranking the best 20
  from their float32 vectors in SQLite made the order exact and recall 0.986, but the read of
  20 rows costs 0.13-0.19 ms and the whole search 0.64 ms (117x exact), short of the issue's
  200x; exact scores of the final 10 only cost as much (0.56 ms, 133x). The exact paths stay
  exact: a filter of at most ``index.EXACT_FILTER_LIMIT`` rows, flat libraries, the delta of
  recent changes, ``searchkit dupes``. 2 sqrt(n) lists search faster (0.974 in 0.25 ms) but
  k-means and list assignment take 2.4x as long, past the 2-minute build on two busy cores.
  SQ8 codes take a quarter of the bytes of float32 and scan faster, so IVF-Flat (float32
  stored twice: SQLite and index) is never chosen. HNSW is not either: it cannot remove ids,
  its graph is not memory-mapped, it builds far slower than IVF on two cores and a filtered
  HNSW search is no faster than an exact one.
* From ``PQ_MIN_ROWS``: SQ8 codes outgrow memory (10M x 512 B = 5 GB); OPQ + PQ with
  ``dim / 8`` one-byte sub-quantizers (64 B for 512-d, 32x smaller than float32) keep a 10M
  index near 0.9 GB, and the best ``PQ_RERANK`` candidates are re-scored from their float32
  vectors. Measured at 10M here (scale.md): built in 31 min on two busy cores at a peak RSS of
  2.1 GB, 89 index bytes per image; nprobe 8 of 3,162 lists in 0.8 ms, re-ranking 200 in 2.1 ms
  more: recall@10 0.974 (0.966 re-ranking 100 in 1.1 ms, 0.935 with 50), against 812 ms for
  exact search. 200 are kept: with 100 a filter keeping half of a small library no longer
  always gave the exact best k (tests/test_incremental.py). (The crossover itself is set by
  memory: SQ8 at 10M would map a 5.2 GB index.)

Filters: an IVF search restricted to ``allowed`` ids probes ``nprobe / fraction`` lists (at
most all of them), so it scans about as many allowed vectors as an unfiltered search does;
a rare filter therefore scans every list, testing each id against a bitmap, which finds the
allowed rows exactly (IVF-PQ's re-rank orders them exactly; IVF-SQ8 by their SQ8 scores). No
separate exact path is needed.

Memory-mapping: the IVF kinds keep their codes in array inverted lists, which FAISS maps
read-only with ``IO_FLAG_MMAP`` (:func:`read_flags`); a mapped index can be searched but
never changed (:func:`writable`; FAISS aborts the process on an add to a read-only mapped
index, so :func:`add` and :func:`remove` refuse first). Removing ids: every kind (flat through
its id map, IVF through a hash-table direct map, which also gives ``reconstruct``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields

import faiss
import numpy as np

FLAT = "flat"
IVF_FLAT = "ivf-flat"
IVF_SQ8 = "ivf-sq8"
IVF_PQ = "ivf-pq"
KINDS = (FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ)
COMPRESSED = (IVF_SQ8, IVF_PQ)   # kinds whose codes are approximate (PQ's are re-ranked)

FLAT_MAX_ROWS = 50_000         # below: exact search (a few ms per query at 512-d)
PQ_MIN_ROWS = 4_000_000        # from here: PQ codes (SQ8 codes would take n x dim bytes)
IVF_LISTS_PER_SQRT = 1         # nlist = sqrt(n): k-means and list assignment fit the build budget
MIN_ROWS_PER_LIST = 39         # FAISS wants 39 training points per centroid
SCAN_ROWS = 6_000              # codes an unfiltered search scans: nprobe = SCAN_ROWS / list size
MIN_NPROBE = 6                 # IVF-SQ8 at 1M: 6 lists, recall@10 0.962 (8: 0.971 at ~200x only)
PQ_MIN_NPROBE = 8              # IVF-PQ probes at least this many (10M: 8 lists measured, 0.974)
SQ8_RERANK = 0                 # IVF-SQ8 returns its SQ8 scores: re-ranking 20 from SQLite
                               # took 0.64 ms of a 1M search against 0.37 (scale.md)
PQ_RERANK = 200                # ... for an IVF-PQ search (10M: 0.974; 100 gave 0.966 for half
                               # the SQLite reads, 50 gave 0.935: scale.md)
PQ_DIMS_PER_BYTE = 8           # PQ sub-quantizers: dim / 8 of them, one byte each
PQ_BITS = 8
TRAIN_ROWS_PER_LIST = 40       # the training sample: 40 rows per list ...
MIN_TRAIN_ROWS = 65_536        # ... and at least this many (PQ codebooks: 256 per centroid)
KMEANS_ITERATIONS = 10         # k-means iterations of the coarse quantizer (FAISS: 25)
OPQ_ITERATIONS = 20            # rotation updates while training OPQ (FAISS: 50)
BITMAP_BYTES_PER_ID = 16       # a bitmap selector while it takes at most this per allowed id
EXACT_CHUNK_ROWS = 8_192       # rows re-scored at a time by exact_among
ID_BYTES = 8

FetchVectors = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``fetch_vectors(ids) -> (found_ids, vectors)``: the stored float32 vectors of those ids that
still exist (any order; ``vectors[i]`` belongs to ``found_ids[i]``)."""


@dataclass(frozen=True)
class IndexSpec:
    """One kind of index and its settings; stored with the index (``asdict`` / :meth:`of`)."""
    kind: str
    nlist: int = 0           # IVF lists
    nprobe: int = 0          # lists an unfiltered search probes
    pq_m: int = 0            # PQ sub-quantizers (bytes per code)
    opq: bool = False        # rotate (OPQ) before PQ
    rerank: int = 0          # candidates re-scored exactly from float32 vectors (0: none)
    train_rows: int = 0      # rows in the training sample build() wants (0: no training)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}")
        if self.kind != FLAT and not (1 <= self.nprobe <= self.nlist):
            raise ValueError(f"{self.kind} needs 1 <= nprobe <= nlist, not {self.nprobe}, "
                             f"{self.nlist}")
        if (self.kind == IVF_PQ) != (self.pq_m > 0):
            raise ValueError("pq_m is set for ivf-pq and only for it")

    @classmethod
    def of(cls, record: dict) -> IndexSpec:
        """The spec a stamp recorded; ValueError if it is not one."""
        names = {f.name for f in fields(cls)}
        if not isinstance(record, dict) or "kind" not in record or set(record) - names:
            raise ValueError(f"not an index spec: {record!r}")
        return cls(**record)

    def record(self) -> dict:
        return asdict(self)

    @property
    def name(self) -> str:
        """What ``searchkit status`` calls it: the kind, "opq-" first when rotated."""
        return f"opq-{self.kind}" if self.opq else self.kind

    @property
    def is_ivf(self) -> bool:
        return self.kind != FLAT

    @property
    def compressed(self) -> bool:
        return self.kind in COMPRESSED

    @property
    def supports_mmap(self) -> bool:
        """IVF codes live in array inverted lists, which FAISS maps read-only."""
        return self.is_ivf

    @property
    def supports_remove(self) -> bool:
        """``remove_ids`` on an index in memory (never on a memory-mapped one)."""
        return True

    def factory(self, dim: int) -> str:
        """The FAISS index_factory string."""
        if self.kind == FLAT:
            return "IDMap2,Flat"
        codes = {IVF_FLAT: "Flat", IVF_SQ8: "SQ8", IVF_PQ: f"PQ{self.pq_m}x{PQ_BITS}"}[self.kind]
        rotation = f"OPQ{self.pq_m}," if self.opq else ""
        return f"{rotation}IVF{self.nlist},{codes}"

    def code_bytes(self, dim: int) -> int:
        """Bytes of one vector's code in the index (its id adds ``ID_BYTES``)."""
        return {FLAT: 4 * dim, IVF_FLAT: 4 * dim, IVF_SQ8: dim,
                IVF_PQ: self.pq_m * PQ_BITS // 8}[self.kind]


# ---- choosing -------------------------------------------------------------------------------
def choose(n: int, dim: int, flat_max_rows: int | None = None) -> IndexSpec:
    """The index for ``n`` vectors of ``dim`` (the crossovers: see the module docstring);
    ``flat_max_rows`` replaces ``FLAT_MAX_ROWS`` (the library's own threshold)."""
    if n < (FLAT_MAX_ROWS if flat_max_rows is None else flat_max_rows):
        return IndexSpec(FLAT)
    nlist = nlist_for(n)
    pq = n >= PQ_MIN_ROWS
    common = {"nlist": nlist, "nprobe": nprobe_for(n, nlist, PQ_MIN_NPROBE if pq else None),
              "train_rows": min(n, max(nlist * TRAIN_ROWS_PER_LIST, MIN_TRAIN_ROWS))}
    if not pq:
        return IndexSpec(IVF_SQ8, rerank=SQ8_RERANK, **common)
    return IndexSpec(IVF_PQ, pq_m=pq_subquantizers(dim), opq=True, rerank=PQ_RERANK, **common)


def nlist_for(n: int) -> int:
    return max(1, min(int(IVF_LISTS_PER_SQRT * math.sqrt(n)), n // MIN_ROWS_PER_LIST))


def nprobe_for(n: int, nlist: int, min_nprobe: int | None = None) -> int:
    """Lists to probe so that a search scans about ``SCAN_ROWS`` codes (at least
    ``min_nprobe`` lists, default ``MIN_NPROBE``): IVF-SQ8's recall@10 0.962 at 1M."""
    least = MIN_NPROBE if min_nprobe is None else min_nprobe
    return min(nlist, max(least, math.ceil(SCAN_ROWS * nlist / max(n, 1))))


def pq_subquantizers(dim: int) -> int:
    """``dim / PQ_DIMS_PER_BYTE`` rounded down to a divisor of ``dim`` (PQ splits evenly)."""
    m = max(1, dim // PQ_DIMS_PER_BYTE)
    while dim % m:
        m -= 1
    return m


# ---- building -------------------------------------------------------------------------------
def build(spec: IndexSpec, dim: int, sample: np.ndarray | None,
          chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> faiss.Index:
    """An index of ``spec`` trained on ``sample`` (``spec.train_rows`` rows drawn at random
    from the vectors; ignored by flat) and filled from ``chunks`` of (ids, vectors)."""
    index = trained(spec, dim, sample)
    for ids, vectors in chunks:
        add(index, ids, vectors)
    return index


def trained(spec: IndexSpec, dim: int, sample: np.ndarray | None) -> faiss.Index:
    """An empty index of ``spec``, trained on ``sample``; fill it with :func:`add`."""
    index = faiss.index_factory(dim, spec.factory(dim), faiss.METRIC_INNER_PRODUCT)
    if spec.opq:
        faiss.downcast_VectorTransform(index.chain.at(0)).niter = OPQ_ITERATIONS
    if spec.is_ivf:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = KMEANS_ITERATIONS
        ivf.nprobe = spec.nprobe
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # remove_ids, reconstruct by id
        if spec.kind == IVF_PQ:  # the factory turns on polysemous training: slow, unused here
            faiss.downcast_index(ivf).do_polysemous_training = False
        if sample is None or len(sample) < spec.nlist:
            raise ValueError(f"{spec.kind} with {spec.nlist} lists needs a training sample "
                             f"of at least {spec.nlist} rows")
        index.train(_floats(sample))
    return index


def add(index: faiss.Index, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Add rows (ids are store row ids) to an index in memory."""
    _require_writable(index)
    if len(ids):
        index.add_with_ids(_floats(vectors), np.ascontiguousarray(ids, dtype=np.int64))


def remove(index: faiss.Index, ids: np.ndarray) -> int:
    """Remove rows by id from an index in memory; how many it held."""
    _require_writable(index)
    ids = unique_ids(ids)
    if not len(ids):
        return 0
    return int(index.remove_ids(faiss.IDSelectorArray(ids)))  # the hash-table map's selector


def read_flags(spec: IndexSpec, mmap: bool) -> int:
    """``faiss.read_index`` flags: memory-mapped (read-only) where the kind allows it."""
    return faiss.IO_FLAG_MMAP if mmap and spec.supports_mmap else 0


def searching_in_place(index: faiss.Index) -> faiss.Index:
    """A memory-mapped IVF index set up to search its mapped lists in place: FAISS starts
    ``prefetch_nthread`` (32) threads on every search of on-disk lists to read them ahead,
    which cost 0.65 ms a query against a 0.3 ms search of lists already in the page cache
    (bench/results/scale.md). Other indexes are returned as they are."""
    try:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    except RuntimeError:  # not an IVF index
        return index
    if isinstance(lists, faiss.OnDiskInvertedLists):
        lists.prefetch_nthread = 0
    return index


def writable(index: faiss.Index) -> bool:
    """False for an index read memory-mapped: searching only."""
    try:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    except RuntimeError:  # not an IVF index: always in memory
        return True
    return not (isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only)


def _require_writable(index: faiss.Index) -> None:
    if not writable(index):
        raise ValueError("a memory-mapped index is read-only: read it without mmap to change it")


def unique_ids(ids: np.ndarray) -> np.ndarray:
    """``ids`` sorted, each once, as int64. By sorting: ``np.unique`` (numpy 2.4, hashing)
    took 0.9 s for the 500k ids of a 50 % filter at 1M rows, a sort 15 ms."""
    ids = np.sort(np.asarray(ids, dtype=np.int64), kind="stable")
    if len(ids) > 1:
        ids = ids[np.concatenate(([True], ids[1:] != ids[:-1]))]
    return ids


def inner(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Inner products of ``vectors`` (n x d) with one ``query``, on the calling thread. Not
    ``vectors @ query``: BLAS hands a matrix-vector product of a few hundred rows to its own
    threads, and on two busy cores, right after a FAISS search, waking them cost 15 ms a query
    (1,000 delta rows at 1M) where this loop takes 0.03 ms."""
    return np.einsum("ij,j->i", _floats(vectors), _floats(query).reshape(-1))


def _floats(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


# ---- searching ------------------------------------------------------------------------------
def search(index: faiss.Index, spec: IndexSpec, query: np.ndarray, k: int,
           allowed: np.ndarray | None = None, fetch_vectors: FetchVectors | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` (scores, ids), best first, among ``allowed`` ids when given. A kind with
    ``spec.rerank`` takes that many candidates and re-scores them exactly through
    ``fetch_vectors`` (required then), so scores and order are exact cosines."""
    if spec.rerank and fetch_vectors is None:
        raise ValueError(f"{spec.kind} re-ranks its candidates: pass fetch_vectors")
    if k <= 0 or index.ntotal == 0 or (allowed is not None and len(allowed) == 0):
        return _empty()
    depth = max(k, spec.rerank)
    params, keep = search_params(index, spec, allowed)
    scores, ids = index.search(_floats(query).reshape(1, -1), depth, params=params)
    del keep  # the selector's buffers lived through the search
    found = ids[0] >= 0
    if spec.rerank:
        return rerank(query, k, ids[0][found], fetch_vectors)
    return scores[0][found][:k], ids[0][found][:k]


def search_params(index: faiss.Index, spec: IndexSpec, allowed: np.ndarray | None):
    """FAISS search parameters for ``spec`` restricted to ``allowed``, and what must stay alive
    while they are used (the selector's buffers)."""
    selector, keep = make_selector(allowed)
    if not spec.is_ivf:
        return (faiss.SearchParameters(sel=selector) if selector else None), keep
    nprobe = spec.nprobe if allowed is None else filtered_nprobe(spec, len(allowed),
                                                                 index.ntotal)
    params = faiss.SearchParametersIVF(nprobe=nprobe)
    if selector is not None:
        params.sel = selector
    if isinstance(index, faiss.IndexPreTransform):  # OPQ: the IVF parameters go one level down
        return faiss.SearchParametersPreTransform(index_params=params), (keep, params)
    return params, keep


def filtered_nprobe(spec: IndexSpec, allowed: int, total: int) -> int:
    """Lists to probe when only ``allowed`` of ``total`` rows may be returned: as many allowed
    rows scanned as an unfiltered search scans (every list for a rare filter)."""
    fraction = min(1.0, allowed / max(total, 1))
    return min(spec.nlist, math.ceil(spec.nprobe / max(fraction, 1e-9)))


def make_selector(allowed: np.ndarray | None):
    """A FAISS id selector for ``allowed`` (a bitmap while it is small, else a hash set) and
    the arrays it points into (keep them alive while it is used)."""
    if allowed is None:
        return None, None
    allowed = np.ascontiguousarray(allowed, dtype=np.int64)
    top = int(allowed.max()) + 1 if len(allowed) else 0
    if allowed.min(initial=0) >= 0 and top <= 8 * BITMAP_BYTES_PER_ID * len(allowed):
        mask = np.zeros(top, dtype=bool)
        mask[allowed] = True
        bits = np.packbits(mask, bitorder="little")
        return faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)), bits
    return faiss.IDSelectorBatch(allowed), allowed


def rerank(query: np.ndarray, k: int, candidates: np.ndarray, fetch_vectors: FetchVectors
           ) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of ``candidates`` by exact inner product with their stored vectors;
    candidates whose row is gone are dropped. Ties keep the smaller id first."""
    if not len(candidates):
        return _empty()
    ids, vectors = fetch_vectors(np.asarray(candidates, dtype=np.int64))
    if not len(ids):
        return _empty()
    ids = np.asarray(ids, dtype=np.int64)
    scores = inner(vectors, query)
    order = np.lexsort((ids, -scores))[:k]
    return scores[order], ids[order]


def exact_among(query: np.ndarray, k: int, ids: np.ndarray, fetch_vectors: FetchVectors
                ) -> tuple[np.ndarray, np.ndarray]:
    """Exact best ``k`` among ``ids`` (any number), ``EXACT_CHUNK_ROWS`` vectors at a time."""
    best_scores, best_ids = _empty()
    for start in range(0, len(ids), EXACT_CHUNK_ROWS):
        s, i = rerank(query, k, ids[start:start + EXACT_CHUNK_ROWS], fetch_vectors)
        scores, found = np.concatenate([best_scores, s]), np.concatenate([best_ids, i])
        order = np.lexsort((found, -scores))[:k]
        best_scores, best_ids = scores[order], found[order]
    return best_scores, best_ids


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(0, np.float32), np.zeros(0, np.int64)
