"""The HTTP API under load, through a real `searchkit serve` process, and its memory.

    python bench/bench_api.py [--model tiny|b32|NAME] [--rows 10000] [--requests 1000]
                              [--clients 32] [--warm 300] [--uploads 100]

A library of ``--rows`` synthetic rows (clustered unit vectors written through the store, as in
bench_search.py) plus ``--files`` real image files (indexed, for thumbnails) is served by
``searchkit serve`` in its own process, on 127.0.0.1 only. Then, over HTTP:

1. warm text queries, one at a time: client latency p50/p99, the encoder's share (the
   server's ``timings.encode_ms``) and the latency excluding the encoder;
2. image uploads, one at a time: upload-to-results p50/p99;
3. a warm-up round of the mix below, then the server's RSS at rest ("idle");
4. ``--requests`` mixed requests from ``--clients`` concurrent clients: text searches,
   filtered searches, uploads of varied images (photos, a 1x6000 and a 6000x1 PNG, a 12 MP
   JPEG, a 2.3 MP noise PNG, GIF, WebP) and thumbnails: p50/p99, throughput, errors, and the
   server's RSS right after and once at rest again, as a ratio to the idle RSS (the target
   is at most 1.5x).

Query images are real pictures from the align validation set when it is there, else
synthetic. ``b32`` is a random CLIP of ViT-B/32's size (the real model's encoder cost).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_search import WORDS, clustered, fill  # noqa: E402

from searchkit import Library  # noqa: E402
from searchkit.encoders import load_encoder  # noqa: E402

ALIGN = Path("/work/shared/datasets/align/validation")


def pct(xs, q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query_images(n: int) -> list[bytes]:
    files = sorted(ALIGN.rglob("*.jpg"))[:n] if ALIGN.is_dir() else []
    if files:
        return [f.read_bytes() for f in files]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def texts(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return ["a photo of a " + " ".join(rng.sample(WORDS, 3)) for _ in range(n)]


def build_library(model: str, rows: int, files: int, work: Path) -> Path:
    from searchkit.testing import make_tiny_clip
    src = {"tiny": lambda: make_tiny_clip(work / "tiny"),
           "b32": lambda: make_tiny_clip(work / "b32", full_size=True)}.get(model)
    enc = load_encoder(str(src()) if src else model)
    lib = Library.open(work / "lib", encoder=enc, create=True)
    fill(lib.store, clustered(rows, enc.dim))
    photos = work / "photos"
    photos.mkdir()
    for i, data in enumerate(query_images(files)):
        (photos / f"photo_{i:03d}.jpg").write_bytes(data)
    from searchkit.indexer import Indexer
    Indexer(lib).run([str(photos)])
    lib.search_index()  # built and saved once, so the server loads it
    print(f"model {model} (dim {enc.dim}), {rows} synthetic rows + {files} files, index "
          f"{lib.search_index().kind}")
    return work / "lib"


def file_ids(library: Path) -> list[int]:
    """Ids of the rows with a file on disk (the synthetic rows have none)."""
    from sqlalchemy import select

    from searchkit.store import File
    lib = Library.open(library)
    with lib.store.session() as s:
        return list(s.scalars(select(File.id).where(File.path.like("%/photos/photo_%"))))


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def varied_uploads(photos: list[bytes]) -> list[bytes]:
    """Photos, and the shapes and formats that cost a server the most memory."""
    rng = np.random.default_rng(3)

    def noise(w: int, h: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    odd = [encoded(Image.new("L", (1, 6000), 128), "PNG"),      # 1x6000: the tall-image bomb
           encoded(Image.new("L", (6000, 1), 128), "PNG"),
           encoded(noise(4000, 3000), "JPEG", quality=80),      # 12 MP photo
           encoded(noise(1500, 1500), "PNG"),                   # 2.3 MP, decoded whole
           encoded(noise(300, 200).convert("P"), "GIF"),
           encoded(noise(640, 480), "WEBP")]
    return photos[:10] + odd


class Server:
    """`searchkit serve` in a child process."""

    def __init__(self, library: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "searchkit.cli.main", "serve", "--library", str(library),
             "--port", str(self.port)], cwd=ROOT, env=env)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/api/status", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("server did not start")
            time.sleep(0.2)

    def rss_mb(self) -> float:
        """The server process's resident memory (Linux /proc), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise SystemExit("no VmRSS for the server process")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def text_request(client: httpx.Client, text: str) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    r = client.get("/api/search", params={"q": text, "k": 10})
    return time.perf_counter() - t, r


