"""A million images on one machine: the numbers of issue 12, as ratios from one run.

    python bench/bench_scale.py [--sizes 1000,100000,1000000] [--queries 200]
                                [--work /tmp/searchkit-scale-bench] [--keep]
    python bench/bench_scale.py --sizes 1000,10000000 --queries 100   # the slow run: 10M

For each size, a library bound to ``searchkit-lite`` gets that many rows written straight
through the store (``Store.upsert_rows``, as ``searchkit import`` writes them), their vectors
drawn chunk by chunk from a mixture fitted to searchkit-lite embeddings of the shared align
images and their augmented views (``bench/realistic_vectors.py``; never CIFAR). Exact top-10
answers (unfiltered and under filters keeping 1 %, 10 %, 50 % of the rows) are computed from
each chunk as it is written, so no size needs its vectors in memory or on disk twice. Then:

* the full index build from the store (``Library.update_index(rebuild=True)``) in a fresh
  process: seconds and peak RSS against the float32 vector bytes;
* fresh ``searchkit search`` and ``searchkit status`` processes: median seconds, peak RSS;
* recall@10 of the library's index (``SearchIndex.search``, re-ranking from SQLite included)
  against exact search, and its p50 single-query time against exact search over the float32
  vectors in memory (one thread each, timed in turns; above ``EXACT_BLOCK`` rows over a block
  of that many, times n / block), unfiltered and with the filters;
* disk bytes per image (SQLite + index);
* on the largest library: index maintenance after adding 1,000 rows
  (``Library.update_index()`` in a fresh process) and which action it took.

Then the targets of issue 12 at the largest size, each with its ratio. The machine is shared
(2 cores): read the ratios, not the seconds. The 10M run (``--sizes 1000,10000000``) is the slow
one: about 25 GB of disk and an hour or more on two busy cores (bench/results/scale.md).
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODEL = "searchkit-lite"
DIM = 512
K = 10
CHUNK = 50_000                 # rows sampled and written at a time
EXACT_BLOCK = 1_000_000        # rows exact search is timed over (2 GB of float32); x n / block
TURN_QUERIES = 20              # index queries timed between two turns of exact search
EXACT_PER_TURN = 2             # exact searches timed per turn
FILTERS = (0.01, 0.10, 0.50)
ADDED = 1_000
CLI_RUNS = 3                   # timed fresh processes per command (after one warm-up)
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
    small_search_s: float = 0.0   # the smallest library's, timed alternately with this one's
    small_status_s: float = 0.0
    status_rss: int = 0
    recall: float = 0.0
    ann_ms: float = 0.0
    exact_ms: float = 0.0
    filtered: dict[str, float] = field(default_factory=dict)
    filtered_ms: dict[str, float] = field(default_factory=dict)
    sqlite_bytes: int = 0
    index_bytes: int = 0
    page_size: int = 0
    add_s: float = 0.0
    add_action: str = ""


# ---- vectors and exact answers ----------------------------------------------------------------
def mixture():
    import realistic_vectors as rv
    return rv.fit_mixture(rv.real_vectors())


def chunks(n: int, mix):
    """(first row, vectors) of ``n`` realistic vectors, ``CHUNK`` at a time (seeded: the same
    rows on every run)."""
    for start in range(0, n, CHUNK):
        yield start, mix.sample(min(n, start + CHUNK) - start, seed=1_000 + start // CHUNK)


def filter_masks(n: int) -> dict[str, np.ndarray]:
    """Row i is allowed by filter f when masks[f][i] (about f of the rows)."""
    rng = np.random.default_rng(7)
    return {f"{f:.0%}": rng.random(n) < f for f in FILTERS}


class ExactTop:
    """Exact top-K row numbers of each query among the rows seen so far (``mask``: allowed)."""

    def __init__(self, queries: int):
        self.scores = np.full((queries, K), -np.inf, np.float32)
        self.rows = np.zeros((queries, K), np.int64)

    def add(self, s: np.ndarray, first: int, mask: np.ndarray | None) -> None:
        if mask is not None:
            s = np.where(mask[first:first + s.shape[1]], s, -np.inf)
        both = np.concatenate([self.scores, s], 1)
        rows = np.concatenate([self.rows, np.broadcast_to(
            np.arange(first, first + s.shape[1]), s.shape)], 1)
        top = np.argpartition(-both, K - 1, axis=1)[:, :K]
        self.scores = np.take_along_axis(both, top, 1)
        self.rows = np.take_along_axis(rows, top, 1)

    def answers(self, ids: np.ndarray) -> list[np.ndarray]:
        return [ids[r[np.isfinite(s)]] for s, r in zip(self.scores, self.rows)]


# ---- the library ------------------------------------------------------------------------------
def rows(start: int, vectors: np.ndarray, now: float) -> list:
    from searchkit.store import STATUS_OK, FileRow
    return [FileRow(f"/photos/{(start + i) // 1000:05d}/img_{start + i:08d}.jpg", 100_000, 1,
                    f"{start + i:032x}", 640, 480, "JPEG", None, None, None, STATUS_OK, None,
                    None, v.tobytes(), now) for i, v in enumerate(vectors)]


def write_library(directory: Path, n: int, mix, encoder, queries: np.ndarray
                  ) -> tuple[float, dict[str | None, ExactTop]]:
    """A library of ``n`` rows bound to the model: seconds spent writing the rows and the
    exact answers (key None: unfiltered) by row number."""
    from searchkit.library import Library
    lib = Library.open(directory, model=MODEL, create=True, encoder=encoder)
    lib.prepare_fast_queries()  # what an index run does: queries skip torch
    masks = filter_masks(n)
    tops = {key: ExactTop(len(queries)) for key in [None, *masks]}
    writing, now = 0.0, time.time()
    for start, vectors in chunks(n, mix):
        t = time.perf_counter()
        lib.store.upsert_rows(rows(start, vectors, now))
        writing += time.perf_counter() - t
        s = queries @ vectors.T
        for key, top in tops.items():
            top.add(s, start, masks.get(key))
        if start % (20 * CHUNK) == 0:
            say(f"  {start + len(vectors):,} rows written ({writing:.0f} s)")
    return writing, tops


def save_written(path: Path, write_s: float, tops: dict) -> None:
    """What writing a library measured, for ``--reuse``."""
    arrays = {f"rows {key}": top.rows for key, top in tops.items()}
    arrays.update({f"scores {key}": top.scores for key, top in tops.items()})
    np.savez(path, write_s=write_s, **arrays)


def load_written(path: Path, queries: int) -> tuple[float, dict]:
    data = np.load(path)
    tops = {}
    for key in [None, *filter_masks(1)]:
        top = tops[key] = ExactTop(queries)
        top.rows, top.scores = data[f"rows {key}"], data[f"scores {key}"]
    return float(data["write_s"]), tops


def drop_added(directory: Path, n: int) -> None:
    """Delete the rows an earlier run added past the first ``n`` (its +1,000 step)."""
    from searchkit.store import Changes, Store
    store = Store(directory)
    extra = store.ok_ids()[n:]
    if len(extra):
        store.apply(Changes(deletes=extra.tolist()))


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


def median_runs(*cmds: list[str]) -> list[tuple[float, int]]:
    """(median seconds, peak RSS) of each command, run in turn ``CLI_RUNS`` times after one
    warm-up each: commands compared by ratio share the machine's load of the moment."""
    for cmd in cmds:
        child_rss(cmd)  # warm-up: page cache, the model's exported query side
    runs = [[child_rss(cmd) for cmd in cmds] for _ in range(CLI_RUNS)]
    return [(statistics.median(r[i][0] for r in runs), max(r[i][1] for r in runs))
            for i in range(len(cmds))]


