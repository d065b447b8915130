"""Where a single query's time goes on a kept bench_scale library, by nprobe and re-rank depth.

    python bench/bench_query_parts.py --work /tmp/searchkit-scale-bench --n 1000000 --queries 200
        [--nprobe 4,8,16] [--depth 10,20,50,100,200]

Reads a library and its exact answers that ``bench/bench_scale.py --keep`` left in ``--work``
(``lib_N``, ``written_N.npz``; ``--queries`` must be that run's). Prints the p50 of the whole
``SearchIndex.search`` (twice: cold, then warm), then for each nprobe and depth: the FAISS
candidate search alone, the exact re-rank of those candidates (``ann.rerank``, which reads
them from SQLite through ``Store.vectors_for``) and recall@10 against exact search. One
thread, one query at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_scale as bs  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--queries", type=int, required=True)
    ap.add_argument("--nprobe", type=ints, default=[4, 8, 16])
    ap.add_argument("--depth", type=ints, default=[10, 20, 50, 100, 200])
    args = ap.parse_args()
    import faiss

    from searchkit import ann
    from searchkit.library import Library
    from searchkit.local_engine import LocalEngine
    queries = bs.mixture().sample(args.queries, seed=99)
    _, tops = bs.load_written(args.work / f"written_{args.n}.npz", args.queries)
    lib = Library(LocalEngine(args.work / f"lib_{args.n}"))
    faiss.omp_set_num_threads(1)
    index = lib.search_index()
    ids = lib.engine.ok_ids()[:args.n]
    truth = [set(t.tolist()) for t in tops[None].answers(ids)]
    print(f"{index.spec}; {index.pending} rows changed since the index was saved")

    def p50(fn):
        lat, out = [], []
        for q in queries:
            t = time.perf_counter()
            out.append(fn(q))
            lat.append(time.perf_counter() - t)
        return float(np.median(lat) * 1e3), out

    def recall(found) -> float:
        return float(np.mean([len(set(f.tolist()) & t) / bs.K for f, t in zip(found, truth)]))

    for label in ("cold", "warm"):
        ms, found = p50(lambda q: index.search(q, bs.K)[1])
        print(f"SearchIndex.search ({label}): p50 {ms:.3f} ms, recall@10 {recall(found):.3f}")
    print("\n| nprobe | depth | FAISS ms | re-rank ms | R@10 |\n|---|---|---|---|---|")
    for nprobe in args.nprobe:
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        if isinstance(index.cpu, faiss.IndexPreTransform):
            params = faiss.SearchParametersPreTransform(index_params=params)
        for depth in args.depth:
            ms_f, cands = p50(lambda q: index.cpu.search(q.reshape(1, -1), depth,
                                                         params=params)[1][0])
            it = iter(cands)
            ms_r, found = p50(lambda q: ann.rerank(q, bs.K, next(it), index.fetch)[1])
            print(f"| {nprobe} | {depth} | {ms_f:.3f} | {ms_r:.3f} | {recall(found):.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
