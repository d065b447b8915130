"""Indexing throughput vs the bare encoder on the same images, and the no-op re-index.

    python bench/bench_index.py [--model tiny|b32|NAME] [--images 256] [--noop-files 1000]

Prints, from one run: the encoder's forward rate on preprocessed batches, its rate when handed
decoded images (preprocess + forward), the indexer's end-to-end rate on the image files
(scan, read, hash, decode, preprocess, encode, write, FAISS), and their ratios; then the time
of a no-op re-index of ``--noop-files`` unchanged files (in-process, and as a whole CLI run).
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

from searchkit.indexer import Indexer  # noqa: E402
from searchkit import Library  # noqa: E402
from searchkit.encoders import load_encoder  # noqa: E402

BATCH = 32


def photo_like(rng: np.random.Generator, size=(640, 480)) -> Image.Image:
    """Smooth gradients plus noise: JPEG-decodes like a photo, not like a flat colour."""
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = rng.uniform(0, 255, 3) * x + rng.uniform(0, 255, 3) * y
    img = np.clip(base / 2 + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def make_images(folder: Path, n: int, size=(640, 480)) -> list[Path]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"photo_{i:05d}.jpg"
        photo_like(rng, size).save(p, quality=90)
        paths.append(p)
    return paths


def model_dir(spec: str, work: Path) -> str:
    from searchkit.testing import make_tiny_clip
    if spec == "tiny":
        return str(make_tiny_clip(work / "tiny"))
    if spec == "b32":
        return str(make_tiny_clip(work / "b32", full_size=True))
    return spec


def rate_forward(enc, pixels: np.ndarray) -> float:
    enc.encode_pixels(pixels[:BATCH])  # warm-up
    t = time.perf_counter()
    for i in range(0, len(pixels), BATCH):
        enc.encode_pixels(pixels[i:i + BATCH])
    return len(pixels) / (time.perf_counter() - t)


def rate_encode_images(enc, images: list[Image.Image]) -> float:
    t = time.perf_counter()
    for i in range(0, len(images), BATCH):
        enc.encode_images(images[i:i + BATCH])
    return len(images) / (time.perf_counter() - t)


def rate_indexer(enc, folder: Path, lib_dir: Path, n: int) -> float:
    lib = Library.open(lib_dir, encoder=enc, create=True)
    report = Indexer(lib, encode_batch=BATCH).run([str(folder)])
    assert report.encoded == n, report
    return n / report.seconds


def noop(enc, work: Path, n_files: int) -> tuple[float, float]:
    from tests.helpers import make_photos
    folder = work / "noop"
    make_photos(folder, n_files, size=(32, 24))
    lib_dir = work / "noop-lib"
    lib = Library.open(lib_dir, encoder=enc, create=True)
    Indexer(lib).run([str(folder)])
    report = Indexer(lib).run([str(folder)])
    assert report.encoded == 0 and report.unchanged == n_files
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "searchkit.cli.main", "index", "--library", str(lib_dir)],
                   check=True, cwd=ROOT, capture_output=True)
    return report.seconds, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--noop-files", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        enc = load_encoder(model_dir(args.model, work))
        paths = make_images(work / "images", args.images)
        images = [Image.open(p).convert("RGB") for p in paths]
        pixels = np.stack([enc.preprocess(im) for im in images])
        fwd = rate_forward(enc, pixels)
        enc_rate = rate_encode_images(enc, images)
        idx_rate = rate_indexer(enc, work / "images", work / "lib", args.images)
        print(f"model {args.model}: {args.images} JPEGs 640x480, batch {BATCH}, "
              f"{os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}")
        print(f"  encoder forward (preprocessed)   {fwd:9.1f} img/s")
        print(f"  encoder on decoded images        {enc_rate:9.1f} img/s")
        print(f"  indexer end to end (files)       {idx_rate:9.1f} img/s")
        print(f"  ratio indexer / forward          {idx_rate / fwd:9.2f}")
        print(f"  ratio indexer / encode_images    {idx_rate / enc_rate:9.2f}")
        if args.noop_files:
            inproc, cli = noop(enc, work, args.noop_files)
            print(f"no-op re-index of {args.noop_files} files: {inproc:.3f} s in-process, "
                  f"{cli:.2f} s as a CLI process (imports included)")


if __name__ == "__main__":
    main()