def image_request(client: httpx.Client, data: bytes) -> tuple[float, httpx.Response]:
    t = time.perf_counter()
    r = client.post("/api/search", params={"k": 10},
                    files={"image": ("query.jpg", data, "image/jpeg")})
    return time.perf_counter() - t, r


def sequential_text(url: str, n: int) -> dict:
    lat, enc, rest, server = [], [], [], []
    with httpx.Client(base_url=url, timeout=60) as c:
        for i, q in enumerate(texts(n + 10)):
            dt, r = text_request(c, q)
            r.raise_for_status()
            if i < 10:
                continue  # warm-up
            t = r.json()["timings"]
            e = t["encode_ms"] / 1e3
            lat.append(dt)
            enc.append(e)
            rest.append(dt - e)
            server.append((t["faiss_ms"], t["sqlite_ms"]))
    ms = lambda xs, q: pct(xs, q) * 1e3  # noqa: E731
    return {"text_p50_ms": ms(lat, 50), "text_p99_ms": ms(lat, 99),
            "encoder_p50_ms": ms(enc, 50), "encoder_p99_ms": ms(enc, 99),
            "text_excl_encoder_p50_ms": ms(rest, 50), "text_excl_encoder_p99_ms": ms(rest, 99),
            "encoder_share_of_p50": pct(enc, 50) / pct(lat, 50),
            "server_faiss_p50_ms": pct([f for f, _ in server], 50),
            "server_sqlite_p50_ms": pct([s for _, s in server], 50)}


def sequential_upload(url: str, images: list[bytes], n: int) -> dict:
    lat, enc = [], []
    with httpx.Client(base_url=url, timeout=60) as c:
        for i in range(n + 5):
            dt, r = image_request(c, images[i % len(images)])
            r.raise_for_status()
            if i >= 5:
                lat.append(dt)
                enc.append(r.json()["timings"]["encode_ms"] / 1e3)
    return {"upload_p50_ms": pct(lat, 50) * 1e3, "upload_p99_ms": pct(lat, 99) * 1e3,
            "upload_encoder_p50_ms": pct(enc, 50) * 1e3}


KINDS = ["text"] * 3 + ["filtered"] * 2 + ["upload"] * 3 + ["thumb"] * 2   # request i: i % 10
FILTERS = [{"format": "jpeg"}, {"min_width": 600}, {"glob": "*/photos/*"},
           {"after": "2000-01-01", "date_field": "modified"}]


@dataclass
class Mix:
    """What the mixed load sends: request ``i`` is text, filtered, upload or thumbnail."""
    texts: list[str]
    uploads: list[bytes]
    thumb_ids: list[int]

    def send(self, c: httpx.Client, i: int) -> httpx.Response:
        kind, text = KINDS[i % 10], self.texts[i % len(self.texts)]
        if kind == "text":
            return c.get("/api/search", params={"q": text, "k": 10})
        if kind == "filtered":
            return c.get("/api/search", params={"q": text, "k": 10, **FILTERS[i % len(FILTERS)]})
        if kind == "upload":
            data = self.uploads[i % len(self.uploads)]
            return c.post("/api/search", params={"k": 10},
                          files={"image": ("query", data, "application/octet-stream")})
        return c.get(f"/api/images/{self.thumb_ids[i % len(self.thumb_ids)]}/thumb")


def concurrent_mix(url: str, mix: Mix, n: int, clients: int) -> dict:
    local = threading.local()
    errors: list[str] = []

    def one(i: int) -> float | None:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(base_url=url, timeout=300)
        t = time.perf_counter()
        try:
            r = mix.send(c, i)
        except httpx.HTTPError as e:
            errors.append(repr(e))
            return None
        if r.status_code != 200:
            errors.append(f"{r.status_code}: {r.text[:100]}")
            return None
        return time.perf_counter() - t
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t
    lat = [x for x in results if x is not None] or [0.0]
    by_kind = {k: [x for i, x in enumerate(results) if x is not None and KINDS[i % 10] == k]
               for k in dict.fromkeys(KINDS)}
    return {"mix_requests": n, "mix_clients": clients, "mix_p50_ms": pct(lat, 50) * 1e3,
            "mix_p99_ms": pct(lat, 99) * 1e3, "mix_errors": len(errors),
            "mix_throughput_rps": n / wall, "mix_error_samples": errors[:5],
            "mix_by_kind_ms": {k: (pct(v, 50) * 1e3, pct(v, 99) * 1e3)
                               for k, v in by_kind.items() if v}}


