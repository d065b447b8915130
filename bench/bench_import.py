"""`searchkit import` of precomputed embeddings: rows/s and peak memory, into a library whose
rows must be kept, then the repeated (idempotent) import.

    nice -n 10 python bench/bench_import.py [--rows 1000000] [--dim 512] [--existing 10000]
                                             [--with-index] [--keep DIR]

Generates a Parquet file of ``--rows`` random unit vectors (paths /cluster/NNN/img_N.jpg, with
width/height/format/content_hash columns) in a child process, makes a library bound to a
synthetic model holding ``--existing`` rows, and times in one process: the import (read,
validate, store; the index left to the next search), the index update after it (only with
``--with-index``: today a full rebuild of every stored vector, see issue 12's incremental index),
and the same import again (every row unchanged). Prints rows/s and the peak RSS of the process.
The issue's goal: 1M rows in at most 2 minutes, with RAM under 6 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from searchkit import Library  # noqa: E402
from searchkit.parquet_io import EmbeddingsWriter, FileModel  # noqa: E402

MODEL = FileModel("bench-synthetic", "f" * 32)
CHUNK = 50_000


def generate(path: Path, rows: int, dim: int, first: int = 0, seed: int = 0) -> None:
    """A Parquet file of ``rows`` random unit vectors, written ``CHUNK`` rows at a time."""
    rng = np.random.default_rng(seed)
    with EmbeddingsWriter(path, dim, MODEL) as out:
        for start in range(first, first + rows, CHUNK):
            n = min(CHUNK, first + rows - start)
            v = rng.standard_normal((n, dim), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            ids = range(start, start + n)
            out.write([f"/cluster/{i // 1000:04d}/img_{i}.jpg" for i in ids], v,
                      {"width": [640] * n, "height": [480] * n, "format": ["JPEG"] * n,
                       "content_hash": [f"{i:032x}" for i in ids]})


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(what: str, fn):
    """Wall seconds (what the goal counts) and this process's CPU seconds (what other jobs on
    a shared machine do not inflate)."""
    t, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    seconds = time.perf_counter() - t
    print(f"{what}: {seconds:.1f} s wall, {cpu_seconds() - cpu:.1f} s CPU, peak RSS "
          f"{peak_rss_gb():.2f} GB", flush=True)
    return result, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--existing", type=int, default=10_000)
    ap.add_argument("--with-index", action="store_true",
                    help="also time the index update after the import")
    ap.add_argument("--generate", nargs=4, metavar=("PATH", "ROWS", "DIM", "FIRST"),
                    help=argparse.SUPPRESS)  # the child process that writes a file
    ap.add_argument("--keep", type=Path, help="work here and keep the files")
    args = ap.parse_args()
    if args.generate:
        path, rows, dim, first = args.generate
        generate(Path(path), int(rows), int(dim), int(first), seed=int(first))
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-import-"))
    work.mkdir(parents=True, exist_ok=True)
    big, small = work / "embeddings.parquet", work / "existing.parquet"
    for path, rows, first in ((big, args.rows, 0), (small, args.existing, 10 ** 9)):
        if not path.exists():  # generated apart, so that the peak RSS is the import's
            subprocess.run([sys.executable, __file__, "--generate", str(path), str(rows),
                            str(args.dim), str(first)], check=True)
    print(f"file: {args.rows} rows x {args.dim} float32, {big.stat().st_size / 2**30:.2f} GiB")
    lib_dir = work / "lib"
    lib = Library.open_for_import(lib_dir, small)  # bound to the file's (synthetic) model
    lib.import_parquet(small, update_index=False)
    before = lib.store.counts().get("ok", 0)
    report, seconds = timed(f"import {args.rows} rows into a library of {before}",
                            lambda: lib.import_parquet(big, update_index=False))
    print(f"  {args.rows / seconds:,.0f} rows/s; added {report.added}, updated "
          f"{report.updated}, unchanged {report.unchanged}, bad {report.bad}")
    after = lib.store.counts().get("ok", 0)
    assert after == before + report.added, (before, after)
    print(f"  library rows: {before} before, {after} after (none lost)")
    if args.with_index:
        timed("index update after the import", lib.search_index)
    again, seconds = timed("the same import again",
                           lambda: lib.import_parquet(big, update_index=False))
    print(f"  {args.rows / seconds:,.0f} rows/s; unchanged {again.unchanged}, "
          f"added {again.added}, updated {again.updated}")
    print(f"library size: {(lib_dir / 'library.db').stat().st_size / 2**30:.2f} GiB "
          f"(+ WAL {(lib_dir / 'library.db-wal').stat().st_size / 2**30:.2f} GiB)"
          if (lib_dir / "library.db-wal").exists() else "")
    if not args.keep:
        import shutil
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
