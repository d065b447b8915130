"""`searchkit dupes` at scale: seconds and peak memory at 100k and 1M rows, and what it finds.

    nice -n 10 python bench/bench_dupes_scale.py [--sizes 100000 1000000] [--nprobe 8]
                                                 [--work /tmp/searchkit-dupes-bench] [--keep]

For each size a library gets that many rows written straight through the store
(``Store.upsert_rows``, as ``searchkit import`` writes them): realistic 512-d vectors (a mixture
fitted to searchkit-lite embeddings of the shared align images, ``bench/realistic_vectors.py``;
the 1M file ``realistic_vectors.py sample`` writes is reused when present), into which it plants

* near-duplicates: for 1 % of the rows, a copy at a known cosine drawn from [0.99, 0.999] (at or
  above the default threshold: each must be found) and, for another 1 %, one at [0.95, 0.985]
  (below it: none may join its source's group, unless through another path);
* exact copies: 0.5 % of the rows again under another path with the same content hash.

Then ``Library.dupes()`` (defaults: threshold 0.99, k 16, keep largest) runs in a fresh process
(wall seconds by phase, peak RSS of that process), and the parent checks the groups: planted
pairs found, planted pairs below the threshold wrongly grouped, and, for a sample of rows, the
k-NN graph against exact search (every pair at or above the threshold that exact search finds
for those rows must be in one group). The machine is shared (2 cores): read the seconds as
an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DIM = 512
CHUNK = 50_000
NEAR_FRACTION = 0.01          # rows that get a near copy at or above the threshold
BELOW_FRACTION = 0.01         # rows that get a copy below it
COPY_FRACTION = 0.005         # rows stored again under another path (same content hash)
NEAR_COS = (0.99, 0.999)
BELOW_COS = (0.95, 0.985)
CHECK_ROWS = 2_000            # rows whose exact neighbours are compared with the groups
SHARED_1M = Path("/tmp/searchkit-bench/base_1000000.npy")  # realistic_vectors.py sample


# ---- the planted library ---------------------------------------------------------------------
@dataclass
class Planted:
    vectors: np.ndarray       # every row's vector, row i has path path(i)
    hashes: list[str]
    near: np.ndarray          # (m, 2) row pairs at or above the threshold
    below: np.ndarray         # (m, 2) row pairs below it
    copies: np.ndarray        # (m, 2) row pairs with one content


def path(i: int) -> str:
    return f"/photos/{i // 1000:05d}/img_{i:08d}.jpg"


def base_vectors(n: int) -> np.ndarray:
    if SHARED_1M.exists() and n <= 1_000_000:
        return np.load(SHARED_1M, mmap_mode="r")[:n]
    import realistic_vectors as rv
    return rv.fit_mixture(rv.real_vectors()).sample(n, seed=7)


def near_copy(v: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(v.shape[0]).astype(np.float32)
    noise -= (noise @ v) * v
    noise /= np.linalg.norm(noise)
    out = cos * v + np.sqrt(1 - cos * cos) * noise
    return (out / np.linalg.norm(out)).astype(np.float32)


def plant(n: int, seed: int = 0) -> Planted:
    """``n`` rows in all: base rows, then near copies, copies below the threshold, exact copies."""
    rng = np.random.default_rng(seed)
    n_near, n_below, n_copy = (int(n * f) for f in (NEAR_FRACTION, BELOW_FRACTION,
                                                    COPY_FRACTION))
    n_base = n - n_near - n_below - n_copy
    base = np.asarray(base_vectors(n_base), np.float32)
    sources = rng.choice(n_base, n_near + n_below + n_copy, replace=False)
    near_src, below_src = sources[:n_near], sources[n_near:n_near + n_below]
    copy_src = sources[n_near + n_below:]
    extra = [near_copy(base[s], rng.uniform(*NEAR_COS), rng) for s in near_src]
    extra += [near_copy(base[s], rng.uniform(*BELOW_COS), rng) for s in below_src]
    vectors = np.concatenate([base, np.asarray(extra, np.float32).reshape(-1, DIM),
                              base[copy_src]])
    hashes = [f"{i:032x}" for i in range(n_base + n_near + n_below)] + \
        [f"{s:032x}" for s in copy_src]
    first = n_base
    near = np.stack([near_src, np.arange(first, first + n_near)], 1)
    below = np.stack([below_src, np.arange(first + n_near, first + n_near + n_below)], 1)
    copies = np.stack([copy_src, np.arange(n - n_copy, n)], 1)
    return Planted(vectors, hashes, near, below, copies)


def write_library(directory: Path, planted: Planted) -> float:
    """Rows straight through the store; seconds spent writing them."""
    from searchkit.store import STATUS_OK, FileRow, Store
    directory.mkdir(parents=True)
    store = Store(directory)
    store.create("searchkit-lite", "bench-dupes", DIM)
    t, now = time.perf_counter(), time.time()
    rng = np.random.default_rng(1)
    sizes = rng.integers(50_000, 5_000_000, len(planted.vectors))
    for start in range(0, len(planted.vectors), CHUNK):
        stop = min(start + CHUNK, len(planted.vectors))
        store.upsert_rows([FileRow(path(i), int(sizes[i]), int((now - i) * 1e9),
                                   planted.hashes[i], 640, 480, "JPEG", None, None, None,
                                   STATUS_OK, None, None, planted.vectors[i].tobytes(), now)
                           for i in range(start, stop)])
    return time.perf_counter() - t


# ---- the measured run (a fresh process) ------------------------------------------------------
def run_dupes(directory: str, nprobe: int, out: str) -> None:
    from searchkit import Library, dupes
    dupes.NPROBE = nprobe
    t = time.perf_counter()
    report = Library.open(directory).dupes()
    wall = time.perf_counter() - t
    groups = [[int(Path(m.path).stem.split("_")[1]) for m in g.members] for g in report.groups]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    Path(out).write_text(json.dumps(dict(
        wall=wall, cpu=usage.ru_utime + usage.ru_stime, timings=asdict(report.timings),
        index=report.index, images=report.images,
        compared=report.compared, groups_total=report.groups_total,
        files_in_groups=report.files_in_groups, groups=groups,
        peak_rss=usage.ru_maxrss * 1024)))


# ---- checking the groups ---------------------------------------------------------------------
def group_of(groups: list[list[int]], n: int) -> np.ndarray:
    g = np.full(n, -1, np.int64)
    for k, members in enumerate(groups):
        g[members] = k
    return g


def together(g: np.ndarray, pairs: np.ndarray) -> float:
    if not len(pairs):
        return float("nan")
    a, b = g[pairs[:, 0]], g[pairs[:, 1]]
    return float(np.mean((a >= 0) & (a == b)))


def exact_check(planted: Planted, g: np.ndarray, threshold: float, seed: int = 2) -> dict:
    """For CHECK_ROWS random rows: every other row at or above ``threshold`` by exact search
    (a different content) must share the row's group."""
    import faiss
    x = planted.vectors
    rows = np.random.default_rng(seed).choice(len(x), min(CHECK_ROWS, len(x)), replace=False)
    scores, nbrs = faiss.knn(x[rows], x, 64, faiss.METRIC_INNER_PRODUCT)
    found = total = 0
    for r, s, nb in zip(rows, scores, nbrs):
        for score, j in zip(s, nb):
            if j == r or score < threshold or planted.hashes[j] == planted.hashes[r]:
                continue
            total += 1
            found += int(g[r] >= 0 and g[r] == g[j])
    return dict(rows=len(rows), pairs=total, found=found)


