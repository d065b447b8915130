"""The same 100k realistic vectors in three engines: the local engine (SQLite + FAISS), a real
Milvus standalone server (the PyPI ``milvus`` package, 2.3.5, on 127.0.0.1) and Milvus Lite
(a ``.db`` file, the unit tests' engine). Issue 13's numbers, one run, side by side.

    nice -n 10 python bench/bench_milvus.py [--n 100000] [--queries 200]
        [--engines local,server,lite] [--work /tmp/searchkit-milvus-bench] [--json FILE]
        [--server milvus://HOST:PORT/COLLECTION]      # a real cluster instead of the PyPI one

The vectors are the scale bench's (``bench/bench_scale.py``: the first ``--n`` rows drawn from
the mixture fitted to searchkit-lite embeddings of the shared align images, seeded, and its
queries); each row also gets a format (PNG for a random 10 %, else JPEG) and a width (1920 for
another random 10 %, else 640), so that ``--format png`` and ``--min-width 1000`` each keep
about 10 % of the rows.

Each engine runs in two fresh processes through searchkit's storage interface
(``searchkit.engine.open_engine``: what ``Library`` and ``searchkit import`` call):

* write: ``Engine.upsert_rows`` in chunks of ``CHUNK`` rows (as ``searchkit import`` writes
  them), rows/s; then ``Engine.update_index()`` and, on a server, the wait until the server has
  sealed and indexed every row (it builds the index in the background);
* search, in a new process (as ``searchkit search`` opens a library):
  ``Engine.search(vector, 10, filters)`` one query at a time after a warm-up pass, p50 and p99
  ms, without a filter and with each 10 % filter; then, on Milvus, the same collection searched
  with pymilvus directly (Bounded consistency, fixed HNSW ef or IVF nprobe values) to tell
  the server's own speed and filtered recall from the engine's settings;
* recall@10 against exact search (numpy, over the float32 vectors);
* peak RSS (VmHWM) of each process: the writer, the searcher, any process they started, and
  the Milvus server.

``--index-memory FLAT,HNSW,IVF_SQ8,IVF_FLAT`` measures instead the server's memory per vector of
each index kind (pymilvus directly, a fresh server each, id + vector only);
``--filter-recall 0.01,0.1,0.5 [--filter-kinds HNSW,IVF_SQ8,IVF_FLAT]`` the server's recall
under filters keeping those fractions of the rows, for each index kind, with fixed search
parameters and with the engine's (widened by 1 / share kept), and the cost of the
``count(*)`` query the engine makes first.

The machine is shared (2 cores): read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MODEL = "searchkit-lite"
DIM = 512
K = 10
CHUNK = 5_000                  # rows per upsert_rows call
FILTER_FRACTION = 0.10
WIDE, NARROW, MIN_WIDTH = 1920, 640, 1000
FILTERS = ("none", "format png", "min width 1000")
INDEX_WAIT_S = 900.0           # the most a server may take to index every row
ENGINES = ("local", "server", "lite")
DIRECT_LEVEL = "Bounded"       # pymilvus's default consistency (the engine asks for Strong)
DIRECT_PARAMS = {"hnsw": [{"ef": ef} for ef in (64, 256, 1024)],      # fixed, whatever the
                 "ivf-sq8": [{"nprobe": p} for p in (16, 64, 256)]}  # filter keeps
DIRECT_EXPRESSIONS = {"none": 'status == "ok"',
                      "format png": 'status == "ok" and format in ["PNG"]',
                      "min width 1000": f'status == "ok" and width >= {MIN_WIDTH}'}


@dataclass
class Measured:
    engine: str
    location: str = ""
    n: int = 0
    insert_rows_s: float = 0.0
    update_index_s: float = 0.0
    indexed_wait_s: float = 0.0
    index: str = ""
    p50_ms: dict[str, float] = field(default_factory=dict)
    p99_ms: dict[str, float] = field(default_factory=dict)
    recall: dict[str, float] = field(default_factory=dict)
    kept: dict[str, float] = field(default_factory=dict)   # fraction of rows a filter keeps
    write_rss_peak: int = 0      # the process that wrote the rows (bytes)
    rss_peak: int = 0            # the process that searched
    children_rss_peak: int = 0   # processes it started (a Lite server, if any)
    server_rss_peak: int = 0     # the Milvus standalone server
    server_rss_end: int = 0
    # the same collection searched with pymilvus directly: setting -> {p50_ms, p99_ms, recall}
    direct: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


# ---- the data set: vectors, metadata, exact answers ---------------------------------------------
def prepare(work: Path, n: int, queries: int) -> None:
    """base.npy, queries.npy, meta.npz (format / width masks) and exact.npz in ``work``."""
    import bench_scale as bs
    if (work / "exact.npz").exists() and np.load(work / "base.npy", mmap_mode="r").shape[0] == n:
        return
    mix = bs.mixture()
    base = np.concatenate([v for _, v in bs.chunks(n, mix)])
    q = mix.sample(queries, seed=99)          # bench_scale's queries
    rng = np.random.default_rng(13)
    png, wide = rng.random(n) < FILTER_FRACTION, rng.random(n) < FILTER_FRACTION
    np.save(work / "base.npy", base)
    np.save(work / "queries.npy", q)
    np.savez(work / "meta.npz", png=png, wide=wide)
    scores = q @ base.T
    exact = {name: top_k(np.where(mask, scores, -np.inf) if mask is not None else scores)
             for name, mask in zip(FILTERS, (None, png, wide))}
    np.savez(work / "exact.npz", **exact)


def top_k(scores: np.ndarray) -> np.ndarray:
    top = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)


def path_of(row: int) -> str:
    return f"/photos/{row // 1000:05d}/img_{row:08d}.jpg"


def row_of(path: str) -> int:
    return int(path[-12:-4])


def file_rows(first: int, vectors: np.ndarray, png: np.ndarray, wide: np.ndarray, now: float):
    from searchkit.store import STATUS_OK, FileRow
    return [FileRow(path_of(first + i), 100_000, 1, f"{first + i:032x}",
                    WIDE if wide[first + i] else NARROW, 480,
                    "PNG" if png[first + i] else "JPEG", None, None, None, STATUS_OK, None, None,
                    v.tobytes(), now) for i, v in enumerate(vectors)]


def filters_of(name: str):
    from searchkit.query import Filters
    return {"none": None, "format png": Filters(formats=("PNG",)),
            "min width 1000": Filters(min_width=MIN_WIDTH)}[name]


# ---- one engine, in its own process -----------------------------------------------------------
def peak_rss(pid: int | str = "self") -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in bytes (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in text.splitlines()
              if line.startswith(("VmHWM", "VmRSS"))}
    return values.get("VmHWM", 0), values.get("VmRSS", 0)


def children_peak() -> int:
    sys.path.insert(0, str(ROOT / "tests" / "milvus"))
    from conftest import descendants
    return sum(peak_rss(pid)[0] for pid in descendants(os.getpid()))


def milvus_client(location: str):
    """A pymilvus client for a milvus:// location, with searchkit's connection settings
    (credentials and TLS from the environment or its config file), and the parsed location."""
    from pymilvus import MilvusClient
    from searchkit.milvus.config import load_settings, parse_location
    where = parse_location(location)
    return MilvusClient(**load_settings(where).client_kwargs(where)), where


def wait_indexed(location: str, total: int) -> float:
    """Seconds until the server has sealed and indexed every row: a flush seals the growing
    segment (an index rebuild leaves the last rows in it, searched without the index), and the
    server builds the index of each sealed segment in the background."""
    client, where = milvus_client(location)
    t = time.perf_counter()
    try:
        client.flush(where.collection)
        while time.perf_counter() - t < INDEX_WAIT_S:
            names = client.list_indexes(where.collection)
            info = client.describe_index(where.collection, names[0]) if names else {}
            if int(info.get("indexed_rows", 0)) >= total \
                    and int(info.get("pending_index_rows", 0)) == 0:
                return time.perf_counter() - t
            time.sleep(1.0)
        raise SystemExit(f"the server had not indexed {total} rows after {INDEX_WAIT_S:.0f} s: "
                         f"{info}")
    finally:
        client.close()


def write_phase(engine_name: str, location: str, work: Path) -> Measured:
    """A new library: every row upserted, then its index brought up to date."""
    from searchkit.engine import open_engine
    base = np.load(work / "base.npy", mmap_mode="r")
    meta = np.load(work / "meta.npz")
    png, wide = meta["png"], meta["wide"]
    n = base.shape[0]
    m = Measured(engine_name, location, n)
    engine = open_engine(location, create=True)
    engine.create(MODEL, "bench-" + MODEL, DIM)
    now = time.time()
    t = time.perf_counter()
    for first in range(0, n, CHUNK):
        engine.upsert_rows(file_rows(first, np.asarray(base[first:first + CHUNK]), png, wide,
                                     now))
    m.insert_rows_s = n / (time.perf_counter() - t)
    say(f"{engine_name}: {m.insert_rows_s:,.0f} rows/s inserted; updating the index")
    t = time.perf_counter()
    engine.update_index()
    m.update_index_s = time.perf_counter() - t
    if engine_name == "server":
        m.indexed_wait_s = wait_indexed(location, n)
    say(f"{engine_name}: index updated in {m.update_index_s:.1f} s "
        f"(+{m.indexed_wait_s:.1f} s until the server indexed every row)")
    m.write_rss_peak = peak_rss()[0]
    engine.close()
    return m


def search_phase(engine_name: str, location: str, work: Path) -> Measured:
    """The library opened again in a fresh process (as ``searchkit search`` does), searched."""
    from searchkit.engine import open_engine
    queries = np.load(work / "queries.npy")
    meta, exact = np.load(work / "meta.npz"), np.load(work / "exact.npz")
    png, wide = meta["png"], meta["wide"]
    m = Measured(engine_name, location)
    engine = open_engine(location)
    engine.warm()
    m.index = engine.index().kind
    for name in FILTERS:
        filters = filters_of(name)
        for q in queries[:20]:                      # warm-up
            engine.search(q, K, filters)
        lat, got = [], []
        for q in queries:
            t = time.perf_counter()
            _, ids = engine.search(q, K, filters)
            lat.append(time.perf_counter() - t)
            got.append(ids)
        m.p50_ms[name] = float(np.percentile(lat, 50) * 1e3)
        m.p99_ms[name] = float(np.percentile(lat, 99) * 1e3)
        m.recall[name], m.kept[name] = recall(engine, got, exact[name], png, wide, name)
        say(f"{engine_name} ({m.index}): {name}: p50 {m.p50_ms[name]:.2f} ms, "
            f"p99 {m.p99_ms[name]:.2f} ms, recall@10 {m.recall[name]:.3f}")
    if engine_name != "local":
        search_direct(engine, location, queries, exact, png, wide, m)
    m.rss_peak = peak_rss()[0]
    m.children_rss_peak = children_peak()
    engine.close()
    return m


PHASES = {"write": write_phase, "search": search_phase}


def search_direct(engine, location: str, queries: np.ndarray, exact, png, wide, m: Measured
                  ) -> None:
    """The engine's collection searched with pymilvus itself: Bounded consistency and a few
    fixed HNSW ef or IVF nprobe values (``DIRECT_PARAMS``), to tell the server's own speed and
    filtered recall from the engine's choices (which widen nprobe under a filter)."""
    client, where = milvus_client(location)
    try:
        for params in DIRECT_PARAMS.get(m.index, []):
            setting = f"{DIRECT_LEVEL}, " + ", ".join(f"{k}={v}" for k, v in params.items())
            result: dict[str, dict[str, float]] = {"p50_ms": {}, "p99_ms": {}, "recall": {}}
            for name, expr in DIRECT_EXPRESSIONS.items():
                def one(q):
                    return client.search(where.collection, data=[q.tolist()], limit=K,
                                         filter=expr, output_fields=[],
                                         consistency_level=DIRECT_LEVEL,
                                         search_params={"metric_type": "IP",
                                                        "params": params})[0]
                for q in queries[:20]:                  # warm-up
                    one(q)
                lat, got = [], []
                for q in queries:
                    t = time.perf_counter()
                    hits = one(q)
                    lat.append(time.perf_counter() - t)
                    got.append(np.asarray([h["id"] for h in hits], np.int64))
                result["p50_ms"][name] = float(np.percentile(lat, 50) * 1e3)
                result["p99_ms"][name] = float(np.percentile(lat, 99) * 1e3)
                result["recall"][name] = recall(engine, got, exact[name], png, wide, name)[0]
                say(f"{m.engine} direct {setting}: {name}: p50 {result['p50_ms'][name]:.2f} ms, "
                    f"recall@10 {result['recall'][name]:.3f}")
            m.direct[setting] = result
    finally:
        client.close()


