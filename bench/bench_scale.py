"""A million images on one machine: the numbers of issue 12, as ratios from one run.

    python bench/bench_scale.py [--sizes 1000,100000,1000000] [--10m] [--queries 200]
                                [--work /tmp/searchkit-scale-bench] [--keep]

For each size, a library bound to ``searchkit-lite`` gets that many rows written straight
through the store (``Store.upsert_rows``, as ``searchkit import`` writes them), their vectors
drawn from a mixture fitted to searchkit-lite embeddings of the shared align images and their
augmented views (``bench/realistic_vectors.py``; never CIFAR). Then it measures:

* the full index build from the store (``Library.update_index(rebuild=True)``) in a fresh
  process: seconds and peak RSS against the float32 vector bytes;
* fresh ``searchkit search`` and ``searchkit status`` processes: median seconds, peak RSS;
* recall@10 of the library's index (``SearchIndex.search``, re-ranking included) against
  exact search, and single-query speed against exact search over the float32 vectors in
  memory (one thread each), unfiltered and with filters keeping 1 %, 10 %, 50 % of the rows;
* disk bytes per image (SQLite + index);
* on the largest library: index maintenance after adding 1,000 rows
  (``Library.update_index()`` in a fresh process) and which action it took.

Then the targets of issue 12 at the largest size, each with its ratio. The machine is shared
(2 cores): read the ratios, not the seconds. ``--10m`` adds a 10M library (about 25 GB of disk
and an hour of build; see bench/results/scale.md for what ran).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODEL = "searchkit-lite"
K = 10
CHUNK = 50_000                 # rows written / sampled at a time
FILTERS = (0.01, 0.10, 0.50)
ADDED = 1_000
CLI_RUNS = 3                   # timed fresh processes per command (after one warm-up)
EXACT_QUERIES = 50             # exact single-query timings (slow at 1M)
TARGETS = {"search time x1k": 1.5, "search RSS GB": 1.5, "status time x1k": 1.5,
           "+1000 rows s": 10.0, "build s": 120.0, "build RSS / f32": 2.0,
           "recall@10": 0.95, "speed x exact": 200.0, "filtered recall": 0.95}


@dataclass
class Measured:
    n: int
    write_s: float = 0.0
    build_s: float = 0.0
    build_rss: int = 0
    index_kind: str = ""
    search_s: float = 0.0
    search_rss: int = 0
    status_s: float = 0.0
    status_rss: int = 0
    recall: float = 0.0
    ann_ms: float = 0.0
    exact_ms: float = 0.0
    filtered: dict[str, float] = field(default_factory=dict)
    filtered_ms: dict[str, float] = field(default_factory=dict)
    sqlite_bytes: int = 0
    index_bytes: int = 0
    add_s: float = 0.0
    add_action: str = ""
    ann: dict = field(default_factory=dict)   # searchkit.ann's choice, measured the same way


# ---- vectors ----------------------------------------------------------------------------------
def mixture():
    import realistic_vectors as rv
    return rv.fit_mixture(rv.real_vectors())


def vectors_file(work: Path, n: int, mix) -> Path:
    """n realistic vectors in a .npy file (sampled once, chunk by chunk)."""
    path = work / f"vectors_{n}.npy"
    if path.exists():
        return path
    out = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), "w+", np.float32, (n, 512))
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        out[start:stop] = mix.sample(stop - start, seed=1_000 + start // CHUNK)
    out.flush()
    del out
    os.replace(path.with_suffix(".tmp.npy"), path)
    return path


# ---- the library ------------------------------------------------------------------------------
def rows(start: int, vectors: np.ndarray, now: float) -> list:
    from searchkit.store import STATUS_OK, FileRow
    return [FileRow(f"/photos/{(start + i) // 1000:05d}/img_{start + i:08d}.jpg", 100_000, 1,
                    f"{start + i:032x}", 640, 480, "JPEG", None, None, None, STATUS_OK, None,
                    None, v.tobytes(), now) for i, v in enumerate(vectors)]


def make_library(directory: Path, vectors: np.ndarray, encoder) -> float:
    """A library of ``vectors`` bound to the model; seconds spent writing the rows."""
    from searchkit.library import Library
    lib = Library.open(directory, model=MODEL, create=True, encoder=encoder)
    lib.prepare_fast_queries()  # what an index run does: queries skip torch
    t, now = time.perf_counter(), time.time()
    for start in range(0, len(vectors), CHUNK):
        lib.store.upsert_rows(rows(start, vectors[start:start + CHUNK], now))
    return time.perf_counter() - t


def add_rows(directory: Path, vectors: np.ndarray, first: int) -> None:
    from searchkit.store import Store
    Store(directory).upsert_rows(rows(first, vectors, time.time()))


# ---- fresh processes --------------------------------------------------------------------------
# A small parent for each measured process: a child's peak RSS (``ru_maxrss``) starts from
# its parent's at fork, so this bench (hundreds of MB) must not fork them itself.
PEAK_RSS_WRAPPER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nPEAK_RSS_KB {usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def child_rss(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes, the process's own) and stdout of one fresh process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, *cmd], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-800:]}")
    peak = int(p.stderr.strip().splitlines()[-1].split()[-1])
    return wall, peak * 1024, p.stdout


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "searchkit.cli.main", *args]


def median_run(cmd: list[str]) -> tuple[float, int]:
    child_rss(cmd)  # warm-up: page cache, the model's exported query side
    runs = [child_rss(cmd) for _ in range(CLI_RUNS)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def step(name: str, directory: Path) -> dict:
    """One library step in a fresh process (this file, ``--step``): its JSON."""
    wall, rss, out = child_rss([sys.executable, __file__, "--step", name, str(directory)])
    return dict(json.loads(out.strip().splitlines()[-1]), wall=wall, rss=rss)


def do_step(name: str, directory: str) -> None:
    """Run in the child; prints one JSON line. ``build``: the library's full rebuild;
    ``update``: its incremental update; ``build-ann``: :mod:`searchkit.ann`'s choice built
    from the store (a training sample read by id, then every row in chunks); ``search-ann``:
    a fresh process that maps that index and answers one re-ranked query."""
    from searchkit import index as fi
    from searchkit.library import Library
    from searchkit.store import Store
    directory = Path(directory)
    store = Store(directory)
    t = time.perf_counter()
    if name == "build-ann":
        spec = build_ann(store, directory)
        print(json.dumps({"seconds": time.perf_counter() - t, "kind": spec.factory(512)}))
        return
    if name == "search-ann":
        index, spec = load_ann(directory)
        q = store.vectors_of(np.array([1], np.int64)).vectors[0]
        _, ids = ann_search(index, spec, store, q, K)
        print(json.dumps({"seconds": time.perf_counter() - t, "found": len(ids)}))
        return
    lib = Library(directory, store, store.info())
    update = lib.update_index(rebuild=name == "build")
    seconds = time.perf_counter() - t
    stamp = fi.read_stamp(directory).stamp
    print(json.dumps({"seconds": seconds, "action": str(getattr(update, "action", update)),
                      "kind": stamp.kind}))


# ---- searchkit.ann's choice, next to the library's index ---------------------------------------
ANN_FILE, ANN_SPEC = "ann.faiss", "ann.json"


def build_ann(store, directory: Path):
    from searchkit import ann
    ids = np.asarray(_ok_ids(store), np.int64)
    spec = ann.choose(len(ids), 512)
    rng = np.random.default_rng(0)
    sample = None
    if spec.train_rows:
        sample = store.vectors_of(np.sort(rng.choice(ids, spec.train_rows, replace=False)))
        sample = sample.vectors
    chunks = ((np.array([r[0] for r in rows], np.int64),
               np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(-1, 512))
              for rows in store.ok_rows(CHUNK))
    index = ann.build(spec, 512, sample, chunks)
    import faiss
    faiss.write_index(index, str(directory / ANN_FILE))
    (directory / ANN_SPEC).write_text(json.dumps(spec.record()))
    return spec


def load_ann(directory: Path):
    import faiss

    from searchkit import ann
    spec = ann.IndexSpec.of(json.loads((directory / ANN_SPEC).read_text()))
    return faiss.read_index(str(directory / ANN_FILE), ann.read_flags(spec, mmap=True)), spec


def ann_search(index, spec, store, q: np.ndarray, k: int, allowed=None):
    """:func:`searchkit.ann.search`, re-ranking from SQLite by primary key: one prepared
    statement on a plain sqlite3 connection (``Store.vectors_of`` goes through an ORM session,
    about 2 ms a call here: more than the whole approximate search at 1M)."""
    from searchkit import ann
    return ann.search(index, spec, q, k, allowed, VectorReader(store.path))


class VectorReader:
    """``fetch_vectors`` for searchkit.ann: ok rows' float32 vectors by id."""

    def __init__(self, db: Path):
        self.db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.sort(np.asarray(ids, np.int64))
        found, blobs = [], []
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500].tolist()
            sql = (f"SELECT id, vector FROM files WHERE id IN ({','.join('?' * len(part))})"
                   " AND status = 'ok'")
            for row_id, blob in self.db.execute(sql, part):
                found.append(row_id)
                blobs.append(blob)
        vectors = np.frombuffer(b"".join(blobs), np.float32).reshape(len(found), -1)
        return np.asarray(found, np.int64), vectors


