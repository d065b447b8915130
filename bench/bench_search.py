"""Search latency split into encode / FAISS / SQLite at 10k and 100k rows, and flat vs IVF.

    python bench/bench_search.py [--model tiny|b32|NAME] [--sizes 10000 100000] [--queries 200]

Rows are synthetic (clustered unit vectors, the shape of real embedding collections) written
through the store, so the numbers are about the engine, not a model. For each size it prints
the median and p99 of each stage of ``Library.search`` for text queries, then exact (flat) vs
IVF: FAISS time per query and IVF recall@10 against exact — the data behind IVF_THRESHOLD.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchkit import Library, Query  # noqa: E402
from searchkit import index as fi  # noqa: E402
from searchkit.encoders import load_encoder  # noqa: E402
from searchkit.store import STATUS_OK, File, Store  # noqa: E402

WORDS = ["red", "bicycle", "wall", "dog", "beach", "sunset", "city", "cat", "mountain", "car",
         "tree", "snow", "boat", "flower", "house", "child", "food", "night", "river", "bird"]


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(8, n // 200), dim))
    v = centers[rng.integers(0, len(centers), n)] + 0.6 * rng.standard_normal((n, dim))
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill(store: Store, vectors: np.ndarray) -> None:
    now = time.time()
    rows = [dict(path=f"/photos/{i // 1000:03d}/img_{i:07d}.jpg", size=100_000 + i,
                 mtime_ns=int(now * 1e9), content_hash=f"{i:032x}", width=640 + i % 7,
                 height=480, format="JPEG", taken_at=None, camera_make=None, camera_model=None,
                 status=STATUS_OK, reason=None, vector=v.tobytes(), indexed_at=now)
            for i, v in enumerate(vectors)]
    with store.session() as s:
        for i in range(0, len(rows), 5000):
            s.execute(insert(File), rows[i:i + 5000])
        Store.bump_version(s)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def bench_library(enc, n: int, n_queries: int, work: Path) -> None:
    lib = Library.open(work / f"lib{n}", encoder=enc, create=True)
    fill(lib.store, clustered(n, enc.dim))
    t = time.perf_counter()
    lib.search_index()
    build = time.perf_counter() - t
    rng = np.random.default_rng(1)
    stages = {"encode": [], "faiss": [], "sqlite": [], "total": []}
    for i in range(n_queries + 5):
        text = " ".join(rng.choice(WORDS, 3))
        t = time.perf_counter()
        result = lib.search_with_timings(Query.text(f"a photo of a {text}"), k=10)
        total = time.perf_counter() - t
        assert len(result.hits) == 10
        if i < 5:
            continue  # warm-up
        lt = result.timings
        for k, v in (("encode", lt.encode), ("faiss", lt.faiss), ("sqlite", lt.sqlite),
                     ("total", total)):
            stages[k].append(v)
    kind = lib.search_index().kind
    print(f"{n:>7} rows ({kind} index, built/loaded in {build:.2f}s), {n_queries} text queries:")
    for k, v in stages.items():
        print(f"    {k:<7} p50 {pct(v, 50):8.2f} ms   p99 {pct(v, 99):8.2f} ms")
    share = np.median(stages["encode"]) / np.median(stages["total"])
    print(f"    encoder share of the median query: {share:.0%}")


def bench_flat_vs_ivf(n: int, dim: int, n_queries: int) -> None:
    vecs = clustered(n, dim, seed=2)
    ids = np.arange(n, dtype=np.int64)
    t = time.perf_counter()
    flat = fi.SearchIndex(fi.build(ids, vecs, kind="flat"), fi.Stamp(0, n, dim, "", "flat"))
    t_flat = time.perf_counter() - t
    t = time.perf_counter()
    ivf = fi.SearchIndex(fi.build(ids, vecs, kind="ivf"), fi.Stamp(0, n, dim, "", "ivf"))
    t_ivf = time.perf_counter() - t
    rng = np.random.default_rng(3)
    # a query is near the data but not on it: a stored vector plus noise of the same norm
    noise = rng.standard_normal((n_queries, dim)).astype(np.float32) / np.sqrt(dim)
    qs = vecs[rng.choice(n, n_queries, replace=False)] + noise
    times = {"flat": [], "ivf": []}
    recall = []
    for q in qs:
        q = q / np.linalg.norm(q)
        t = time.perf_counter()
        _, a = flat.search(q, 10)
        times["flat"].append(time.perf_counter() - t)
        t = time.perf_counter()
        _, b = ivf.search(q, 10)
        times["ivf"].append(time.perf_counter() - t)
        recall.append(len(set(a) & set(b)) / 10)
    f50, i50 = pct(times["flat"], 50), pct(times["ivf"], 50)
    print(f"{n:>7} x {dim}: flat p50 {f50:.3f} ms (build {t_flat:.2f}s) | ivf p50 {i50:.3f} ms "
          f"(build {t_ivf:.2f}s) | flat/ivf {f50 / i50:.1f}x | ivf recall@10 {np.mean(recall):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=512, help="dimension for flat vs IVF")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from searchkit.testing import make_tiny_clip
        src = {"tiny": lambda: make_tiny_clip(work / "tiny"),
               "b32": lambda: make_tiny_clip(work / "b32", full_size=True)}.get(args.model)
        enc = load_encoder(str(src()) if src else args.model)
        print(f"model {args.model} (dim {enc.dim}); faiss on {lib_device()}")
        for n in args.sizes:
            bench_library(enc, n, args.queries, work)
        print("exact vs approximate (FAISS only):")
        for n in sorted(set(args.sizes) | {25_000, 50_000}):
            bench_flat_vs_ivf(n, args.dim, args.queries)


def lib_device() -> str:
    return "gpu" if fi.gpu_count() else "cpu"


if __name__ == "__main__":
    main()