def recall(engine, got: list[np.ndarray], truth: np.ndarray, png, wide, name: str
           ) -> tuple[float, float]:
    """Mean recall@10 of the hits (engine ids, resolved to row numbers by path), and the
    fraction of rows the filter keeps (every hit must be one of them)."""
    allowed = {"none": None, "format png": png, "min width 1000": wide}[name]
    ids = sorted({int(i) for g in got for i in g})
    files = engine.get_files(ids)
    rows = {i: row_of(f.path) for i, f in files.items()}
    scores = []
    for g, want in zip(got, truth):
        have = [rows[int(i)] for i in g]
        if allowed is not None:
            assert all(allowed[r] for r in have), f"{name}: a hit the filter does not keep"
        scores.append(len(set(have) & set(want.tolist())) / K)
    kept = 1.0 if allowed is None else float(allowed.mean())
    return float(np.mean(scores)), kept


# ---- the server alone (pymilvus directly: searchkit picks the kind by size) -------------------
MEMORY_KINDS = {"FLAT": {}, "HNSW": {"M": 16, "efConstruction": 200},
                "IVF_SQ8": {"nlist": 1024}, "IVF_FLAT": {"nlist": 1024}}
SETTLE_S = 5.0                 # after a load, before reading the server's RSS
BUCKETS = 10_000               # filter-recall rows get a bucket; "bucket < f * BUCKETS" keeps f


