"""Index maintenance after a small change to a large library: incremental vs full rebuild.

    python bench/bench_incremental.py [--rows 100000] [--add 1000] [--dim 512]

Synthetic unit vectors written straight through the store (no model). Prints the seconds of:
the first build, ``update_index`` after adding ``--add`` rows (the delta stays in the change
log), a fresh process's first search (load, memory-mapped when large, plus the delta), a forced
fold of the delta into the saved index, and a full rebuild from every stored vector.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchkit import index as fi  # noqa: E402
from searchkit.library import Library  # noqa: E402
from searchkit.local_engine import LocalEngine  # noqa: E402
from searchkit.store import STATUS_OK, Changes, FileRow, Store  # noqa: E402


def unit(n: int, dim: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def add(store: Store, n: int, dim: int, seed: int, chunk: int = 20_000) -> None:
    now = time.time()
    for start in range(0, n, chunk):
        vecs = unit(min(chunk, n - start), dim, seed * 1000 + start)
        store.apply(Changes(upserts=[
            FileRow(f"/p/{seed}/{start + i:08d}.jpg", 1, 1, None, 1, 1, "JPEG", None, None,
                    None, STATUS_OK, None, None, v.tobytes(), now)
            for i, v in enumerate(vecs)]))


def timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{label:<48} {time.perf_counter() - t:8.2f} s", flush=True)
    return out


def open_library(directory: Path) -> Library:
    return Library(LocalEngine(directory))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--add", type=int, default=1_000)
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        store = Store(directory)
        store.create("bench", "synthetic", args.dim)
        add(store, args.rows, args.dim, seed=1)
        lib = open_library(directory)
        built = timed(f"first build ({args.rows} rows)", lambda: lib.update_index())
        print(f"  {built.action}, {fi.read_stamp(directory).stamp.kind}, "
              f"{(directory / fi.INDEX_FILE).stat().st_size / 1e6:.0f} MB")
        add(store, args.add, args.dim, seed=2)
        update = timed(f"update_index after adding {args.add} rows",
                       lambda: open_library(directory).update_index())
        print(f"  {update.action}, {update.changed} changed rows")
        q = unit(1, args.dim, 7)[0]
        fresh = open_library(directory)
        index = timed("fresh process: first search (load + delta)",
                      lambda: (fresh.search_index(), fresh.search_index().search(q, 10))[0])
        print(f"  {len(index)} vectors, {index.pending} from the delta")
        timed("fresh process: next search", lambda: index.search(q, 10))
        fi.FOLD_MIN_ROWS, fi.FOLD_FRACTION = 0, 0.0
        fold = timed("fold the delta into the saved index",
                     lambda: open_library(directory).update_index())
        print(f"  {fold.action}")
        timed("full rebuild from every stored vector",
              lambda: open_library(directory).update_index(rebuild=True))


if __name__ == "__main__":
    main()
