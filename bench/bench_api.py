"""The HTTP API under load, through a real `searchkit serve` process.

    python bench/bench_api.py [--model tiny|b32|NAME] [--rows 10000] [--requests 1000]
                              [--clients 16] [--warm 300] [--uploads 100]

A library of ``--rows`` synthetic rows (clustered unit vectors written through the store, as in
bench_search.py) is served by ``searchkit serve`` in its own process. Then, over HTTP:

1. warm text queries, one at a time: client latency p50/p99, the encoder's share (the
   server's ``timings.encode_ms``) and the latency excluding the encoder;
2. image uploads, one at a time: upload-to-results p50/p99;
3. ``--requests`` requests from ``--clients`` concurrent clients, half text and half image
   uploads: p50/p99, throughput and the error count.

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


def build_library(model: str, rows: int, work: Path) -> Path:
    from searchkit.testing import make_tiny_clip
    src = {"tiny": lambda: make_tiny_clip(work / "tiny"),
           "b32": lambda: make_tiny_clip(work / "b32", full_size=True)}.get(model)
    enc = load_encoder(str(src()) if src else model)
    lib = Library.open(work / "lib", encoder=enc, create=True)
    fill(lib.store, clustered(rows, enc.dim))
    lib.search_index()  # built and saved once, so the server loads it
    print(f"model {model} (dim {enc.dim}), {rows} rows, index {lib.search_index().kind}")
    return work / "lib"


class Server:
    """`searchkit serve` in a child process."""

    def __init__(self, library: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--library", str(library),
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


def concurrent_mix(url: str, images: list[bytes], n: int, clients: int) -> dict:
    qs = texts(n, seed=2)
    local = threading.local()
    errors: list[str] = []

    def one(i: int) -> float | None:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = httpx.Client(base_url=url, timeout=120)
        try:
            dt, r = (text_request(c, qs[i]) if i % 2 == 0
                     else image_request(c, images[i % len(images)]))
        except httpx.HTTPError as e:
            errors.append(repr(e))
            return None
        if r.status_code != 200:
            errors.append(f"{r.status_code}: {r.text[:100]}")
            return None
        return dt
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(n)))
    wall = time.perf_counter() - t
    lat = [x for x in results if x is not None]
    return {"mix_requests": n, "mix_clients": clients, "mix_p50_ms": pct(lat, 50) * 1e3,
            "mix_p99_ms": pct(lat, 99) * 1e3, "mix_errors": len(errors),
            "mix_throughput_rps": n / wall, "mix_error_samples": errors[:5]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=16)
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
        lib_dir = build_library(args.model, args.rows, Path(tmp))
        server = Server(lib_dir)
        try:
            res = sequential_text(server.url, args.warm)
            res.update(sequential_upload(server.url, images, args.uploads))
            res.update(concurrent_mix(server.url, images, args.requests, args.clients))
        finally:
            server.stop()
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
    print(f"{args.requests} requests from {args.clients} clients (half text, half upload): "
          f"p50 {res['mix_p50_ms']:.1f} ms, p99 {res['mix_p99_ms']:.1f} ms, "
          f"{res['mix_throughput_rps']:.0f} req/s, errors {res['mix_errors']}")
    for e in res["mix_error_samples"]:
        print("    error:", e)
    if args.json:
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
