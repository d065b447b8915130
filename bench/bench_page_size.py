"""SQLite page size of a library: bytes per image and read speed (issue 12).

    python bench/bench_page_size.py [--rows 200000] [--sizes 4096,8192,16384] [--reads 300]

For each page size, a library's store (``searchkit.store.PAGE_SIZE`` set before it is created)
gets ``--rows`` rows of 512-d float32 vectors written through ``Store.upsert_rows`` (the import
path), then: SQLite bytes per row once the write-ahead log is checkpointed; the p50 time of
``Store.vectors_for`` on 50 random ids (a re-rank's read) and on 1 id; and the time of a full
``Store.ok_vectors`` scan (an index build's read). Reads are warm (page cache): the machine is
shared, so its caches are not dropped.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchkit import store as store_module  # noqa: E402
from searchkit.store import STATUS_OK, FileRow, Store  # noqa: E402

DIM = 512
CHUNK = 20_000


def write(directory: Path, rows: int) -> Store:
    store = Store(directory)
    store.create("bench", "f" * 16, DIM)
    rng, now = np.random.default_rng(0), time.time()
    for start in range(0, rows, CHUNK):
        v = rng.standard_normal((min(CHUNK, rows - start), DIM)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        store.upsert_rows([
            FileRow(f"/photos/{(start + i) // 1000:05d}/img_{start + i:08d}.jpg", 100_000, 1,
                    f"{start + i:032x}", 640, 480, "JPEG", None, None, None, STATUS_OK, None,
                    None, x.tobytes(), now) for i, x in enumerate(v)])
    return store


def disk(store: Store) -> tuple[int, int]:
    with sqlite3.connect(store.path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = c.execute("PRAGMA page_size").fetchone()[0]
    return sum(p.stat().st_size for p in store.directory.glob(store.path.name + "*")), page


def p50_ms(fn, reads: int) -> float:
    lat = []
    for _ in range(reads):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    return float(np.median(lat) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--sizes", default="4096,8192,16384")
    ap.add_argument("--reads", type=int, default=300)
    args = ap.parse_args()
    print(f"{args.rows:,} rows of {DIM}-d float32; warm reads, p50 of {args.reads}\n")
    print("| page size | bytes/row (SQLite) | vectors_for 50 ids ms | vectors_for 1 id ms "
          "| vectors_of 50 ids ms | full scan s |\n|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        directory = Path(tempfile.mkdtemp(prefix=f"page{size}-"))
        try:
            store_module.PAGE_SIZE = size
            store = write(directory, args.rows)
            nbytes, page = disk(store)
            rng = np.random.default_rng(1)
            ids = store.ok_ids()
            picks = iter([rng.choice(ids, 50, replace=False) for _ in range(3 * args.reads)])
            fast = p50_ms(lambda: store.vectors_for(next(picks)), args.reads)
            one = p50_ms(lambda: store.vectors_for(next(picks)[:1]), args.reads)
            orm = p50_ms(lambda: store.vectors_of(np.sort(next(picks))), args.reads)
            t = time.perf_counter()
            for _ in store.ok_vectors():
                pass
            scan = time.perf_counter() - t
            print(f"| {page} | {nbytes / args.rows:,.0f} | {fast:.3f} | {one:.3f} | {orm:.3f} "
                  f"| {scan:.2f} |", flush=True)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