@contextmanager
def server_collection(work: Path, name: str, kind: str, buckets: np.ndarray | None = None,
                      build: dict | None = None):
    """A fresh server with the base vectors in collection "m" (id, vector and, when given,
    bucket), flushed and indexed with ``kind`` (``build``, else ``MEMORY_KINDS``'s; not
    loaded): (server, client)."""
    from pymilvus import DataType, MilvusClient
    sys.path.insert(0, str(ROOT / "tests" / "milvus"))
    from conftest import running_milvus
    base = np.load(work / "base.npy", mmap_mode="r")
    n = base.shape[0]
    data_dir = work / name
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir()
    with running_milvus(data_dir) as server:
        client = MilvusClient(uri=server.client_uri)
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.INT64, is_primary=True)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
        if buckets is not None:
            s.add_field("bucket", DataType.INT64)
        client.create_collection("m", schema=s)
        for first in range(0, n, CHUNK):
            part = np.asarray(base[first:first + CHUNK])
            client.insert("m", [{"id": first + i, "vector": v,
                                 **({} if buckets is None else {"bucket": int(buckets[first + i])})}
                                for i, v in enumerate(part)])
        client.flush("m")
        params = client.prepare_index_params()
        params.add_index(field_name="vector", index_type=kind, metric_type="IP",
                         params=MEMORY_KINDS[kind] if build is None else build)
        client.create_index("m", params)
        t = time.perf_counter()
        while time.perf_counter() - t < INDEX_WAIT_S:
            info = client.describe_index("m", client.list_indexes("m")[0])
            if int(info.get("indexed_rows", 0)) >= n and int(info.get("pending_index_rows", 0)) == 0:
                break
            time.sleep(1.0)
        try:
            yield server, client
        finally:
            client.close()