class AnnIndex:
    """The ann index with the library index's ``search(q, k, allowed)`` signature."""

    def __init__(self, directory: Path, store):
        from searchkit import ann
        self.index, self.spec = load_ann(directory)
        self.fetch = VectorReader(store.path)
        self.search = partial(ann.search, self.index, self.spec, fetch_vectors=self.fetch)


# ---- recall and speed -------------------------------------------------------------------------
def exact_top(vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray,
              mask: np.ndarray | None = None) -> list[np.ndarray]:
    """Exact top-K ids per query (``mask``: rows allowed; fewer than K when fewer are),
    ``4 * CHUNK`` rows of vectors at a time."""
    best_s = np.full((len(queries), K), -np.inf, np.float32)
    best_i = np.zeros((len(queries), K), np.int64)
    for start in range(0, len(vectors), CHUNK * 4):
        v = np.asarray(vectors[start:start + CHUNK * 4])
        s = queries @ v.T
        if mask is not None:
            s[:, ~mask[start:start + len(v)]] = -np.inf
        both = np.concatenate([best_s, s], 1)
        alli = np.concatenate([best_i, np.broadcast_to(ids[start:start + len(v)], s.shape)], 1)
        top = np.argsort(-both, axis=1, kind="stable")[:, :K]
        best_s, best_i = np.take_along_axis(both, top, 1), np.take_along_axis(alli, top, 1)
    return [i[np.isfinite(s)] for s, i in zip(best_s, best_i)]