def cli_search(directory: Path) -> list[str]:
    return cli("search", "a red bicycle leaning on a wall", "--library", str(directory))


def cli_status(directory: Path) -> list[str]:
    return cli("status", "--library", str(directory))


def step(name: str, directory: Path) -> dict:
    """One library step in a fresh process (this file, ``--step``): its JSON."""
    wall, rss, out = child_rss([sys.executable, __file__, "--step", name, str(directory)])
    return dict(json.loads(out.strip().splitlines()[-1]), wall=wall, rss=rss)


def do_step(name: str, directory: str) -> None:
    """Run in the child; prints one JSON line. ``build``: the library's full rebuild;
    ``update``: its incremental update."""
    from searchkit import index as fi
    from searchkit.library import Library
    from searchkit.local_engine import LocalEngine
    directory = Path(directory)
    t = time.perf_counter()
    lib = Library(LocalEngine(directory))
    update = lib.update_index(rebuild=name == "build")
    seconds = time.perf_counter() - t
    stamp = fi.read_stamp(directory).stamp
    spec = fi.spec_of(stamp)
    print(json.dumps({"seconds": seconds, "action": str(getattr(update, "action", update)),
                      "kind": spec.factory(stamp.dim) if spec else stamp.kind}))


# ---- recall and speed -------------------------------------------------------------------------
def exact_block(n: int, mix):
    """Exact search (FAISS flat, inner product) over the first ``min(n, EXACT_BLOCK)`` rows,
    sampled again chunk by chunk as they were written."""
    import faiss
    flat = faiss.IndexFlatIP(DIM)
    for _, vectors in chunks(min(n, EXACT_BLOCK), mix):
        flat.add(vectors)
    return flat


