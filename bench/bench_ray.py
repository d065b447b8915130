"""Ray vs local executor: the same images indexed by each, wall time and vector equality.

    nice -n 10 python bench/bench_ray.py [--images 2000] [--model searchkit-lite]
                                         [--out bench/results/ray.md]

The images are the first ``--images`` of the shared ``align`` train/validation images
(bench/synth.py ``shared_images``; GUIDE.md: never the evaluation-only sets), copied into a
temporary folder. Each executor indexes that folder into a fresh library with the same model:

- ``local``: the default executor (decoding threads + batched encoding in this process);
- ``ray``: a local Ray instance on this machine's cores (what ``searchkit index --executor ray``
  starts without ``--ray-address``), one actor with every core; ``ray, N actors``: the cores
  split between N actors;
- ``local, 1 torch thread``: the default executor with torch on one thread, as a 1-core actor
  runs it (to tell the executor from torch's threading on a busy machine).

The Ray times include starting Ray and its actors (a cluster is slower than a loop on one
machine; it is for many GPU workers). Max |diff| is over every coordinate of every file's
stored vector against the local executor's.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synth import shared_images  # noqa: E402

from searchkit import Library  # noqa: E402
from searchkit.indexer import Indexer  # noqa: E402
from searchkit.indexer.executors import RayOptions, make_executor  # noqa: E402
from searchkit.store import STATUS_OK  # noqa: E402


@dataclass
class Result:
    label: str
    load: float          # the machine's 1-minute load average at the end of the run
    seconds: float
    encoded: int
    added: int
    vectors: dict[str, np.ndarray]


def copy_images(n: int, folder: Path) -> int:
    """The first ``n`` shared images, copied (same names as in the data set)."""
    images = shared_images()[:n]
    for im in images:
        dest = folder / im.source / im.path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(im.path, dest)
    return len(images)


def stored_vectors(lib: Library, root: Path) -> dict[str, np.ndarray]:
    rows = lib.store.rows_under([str(root)])
    return {p: lib.stored_vector(r.id) for p, r in rows.items() if r.status == STATUS_OK}


def index(label: str, executor, folder: Path, work: Path, model: str) -> Result:
    lib = Library.open(work / label.replace(" ", "-").replace(",", ""), model=model, create=True)
    lib.encoder  # noqa: B018 -- the model load is not the executor's work: both start loaded
    t0 = time.perf_counter()
    report = Indexer(lib, executor=executor).run([str(folder)])
    seconds = time.perf_counter() - t0
    return Result(label, os.getloadavg()[0], seconds, report.encoded, report.added,
                  stored_vectors(lib, folder))


def one_thread(fn):
    """``fn()`` with torch on one thread (as each 1-core Ray actor runs: Ray sets
    OMP_NUM_THREADS to an actor's cores), the thread count put back after."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys(), "the executors stored different files"
    return max(float(np.max(np.abs(a[p] - b[p]))) for p in a)


def report(results: list[Result], n: int, model: str, command: str) -> str:
    local = results[0]
    lines = [
        "# Ray vs local executor (issue 13)", "",
        f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; model `{model}`; {n} shared `align` images "
        "(openclipart / noto / fluent3d PNGs), one run each, fresh library each, in the order "
        "shown; the machine is shared with other jobs (its load average is in the table).", "",
        "| executor | wall s | images/s | encoded | added | time vs local | max abs diff vs local "
        "| load avg after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r.label} | {r.seconds:.1f} | {r.encoded / r.seconds:.0f} | {r.encoded} "
                     f"| {r.added} | {r.seconds / local.seconds:.2f}x | "
                     f"{max_abs_diff(local.vectors, r.vectors):.1e} | {r.load:.1f} |")
    lines += ["", "The Ray times include starting a local Ray instance and its actors (each "
              "actor loads the model); vectors are compared file by file."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="searchkit-lite")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        folder = work / "images"
        n = copy_images(args.images, folder)
        cores = os.cpu_count() or 1
        runs = [("local", make_executor("local")),
                ("ray, 1 actor", make_executor("ray", RayOptions(actors=1))),
                (f"ray, {cores} actors", make_executor("ray", RayOptions(actors=cores)))]
        results = []
        for label, executor in runs:
            results.append(index(label, executor, folder, work, args.model))
            print(f"{label}: {results[-1].seconds:.1f} s", flush=True)
        results.append(one_thread(lambda: index("local, 1 torch thread", make_executor("local"),
                                                folder, work, args.model)))
        command = "nice -n 10 python bench/bench_ray.py " + " ".join(sys.argv[1:])
        text = report(results, n, args.model, command.strip())
        print(text)
        if args.out:
            args.out.write_text(text, encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
