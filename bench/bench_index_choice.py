"""Which FAISS index for which library size, measured on realistic vectors (issue 12).

    python bench/realistic_vectors.py sample --n 1000000     # once: base + query vectors
    python bench/bench_index_choice.py [--sizes 10000 100000 1000000] [--only ivf-pq32 ...]
                                       [--queries 300] [--out bench/results/index_choice.json]

Base rows are the first n of the sampled mixture (``realistic_vectors.py``), queries are 1000
other samples. Each index kind is built in a fresh process (spawned, so its peak RSS is its
own) from vectors read in chunks of 100k rows, as a streaming build from SQLite would, then
searched one query at a time on one thread, as ``searchkit.index.SearchIndex`` searches:
unfiltered, and with filters keeping 1 %, 10 %, 50 % of the rows (a random, vector-independent
subset) through an ID selector in the search parameters. A filter keeping at most
``EXACT_FILTER_LIMIT`` rows is searched exactly over those rows' float32 vectors, as the
library does. "+R" re-ranks the top R candidates by exact inner product against the float32
vectors (memory-mapped here; SQLite rows in the library, which reads only those R).

Prints one row per (index, setting): build time, peak RSS of the build, index bytes per
vector, p50 single-query latency, speed-up over exact search of the same size, recall@10
against exact search, and filtered recall@10. The machine is shared: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from realistic_vectors import SAMPLES  # noqa: E402

K = 10
FILTERS = (0.01, 0.10, 0.50)
CHUNK = 100_000                # rows read at a time while adding
TRAIN_PER_LIST = 32            # searchkit.index takes 64; half, for 2 busy cores
MIN_TRAIN = 32_768             # PQ / OPQ codebooks: 128 points per centroid
SEARCH_THREADS = 1
OPQ_NITER = 10                 # faiss's default 50 takes many minutes on 2 busy cores
NPROBES = (8, 16, 32, 64, 128)
EF_SEARCH = (32, 64, 128, 256)
FLAT_QUERIES = 50              # exact search at 1M is slow: fewer queries time it


@dataclass(frozen=True)
class Spec:
    """An index kind: a faiss factory string ({nlist} filled in), its knob, the re-rank depths."""
    name: str
    factory: str
    knob: str | None = None          # "nprobe" or "efSearch"
    values: tuple[int, ...] = ()
    reranks: tuple[int, ...] = (0,)


SPECS = {s.name: s for s in [
    Spec("flat", "Flat"),
    Spec("hnsw32", "HNSW32", "efSearch", EF_SEARCH),
    Spec("ivf-flat", "IVF{nlist}_HNSW32,Flat", "nprobe", NPROBES),
    Spec("ivf-sq8", "IVF{nlist}_HNSW32,SQ8", "nprobe", NPROBES, (0, 50)),
    Spec("ivf-pq64", "IVF{nlist}_HNSW32,PQ64", "nprobe", NPROBES, (0, 100)),
    Spec("ivf-pq32", "IVF{nlist}_HNSW32,PQ32", "nprobe", NPROBES, (0, 100)),
    Spec("opq32-ivf-pq32", "OPQ32,IVF{nlist}_HNSW32,PQ32", "nprobe", NPROBES, (0, 100)),
]}


@dataclass
class Row:
    """One (index, setting) measurement."""
    index: str
    n: int
    setting: str
    rerank: int
    p50_ms: float
    recall: float
    filtered: dict[str, float] = field(default_factory=dict)      # "1%" -> recall@10
    filtered_ms: dict[str, float] = field(default_factory=dict)   # "1%" -> p50 ms


@dataclass
class Built:
    index: str
    n: int
    nlist: int
    coarse_s: float      # k-means of the coarse quantizer (shared by the IVF kinds, cached)
    train_s: float       # the rest of training (OPQ, SQ, PQ codebooks)
    add_s: float
    peak_rss: int        # bytes, the build process
    index_bytes: int     # the written index file
    rows: list[Row]
    error: str = ""


# ---- data -------------------------------------------------------------------------------------
def base_path() -> Path:
    found = sorted(SAMPLES.glob("base_*.npy"), key=lambda p: int(p.stem.split("_")[1]))
    if not found:
        raise SystemExit("no sampled vectors: run `python bench/realistic_vectors.py sample`")
    return found[-1]


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a .npy file by plain reads (no mapping left in our RSS)."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(f)
        f.seek(f.tell() + start * shape[1] * dtype.itemsize)
        return np.fromfile(f, dtype=dtype, count=(stop - start) * shape[1]).reshape(-1, shape[1])


def allowed_ids(n: int, fraction: float) -> np.ndarray:
    return np.flatnonzero(np.random.default_rng(int(fraction * 1000)).random(n) < fraction)


def ground_truth(path: Path, n: int, queries: np.ndarray) -> dict[str, np.ndarray]:
    """Exact top-K ids, unfiltered ("all") and per filter, cached next to the vectors."""
    cache = SAMPLES / f"gt_{n}_{len(queries)}.npz"
    if cache.exists():
        return dict(np.load(cache))
    masks = {f"{int(f * 100)}%": np.zeros(n, bool) for f in FILTERS}
    for f in FILTERS:
        masks[f"{int(f * 100)}%"][allowed_ids(n, f)] = True
    best = {key: [] for key in ["all", *masks]}
    base = read_rows(path, 0, n)
    for start in range(0, len(queries), 50):
        scores = queries[start:start + 50] @ base.T
        for key in best:
            s = scores if key == "all" else np.where(masks[key], scores, -np.inf)
            top = np.argpartition(-s, K, axis=1)[:, :K]
            order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
            best[key].append(np.take_along_axis(top, order, 1))
    gt = {key: np.concatenate(v) for key, v in best.items()}
    np.savez(cache, **gt)
    return gt


def recall(got: np.ndarray, want: np.ndarray) -> float:
    return len(set(got.tolist()) & set(want.tolist())) / len(want)


# ---- one index, in its own process ------------------------------------------------------------
def nlist_for(n: int) -> int:
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def coarse_centroids(path: Path, n: int, nlist: int) -> tuple[np.ndarray, float]:
    """k-means centroids of the first rows, cached: every IVF kind of one size shares them
    (OPQ kinds excepted: they cluster rotated vectors). Returns them and the k-means seconds."""
    import faiss
    cache = SAMPLES / f"coarse_{n}_{nlist}.npz"
    if cache.exists():
        c = np.load(cache)
        return c["centroids"], float(c["seconds"])
    sample = read_rows(path, 0, min(n, nlist * TRAIN_PER_LIST))
    t = time.perf_counter()
    km = faiss.Kmeans(sample.shape[1], nlist, niter=10, spherical=True, seed=1)
    km.train(sample)
    seconds = time.perf_counter() - t
    np.savez(cache, centroids=km.centroids, seconds=seconds)
    return km.centroids, seconds


def build(spec: Spec, path: Path, n: int) -> tuple["faiss.Index", int, float, float, float]:
    import faiss
    d = read_rows(path, 0, 1).shape[1]
    nlist = nlist_for(n)
    index = faiss.index_factory(d, spec.factory.format(nlist=nlist), faiss.METRIC_INNER_PRODUCT)
    coarse_s = 0.0
    if spec.factory.startswith("IVF"):
        centroids, coarse_s = coarse_centroids(path, n, nlist)
        faiss.extract_index_ivf(index).quantizer.add(centroids)  # train() skips its k-means
    if spec.factory.startswith("OPQ"):
        faiss.downcast_VectorTransform(faiss.downcast_index(index).chain.at(0)).niter = OPQ_NITER
    t = time.perf_counter()
    if not index.is_trained:  # the rows are i.i.d. samples: a prefix is a random sample
        index.train(read_rows(path, 0, min(n, max(nlist * TRAIN_PER_LIST, MIN_TRAIN))))
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    for start in range(0, n, CHUNK):
        index.add(read_rows(path, start, min(n, start + CHUNK)))
    return index, nlist, coarse_s, train_s, time.perf_counter() - t


def peak_rss() -> int:
    """Bytes: this process's high-water RSS (VmHWM, which exec resets; ru_maxrss would carry
    the parent's peak over the fork + exec of a spawned process)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def search_params(spec: Spec, value: int | None, sel=None):
    import faiss
    if spec.knob == "nprobe":
        return faiss.SearchParametersIVF(sel=sel, nprobe=value)
    if spec.knob == "efSearch":
        return faiss.SearchParametersHNSW(sel=sel, efSearch=value)
    return faiss.SearchParameters(sel=sel) if sel is not None else None


