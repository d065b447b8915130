"""Duplicates and near-duplicates (issue 14): groups of indexed images that hold the same
content (the same content hash) or look the same to the model (cosine similarity of their
vectors at or above a threshold), largest groups first, each with the member to keep by a
stated rule.

How the groups are found, never comparing all pairs:

1. **Exact copies**: the store groups ok rows by content hash (SQL ``GROUP BY`` on the hash
   index), within the filters.
2. **One vector per content** (copies share it) is read from the store in chunks, within the
   filters; rows whose stored vector is damaged are left out of step 3 (and counted).
3. **A k-NN graph**: each vector's ``k`` nearest others, from a temporary FAISS index built on
   those vectors (exact search below ``EXACT_MAX_ROWS`` vectors, IVF-Flat above: ``nlist =
   sqrt(n)``, ``NPROBE`` lists probed, a sample of ``TRAIN_ROWS_PER_LIST`` rows per list to
   train it); pairs at or above the threshold are edges. Scores are exact inner products of the
   float32 vectors (IVF-Flat keeps them), so an edge's cosine is the stored vectors' own.
4. **Union-find** over the edges and the exact groups: every connected component of two or
   more files is a group.

A pair is found when one of the two is among the other's ``k`` nearest (and, with IVF, lies
in one of the lists probed), which is what near-duplicates are: a vector with more than ``k``
others at or above the threshold still joins them through its nearest ones. Groups are
transitive: a chain of near-duplicates is one group even if its ends differ more.

The default threshold, 0.99, is measured (``bench/results/dupes_threshold.md``): the lowest
threshold at which at most 1 % of the shared images have a distinct image at or above it
(precision 0.953, recall 8.8 % on generated near-duplicates with searchkit-lite); 0.98 is the
documented looser setting. Exact copies are grouped whatever the threshold.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from .spec import FieldError, parse_k, parse_threshold
from .store import sound_vectors

if TYPE_CHECKING:
    from .query import Filters
    from .store import File, Store

DEFAULT_THRESHOLD = 0.99     # measured: bench/results/dupes_threshold.md
LOOSE_THRESHOLD = 0.98       # the documented looser setting (same file)
DEFAULT_K = 16               # neighbours per image in the k-NN graph
MAX_K = 100
KEEP_RULES = ("largest", "oldest", "newest", "shortest-path")
DEFAULT_KEEP = "largest"
EXACT_MAX_ROWS = 20_000      # up to this many vectors: exact neighbours (flat search)
IVF_LISTS_PER_SQRT = 2       # nlist = 2 sqrt(n) (bench_dupes_scale.py)
MIN_ROWS_PER_LIST = 39       # FAISS wants 39 training points per centroid
TRAIN_ROWS_PER_LIST = 40
KMEANS_ITERATIONS = 10
NPROBE = 4                   # lists each vector's neighbours are looked for in (same)
QUERY_CHUNK = 4_096          # vectors whose neighbours are searched at a time
READ_CHUNK = 10_000          # rows read from the store at a time
MEMBER_CHUNK = 10_000        # group members' rows fetched at a time
SEED = 0


# ---- options ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DupesOptions:
    """What :func:`find_dupes` is asked for (build with :meth:`parse`: checked values)."""
    threshold: float = DEFAULT_THRESHOLD
    k: int = DEFAULT_K
    keep: str = DEFAULT_KEEP
    exact_only: bool = False
    limit: int | None = None     # groups listed (the largest); all are counted

    @classmethod
    def parse(cls, threshold=None, k=None, keep=None, exact_only: bool = False,
              limit=None) -> "DupesOptions":
        """Values as users give them; a bad one is a FieldError naming it."""
        return cls(threshold=parse_dupes_threshold(threshold),
                   k=parse_neighbours(k), keep=parse_keep(keep), exact_only=bool(exact_only),
                   limit=None if limit is None else parse_k(limit, "limit"))


def parse_dupes_threshold(value) -> float:
    """A cosine similarity in [0, 1] (None: the default)."""
    if value is None:
        return DEFAULT_THRESHOLD
    number = parse_threshold(value)
    if not 0.0 <= number <= 1.0:
        raise FieldError("threshold", f"must be between 0 and 1 (a cosine similarity), "
                         f"not {number:g}")
    return number


def parse_neighbours(value) -> int:
    k = parse_k(DEFAULT_K if value is None else value)
    if k > MAX_K:
        raise FieldError("k", f"must be at most {MAX_K}")
    return k


def parse_keep(value) -> str:
    if value is None:
        return DEFAULT_KEEP
    if value not in KEEP_RULES:
        raise FieldError("keep", f"must be one of {', '.join(KEEP_RULES)}, not {value!r:.40}")
    return value


# ---- records ----------------------------------------------------------------------------
@dataclass(frozen=True)
class DupeMember:
    """One file of a group."""
    id: int
    path: str
    size: int | None             # bytes (None: not known, an imported row never stat'ed)
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    modified_at: datetime
    content_hash: str | None
    similarity: float | None     # cosine with the kept file (None: its vector is damaged)
    same_content: bool           # the kept file's content hash (an exact copy; True for it)
    keep: bool = False

    @property
    def date(self) -> datetime:
        """When it was taken (EXIF), else when it was last modified."""
        return self.taken_at or self.modified_at

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    def to_json(self) -> dict:
        return dict(id=self.id, path=self.path, size=self.size, width=self.width,
                    height=self.height, format=self.format, date=self.date.isoformat(),
                    taken_at=self.taken_at.isoformat() if self.taken_at else None,
                    modified_at=self.modified_at.isoformat(), content_hash=self.content_hash,
                    similarity=None if self.similarity is None else round(self.similarity, 6),
                    same_content=self.same_content, keep=self.keep)


@dataclass(frozen=True)
class DupeGroup:
    """Files that are one picture: the kept one first, then its exact copies, then the others
    by similarity to it (most similar first)."""
    members: list[DupeMember]

    @property
    def keep(self) -> DupeMember:
        return self.members[0]

    @property
    def contents(self) -> int:
        """Distinct contents (content hashes; a row without one counts alone)."""
        return len({content_key(m) for m in self.members})

    @property
    def kind(self) -> str:
        """"exact" (one content), "near" (no two files share a content) or "mixed"."""
        if self.contents == 1:
            return "exact"
        return "near" if self.contents == len(self.members) else "mixed"

    @property
    def reclaimable(self) -> int:
        """Bytes of the files other than the kept one (those whose size is known)."""
        return sum(m.size or 0 for m in self.members[1:])

    def to_json(self) -> dict:
        return dict(kind=self.kind, files=len(self.members), contents=self.contents,
                    keep=self.keep.id, reclaimable_bytes=self.reclaimable,
                    members=[m.to_json() for m in self.members])


@dataclass(frozen=True)
class DupesTimings:
    """Seconds spent: reading rows and vectors, the k-NN graph, grouping and fetching rows."""
    read: float = 0.0
    graph: float = 0.0
    group: float = 0.0


@dataclass(frozen=True)
class DupesReport:
    """What :meth:`searchkit.library.Library.dupes` found."""
    options: DupesOptions
    images: int                  # ok rows within the filters
    compared: int                # contents whose vectors were compared (0 with exact_only)
    left_out: int                # rows whose stored vector is damaged (exact copies only)
    groups: list[DupeGroup]      # the largest ``options.limit`` groups (all without a limit)
    groups_total: int
    files_in_groups: int
    reclaimable: int             # bytes of every group's files but the kept ones
    index: str                   # how neighbours were found: "none", "flat" or "ivf"
    timings: DupesTimings = field(default_factory=DupesTimings)

    @property
    def redundant(self) -> int:
        """Files in groups that are not kept."""
        return self.files_in_groups - self.groups_total

    def to_json(self) -> dict:
        o = self.options
        return dict(threshold=o.threshold, k=o.k, keep_rule=o.keep, exact_only=o.exact_only,
                    images=self.images, compared=self.compared, left_out=self.left_out,
                    groups_total=self.groups_total, files_in_groups=self.files_in_groups,
                    redundant=self.redundant, reclaimable_bytes=self.reclaimable,
                    index=self.index, groups=[g.to_json() for g in self.groups])


# ---- the keep rule ----------------------------------------------------------------------
def keep_key(rule: str):
    """The sort key whose smallest member is kept under ``rule``:

    - ``largest``: most pixels, then most bytes, then the oldest;
    - ``oldest`` / ``newest``: by date (taken, else modified), then the largest;
    - ``shortest-path``: the shortest path, then the largest.

    Remaining ties go to the smaller path, then the smaller id, so the choice is stable."""
    def size(m: DupeMember) -> tuple:
        return (-m.pixels, -(m.size or 0))

    def age(m: DupeMember):
        return m.date - datetime.min   # a timedelta: negatable, any year
    rules = {
        "largest": lambda m: (*size(m), age(m), m.path, m.id),
        "oldest": lambda m: (age(m), *size(m), m.path, m.id),
        "newest": lambda m: (-age(m), *size(m), m.path, m.id),
        "shortest-path": lambda m: (len(m.path), *size(m), m.path, m.id),
    }
    return rules[parse_keep(rule)]


def arrange(members: list[DupeMember], rule: str) -> DupeGroup:
    """The group of ``members`` with the kept one (by ``rule``) first, marked, then its exact
    copies, then the others by ``similarity`` (to the kept one), most similar first."""
    ordered = sorted(members, key=keep_key(rule))
    kept = ordered[0]
    rest = sorted(ordered[1:], key=lambda m: (content_key(m) != content_key(kept),
                                              -(m.similarity if m.similarity is not None
                                                else -2.0), m.path, m.id))
    return DupeGroup([replace(kept, keep=True, same_content=True)] + rest)


def content_key(m: DupeMember) -> str:
    """What one content is known by: its hash; a row without one is a content of its own."""
    return m.content_hash or f"#{m.id}"


# ---- union-find -------------------------------------------------------------------------
class UnionFind:
    """Disjoint sets of row ids (path halving, union by size)."""

    def __init__(self):
        self._parent: dict[int, int] = {}
        self._size: dict[int, int] = {}

    def find(self, x: int) -> int:
        parent = self._parent
        if x not in parent:
            parent[x] = x
            self._size[x] = 1
            return x
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]

    def union_all(self, ids: Iterable[int]) -> None:
        it = iter(ids)
        first = next(it, None)
        for other in it:
            self.union(first, other)

    def components(self, min_size: int = 2) -> list[list[int]]:
        """Sets of at least ``min_size`` ids, each sorted."""
        out: dict[int, list[int]] = {}
        for x in self._parent:
            out.setdefault(self.find(x), []).append(x)
        return [sorted(c) for c in out.values() if len(c) >= min_size]


# ---- vectors, one per content -----------------------------------------------------------
@dataclass
class Contents:
    """One sound vector per content (the first row, by id, that holds it with a sound vector;
    every row without a content hash is its own content)."""
    ids: np.ndarray              # row ids, ascending
    vectors: np.ndarray          # (len(ids), dim) float32, L2-normalised
    rows: int = 0                # rows read
    damaged: int = 0             # rows whose vector is damaged


def read_contents(chunks: Iterable[list[tuple[int, str | None, bytes | None]]], dim: int,
                  capacity: int) -> Contents:
    """:class:`Contents` of ``chunks`` of (id, content_hash, vector) rows by ascending id, at
    most ``capacity`` rows in all (the buffer is allocated once; pages never written are never
    used)."""
    out = np.empty((max(capacity, 0), dim), np.float32)
    ids = np.empty(max(capacity, 0), np.int64)
    seen: set[str] = set()
    n = rows = damaged = 0
    for chunk in chunks:
        rows += len(chunk)
        fresh = [r for r in chunk if r[1] is None or r[1] not in seen]
        sound = sound_vectors([r[0] for r in fresh], [r[2] for r in fresh], dim)
        damaged += sum(1 for r in chunk if r[0] in sound.bad)
        taken = set(sound.ids.tolist())
        for r in fresh:
            if r[1] is not None and r[0] in taken:
                seen.add(r[1])
        m = min(len(sound.ids), len(ids) - n)  # rows added after the capacity was counted
        ids[n:n + m], out[n:n + m] = sound.ids[:m], sound.vectors[:m]
        n += m
    return Contents(ids[:n], out[:n], rows, damaged)


# ---- the k-NN graph ---------------------------------------------------------------------
@dataclass(frozen=True)
class Edges:
    """Pairs of positions (``a < b``) whose vectors' cosine is at least the threshold."""
    a: np.ndarray
    b: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.a)