def recall_and_speed(directory: Path, queries: np.ndarray, tops: dict, m: Measured, mix
                     ) -> None:
    """The library's own search index against exact search, unfiltered and filtered. Exact
    search over a block of the rows is timed in turns with the index (the same load on the
    shared machine; :func:`_measure`); its single-query time is that block's scaled by
    ``n / block`` (a flat scan is linear in the rows)."""
    import faiss

    from searchkit.library import Library
    from searchkit.local_engine import LocalEngine
    faiss.omp_set_num_threads(1)
    lib = Library(LocalEngine(directory))
    index = lib.search_index()
    ids = lib.store.ok_ids()
    assert len(ids) == m.n  # written in order: row number i has the i-th id
    flat = exact_block(m.n, mix)
    _measure(index, queries, tops[None].answers(ids), None)  # warm-up: the lists it probes
    m.recall, m.ann_ms, block_ms = _measure(index, queries, tops[None].answers(ids), None,
                                            flat)
    m.exact_ms = block_ms * m.n / flat.ntotal
    del flat
    masks = filter_masks(m.n)
    for key, mask in masks.items():
        m.filtered[key], m.filtered_ms[key], _ = _measure(index, queries,
                                                          tops[key].answers(ids), ids[mask])


def _measure(index, queries: np.ndarray, truth: list[np.ndarray], allowed, flat=None
             ) -> tuple[float, float, float]:
    """Mean recall@K and p50 ms of ``index``; p50 ms of ``flat`` (0: none), searched after
    each block of ``TURN_QUERIES`` queries for ``EXACT_PER_TURN`` of them: both see the same
    load, and the index's queries are not each run right after a 2 GB scan has emptied the
    CPU caches (one exact search after each query made a 0.8 ms query 1.9 ms)."""
    lat, rec, exact = [], [], []
    for start in range(0, len(queries), TURN_QUERIES):
        block = slice(start, start + TURN_QUERIES)
        for q, want in zip(queries[block], truth[block]):
            t = time.perf_counter()
            _, got = index.search(q, K, allowed)
            lat.append(time.perf_counter() - t)
            rec.append(len(set(got.tolist()) & set(want.tolist())) / max(1, len(want)))
        for q in queries[block][:EXACT_PER_TURN] if flat is not None else []:
            t = time.perf_counter()
            flat.search(q.reshape(1, -1), K)
            exact.append(time.perf_counter() - t)
    return (float(np.mean(rec)), float(np.median(lat) * 1e3),
            float(np.median(exact) * 1e3) if exact else 0.0)