def index_memory(kind: str, work: Path) -> dict[str, float]:
    """A collection of id + vector only, ``kind`` built, loaded and released once: the
    server's RSS released, then loaded again."""
    n = np.load(work / "base.npy", mmap_mode="r").shape[0]
    with server_collection(work, f"memory_{kind}", kind) as (server, client):
        client.load_collection("m")                 # a first load and release: the write
        client.release_collection("m")              # buffers are gone, the heap has settled
        time.sleep(SETTLE_S)
        before = peak_rss(server.pid)[1]
        client.load_collection("m")
        time.sleep(SETTLE_S)
        after = peak_rss(server.pid)[1]
    say(f"memory {kind}: server RSS {before / 1e6:,.0f} MB released, {after / 1e6:,.0f} MB "
        f"loaded: {(after - before) / n:,.0f} B per vector")
    return {"before": before, "after": after, "per_vector": (after - before) / n}


COUNT_QUERIES = 50             # count(*) queries timed per filter


@dataclass
class FilterRecall:
    kind: str
    setting: str
    kept: float
    recall: float
    p50_ms: float
    count_p50_ms: float = 0.0   # the count(*) query on the same filter (the engine's share kept)


def filter_settings(kind: str, n: int) -> list[tuple[str, object]]:
    """(label, kept -> search params) to compare on ``kind``: the engine's rule
    (:meth:`IndexChoice.search_params`, widened by 1 / share kept), and fixed ones."""
    from searchkit.milvus import schema
    if kind == "HNSW":
        choice = schema.IndexChoice(kind)
        return [("ef 64 (fixed)", lambda kept: {"ef": 64}),
                ("ef 64 / kept", lambda kept: choice.search_params(K, kept))]
    choice = schema.ivf_index(n, kind)
    low = schema.IndexChoice(kind, choice.nlist, 64)
    return [("nprobe 64 (fixed)", lambda kept: {"nprobe": low.nprobe}),
            ("nprobe 64 / kept", lambda kept: low.search_params(K, kept)),
            (f"nprobe {choice.nprobe} / kept (engine)",
             lambda kept: choice.search_params(K, kept))]


