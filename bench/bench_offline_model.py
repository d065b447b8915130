"""Throughput of the bundled offline model vs a full-size (random) CLIP ViT-B/32, from one run.

    python bench/bench_offline_model.py [--model searchkit-lite] [--images 128] [--texts 512]

For each model: a fresh process's load + first text query (imports included), image encoder
forward on preprocessed batches, encoding of decoded images, text encoding, and the indexer end
to end on JPEG files; then the ratios offline / B/32.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_index import make_images, rate_encode_images, rate_forward, rate_indexer  # noqa: E402
from searchkit.encoders import load_encoder  # noqa: E402

FIRST_QUERY = """
import time, sys
t = time.perf_counter()
from searchkit.encoders import load_encoder
enc = load_encoder(sys.argv[1], device="cpu")
enc.encode_texts(["a photo of a dog on a beach"])
print(time.perf_counter() - t)
"""
CAPTIONS = ("a photo of a {} on a beach", "a drawing of a red {}", "{} icon", "a {} at night")
WORDS = ("dog", "cat", "house", "bicycle", "tree", "ship", "flower", "car")


def first_query_seconds(model: str, runs: int = 1) -> float:
    """Median over ``runs`` fresh processes of import + load + first text query."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    times = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", FIRST_QUERY, model], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return float(np.median(times))


def rate_texts(enc, n: int) -> float:
    texts = [CAPTIONS[i % len(CAPTIONS)].format(WORDS[(i // 4) % len(WORDS)]) + f" {i}"
             for i in range(n)]
    enc.encode_texts(texts[:8])
    t = time.perf_counter()
    enc.encode_texts(texts)
    return n / (time.perf_counter() - t)


def measure(model: str, work: Path, n_images: int, n_texts: int,
            first_runs: int = 1) -> dict[str, float]:
    enc = load_encoder(model, device="cpu")
    images_dir = work / "images"
    paths = sorted(images_dir.glob("*.jpg"))
    images = [Image.open(p).convert("RGB") for p in paths]
    pixels = np.stack([enc.preprocess(im) for im in images])
    return {"first query (fresh process) s": first_query_seconds(model, first_runs),
            "image forward img/s": rate_forward(enc, pixels),
            "encode decoded images img/s": rate_encode_images(enc, images),
            "encode texts texts/s": rate_texts(enc, n_texts),
            "indexer end to end img/s": rate_indexer(enc, images_dir, work / f"lib-{time.time()}",
                                                     n_images)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="searchkit-lite")
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--first-query-runs", type=int, default=5,
                    help="fresh processes for the first-query time (median)")
    args = ap.parse_args()
    from searchkit.testing import make_tiny_clip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_images(work / "images", args.images)
        b32 = str(make_tiny_clip(work / "b32", full_size=True))
        rows = {args.model: measure(args.model, work, args.images, args.texts,
                                    args.first_query_runs),
                "clip-b32 (random, full size)": measure(b32, work, args.images, args.texts,
                                                        args.first_query_runs)}
    import torch
    print(f"{args.images} JPEGs 640x480, {args.texts} texts, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, one run "
          f"(first query: median of {args.first_query_runs} fresh processes)")
    names = list(rows)
    print(f"{'':34s}" + "".join(f"{n[:28]:>30s}" for n in names) + f"{'ratio':>10s}")
    for key in rows[names[0]]:
        a, b = rows[names[0]][key], rows[names[1]][key]
        print(f"{key:34s}{a:30.2f}{b:30.2f}{a / b:10.2f}")


if __name__ == "__main__":
    main()