def exact_ms(vectors: np.ndarray, queries: np.ndarray) -> float:
    """p50 ms of one exact single-query search over the float32 vectors in memory."""
    import faiss
    index = faiss.IndexFlatIP(vectors.shape[1])
    for start in range(0, len(vectors), CHUNK * 4):
        index.add(np.ascontiguousarray(vectors[start:start + CHUNK * 4]))
    lat = []
    for q in queries[:EXACT_QUERIES]:
        t = time.perf_counter()
        index.search(q.reshape(1, -1), K)
        lat.append(time.perf_counter() - t)
    return float(np.median(lat) * 1e3)


def recall_and_speed(directory: Path, vectors: np.ndarray, queries: np.ndarray,
                     m: Measured) -> None:
    """The library's own search index against exact search, unfiltered and filtered."""
    import faiss

    from searchkit.library import Library
    from searchkit.store import Store
    faiss.omp_set_num_threads(1)
    store = Store(directory)
    lib = Library(directory, store, store.info())
    index = lib.search_index()
    m.index_kind = index.kind
    ids = np.asarray(sorted(_ok_ids(store)), np.int64)
    assert len(ids) == len(vectors)  # written in order: the i-th id holds the i-th vector
    truth = exact_top(vectors, queries, ids)
    other = AnnIndex(directory, store)
    m.recall, m.ann_ms = _measure(index, queries, truth, None)
    m.ann["recall"], m.ann["ms"] = _measure(other, queries, truth, None)
    m.exact_ms = exact_ms(vectors, queries)
    rng = np.random.default_rng(7)
    for fraction in FILTERS:
        mask = rng.random(len(ids)) < fraction
        truth = exact_top(vectors, queries, ids, mask)
        key = f"{fraction:.0%}"
        m.filtered[key], m.filtered_ms[key] = _measure(index, queries, truth, ids[mask])
        m.ann[key], m.ann[key + " ms"] = _measure(other, queries, truth, ids[mask])