def build_params(kind: str, n: int) -> dict:
    from searchkit.milvus import schema
    return (schema.ivf_index(n, kind) if kind != "HNSW"
            else schema.IndexChoice(kind)).build_params()


def filter_recall(fractions: list[float], work: Path, kinds: list[str]) -> list[FilterRecall]:
    """Each index kind on the server under filters keeping each fraction of the rows (a random
    bucket per row), searched with :func:`filter_settings`: recall@10 against exact search
    among the rows kept, p50, and the p50 of a ``count(*)`` query on the filter."""
    base = np.load(work / "base.npy", mmap_mode="r")
    n = base.shape[0]
    queries = np.load(work / "queries.npy")
    buckets = np.random.default_rng(21).integers(0, BUCKETS, n)
    scores = queries @ np.asarray(base).T
    out = []
    for kind in kinds:
        with server_collection(work, f"filter_recall_{kind}", kind, buckets,
                               build_params(kind, n)) as (server, client):
            client.load_collection("m")
            for fraction in fractions:
                limit = int(round(fraction * BUCKETS))
                expr = f"bucket < {limit}"
                kept = float(np.mean(buckets < limit))
                truth = top_k(np.where(buckets < limit, scores, -np.inf))
                count_lat = []
                for _ in range(COUNT_QUERIES):
                    t0 = time.perf_counter()
                    client.query("m", filter=expr, output_fields=["count(*)"],
                                 consistency_level=DIRECT_LEVEL)
                    count_lat.append(time.perf_counter() - t0)
                for label, params_of in filter_settings(kind, n):
                    params = params_of(kept)
                    lat, rec = [], []
                    for q, want in zip(queries, truth):
                        t0 = time.perf_counter()
                        hits = client.search("m", data=[q.tolist()], limit=K, filter=expr,
                                             output_fields=[], consistency_level=DIRECT_LEVEL,
                                             search_params={"metric_type": "IP",
                                                            "params": params})[0]
                        lat.append(time.perf_counter() - t0)
                        rec.append(len({h["id"] for h in hits} & set(want.tolist())) / K)
                    out.append(FilterRecall(kind, f"{label} = {params}", kept,
                                            float(np.mean(rec)), float(np.median(lat) * 1e3),
                                            float(np.median(count_lat) * 1e3)))
                    say(f"{kind} keeping {kept:.1%}, {out[-1].setting}: recall@10 "
                        f"{out[-1].recall:.3f}, p50 {out[-1].p50_ms:.2f} ms "
                        f"(count(*) {out[-1].count_p50_ms:.2f} ms)")
    return out


