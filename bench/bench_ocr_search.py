"""Text in images (issue 14): does the hybrid ranking find images by the words they show, and
what does ``index --ocr`` cost?

    nice -n 10 python bench/bench_ocr_search.py [--images 200] [--seed 1] [--model searchkit-lite]

One generated set (bench/synth.py ``make_text_images``: words and numbers rendered in several
fonts, sizes and angles on plain backgrounds and on the shared images), written as PNG files.

- Indexing: the same files indexed into two new libraries with the same workers, without and
  with ``--ocr`` (each run includes the model's load; the OCR engine loads inside the run).
  Images/s of each and their ratio.
- Retrieval: for every image, a word that it alone carries (letters only, at least 4) is a
  query; it is found at rank r if that image is the r-th hit. R@1 and R@10 with the image model
  alone (``hybrid=False``) and with the hybrid ranking (the default once text was read), for
  the bare word and for "a sign that says WORD". The text filter (``--text-contains WORD``):
  how often the image is among its results, and how many other images come with it.
- OCR recall on the query words: how many of them the stored text holds (what the hybrid
  ranking can at best find).

Writes bench/results/ocr_search.md (and .json) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from synth import make_text_images  # noqa: E402

from searchkit import Filters, Library, Query  # noqa: E402
from searchkit.indexer import Indexer  # noqa: E402
from searchkit.ocr import contains, default_engine, normalise  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TEMPLATES = {"word": "{}", "sign": "a sign that says {}"}
MIN_WORD = 4


@dataclass
class IndexTiming:
    images: int
    seconds: float
    texts_read: int

    @property
    def per_second(self) -> float:
        return self.images / self.seconds


@dataclass
class Recall:
    queries: int
    r1: float
    r10: float


def write_images(folder: Path, n: int, seed: int) -> dict[str, tuple[str, ...]]:
    """The generated images as PNG files; their rendered words by file name."""
    folder.mkdir(parents=True)
    words = {}
    for i, im in enumerate(make_text_images(n, seed)):
        name = f"text_{i:04d}.png"
        im.image.save(folder / name)
        words[name] = im.words
    return words


def unique_words(words: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """For each image that has one, a word (letters only) that no other image carries."""
    seen = Counter(normalise(w) for ws in words.values() for w in set(map(normalise, ws)))
    out = {}
    for name, ws in sorted(words.items()):
        mine = [w for w in ws if w.isalpha() and len(w) >= MIN_WORD and seen[normalise(w)] == 1]
        if mine:
            out[name] = max(mine, key=len).lower()
    return out


def index(folder: Path, library: Path, model: str, ocr: bool, workers: int) -> tuple[
        Library, IndexTiming]:
    t0 = time.perf_counter()
    plan = Library.open_for_indexing(library, model=model, paths=[folder])
    if ocr:
        plan.library.set_ocr(True)
    report = Indexer(plan.library, workers=workers,
                     ocr=default_engine() if ocr else None).run(plan.paths)
    seconds = time.perf_counter() - t0
    return plan.library, IndexTiming(report.added, seconds, report.texts_read)


def rank_of(lib: Library, query: str, target: str, hybrid: bool, k: int = 10) -> int | None:
    hits = lib.search(Query.text(query), k=k, hybrid=hybrid)
    names = [Path(h.path).name for h in hits]
    return names.index(target) + 1 if target in names else None


def recall(lib: Library, targets: dict[str, str], template: str, hybrid: bool) -> Recall:
    ranks = [rank_of(lib, template.format(w), name, hybrid) for name, w in targets.items()]
    n = len(ranks)
    return Recall(n, sum(r == 1 for r in ranks) / n, sum(r is not None for r in ranks) / n)


def filter_results(lib: Library, targets: dict[str, str]) -> dict:
    """The text filter alone: the target among the results, and the others that come along."""
    found = extra = 0
    for name, w in targets.items():
        hits = lib.search(Query.text(w), k=50, filters=Filters(text_contains=w), hybrid=False)
        names = {Path(h.path).name for h in hits}
        found += name in names
        extra += len(names - {name})
    return {"found": found / len(targets), "others_per_query": extra / len(targets)}


def text_recall(lib: Library, folder: Path, targets: dict[str, str]) -> float:
    ids = {Path(h.path).name: h.id for h in lib.search(Query.text("x"), k=10_000, hybrid=False)}
    texts = lib.store.ocr_texts([ids[n] for n in targets if n in ids])
    return sum(contains(texts.get(ids.get(n, -1), ""), w) for n, w in targets.items()) \
        / len(targets)


def report_md(args, timing, recalls, filt, ocr_recall, n_targets) -> str:
    plain, ocr = timing["plain"], timing["ocr"]
    lines = [
        "# Text in images: hybrid ranking and the cost of `--ocr` (issue 14)", "",
        f"Command: `nice -n 10 python bench/bench_ocr_search.py --images {args.images} "
        f"--seed {args.seed} --model {args.model} --workers {args.workers}`; "
        f"{platform.machine()}, {os.cpu_count()} cores, load average at the start "
        f"{args.load:.1f}.", "",
        f"- Set: {args.images} generated images (bench/synth.py make_text_images, seed "
        f"{args.seed}), PNG; {n_targets} of them carry a word (letters, >= {MIN_WORD}) no other "
        "image carries: those words are the queries.",
        "- Ranks: hits of `Library.search(Query.text(q), k=10)`; CLIP alone is "
        "`hybrid=False`, hybrid the default (reciprocal-rank fusion, k=60, of the CLIP ranking "
        "and the FTS5 bm25 ranking of the query's words, 100 candidates each).", "",
        "## Retrieval", "",
        "| query | ranking | R@1 | R@10 |", "|---|---|---|---|"]
    for key, rec in recalls.items():
        template, ranking = key.split("/")
        lines.append(f"| `{TEMPLATES[template].format('WORD')}` | {ranking} | "
                     f"{rec.r1 * 100:.1f} % | {rec.r10 * 100:.1f} % |")
    lines += ["", f"- OCR recall on the query words (the stored text contains the word): "
              f"{ocr_recall * 100:.1f} %: the ceiling of what the text side can find.",
              f"- `--text-contains WORD` alone: the image among the results for "
              f"{filt['found'] * 100:.1f} % of the words, with "
              f"{filt['others_per_query']:.2f} other images per query on average.", "",
              "## Indexing cost", "",
              "| run | images | seconds | images/s | texts read |", "|---|---|---|---|---|",
              f"| without --ocr | {plain.images} | {plain.seconds:.1f} | "
              f"{plain.per_second:.2f} | {plain.texts_read} |",
              f"| with --ocr | {ocr.images} | {ocr.seconds:.1f} | {ocr.per_second:.2f} | "
              f"{ocr.texts_read} |", "",
              f"- Throughput with --ocr is {ocr.per_second / plain.per_second:.3f} of that "
              f"without (x{plain.per_second / ocr.per_second:.1f} the time); "
              f"{(ocr.seconds - plain.seconds) / ocr.images * 1000:.0f} ms more per image, "
              f"with {args.workers} workers (one OCR engine per worker, one onnxruntime thread "
              "each)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default="searchkit-lite")
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    args.load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-ocr-search-") as tmp:
        tmp = Path(tmp)
        words = write_images(tmp / "images", args.images, args.seed)
        targets = unique_words(words)
        _, plain = index(tmp / "images", tmp / "lib-plain", args.model, False, args.workers)
        print(f"without --ocr: {plain.images} images in {plain.seconds:.1f}s", flush=True)
        lib, ocr = index(tmp / "images", tmp / "lib-ocr", args.model, True, args.workers)
        print(f"with --ocr: {ocr.images} images in {ocr.seconds:.1f}s", flush=True)
        recalls = {f"{t}/{name}": recall(lib, targets, TEMPLATES[t], hybrid)
                   for t in TEMPLATES for name, hybrid in (("CLIP alone", False),
                                                          ("hybrid", True))}
        filt = filter_results(lib, targets)
        ocr_recall = text_recall(lib, tmp / "images", targets)
    timing = {"plain": plain, "ocr": ocr}
    md = report_md(args, timing, recalls, filt, ocr_recall, len(targets))
    print(md)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "ocr_search.md").write_text(md)
        (RESULTS / "ocr_search.json").write_text(json.dumps({
            "args": vars(args), "targets": len(targets),
            "timing": {k: dict(asdict(v), per_second=v.per_second) for k, v in timing.items()},
            "recall": {k: asdict(v) for k, v in recalls.items()}, "filter": filt,
            "ocr_recall": ocr_recall}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