def rerank(base: np.ndarray, q: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """The k best of candidate ``ids`` by exact inner product with their float32 vectors."""
    ids = np.sort(ids[ids >= 0])
    scores = base[ids] @ q
    return ids[np.argsort(-scores)[:k]]


def exact_over(base: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """What the library does for a small filter: exact search over the allowed rows."""
    return rerank(base, q, allowed, k)


def goes_exact(spec: Spec, allowed: np.ndarray | None) -> bool:
    from searchkit.library import EXACT_FILTER_LIMIT
    return allowed is not None and spec.name != "flat" and len(allowed) <= EXACT_FILTER_LIMIT


def one_query(index, spec: Spec, value, base, q, r: int, sel=None, allowed=None):
    if goes_exact(spec, allowed):
        return exact_over(base, q[0], allowed, K)
    _, ids = index.search(q, max(K, r), params=search_params(spec, value, sel))
    return rerank(base, q[0], ids[0], K) if r else ids[0][ids[0] >= 0]


def measure(index, spec: Spec, value, r: int, base, queries, gt, n: int, n_queries: int,
            exact_cache: dict) -> Row:
    """One setting; a filter searched exactly (the same for every setting) is measured once."""
    import faiss
    nq = FLAT_QUERIES if spec.name == "flat" else n_queries
    lat, rec = [], []
    for i in range(nq):
        t = time.perf_counter()
        got = one_query(index, spec, value, base, queries[i:i + 1], r)
        lat.append(time.perf_counter() - t)
        rec.append(recall(got, gt["all"][i]))
    row = Row(spec.name, n, f"{spec.knob}={value}" if spec.knob else "-", r,
              float(np.median(lat) * 1e3), float(np.mean(rec)))
    for f in FILTERS:
        key = f"{int(f * 100)}%"
        allowed = allowed_ids(n, f)
        if goes_exact(spec, allowed) and key in exact_cache:
            row.filtered[key], row.filtered_ms[key] = exact_cache[key]
            continue
        sel = faiss.IDSelectorBatch(allowed)  # built once here; its cost is printed apart
        lat, rec = [], []
        for i in range(min(nq, n_queries // 2)):
            t = time.perf_counter()
            got = one_query(index, spec, value, base, queries[i:i + 1], r, sel, allowed)
            lat.append(time.perf_counter() - t)
            rec.append(recall(got, gt[key][i]))
        row.filtered[key] = float(np.mean(rec))
        row.filtered_ms[key] = float(np.median(lat) * 1e3)
        if goes_exact(spec, allowed):
            exact_cache[key] = row.filtered[key], row.filtered_ms[key]
    return row


def run_spec(name: str, path: str, n: int, n_queries: int, search: bool = True) -> Built:
    import faiss
    from threadpoolctl import threadpool_limits
    spec = SPECS[name]
    path = Path(path)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        index, nlist, coarse_s, train_s, add_s = build(spec, path, n)
    except RuntimeError as e:
        return Built(name, n, 0, 0, 0, 0, 0, 0, [], error=str(e).splitlines()[0])
    peak = peak_rss()
    with tempfile.TemporaryDirectory(dir=SAMPLES) as tmp:
        faiss.write_index(index, f"{tmp}/i.faiss")
        size = os.path.getsize(f"{tmp}/i.faiss")
    faiss.omp_set_num_threads(SEARCH_THREADS)
    threadpool_limits(SEARCH_THREADS)  # numpy's BLAS too (re-ranking, exact filtered search)
    base = np.load(path, mmap_mode="r")[:n]
    queries = np.load(SAMPLES / "queries.npy")
    gt = ground_truth(path, n, queries)
    rows, exact_cache = [], {}
    for value in (spec.values or (None,)) if search else ():
        for r in spec.reranks:
            try:
                rows.append(measure(index, spec, value, r, base, queries, gt, n, n_queries,
                                    exact_cache))
            except RuntimeError as e:  # e.g. a selector this index kind does not take
                return Built(name, n, nlist, coarse_s, train_s, add_s, peak, size, rows,
                             error=str(e).splitlines()[0])
    return Built(name, n, nlist if spec.knob == "nprobe" else 0, coarse_s, train_s, add_s, peak,
                 size, rows)


def selector_cost(n: int, fraction: float, repeat: int = 5) -> dict[str, float]:
    """ms to build an IDSelectorBatch (what the library builds per query) vs a bitmap."""
    import faiss
    allowed = allowed_ids(n, fraction)
    out = {}
    for name, make in (("batch", lambda: faiss.IDSelectorBatch(allowed)),
                       ("bitmap", lambda: _bitmap(n, allowed))):
        t = time.perf_counter()
        for _ in range(repeat):
            make()
        out[name] = (time.perf_counter() - t) / repeat * 1e3
    return out


def _bitmap(n: int, allowed: np.ndarray):
    import faiss
    mask = np.zeros(n, bool)
    mask[allowed] = True
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits)), bits


# ---- report -----------------------------------------------------------------------------------
def print_table(built: list[Built], exact_ms: dict[int, float]) -> None:
    print("| n | index | setting | +R | build s | peak RSS / f32 bytes | bytes/vec | p50 ms "
          "| x exact | R@10 | 1 % | 10 % | 50 % | filtered p50 ms (1/10/50 %) |")
    print("|" + "---|" * 14)
    for b in built:
        if b.error and not b.rows:
            print(f"| {b.n} | {b.index} | error: {b.error} |")
            continue
        f32 = b.n * 512 * 4
        for r in b.rows:
            fr = " | ".join(f"{r.filtered.get(k, float('nan')):.3f}" for k in ("1%", "10%", "50%"))
            fms = "/".join(f"{r.filtered_ms.get(k, float('nan')):.2f}" for k in ("1%", "10%", "50%"))
            print(f"| {b.n} | {b.index} | {r.setting} | {r.rerank or ''} | "
                  f"{b.coarse_s + b.train_s + b.add_s:.1f} | "
                  f"{f'{b.peak_rss / f32:.2f}' if b.peak_rss > 0 else '?'} | "
                  f"{b.index_bytes / b.n:.0f} | {r.p50_ms:.3f} | "
                  f"{exact_ms[b.n] / r.p50_ms:.0f} | {r.recall:.3f} | {fr} | {fms} |")
        if b.error:
            print(f"| {b.n} | {b.index} | stopped: {b.error} |")


def render(paths: list[Path]) -> None:
    built = [Built(**dict(b, rows=[Row(**r) for r in b["rows"]]))
             for path in paths for b in json.loads(path.read_text())]
    exact_ms = {b.n: b.rows[0].p50_ms for b in built if b.index == "flat" and b.rows}
    print_table(sorted(built, key=lambda b: b.n), exact_ms)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--only", nargs="+", choices=sorted(SPECS), default=sorted(SPECS))
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--build-only", action="store_true", help="build time and memory, no search")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "index_choice.json")
    p.add_argument("--render", type=Path, nargs="+", help="print the table of saved results")
    args = p.parse_args()
    if args.render:
        return render(args.render)
    path = base_path()
    specs = ["flat"] + [s for s in args.only if s != "flat"]
    print(f"vectors: {path} ({np.load(path, mmap_mode='r').shape}); {os.cpu_count()} cores, "
          f"shared with other jobs; searches on {SEARCH_THREADS} thread", flush=True)
    ctx = mp.get_context("spawn")
    built, exact_ms = [], {}
    queries = np.load(SAMPLES / "queries.npy")
    for n in args.sizes:
        ground_truth(path, n, queries)
        for f in FILTERS:
            print(f"n={n} filter {f:.0%}: selector build ms {selector_cost(n, f)}", flush=True)
        for name in specs:
            with ctx.Pool(1) as pool:
                b = pool.apply(run_spec, (name, str(path), n, args.queries, not args.build_only))
            built.append(b)
            if name == "flat" and b.rows:
                exact_ms[n] = b.rows[0].p50_ms
            print(f"n={n} {name}: build (k-means + train + add) {b.coarse_s:.1f}+{b.train_s:.1f}+"
                  f"{b.add_s:.1f} s, peak RSS "
                  f"{b.peak_rss / 1e9:.2f} GB, {b.index_bytes / n:.0f} B/vec "
                  f"{b.error}", flush=True)
            for r in b.rows:
                print(f"   {r.setting} +{r.rerank}: {r.p50_ms:.3f} ms "
                      f"({exact_ms[n] / r.p50_ms:.0f}x exact) R@10 {r.recall:.3f} "
                      f"filtered {r.filtered} ms {r.filtered_ms}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps([asdict(x) for x in built], indent=1))
    print()
    print_table(built, exact_ms)


if __name__ == "__main__":
    main()