# ---- the parent: data, server, children, report ------------------------------------------------
def say(text: str) -> None:
    print(time.strftime("%H:%M:%S"), text, file=sys.stderr, flush=True)


def child(engine_name: str, location: str, work: Path) -> Measured:
    """The write phase and then the search phase, each in a fresh process."""
    phases = []
    for phase in PHASES:
        out = subprocess.run([sys.executable, __file__, "--child", phase, engine_name, location,
                              str(work)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                             check=False)
        if out.returncode:
            raise SystemExit(f"{engine_name} {phase} failed ({out.returncode})")
        phases.append(json.loads(out.stdout.strip().splitlines()[-1]))
    written, searched = phases
    return Measured(**{**written, **{k: v for k, v in searched.items()
                                     if k not in ("n", "insert_rows_s", "update_index_s",
                                                  "indexed_wait_s", "write_rss_peak")}})


def measure(engine_name: str, work: Path, server_location: str | None = None) -> Measured:
    if engine_name == "server" and server_location:   # a server that runs elsewhere
        return child("server", server_location, work)
    library = work / f"lib_{engine_name}"
    shutil.rmtree(library, ignore_errors=True)
    if engine_name == "local":
        return child("local", str(library), work)
    if engine_name == "lite":
        library.mkdir()
        return child("lite", f"milvus://{library}/lite.db/bench", work)
    sys.path.insert(0, str(ROOT / "tests" / "milvus"))
    from conftest import running_milvus
    library.mkdir()
    with running_milvus(library) as server:
        say(f"server: pid {server.pid}, port {server.port}")
        m = child("server", server.uri("bench"), work)
        m.server_rss_peak, m.server_rss_end = peak_rss(server.pid)
    return m


def report(results: list[Measured], n: int, queries: int) -> str:
    gb = 1e9
    cols = [r.engine for r in results]
    lines = [f"| {n:,} rows, {queries} queries | " + " | ".join(cols) + " |",
             "|---|" + "---:|" * len(cols)]

    def row(label: str, values) -> None:
        lines.append(f"| {label} | " + " | ".join(values) + " |")

    row("index (engine's choice at this size)", [r.index for r in results])
    row("insert rows/s (upsert_rows)", [f"{r.insert_rows_s:,.0f}" for r in results])
    row("update_index s (+ server indexing)",
        [f"{r.update_index_s:.1f}" + (f" (+{r.indexed_wait_s:.1f})" if r.indexed_wait_s else "")
         for r in results])
    for name in FILTERS:
        kept = results[0].kept.get(name, 1.0)
        label = name if name == "none" else f"{name} ({kept:.0%} kept)"
        row(f"p50 / p99 ms, {label}",
            [f"{r.p50_ms[name]:.2f} / {r.p99_ms[name]:.2f}" for r in results])
        row(f"recall@10, {label}", [f"{r.recall[name]:.3f}" for r in results])
    for setting in dict.fromkeys(s for r in results for s in r.direct):
        for name in FILTERS:
            row(f"direct pymilvus ({setting}), {name}: p50 / p99 ms, recall@10",
                [f"{r.direct[setting]['p50_ms'][name]:.2f} / "
                 f"{r.direct[setting]['p99_ms'][name]:.2f}, "
                 f"{r.direct[setting]['recall'][name]:.3f}" if setting in r.direct else "-"
                 for r in results])
    row("peak RSS, writing process GB", [f"{r.write_rss_peak / gb:.2f}" for r in results])
    row("peak RSS, searching process GB", [f"{r.rss_peak / gb:.2f}" for r in results])
    row("peak RSS, processes it started GB", [f"{r.children_rss_peak / gb:.2f}" for r in results])
    row("peak RSS, Milvus server GB",
        [f"{r.server_rss_peak / gb:.2f} (end {r.server_rss_end / gb:.2f})"
         if r.server_rss_peak else "-" for r in results])
    return "\n".join(lines)


def memory_report(memory: dict[str, dict[str, float]], n: int) -> None:
    print(f"| {n:,} vectors of {DIM} dimensions (float32: {4 * DIM:,} B) | server RSS "
          "released MB | loaded MB | B per vector |\n|---|---:|---:|---:|")
    for kind, m in memory.items():
        print(f"| {kind} {MEMORY_KINDS[kind] or ''} | {m['before'] / 1e6:,.0f} | "
              f"{m['after'] / 1e6:,.0f} | {m['per_vector']:,.0f} |")


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        m = PHASES[sys.argv[2]](sys.argv[3], sys.argv[4], Path(sys.argv[5]))
        print(json.dumps(asdict(m)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--engines", default=",".join(ENGINES),
                    type=lambda s: [e for e in s.split(",") if e])
    ap.add_argument("--work", type=Path, default=Path("/tmp/searchkit-milvus-bench"))
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    ap.add_argument("--server", metavar="milvus://HOST:PORT/COLLECTION",
                    help="measure this server (a new, empty collection; credentials from "
                         "SEARCHKIT_MILVUS_* or the config file) instead of starting one here")
    ap.add_argument("--index-memory", default="", type=lambda s: [k for k in s.split(",") if k],
                    help=f"instead: the server's RSS per vector of index kinds "
                         f"({','.join(MEMORY_KINDS)}), one fresh server each")
    ap.add_argument("--filter-recall", default="",
                    type=lambda s: [float(f) for f in s.split(",") if f],
                    help="instead: HNSW recall on the server under filters keeping these "
                         "fractions of the rows (e.g. 0.01,0.1,0.5)")
    ap.add_argument("--filter-kinds", default="HNSW,IVF_SQ8",
                    type=lambda s: [k for k in s.split(",") if k],
                    help="the index kinds --filter-recall compares (HNSW,IVF_SQ8,IVF_FLAT)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    say(f"preparing {args.n:,} vectors and exact answers")
    prepare(args.work, args.n, args.queries)
    if args.index_memory:
        return memory_report({kind: index_memory(kind, args.work) for kind in args.index_memory},
                             args.n)
    if args.filter_recall:
        print("| index | kept | search params | recall@10 | p50 ms | count(*) p50 ms |\n"
              "|---|---:|---|---:|---:|---:|")
        for r in filter_recall(args.filter_recall, args.work, args.filter_kinds):
            print(f"| {r.kind} | {r.kept:.1%} | {r.setting} | {r.recall:.3f} | "
                  f"{r.p50_ms:.2f} | {r.count_p50_ms:.2f} |")
        return
    results = []
    for engine_name in args.engines:
        results.append(measure(engine_name, args.work, args.server))
        if args.json:
            args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    print(f"{os.cpu_count()} cores shared with other jobs; one run; engines in fresh processes\n")
    print(report(results, args.n, args.queries))


if __name__ == "__main__":
    main()