def graph_kind(n: int) -> str:
    """"flat" (exact neighbours) for at most ``EXACT_MAX_ROWS`` vectors, else "ivf" (the
    module's constants are read at each call)."""
    return "flat" if n <= EXACT_MAX_ROWS else "ivf"


def neighbour_edges(vectors: np.ndarray, k: int, threshold: float) -> Edges:
    """Each vector's ``k`` nearest others (exact, or through IVF for more than
    ``EXACT_MAX_ROWS`` vectors), kept where the cosine is at least ``threshold``; each pair
    once."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 2:
        return _no_edges()
    depth = min(k + 1, n)  # a vector finds itself too
    parts_a, parts_b, parts_s = [], [], []
    with _all_threads():
        for start, scores, nbrs in _neighbours(vectors, depth):
            rows = np.arange(start, start + len(nbrs))[:, None]
            hit = (nbrs >= 0) & (nbrs != rows) & (scores >= threshold)
            parts_a.append(np.broadcast_to(rows, nbrs.shape)[hit])
            parts_b.append(nbrs[hit])
            parts_s.append(scores[hit])
    a, b, s = (np.concatenate(p) for p in (parts_a, parts_b, parts_s))
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    _, first = np.unique(lo * n + hi, return_index=True)
    return Edges(lo[first], hi[first], s[first].astype(np.float32))


def _no_edges() -> Edges:
    return Edges(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


def _neighbours(vectors: np.ndarray, depth: int
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first position, scores, positions) of the ``depth`` nearest vectors of each block of
    ``QUERY_CHUNK`` vectors, best first (position -1: none)."""
    import faiss
    n, dim = vectors.shape
    blocks = range(0, n, QUERY_CHUNK)
    if graph_kind(n) == "flat":
        index = faiss.IndexFlatIP(dim)
        index.add(vectors)
        for start in blocks:
            yield start, *index.search(vectors[start:start + QUERY_CHUNK], depth)
        return
    index = _trained_ivf(vectors)
    # the vectors are the queries: the lists each one is probed in are found once, and the
    # first of them is the list it is stored in
    coarse, lists = np.empty((n, index.nprobe), np.float32), np.empty((n, index.nprobe),
                                                                       np.int64)
    for start in blocks:
        block = slice(start, start + QUERY_CHUNK)
        coarse[block], lists[block] = index.quantizer.search(vectors[block], index.nprobe)
        first = np.ascontiguousarray(lists[block, 0])
        index.add_core(len(first), faiss.swig_ptr(vectors[block]), None,
                       faiss.swig_ptr(first))
    for start in blocks:
        block = slice(start, start + QUERY_CHUNK)
        yield start, *index.search_preassigned(vectors[block], depth, lists[block],
                                               coarse[block])