def _ok_ids(store) -> list[int]:
    from sqlalchemy import text
    with store.session() as s:
        return [r[0] for r in s.execute(text("SELECT id FROM files WHERE status = 'ok'"))]


def _measure(index, queries: np.ndarray, truth: list[np.ndarray], allowed
             ) -> tuple[float, float]:
    lat, rec = [], []
    for q, want in zip(queries, truth):
        t = time.perf_counter()
        _, got = index.search(q, K, allowed)
        lat.append(time.perf_counter() - t)
        rec.append(len(set(got.tolist()) & set(want.tolist())) / max(1, len(want)))
    return float(np.mean(rec)), float(np.median(lat) * 1e3)


# ---- one size ---------------------------------------------------------------------------------
def measure(n: int, work: Path, mix, encoder, queries: np.ndarray, largest: bool) -> Measured:
    m = Measured(n)
    directory = work / f"lib_{n}"
    shutil.rmtree(directory, ignore_errors=True)
    vectors = np.load(vectors_file(work, n, mix), mmap_mode="r")
    say(f"n={n}: writing rows")
    m.write_s = make_library(directory, vectors, encoder)
    say(f"n={n}: {m.write_s:.0f} s to write; full build")
    built = step("build", directory)
    m.build_s, m.build_rss, m.index_kind = built["seconds"], built["rss"], built["kind"]
    say(f"n={n}: build {m.build_s:.1f} s ({built['wall']:.1f} s process), peak RSS "
        f"{m.build_rss / 1e9:.2f} GB; fresh searches")
    m.search_s, m.search_rss = median_run(cli("search", "a red bicycle leaning on a wall",
                                              "--library", str(directory)))
    m.status_s, m.status_rss = median_run(cli("status", "--library", str(directory)))
    say(f"n={n}: search {m.search_s:.2f} s {m.search_rss / 1e9:.2f} GB, status "
        f"{m.status_s:.2f} s; searchkit.ann build")
    built = step("build-ann", directory)
    m.ann.update(kind=built["kind"], build_s=built["seconds"], build_rss=built["rss"],
                 index_bytes=(directory / ANN_FILE).stat().st_size)
    step("search-ann", directory)  # warm-up
    fresh = [step("search-ann", directory) for _ in range(CLI_RUNS)]
    m.ann["fresh_s"] = statistics.median(f["wall"] for f in fresh)
    m.ann["fresh_rss"] = max(f["rss"] for f in fresh)
    say(f"n={n}: ann {m.ann}; recall")
    recall_and_speed(directory, vectors, queries, m)
    m.sqlite_bytes = sqlite_bytes(directory)
    m.index_bytes = sum(p.stat().st_size for p in directory.glob("index.faiss"))
    if largest:
        extra = mix.sample(ADDED, seed=77)
        add_rows(directory, extra, first=n)
        updated = step("update", directory)
        m.add_s, m.add_action = updated["seconds"], updated["action"]
        say(f"n={n}: +{ADDED} rows: {m.add_s:.2f} s ({m.add_action})")
    say(json.dumps(asdict(m)))
    return m


