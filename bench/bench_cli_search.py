"""Whole one-off ``searchkit search`` / ``similar`` / ``classify`` processes: torch vs ONNX.

    python bench/bench_cli_search.py [--model searchkit-lite] [--images 32] [--runs 5]

Indexes a folder of generated JPEGs into a temporary library (which also exports the model's
query side for torch-free queries, in a temporary cache), then times fresh ``searchkit search``
(text), ``searchkit similar`` (image) and ``searchkit classify`` (all the images, 10 labels)
processes from start to exit, alternating
SEARCHKIT_FAST_QUERIES=0 (the model loads in torch) and the default (onnxruntime). Prints the
medians, the ratios, and whether both paths give the same hits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_index import make_images  # noqa: E402

QUERIES = ("a red bicycle leaning on a wall", "a dog on a beach", "apple", "night city lights")
LABELS = "city,beach,forest,mountain,food,people,animal,car,boat,house"


def searchkit(*args: str, env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "searchkit.cli.main", *args], cwd=ROOT, env=env,
                         check=True, capture_output=True, text=True)
    return time.perf_counter() - t, out.stdout


def _rounded(hit: dict) -> tuple:
    """A hit (search) or a prediction (classify), scores to 4 decimals."""
    return (hit["path"], hit.get("label"), round(hit.get("score", hit.get("probability", 0)), 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="searchkit-lite")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per path")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_images(work / "images", args.images)
        env = dict(os.environ, SEARCHKIT_CACHE_DIR=str(work / "cache"), HF_HUB_OFFLINE="1")
        lib = str(work / "library")
        t_index, _ = searchkit("index", str(work / "images"), "--library", lib, "--model",
                               args.model, env=env)
        print(f"index {args.images} images + export: {t_index:.1f} s")
        paths = {"torch": dict(env, SEARCHKIT_FAST_QUERIES="0"), "onnx": env}
        images = sorted((work / "images").glob("*.jpg"))
        commands = {
            "search": lambda i: ("search", QUERIES[i % len(QUERIES)], "--library", lib),
            "similar": lambda i: ("similar", str(images[i]), "--library", lib),
            "classify": lambda i: ("classify", str(work / "images"), "--labels", LABELS,
                                   "--model", args.model)}
        for command, argv in commands.items():
            times: dict[str, list[float]] = {k: [] for k in paths}
            hits: dict[str, list] = {k: [] for k in paths}
            for i in range(args.runs):
                for name, e in paths.items():
                    dt, out = searchkit(*argv(i), "--json", env=e)
                    times[name].append(dt)
                    hits[name].append([_rounded(h) for h in json.loads(out)])
            med = {k: float(np.median(v)) for k, v in times.items()}
            for k, v in times.items():
                print(f"{k:6s} fresh `searchkit {command}` process: median {med[k]:.2f} s "
                      f"(runs: {', '.join(f'{x:.2f}' for x in v)})")
            print(f"{command}: ratio onnx/torch {med['onnx'] / med['torch']:.2f}; "
                  f"same hits on both paths: {hits['torch'] == hits['onnx']}")

if __name__ == "__main__":
    main()