def _trained_ivf(vectors: np.ndarray):
    """An empty IVF-Flat index (inner product) of ``nlist = IVF_LISTS_PER_SQRT sqrt(n)`` lists,
    probing ``NPROBE``, trained on a sample."""
    import faiss
    n, dim = vectors.shape
    nlist = max(1, min(int(IVF_LISTS_PER_SQRT * math.sqrt(n)), n // MIN_ROWS_PER_LIST))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = SEED
    sample = np.random.default_rng(SEED).choice(n, min(n, nlist * TRAIN_ROWS_PER_LIST),
                                                replace=False)
    index.train(vectors[np.sort(sample)])
    index.nprobe = min(NPROBE, nlist)
    return index


@contextmanager
def _all_threads() -> Iterator[None]:
    """Every core for FAISS meanwhile (a search sets one thread per query; see index.py)."""
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


# ---- grouping ---------------------------------------------------------------------------
def find_dupes(store: "Store", dim: int, options: DupesOptions,
               filters: "Filters | None" = None) -> DupesReport:
    """The groups of duplicates among the ok rows of ``store`` within ``filters`` (see the
    module docstring)."""
    t0 = time.perf_counter()
    active = filters if filters is not None and filters.active() else None
    images = store.count_ok(active)
    uf = UnionFind()
    for ids in store.duplicate_contents(active):
        uf.union_all(ids)
    contents = Contents(np.zeros(0, np.int64), np.zeros((0, dim), np.float32))
    if not options.exact_only:
        contents = read_contents(store.content_vectors(active, READ_CHUNK), dim, images)
    t1 = time.perf_counter()
    kind = "none" if options.exact_only else graph_kind(len(contents.ids))
    edges = _no_edges() if options.exact_only else neighbour_edges(
        contents.vectors, options.k, options.threshold)
    for a, b in zip(contents.ids[edges.a].tolist(), contents.ids[edges.b].tolist()):
        uf.union(a, b)
    t2 = time.perf_counter()
    components = sorted(uf.components(), key=lambda c: (-len(c), c[0]))
    groups = _groups(store, components, contents, options)
    shown = groups if options.limit is None else groups[:options.limit]
    return DupesReport(options=options, images=images, compared=len(contents.ids),
                       left_out=contents.damaged, groups=shown, groups_total=len(groups),
                       files_in_groups=sum(len(g.members) for g in groups),
                       reclaimable=sum(g.reclaimable for g in groups), index=kind,
                       timings=DupesTimings(t1 - t0, t2 - t1, time.perf_counter() - t2))


def _groups(store: "Store", components: list[list[int]], contents: Contents,
            options: DupesOptions) -> list[DupeGroup]:
    """The groups of ``components`` (lists of row ids), largest first (then by the bytes
    they would free, then by the kept file's path)."""
    rows: dict[int, "File"] = {}
    every = [i for c in components for i in c]
    for start in range(0, len(every), MEMBER_CHUNK):
        rows.update(store.get_files(every[start:start + MEMBER_CHUNK]))
    groups = []
    for ids in components:
        found = [rows[i] for i in ids if i in rows]  # a row removed meanwhile is left out
        if len(found) >= 2:
            groups.append(_group(found, contents, options.keep))
    return sorted(groups, key=lambda g: (-len(g.members), -g.reclaimable, g.keep.path))


def _group(rows: list["File"], contents: Contents, rule: str) -> DupeGroup:
    members = [_member(f) for f in rows]
    kept = sorted(members, key=keep_key(rule))[0]
    vectors = _member_vectors(members, contents)
    anchor = vectors.get(content_key(kept))
    out = []
    for m in members:
        v = vectors.get(content_key(m))
        same = content_key(m) == content_key(kept)
        sim = 1.0 if same else (None if v is None or anchor is None
                                else float(np.dot(v, anchor)))
        out.append(replace(m, similarity=sim, same_content=same))
    return arrange(out, rule)


def _member_vectors(members: list[DupeMember], contents: Contents) -> dict[str, np.ndarray]:
    """Each member content's vector (by content hash, or ``#id`` without one), from the
    compared vectors (a content's vector is held by one of its rows: one in the group)."""
    out = {}
    pos = np.searchsorted(contents.ids, [m.id for m in members])
    for m, p in zip(members, pos):
        if p < len(contents.ids) and contents.ids[p] == m.id:
            out[content_key(m)] = contents.vectors[p]
    return out


def _member(f: "File") -> DupeMember:
    return DupeMember(id=f.id, path=f.path, size=f.size if f.size is not None and f.size >= 0
                      else None, width=f.width, height=f.height, format=f.format,
                      taken_at=f.taken_at, modified_at=datetime.fromtimestamp(f.mtime_ns / 1e9),
                      content_hash=f.content_hash, similarity=None, same_content=False)


__all__ = ["DEFAULT_THRESHOLD", "DEFAULT_K", "KEEP_RULES", "DEFAULT_KEEP", "DupesOptions",
           "DupeMember", "DupeGroup", "DupesReport", "find_dupes", "neighbour_edges",
           "keep_key", "arrange", "UnionFind"]