def settled_rss(server: Server, seconds: float = 3.0) -> float:
    time.sleep(seconds)  # let the last responses and their buffers go
    return server.rss_mb()


def memory_under_load(server: Server, mix: Mix, n: int, clients: int) -> dict:
    concurrent_mix(server.url, mix, 100, clients)  # warm-up: every kind of request, cached thumbs
    idle = settled_rss(server)
    res = concurrent_mix(server.url, mix, n, clients)
    after = server.rss_mb()
    rest = settled_rss(server)
    res.update(rss_idle_mb=idle, rss_after_mb=after, rss_rest_mb=rest,
               rss_ratio=max(after, rest) / idle)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=40, help="real image files (thumbnails)")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--warm", type=int, default=300, help="sequential text queries")
    ap.add_argument("--uploads", type=int, default=100, help="sequential uploads")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = ap.parse_args()
    images = query_images(32)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (the machine is "
          "shared: compare runs at similar load)")
    print(f"query images: {len(images)} ({'align validation' if ALIGN.is_dir() else 'synthetic'}"
          f", median {np.median([len(b) for b in images]) / 1024:.0f} kB)")
    with tempfile.TemporaryDirectory() as tmp:
        lib_dir = build_library(args.model, args.rows, args.files, Path(tmp))
        mix = Mix(texts(200, seed=2), varied_uploads(images), file_ids(lib_dir))
        server = Server(lib_dir)
        try:
            res = sequential_text(server.url, args.warm)
            res.update(sequential_upload(server.url, images, args.uploads))
            res.update(memory_under_load(server, mix, args.requests, args.clients))
        finally:
            server.stop()
    report(args, res)


def report(args, res: dict) -> None:
    print(f"warm text query, {args.warm} sequential: p50 {res['text_p50_ms']:.2f} ms, "
          f"p99 {res['text_p99_ms']:.2f} ms")
    print(f"    excluding the encoder: p50 {res['text_excl_encoder_p50_ms']:.2f} ms, "
          f"p99 {res['text_excl_encoder_p99_ms']:.2f} ms (server side: FAISS p50 "
          f"{res['server_faiss_p50_ms']:.2f} ms, SQLite p50 {res['server_sqlite_p50_ms']:.2f} ms;"
          " the rest is HTTP)")
    print(f"    encoder: p50 {res['encoder_p50_ms']:.2f} ms, p99 {res['encoder_p99_ms']:.2f} ms "
          f"({res['encoder_share_of_p50']:.0%} of the median query)")
    print(f"upload to results, {args.uploads} sequential: p50 {res['upload_p50_ms']:.2f} ms, "
          f"p99 {res['upload_p99_ms']:.2f} ms (encoder p50 {res['upload_encoder_p50_ms']:.2f} ms)")
    print(f"{args.requests} mixed requests from {args.clients} clients (30% text, 20% filtered, "
          f"30% uploads incl. 1x6000, 20% thumbnails): p50 {res['mix_p50_ms']:.1f} ms, "
          f"p99 {res['mix_p99_ms']:.1f} ms, {res['mix_throughput_rps']:.0f} req/s, "
          f"errors {res['mix_errors']}")
    print("    p50 / p99 by kind: " + ", ".join(f"{k} {a:.0f} / {b:.0f} ms" for k, (a, b)
                                                in res["mix_by_kind_ms"].items()))
    for e in res["mix_error_samples"]:
        print("    error:", e)
    print(f"server RSS: idle after warm-up {res['rss_idle_mb']:.0f} MB, right after the mix "
          f"{res['rss_after_mb']:.0f} MB, at rest after it {res['rss_rest_mb']:.0f} MB: "
          f"{res['rss_ratio']:.2f}x idle (target <= 1.5x)")
    if args.json:
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
