"""OCR engine choice: word recall and speed of offline CPU engines on generated text images.

    nice -n 10 python bench/bench_ocr.py [--images 240] [--seed 0] [--engines NAME,...]

The set (bench/synth.py ``make_text_images``): words of the shared captions and numbers
(prices such as 42.50, integers, codes such as 42-1170) rendered onto plain backgrounds and onto
the shared images, in the DejaVu and Liberation fonts, 12-64 px, at 0, +-5 and +-15 degrees.

Engines (each is skipped with a note when it is not installed):
- ``rapidocr``: rapidocr 3.x, PP-OCRv6 small det/rec ONNX models shipped in the wheel;
- ``rapidocr-onnxruntime``: rapidocr-onnxruntime 1.4.x, PP-OCRv4 models shipped in the wheel;
- ``tesseract-psm11`` / ``tesseract-psm3``: Debian's tesseract-ocr (eng), the binary per image
  (as pytesseract calls it), sparse-text and automatic page segmentation.

Word recall: the fraction of rendered tokens found, case-insensitive, as a whole token of the
engine's output (punctuation trimmed at the ends); "loose" also accepts a token found inside the
output with spaces removed (an engine that glues words). Each image is run through every engine
configuration in turn, so machine load falls on all alike; ms/image is the median and the mean
wall time per image, with 1 thread and with the engine's default threads. Load time is a fresh
process's import + construction + one call on a small image.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from synth import TextImage, make_text_images, normalise_tokens  # noqa: E402

Recognise = Callable[[Image.Image], str]
DEFAULT_THREADS = -1


# ---------------------------------------------------------------------------------------------
# engines

def bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def rapidocr_v3(threads: int) -> Recognise:
    from rapidocr import RapidOCR
    params = {"Global.log_level": "warning"}
    if threads > 0:
        params |= {"EngineConfig.onnxruntime.intra_op_num_threads": threads,
                   "EngineConfig.onnxruntime.inter_op_num_threads": 1}
    engine = RapidOCR(params=params)
    return lambda image: " ".join(engine(bgr(image)).txts or ())


def rapidocr_onnxruntime(threads: int) -> Recognise:
    from rapidocr_onnxruntime import RapidOCR
    kwargs = {"intra_op_num_threads": threads, "inter_op_num_threads": 1} if threads > 0 else {}
    engine = RapidOCR(**kwargs)

    def run(image: Image.Image) -> str:
        result, _ = engine(bgr(image))
        return " ".join(r[1] for r in result or ())
    return run


def tesseract(psm: int) -> Callable[[int], Recognise]:
    def make(threads: int) -> Recognise:
        if shutil.which("tesseract") is None:
            raise FileNotFoundError("tesseract is not installed (apt-get install tesseract-ocr)")
        env = dict(os.environ)
        if threads > 0:
            env["OMP_THREAD_LIMIT"] = str(threads)

        def run(image: Image.Image) -> str:
            buf = io.BytesIO()
            image.save(buf, "PNG")
            out = subprocess.run(["tesseract", "stdin", "stdout", "-l", "eng", "--psm", str(psm)],
                                 input=buf.getvalue(), capture_output=True, env=env, check=True)
            return out.stdout.decode("utf-8", "replace")
        return run
    return make


def tesseract_version() -> str:
    out = subprocess.run(["tesseract", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.returncode == 0 else ""


def package_version(dist: str) -> str:
    try:
        return f"{dist} {metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return ""


@dataclass(frozen=True)
class Engine:
    name: str
    make: Callable[[int], Recognise]
    version: Callable[[], str]


ENGINES = {
    "rapidocr": Engine("rapidocr", rapidocr_v3, lambda: package_version("rapidocr")),
    "rapidocr-onnxruntime": Engine("rapidocr-onnxruntime", rapidocr_onnxruntime,
                                   lambda: package_version("rapidocr-onnxruntime")),
    "tesseract-psm11": Engine("tesseract-psm11", tesseract(11), tesseract_version),
    "tesseract-psm3": Engine("tesseract-psm3", tesseract(3), tesseract_version),
}

LOAD_SNIPPET = """
import sys, time
t = time.perf_counter()
sys.path.insert(0, {bench!r})
from bench_ocr import ENGINES
from PIL import Image, ImageDraw
im = Image.new("RGB", (200, 60), "white")
ImageDraw.Draw(im).text((10, 20), "hello 42", fill="black")
ENGINES[{name!r}].make(-1)(im)
print(time.perf_counter() - t)
"""


def load_seconds(name: str, runs: int) -> float:
    """Median over fresh processes of import + construction + one small call."""
    times = []
    for _ in range(runs):
        code = LOAD_SNIPPET.format(bench=str(ROOT / "bench"), name=name)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# scoring

@dataclass
class Tally:
    found: int = 0
    loose: int = 0
    total: int = 0

    def add(self, other: Tally) -> None:
        self.found += other.found
        self.loose += other.loose
        self.total += other.total

    def recall(self, loose: bool = False) -> float:
        return (self.loose if loose else self.found) / self.total if self.total else 0.0


def score(words: tuple[str, ...], text: str) -> Tally:
    tokens = set(normalise_tokens(text))
    glued = "".join(text.lower().split())
    found = sum(w.lower() in tokens for w in words)
    loose = sum(w.lower() in tokens or w.lower() in glued for w in words)
    return Tally(found, loose, len(words))


def is_number(word: str) -> bool:
    return any(c.isdigit() for c in word)


def font_family(font: str) -> str:
    return font.split("-")[0].replace(".ttf", "")


BREAKDOWNS: dict[str, Callable[[TextImage], str]] = {
    "size px": lambda im: f"{im.size_px:>2}",
    "angle": lambda im: f"{im.angle:+d}",
    "background": lambda im: im.background,
    "font family": lambda im: font_family(im.font),
}


@dataclass
class Result:
    tally: Tally = field(default_factory=Tally)
    numbers: Tally = field(default_factory=Tally)
    by: dict[str, dict[str, Tally]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(Tally)))
    seconds: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    misses: list[str] = field(default_factory=list)
    thread_mismatches: int = 0


def run_all(images: list[TextImage], engines: dict[str, dict[int, Recognise]],
            default_every: int) -> dict[str, Result]:
    """Every image with 1 thread (recall and time); every ``default_every``-th image also with
    the default threads (time; the text must be the same)."""
    results = {name: Result() for name in engines}
    for i, im in enumerate(images):
        for name, by_threads in engines.items():
            res = results[name]
            t = time.perf_counter()
            text = by_threads[1](im.image)
            res.seconds[1].append(time.perf_counter() - t)
            if i % default_every == 0:
                t = time.perf_counter()
                again = by_threads[DEFAULT_THREADS](im.image)
                res.seconds[DEFAULT_THREADS].append(time.perf_counter() - t)
                res.thread_mismatches += again != text
            tally = score(im.words, text)
            res.tally.add(tally)
            nums = tuple(w for w in im.words if is_number(w))
            res.numbers.add(score(nums, text))
            for label, key in BREAKDOWNS.items():
                res.by[label][key(im)].add(tally)
            if tally.found < tally.total and len(res.misses) < 12:
                res.misses.append(f"{' '.join(im.words)!r} -> {text.strip()!r} "
                                  f"({im.size_px}px {im.angle:+d} {im.background} {im.font})")
        if (i + 1) % 20 == 0:
            print(f"  {i + 1}/{len(images)} images", flush=True)
    return results


# ---------------------------------------------------------------------------------------------
# report

def ms(xs: list[float]) -> str:
    return f"{1000 * statistics.median(xs):.0f} / {1000 * statistics.mean(xs):.0f}"


def report(args, images, results, versions, loads) -> str:
    n_words = sum(len(im.words) for im in images)
    lines = [
        "# OCR engine choice (issue 14)", "",
        f"Command: `nice -n 10 python bench/bench_ocr.py --images {args.images} "
        f"--seed {args.seed}`; {platform.machine()}, {os.cpu_count()} cores "
        f"(load average at the start {os.getloadavg()[0]:.1f}).", "",
        f"- Set: {len(images)} images, {n_words} rendered tokens "
        f"({sum(is_number(w) for im in images for w in im.words)} numbers/prices/codes); "
        f"{sum(im.background == 'plain' for im in images)} on plain backgrounds, the rest on "
        "shared images (enlarged clipart/emoji); fonts: "
        + ", ".join(sorted({font_family(im.font) for im in images})) + ".",
        "- Recall: rendered tokens found as whole tokens, case-insensitive; loose: also found "
        "inside the output with spaces removed.",
        "- ms/image: median / mean wall time per image, each image through every engine in "
        "turn; 1 thread on every image, the engine's default threads (all cores) on every "
        f"{args.default_every}th image (its text compared with the 1-thread text: "
        + ", ".join(f"{n} {r.thread_mismatches} differ" for n, r in results.items()) + ").",
        "- Load: fresh process, import + construction + one call on a small image (median of "
        f"{args.load_runs}).", "",
        "| engine | version | recall % | loose % | numbers % | ms/image 1 thread | "
        "ms/image default | load s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        lines.append(
            f"| {name} | {versions[name]} | {100 * res.tally.recall():.1f} | "
            f"{100 * res.tally.recall(loose=True):.1f} | {100 * res.numbers.recall():.1f} | "
            f"{ms(res.seconds[1])} | {ms(res.seconds[DEFAULT_THREADS])} | "
            f"{loads.get(name, float('nan')):.2f} |")
    for label in BREAKDOWNS:
        keys = sorted({k for res in results.values() for k in res.by[label]})
        lines += ["", f"## Recall % by {label}", "",
                  "| engine | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for name, res in results.items():
            lines.append(f"| {name} | " + " | ".join(
                f"{100 * res.by[label][k].recall():.1f}" for k in keys) + " |")
        counts = next(iter(results.values())).by[label]
        lines.append("| (tokens) | " + " | ".join(str(counts[k].total) for k in keys) + " |")
    lines += ["", "## First misses per engine", ""]
    for name, res in results.items():
        lines += [f"- {name}:"] + [f"  - {m}" for m in res.misses[:6]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--load-runs", type=int, default=3)
    ap.add_argument("--default-every", type=int, default=4)
    ap.add_argument("--save-dir", default="", help="also write the set as PNG files here")
    ap.add_argument("--out", default=str(ROOT / "bench/results/ocr_choice.md"))
    args = ap.parse_args(argv)

    images = make_text_images(args.images, args.seed)
    if args.save_dir:
        folder = Path(args.save_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            im.image.save(folder / f"text_{i:04d}.png")
            (folder / f"text_{i:04d}.txt").write_text(" ".join(im.words), encoding="utf-8")
    engines, versions = {}, {}
    for name in args.engines.split(","):
        engine = ENGINES[name]
        try:
            engines[name] = {1: engine.make(1), DEFAULT_THREADS: engine.make(DEFAULT_THREADS)}
        except (ImportError, FileNotFoundError) as e:
            print(f"skipping {name}: {e}")
            continue
        versions[name] = engine.version()
    loads = {name: load_seconds(name, args.load_runs) for name in engines}
    results = run_all(images, engines, args.default_every)
    text = report(args, images, results, versions, loads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