@dataclass
class Result:
    n: int
    write_s: float
    wall_s: float
    cpu_s: float
    read_s: float
    graph_s: float
    group_s: float
    peak_rss_gb: float
    vector_gb: float
    index: str
    groups: int
    files_in_groups: int
    near_found: float
    below_grouped: float
    copies_grouped: float
    exact_pairs: int
    exact_found: int
    nprobe: int


def measure(n: int, work: Path, nprobe: int, keep: bool) -> Result:
    from searchkit.dupes import DEFAULT_THRESHOLD
    directory = work / f"lib{n}"
    planted = plant(n)
    if directory.exists() and not keep:
        shutil.rmtree(directory)
    write_s = 0.0 if directory.exists() else write_library(directory, planted)
    out = work / f"groups{n}.json"
    subprocess.run(["nice", "-n", "10", sys.executable, __file__, "--run", str(directory),
                    "--nprobe", str(nprobe), "--out", str(out)], check=True)
    r = json.loads(out.read_text())
    g = group_of(r["groups"], len(planted.vectors))
    check = exact_check(planted, g, DEFAULT_THRESHOLD)
    t = r["timings"]
    return Result(n=n, write_s=write_s, wall_s=r["wall"], cpu_s=r["cpu"], read_s=t["read"],
                  graph_s=t["graph"], group_s=t["group"], peak_rss_gb=r["peak_rss"] / 2**30,
                  vector_gb=planted.vectors.nbytes / 2**30, index=r["index"],
                  groups=r["groups_total"], files_in_groups=r["files_in_groups"],
                  near_found=together(g, planted.near), below_grouped=together(g, planted.below),
                  copies_grouped=together(g, planted.copies), exact_pairs=check["pairs"],
                  exact_found=check["found"], nprobe=nprobe)


COLUMNS = ("rows", "dupes wall s", "CPU s (whole process)", "read s", "k-NN graph s",
           "group s", "peak RSS GB", "float32 vectors GB", "index", "groups", "files in groups",
           "planted >= 0.99 found", "planted 0.95-0.985 grouped", "exact copies grouped",
           "exact-search pairs >= 0.99 found")


def report(results: list[Result]) -> None:
    print("\n| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    for r in results:
        cells = [f"{r.n:,}", f"{r.wall_s:.1f}", f"{r.cpu_s:.1f}", f"{r.read_s:.1f}",
                 f"{r.graph_s:.1f}", f"{r.group_s:.1f}", f"{r.peak_rss_gb:.2f}",
                 f"{r.vector_gb:.2f}", f"{r.index} (nprobe {r.nprobe})", f"{r.groups:,}",
                 f"{r.files_in_groups:,}", f"{r.near_found:.4f}", f"{r.below_grouped:.4f}",
                 f"{r.copies_grouped:.4f}", f"{r.exact_found}/{r.exact_pairs}"]
        print("| " + " | ".join(cells) + " |")
    print("\nwrite s (not part of dupes): "
          + ", ".join(f"{r.n:,}: {r.write_s:.0f}" for r in results))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/searchkit-dupes-bench"))
    p.add_argument("--keep", action="store_true", help="reuse libraries written before")
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    from searchkit.dupes import NPROBE
    nprobe = args.nprobe or NPROBE
    if args.run:
        run_dupes(args.run, nprobe, args.out)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores; nprobe {nprobe}", flush=True)
    results = []
    for n in args.sizes:
        results.append(measure(n, args.work, nprobe, args.keep))
        print(asdict(results[-1]), flush=True)
    report(results)


if __name__ == "__main__":
    main()