def sqlite_bytes(directory: Path) -> int:
    """The SQLite files' bytes once the write-ahead log is checkpointed (steady state)."""
    from searchkit.store import Store
    db = Store(directory).path
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in directory.glob(db.name + "*"))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---- report -----------------------------------------------------------------------------------
def report(results: list[Measured]) -> None:
    print("| rows | index | write s | build s | build RSS / f32 | search s | search RSS GB "
          "| status s | R@10 | ANN ms | exact ms | x exact | filtered R@10 1/10/50 % "
          "| bytes/image (SQLite + index) |")
    print("|" + "---|" * 14)
    for m in results:
        f32 = m.n * 512 * 4
        fr = "/".join(f"{m.filtered[f'{f:.0%}']:.3f}" for f in FILTERS)
        print(f"| {m.n:,} | {m.index_kind} | {m.write_s:.0f} | {m.build_s:.1f} | "
              f"{m.build_rss / f32:.2f} | {m.search_s:.2f} | {m.search_rss / 1e9:.2f} | "
              f"{m.status_s:.2f} | {m.recall:.3f} | {m.ann_ms:.3f} | {m.exact_ms:.1f} | "
              f"{m.exact_ms / m.ann_ms:.0f} | {fr} | "
              f"{(m.sqlite_bytes + m.index_bytes) / m.n:,.0f} "
              f"({m.sqlite_bytes / m.n:,.0f} + {m.index_bytes / m.n:,.0f}) |")
    print("\nsearchkit.ann's choice built from the same store (re-ranked from SQLite by id; "
          "a fresh process maps the index and answers one query):")
    print("| rows | kind | build s | build RSS / f32 | fresh process s | fresh RSS GB | R@10 "
          "| ms | x exact | filtered R@10 1/10/50 % | bytes/image (SQLite + index) |")
    print("|" + "---|" * 11)
    for m in results:
        a, f32 = m.ann, m.n * 512 * 4
        fr = "/".join(f"{a[f'{f:.0%}']:.3f}" for f in FILTERS)
        print(f"| {m.n:,} | {a['kind']} | {a['build_s']:.1f} | {a['build_rss'] / f32:.2f} | "
              f"{a['fresh_s']:.2f} | {a['fresh_rss'] / 1e9:.2f} | {a['recall']:.3f} | "
              f"{a['ms']:.3f} | {m.exact_ms / a['ms']:.0f} | {fr} | "
              f"{(m.sqlite_bytes + a['index_bytes']) / m.n:,.0f} "
              f"({m.sqlite_bytes / m.n:,.0f} + {a['index_bytes'] / m.n:,.0f}) |")
    small, big = results[0], results[-1]
    print(f"\nTargets at {big.n:,} rows (ratios against {small.n:,}); +{ADDED} rows: "
          f"{big.add_action}")
    print("| what | library index | searchkit.ann | target |\n|---|---|---|---|")
    lib, other = targets(small, big, ann=False), targets(small, big, ann=True)
    for key, target in TARGETS.items():
        higher = key in ("recall@10", "speed x exact", "filtered recall")
        mark = [("" if (v >= target if higher else v <= target) else " (missed)")
                for v in (lib[key], other[key])]
        print(f"| {key} | {lib[key]:.3g}{mark[0]} | {other[key]:.3g}{mark[1]} | "
              f"{'>=' if higher else '<='} {target:g} |")


def targets(small: Measured, big: Measured, ann: bool) -> dict[str, float]:
    """The issue's numbers for the library's index, or for searchkit.ann's (whose fresh
    process is the mapped index answering a stored vector: no CLI, no query encoding)."""
    a = big.ann
    search_s = a["fresh_s"] / small.ann["fresh_s"] if ann else big.search_s / small.search_s
    return {"search time x1k": search_s,
            "search RSS GB": (a["fresh_rss"] if ann else big.search_rss) / 1e9,
            "status time x1k": big.status_s / small.status_s,
            "+1000 rows s": big.add_s,
            "build s": a["build_s"] if ann else big.build_s,
            "build RSS / f32": (a["build_rss"] if ann else big.build_rss) / (big.n * 2048),
            "recall@10": a["recall"] if ann else big.recall,
            "speed x exact": big.exact_ms / (a["ms"] if ann else big.ann_ms),
            "filtered recall": min(a[f"{f:.0%}"] if ann else big.filtered[f"{f:.0%}"]
                                   for f in FILTERS)}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--step":
        return do_step(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--10m", dest="ten_million", action="store_true",
                    help="also a 10M library (slow; about 25 GB of disk)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("/tmp/searchkit-scale-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the libraries and vectors")
    args = ap.parse_args()
    sizes = sorted(set(args.sizes + ([10_000_000] if args.ten_million else [])))
    args.work.mkdir(parents=True, exist_ok=True)
    from searchkit.encoders import load_encoder
    encoder = load_encoder(MODEL)
    mix = mixture()
    queries = mix.sample(args.queries, seed=99)
    results = []
    try:
        for n in sizes:
            results.append(measure(n, args.work, mix, encoder, queries, n == sizes[-1]))
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print(f"{os.cpu_count()} cores shared with other jobs; vectors: mixture fitted to "
          f"{MODEL} embeddings of the align images; {args.queries} queries, one thread\n")
    report(results)


if __name__ == "__main__":
    main()