# ---- one size ---------------------------------------------------------------------------------
def measure(n: int, work: Path, mix, encoder, queries: np.ndarray, largest: bool,
            smallest: Path | None, reuse: bool = False) -> Measured:
    """One size; ``smallest``: the smallest size's library, whose fresh processes are timed
    again in turn with this one's (the ratios of the issue); ``reuse``: the library and exact
    answers a kept earlier run wrote (same sizes and queries), and the index it built when
    it recorded the build (``built_N.json``; else the index is built again)."""
    m = Measured(n)
    directory = work / f"lib_{n}"
    written, built_file = work / f"written_{n}.npz", work / f"built_{n}.json"
    built = None
    if reuse and written.exists() and directory.exists():
        m.write_s, tops = load_written(written, len(queries))
        if built_file.exists() and (directory / "index.json").exists():
            built = json.loads(built_file.read_text())
        else:
            for name in ("index.faiss", "index.json"):  # build again from the store
                (directory / name).unlink(missing_ok=True)
        drop_added(directory, n)  # (after the build: the next update folds nothing)
        say(f"n={n}: reusing the rows written before ({written}), index: {built}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
        say(f"n={n}: writing rows")
        m.write_s, tops = write_library(directory, n, mix, encoder, queries)
        save_written(written, m.write_s, tops)
    m.sqlite_bytes, m.page_size = sqlite_bytes(directory)
    say(f"n={n}: {m.write_s:.0f} s to write, {m.sqlite_bytes / n:,.0f} B/row in SQLite "
        f"(page size {m.page_size}); full build")
    if built is None:
        built = step("build", directory)
        built_file.write_text(json.dumps(built))
    m.build_s, m.build_rss, m.index_kind = built["seconds"], built["rss"], built["kind"]
    m.index_bytes = sum(p.stat().st_size for p in directory.glob("index.faiss"))
    say(f"n={n}: build {m.index_kind} {m.build_s:.1f} s ({built['wall']:.1f} s process), "
        f"peak RSS {m.build_rss / 1e9:.2f} GB; fresh searches")
    other = smallest or directory
    (m.search_s, m.search_rss), (m.small_search_s, _) = median_runs(cli_search(directory),
                                                                    cli_search(other))
    (m.status_s, m.status_rss), (m.small_status_s, _) = median_runs(cli_status(directory),
                                                                    cli_status(other))
    say(f"n={n}: search {m.search_s:.2f} s {m.search_rss / 1e9:.2f} GB, status "
        f"{m.status_s:.2f} s {m.status_rss / 1e9:.2f} GB; recall")
    recall_and_speed(directory, queries, tops, m, mix)
    if largest:
        extra = mix.sample(ADDED, seed=77)
        add_rows(directory, extra, first=n)
        updated = step("update", directory)
        m.add_s, m.add_action = updated["seconds"], updated["action"]
        say(f"n={n}: +{ADDED} rows: {m.add_s:.2f} s ({m.add_action})")
    say(json.dumps(asdict(m)))
    return m


def sqlite_bytes(directory: Path) -> tuple[int, int]:
    """The SQLite files' bytes once the write-ahead log is checkpointed (steady state), and
    the database's page size."""
    from searchkit.store import Store
    db = Store(directory).path
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = c.execute("PRAGMA page_size").fetchone()[0]
    return sum(p.stat().st_size for p in directory.glob(db.name + "*")), page


def say(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, file=sys.stderr, flush=True)


# ---- report -----------------------------------------------------------------------------------
def report(results: list[Measured]) -> None:
    print("| rows | index | write s | build s | build RSS / f32 | fresh search s | search RSS GB "
          "| status s | status RSS GB | R@10 | p50 ms | exact ms | x exact "
          "| filtered R@10 1/10/50 % | filtered p50 ms | bytes/image (SQLite + index) "
          "| page |")
    print("|" + "---|" * 17)
    for m in results:
        f32 = m.n * DIM * 4
        fr = "/".join(f"{m.filtered[f'{f:.0%}']:.3f}" for f in FILTERS)
        fm = "/".join(f"{m.filtered_ms[f'{f:.0%}']:.2f}" for f in FILTERS)
        print(f"| {m.n:,} | {m.index_kind} | {m.write_s:.0f} | {m.build_s:.1f} | "
              f"{m.build_rss / f32:.2f} | {m.search_s:.2f} | {m.search_rss / 1e9:.2f} | "
              f"{m.status_s:.2f} | {m.status_rss / 1e9:.2f} | {m.recall:.3f} | "
              f"{m.ann_ms:.3f} | {m.exact_ms:.1f} | {m.exact_ms / m.ann_ms:.0f} | {fr} | {fm} | "
              f"{(m.sqlite_bytes + m.index_bytes) / m.n:,.0f} "
              f"({m.sqlite_bytes / m.n:,.0f} + {m.index_bytes / m.n:,.0f}) | {m.page_size} |")
    small, big = results[0], results[-1]
    print(f"\nTargets at {big.n:,} rows (ratios against {small.n:,}, whose fresh search and "
          f"status were timed in turn with these: {big.small_search_s:.2f} s, "
          f"{big.small_status_s:.2f} s); +{ADDED} rows: {big.add_action}")
    print("| what | measured | target |\n|---|---|---|")
    got = targets(small, big)
    for key, target in TARGETS.items():
        higher = key in ("recall@10", "speed x exact", "filtered recall")
        ok = got[key] >= target if higher else got[key] <= target
        print(f"| {key} | {got[key]:.3g}{'' if ok else ' (missed)'} | "
              f"{'>=' if higher else '<='} {target:g} |")


def targets(small: Measured, big: Measured) -> dict[str, float]:
    return {"search time x1k": big.search_s / big.small_search_s,
            "search RSS GB": big.search_rss / 1e9,
            "status time x1k": big.status_s / big.small_status_s,
            "+1000 rows s": big.add_s,
            "build s": big.build_s,
            "build RSS / f32": big.build_rss / (big.n * DIM * 4),
            "recall@10": big.recall,
            "speed x exact": big.exact_ms / big.ann_ms,
            "filtered recall": min(big.filtered.values())}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--step":
        return do_step(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="slow run: --sizes 1000,10000000 (see the module text)")
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    type=lambda s: [int(x) for x in s.split(",")])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--work", type=Path, default=Path("/tmp/searchkit-scale-bench"))
    ap.add_argument("--keep", action="store_true", help="keep the libraries")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the rows a --keep run wrote in --work (same sizes, queries)")
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    args = ap.parse_args()
    sizes = sorted(set(args.sizes))
    args.work.mkdir(parents=True, exist_ok=True)
    from searchkit.encoders import load_encoder
    encoder = load_encoder(MODEL)
    mix = mixture()
    queries = mix.sample(args.queries, seed=99)
    results = []
    try:
        for n in sizes:
            smallest = args.work / f"lib_{sizes[0]}" if n != sizes[0] else None
            results.append(measure(n, args.work, mix, encoder, queries, n == sizes[-1],
                                   smallest, args.reuse))
            if args.json:
                args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
            if not args.keep and n != sizes[0]:
                shutil.rmtree(args.work / f"lib_{n}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    print(f"{os.cpu_count()} cores shared with other jobs; vectors: mixture fitted to "
          f"{MODEL} embeddings of the align images; {args.queries} queries, one thread\n")
    report(results)


if __name__ == "__main__":
    main()
