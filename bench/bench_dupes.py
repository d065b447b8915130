"""Near-duplicate threshold: precision/recall of "cosine >= t" with the bundled model.

    nice -n 10 python bench/bench_dupes.py [--sources 500] [--seed 0] [--model searchkit-lite]

Positives: each of ``--sources`` shared images (align train + validation, drawn at random)
against each of its generated near-duplicates (bench/synth.py ``NEAR_DUP_TRANSFORMS``: JPEG
recompression, resizes, crops, rotations, colour shifts, overlaid text, a re-upload). Every file
goes through the indexer's decoder (``searchkit.imageio.open_image`` on the encoded bytes).

Negatives: every other pair of distinct images. The library holds all shared images (~12.8k)
plus the variants; files with identical bytes count as one image. Reported per threshold:
- recall per transform and overall (source vs variant);
- hard negatives: each image's nearest distinct image (what a threshold must reject), the
  fraction of shared images that would be grouped with a wrong one, and the number of wrong pairs;
- precision/F1 on the evaluation pair set: the positive pairs against every image's hardest
  negative plus ``--random-pairs`` random distinct pairs.
Pairs of distinct files that are one picture (re-exports, blank renders; a pixel test on
thumbnails) are not counted as negatives. Default threshold rule: the lowest threshold (the best
recall) at which at most ``--max-false-rate`` of the shared images have a distinct image at or
above it; the F1-maximising threshold and the best precision are reported beside it.

Embeddings are cached in ``--cache`` (keyed by the model fingerprint and the arguments); the
markdown report goes to ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from synth import NEAR_DUP_TRANSFORMS, SharedImage, shared_images, variant_bytes  # noqa: E402

from searchkit.imageio import open_image  # noqa: E402

THRESHOLDS = tuple(sorted(round(0.80 + 0.01 * i, 2) for i in range(20))) + (0.985, 0.995)
THRESHOLDS = tuple(sorted(THRESHOLDS))
BATCH = 64
BLOCK = 1024
SERIES = 20  # a caption shared by this many files or more is a series (icon sets, generative art)
HIST_BINS = np.linspace(-1.0, 1.0, 4001)  # 0.0005 wide: pair counts above any grid threshold


# ---------------------------------------------------------------------------------------------
# embedding (cached)

def encode_bytes(enc, blobs: list[bytes]) -> np.ndarray:
    images = [open_image(b)[0] for b in blobs]
    return enc.encode_images(images)


def encode_stream(enc, blobs_iter, total: int, label: str) -> np.ndarray:
    out, batch, t0 = [], [], time.perf_counter()
    for blob in blobs_iter:
        batch.append(blob)
        if len(batch) == BATCH:
            out.append(encode_bytes(enc, batch))
            batch = []
            done = sum(len(o) for o in out)
            if done % (BATCH * 20) == 0:
                rate = done / (time.perf_counter() - t0)
                print(f"  {label}: {done}/{total} ({rate:.1f} img/s)", flush=True)
    if batch:
        out.append(encode_bytes(enc, batch))
    return np.concatenate(out).astype(np.float32)


def variant_stream(images: list[SharedImage], sources: np.ndarray, seed: int):
    from synth import load_rgb
    for s in sources:
        rng = np.random.default_rng([seed, int(s)])
        src = load_rgb(images[s].path)
        for transform in NEAR_DUP_TRANSFORMS.values():
            yield variant_bytes(transform(src, rng))


def cached(path: Path, compute) -> np.ndarray:
    if path.exists():
        return np.load(path)
    vectors = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def reuse_corpus(enc, images: list[SharedImage], path: Path, check: int = 32):
    """Vectors of the shared images from another bench's cache (rows in train-then-validation
    metadata order, the plain image, e.g. bench/realistic_vectors.py view 0), if there is one
    and ``check`` images re-encoded here through the indexer's decoder agree with it."""
    if not path.exists():
        return None
    order = sorted(range(len(images)), key=lambda i: (images[i].path.parent.parent.name
                                                      != "train", i))
    theirs = np.load(path)
    if len(theirs) != len(images):
        return None
    vectors = np.empty_like(theirs)
    vectors[order] = theirs
    sample = np.random.default_rng(1).choice(len(images), check, replace=False)
    mine = encode_bytes(enc, [images[i].path.read_bytes() for i in sample])
    agreement = float(np.einsum("ij,ij->i", mine, vectors[sample]).min())
    print(f"reusing {path}: min cosine to re-encoded samples {agreement:.6f}")
    return vectors if agreement > 0.9999 else None


def embeddings(args, images: list[SharedImage], sources: np.ndarray):
    from searchkit.encoders import load_encoder
    enc = load_encoder(args.model, device="cpu")
    fp = enc.fingerprint()[:12]
    key = hashlib.sha256(f"{fp}|{len(images)}|{args.seed}|{args.sources}|"
                         f"{','.join(NEAR_DUP_TRANSFORMS)}".encode()).hexdigest()[:16]
    cache = Path(args.cache)
    n_var = len(sources) * len(NEAR_DUP_TRANSFORMS)
    t = time.perf_counter()
    variants = cached(cache / f"dupes_variants_{key}.npy", lambda: encode_stream(
        enc, variant_stream(images, sources, args.seed), n_var, "variants"))
    corpus = cached(cache / f"dupes_shared_{fp}_{len(images)}.npy",
                    lambda: shared_vectors(enc, images, args))
    print(f"embeddings ready in {time.perf_counter() - t:.0f} s")
    return corpus, variants


def shared_vectors(enc, images: list[SharedImage], args) -> np.ndarray:
    reused = reuse_corpus(enc, images, Path(args.reuse_corpus)) if args.reuse_corpus else None
    if reused is not None:
        return reused
    return encode_stream(enc, (im.path.read_bytes() for im in images), len(images), "shared")


# ---------------------------------------------------------------------------------------------
# pair statistics

@dataclass
class PairStats:
    nearest: np.ndarray          # per vector: cosine of its nearest other-group vector
    nearest_idx: np.ndarray      # per vector: index of that vector
    wrong_hist_shared: np.ndarray  # histogram of wrong pairs among the shared images only
    wrong_hist_all: np.ndarray     # histogram of wrong pairs in the whole library
    nearest_same_category: np.ndarray  # per shared image (nan when none)
    nearest_same_name: np.ndarray      # per shared image (nan when none)


def byte_groups(images: list[SharedImage]) -> np.ndarray:
    """Group id per shared image: files with identical bytes share one."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(hashlib.sha256(im.path.read_bytes()).hexdigest(), len(ids))
                     for im in images])


PIXEL_THUMB = 48          # side of the colour thumbnails compared
PIXEL_MAD = 8 / 255       # mean absolute difference over the drawn pixels: one picture below
INK = 245 / 255           # a pixel darker than this in either thumbnail is drawn, not background
MIN_INK_PIXELS = 8        # fewer drawn pixels in both: two blank pictures
ASPECT_TOL = 0.05


def same_picture(a: np.ndarray, b: np.ndarray) -> bool:
    """Mean absolute difference over the pixels drawn in either (the white around clipart
    would make any two small icons look alike); two blank pictures are the same."""
    a, b = a.astype(np.float32) / 255, b.astype(np.float32) / 255
    ink = ((a < INK) | (b < INK)).any(axis=-1)
    if ink.sum() < MIN_INK_PIXELS:
        return True
    return float(np.abs(a[ink] - b[ink]).mean()) <= PIXEL_MAD


@dataclass
class Thumbs:
    full: np.ndarray      # (n, side, side, 3) uint8 thumbnail of the whole picture
    view: np.ndarray      # (n, side, side, 3) uint8 thumbnail of the model's input (centre crop)
    aspect: np.ndarray    # (n,) width / height


def thumbnails(images: list[SharedImage]) -> Thumbs:
    from PIL import Image

    from searchkit.encoders.transform import resize_centre_crop
    full, view, aspect = [], [], []
    side = (PIXEL_THUMB, PIXEL_THUMB)
    for im in images:
        rgb = open_image(im.path.read_bytes())[0]
        aspect.append(rgb.width / rgb.height)
        full.append(np.asarray(rgb.resize(side, Image.BILINEAR)))
        crop = resize_centre_crop(rgb, 224, Image.BICUBIC)
        view.append(np.asarray(crop.resize(side, Image.BILINEAR)))
    return Thumbs(np.stack(full), np.stack(view), np.array(aspect))


def pixel_duplicate_pairs(vectors: np.ndarray, groups: np.ndarray, thumbs: Thumbs,
                          min_cos: float = 0.8) -> dict[str, list[tuple[int, int]]]:
    """Distinct-content pairs (cos >= min_cos) that are one picture to the eye or to the model:
    "picture": same aspect (5 %) and whole-picture thumbnails ``same_picture``; "model view":
    the model's centre crops ``same_picture`` (e.g. a blank render and a thin banner whose
    centre is blank). Any threshold groups them; they are not negatives."""
    found: dict[str, list[tuple[int, int]]] = {"picture": [], "model view": []}
    n = len(vectors)
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(n, start + BLOCK))
        sims = vectors[rows] @ vectors.T
        ii, jj = np.nonzero((sims >= min_cos) & (np.arange(n)[None, :] > rows[:, None])
                            & (groups[rows][:, None] != groups[None, :]))
        for i, j in zip(rows[ii], jj):
            same_aspect = abs(thumbs.aspect[i] / thumbs.aspect[j] - 1) <= ASPECT_TOL
            if same_aspect and same_picture(thumbs.full[i], thumbs.full[j]):
                found["picture"].append((int(i), int(j)))
            elif same_picture(thumbs.view[i], thumbs.view[j]):
                found["model view"].append((int(i), int(j)))
    return found


@dataclass
class Excused:
    """Pairs of shared images that are one picture, extended to their variants: a variant of
    A against B is excused when A against B is."""
    partners: dict[int, list[int]]     # shared index -> shared indices
    members: dict[int, np.ndarray]     # shared index -> vector indices (itself + variants)
    origin: np.ndarray                 # vector index -> shared index

    @classmethod
    def build(cls, pairs: list[tuple[int, int]], origin: np.ndarray) -> Excused:
        partners: dict[int, list[int]] = defaultdict(list)
        for i, j in pairs:
            partners[i].append(j)
            partners[j].append(i)
        order = np.argsort(origin, kind="stable")
        cuts = np.searchsorted(origin[order], np.unique(origin))
        members = dict(zip(np.unique(origin).tolist(), np.split(order, cuts[1:])))
        return cls(dict(partners), members, origin)

    def unmark(self, wrong: np.ndarray, rows: np.ndarray) -> None:
        for r, o in enumerate(self.origin[rows].tolist()):
            for p in self.partners.get(o, ()):
                wrong[r, self.members[p]] = False


def label_ids(values: list[str]) -> np.ndarray:
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(v, len(ids)) if v else -1 for v in values])


def pair_stats(vectors: np.ndarray, groups: np.ndarray, n_shared: int,
               category: np.ndarray, name: np.ndarray,
               excused: Excused | None = None) -> PairStats:
    """``excused``: pairs of distinct contents that are one picture (not negatives)."""
    n = len(vectors)
    nearest = np.full(n, -2.0, np.float32)
    nearest_idx = np.zeros(n, np.int64)
    near_cat = np.full(n_shared, np.nan, np.float32)
    near_name = np.full(n_shared, np.nan, np.float32)
    hist_shared = np.zeros(len(HIST_BINS) - 1, np.int64)
    hist_all = np.zeros(len(HIST_BINS) - 1, np.int64)
    for start in range(0, n, BLOCK):
        rows = np.arange(start, min(n, start + BLOCK))
        sims = vectors[rows] @ vectors.T
        wrong = groups[rows][:, None] != groups[None, :]
        if excused is not None:
            excused.unmark(wrong, rows)
        masked = np.where(wrong, sims, -2.0)
        nearest_idx[rows] = masked.argmax(axis=1)
        nearest[rows] = masked[np.arange(len(rows)), nearest_idx[rows]]
        upper = np.arange(n)[None, :] > rows[:, None]
        hist_all += np.histogram(sims[wrong & upper], HIST_BINS)[0]
        shared_rows = rows[rows < n_shared]
        if len(shared_rows):
            k = len(shared_rows)
            block = sims[:k, :n_shared]
            w = wrong[:k, :n_shared]
            hist_shared += np.histogram(block[w & upper[:k, :n_shared]], HIST_BINS)[0]
            for labels, out in ((category, near_cat), (name, near_name)):
                same = (labels[shared_rows][:, None] == labels[None, :]) & w \
                    & (labels[shared_rows][:, None] >= 0)
                best = np.where(same, block, -2.0).max(axis=1)
                out[shared_rows] = np.where(best > -2.0, best, np.nan)
    return PairStats(nearest, nearest_idx, hist_shared, hist_all, near_cat, near_name)


def pairs_at_or_above(hist: np.ndarray, t: float) -> int:
    return int(hist[np.searchsorted(HIST_BINS, t - 1e-9) :].sum())


def random_pair_cosines(vectors: np.ndarray, groups: np.ndarray, k: int,
                        rng: np.random.Generator) -> np.ndarray:
    a, b = rng.integers(0, len(vectors), k), rng.integers(0, len(vectors), k)
    keep = groups[a] != groups[b]
    return np.einsum("ij,ij->i", vectors[a[keep]], vectors[b[keep]])


def hard_negative_pairs(stats: PairStats) -> np.ndarray:
    """Each vector's nearest wrong partner, each unordered pair once."""
    seen: dict[tuple[int, int], float] = {}
    for i, (j, c) in enumerate(zip(stats.nearest_idx, stats.nearest)):
        seen[(min(i, int(j)), max(i, int(j)))] = float(c)
    return np.array(list(seen.values()), np.float32)


# ---------------------------------------------------------------------------------------------
# report

@dataclass
class Row:
    t: float
    recall: float
    precision: float
    f1: float
    hard_fp_rate: float      # shared images whose nearest distinct image is >= t
    hard_fp_rate_outside: float  # the same among images outside large series
    wrong_pairs_shared: int
    wrong_pairs_all: int


def curve(pos: np.ndarray, neg: np.ndarray, stats: PairStats, n_shared: int,
          outside: np.ndarray) -> list[Row]:
    """``outside``: shared images whose caption is not one of a large series."""
    rows = []
    for t in THRESHOLDS:
        tp, fp = int((pos >= t).sum()), int((neg >= t).sum())
        recall = tp / pos.size
        precision = tp / (tp + fp) if tp + fp else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(Row(t, recall, precision, f1,
                        float((stats.nearest[:n_shared] >= t).mean()),
                        float((stats.nearest[:n_shared][outside] >= t).mean()),
                        pairs_at_or_above(stats.wrong_hist_shared, t),
                        pairs_at_or_above(stats.wrong_hist_all, t)))
    return rows


def choose(rows: list[Row], max_false_rate: float) -> tuple[Row, Row]:
    """The lowest threshold (best recall) at which at most ``max_false_rate`` of the shared
    images have a distinct image at or above it; and the F1-maximising one."""
    ok = [r for r in rows if r.hard_fp_rate <= max_false_rate]
    by_rule = min(ok, key=lambda r: r.t) if ok else rows[-1]
    return by_rule, max(rows, key=lambda r: r.f1)


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def quantiles(x: np.ndarray, qs=(0.5, 0.9, 0.99, 1.0)) -> str:
    x = x[~np.isnan(x)]
    return " / ".join(f"{np.quantile(x, q):.3f}" for q in qs)


def report(args, images, sources, pos, neg, rand, stats, rows, chosen, best_f1,
           n_vectors: int, distinct_contents: int, outside_n: int) -> str:
    names = list(NEAR_DUP_TRANSFORMS)
    n_shared = len(images)
    src_names = [images[s].source for s in sources]
    lines = [
        "# Near-duplicate threshold (issue 14)", "",
        f"Command: `nice -n 10 python bench/bench_dupes.py --sources {args.sources} "
        f"--seed {args.seed} --model {args.model}` (searchkit-lite, CPU).", "",
        f"- Library: {n_shared} shared images (align train + validation; "
        f"{distinct_contents} distinct contents) + "
        f"{n_vectors - n_shared} generated near-duplicates of {len(sources)} random sources "
        f"({', '.join(f'{s}: {src_names.count(s)}' for s in sorted(set(src_names)))}), "
        f"{len(names)} transforms each.",
        f"- Positive pairs: source vs each of its variants ({pos.size}).",
        f"- Negative pairs for precision/F1: every vector's nearest distinct image "
        f"(hard negatives, {neg.size - rand.size} unique pairs) + {rand.size} random pairs.",
        "- Wrong pairs: every pair of distinct images at or above t (exhaustive), among the "
        "shared images alone and in the whole library. Series: a caption shared by >= "
        f"{SERIES} files (e.g. openclipart's 'gramastar' generative circles, icon sets); the "
        "rule counts them.",
        f"- Rule: **the default is the lowest threshold (best recall) at which at most "
        f"{pct(args.max_false_rate)} % of the shared images have a distinct image at or above "
        "it** (a wrong group member); the F1-maximising threshold and the best precision are "
        "shown beside it.", "",
        f"**Chosen default: {chosen.t:.2f}** (precision {chosen.precision:.4f}, recall "
        f"{pct(chosen.recall)} %, F1 {chosen.f1:.3f}; {pct(chosen.hard_fp_rate)} % of shared "
        f"images have a distinct image at or above it). Max F1: {best_f1.t:.2f} "
        f"(F1 {best_f1.f1:.3f}, precision {best_f1.precision:.4f}, "
        f"recall {pct(best_f1.recall)} %). Best precision on the pair set: "
        f"{max(r.precision for r in rows):.4f} (at "
        f"{max(rows, key=lambda r: r.precision).t:g}).",
        "", "## Overall curve", "",
        "| t | precision | recall % | F1 | shared images with a wrong partner >= t % | "
        f"the same outside series ({outside_n} images) % | "
        "wrong pairs (shared only) | wrong pairs (whole library) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = " **<-**" if r is chosen else ""
        lines.append(f"| {r.t:g}{mark} | {r.precision:.4f} | {pct(r.recall)} | {r.f1:.3f} | "
                     f"{pct(r.hard_fp_rate)} | {pct(r.hard_fp_rate_outside)} | "
                     f"{r.wrong_pairs_shared} | {r.wrong_pairs_all} |")
    lines += ["", "## Recall (%) per transform", "",
              "| transform | median cos | min cos | " +
              " | ".join(f"{t:g}" for t in THRESHOLDS) + " |",
              "|---|---|---|" + "---|" * len(THRESHOLDS)]
    for k, name in enumerate(names):
        p = pos[:, k]
        lines.append(f"| {name} | {np.median(p):.3f} | {p.min():.3f} | " +
                     " | ".join(pct((p >= t).mean()) for t in THRESHOLDS) + " |")
    lines += ["", f"## Recall (%) at the default {chosen.t:.2f} per source collection", "",
              "| transform | " + " | ".join(sorted(set(src_names))) + " |",
              "|---|" + "---|" * len(set(src_names))]
    src_arr = np.array(src_names)
    for k, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(
            pct((pos[src_arr == s, k] >= chosen.t).mean()) for s in sorted(set(src_names)))
            + " |")
    lines += ["", "## Negative cosines (median / p90 / p99 / max)", "",
              f"- random distinct pairs: {quantiles(rand)}",
              f"- each shared image's nearest distinct image: "
              f"{quantiles(stats.nearest[:n_shared])}",
              f"- nearest image of the same category (openclipart, noto): "
              f"{quantiles(stats.nearest_same_category)}",
              f"- nearest image of the same name (skin tones, the same emoji in the other "
              f"set): {quantiles(stats.nearest_same_name)}",
              f"- each variant's nearest image that is not its source: "
              f"{quantiles(stats.nearest[n_shared:])}"]
    return "\n".join(lines) + "\n"


def top_wrong_pairs(stats: PairStats, images, n_shared: int, k: int) -> list[str]:
    order = np.argsort(-stats.nearest[:n_shared])
    seen, out = set(), []
    for i in order:
        j = int(stats.nearest_idx[i])
        key = (min(i, j), max(i, j))
        if key in seen or j >= n_shared:
            continue
        seen.add(key)
        a, b = images[i], images[j]
        out.append(f"| {stats.nearest[i]:.4f} | {a.path.parent.name}/{a.path.name} "
                   f"({a.text}) | {b.path.parent.name}/{b.path.name} ({b.text}) |")
        if len(out) == k:
            break
    return out


def pixel_section(images, bytes_groups, merged, raw_rows: list[Row], raw_chosen: Row) -> str:
    n_bytes = len(images) - len(set(bytes_groups.tolist()))
    lines = ["", "## Duplicates already in the shared images (not negatives)", "",
             f"- {n_bytes} files repeat another file's bytes (one content each).",
             f"- {len(merged['picture'])} pairs of different files are one picture "
             f"(same aspect within {ASPECT_TOL:.0%}; {PIXEL_THUMB}x{PIXEL_THUMB} RGB, "
             f"mean difference over the pixels drawn in either <= {PIXEL_MAD * 255:.0f}/255, "
             "or both blank): re-exports, blank renders.",
             f"- {len(merged['model view'])} more pairs are one picture to the model (its "
             "224 px centre crop, same test), e.g. a thin banner whose centre is blank; "
             "centre cropping hides the rest from any threshold.",
             "- Such a pair (and a variant of one against the other) is not counted as a "
             "negative in the curve above; nothing is merged transitively. Counting them as "
             "negatives (byte identity only), the same rule picks "
             f"{raw_chosen.t:g} (precision {raw_chosen.precision:.4f}, recall "
             f"{pct(raw_chosen.recall)} %); that curve:", "",
             "| t | precision | recall % | shared images with a wrong partner >= t % |",
             "|---|---|---|---|"]
    lines += [f"| {r.t:g} | {r.precision:.4f} | {pct(r.recall)} | {pct(r.hard_fp_rate)} |"
              for r in raw_rows if r.t in (0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995)]
    lines += ["", "Examples (picture / model view):", ""]
    for kind, pairs in merged.items():
        for i, j in pairs[:5]:
            a, b = images[i], images[j]
            lines.append(f"- {kind}: {a.path.parent.name}/{a.path.name} ({a.text}) = "
                         f"{b.path.parent.name}/{b.path.name} ({b.text})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="searchkit-lite")
    ap.add_argument("--shared-limit", type=int, default=0,
                    help="use only the first N shared images (a quick check of the script)")
    ap.add_argument("--random-pairs", type=int, default=20000)
    ap.add_argument("--max-false-rate", type=float, default=0.01,
                    help="the most shared images the default may group with a distinct one")
    ap.add_argument("--cache", default="/tmp/searchkit_bench")
    ap.add_argument("--reuse-corpus", default=str(
        Path.home() / ".cache/searchkit-bench/align_searchkit-lite_view0.npy"),
        help="vectors of the shared images from bench/realistic_vectors.py, checked first")
    ap.add_argument("--out", default=str(ROOT / "bench/results/dupes_threshold.md"))
    args = ap.parse_args(argv)

    images = shared_images()
    images = images[:args.shared_limit] if args.shared_limit else images
    rng = np.random.default_rng(args.seed)
    sources = np.sort(rng.choice(len(images), args.sources, replace=False))
    corpus, variants = embeddings(args, images, sources)
    n_shared, n_t = len(images), len(NEAR_DUP_TRANSFORMS)

    bytes_groups = byte_groups(images)
    t = time.perf_counter()
    merged = pixel_duplicate_pairs(corpus, bytes_groups, thumbnails(images))
    origin = np.concatenate([np.arange(n_shared), np.repeat(sources, n_t)])
    excused = Excused.build([p for ps in merged.values() for p in ps], origin)
    print(f"pixel duplicates {({k: len(v) for k, v in merged.items()})} "
          f"in {time.perf_counter() - t:.0f} s")
    category = label_ids([f"{im.source}:{im.category}" if im.category else "" for im in images])
    name = label_ids([im.base_name for im in images])
    caption_counts = Counter(im.text for im in images)
    outside = np.array([caption_counts[im.text] < SERIES for im in images])
    pos = np.einsum("sd,std->st", corpus[sources], variants.reshape(len(sources), n_t, -1))
    vectors = np.concatenate([corpus, variants])

    def analyse(groups_shared: np.ndarray, excused: Excused | None):
        groups = np.concatenate([groups_shared, np.repeat(groups_shared[sources], n_t)])
        stats = pair_stats(vectors, groups, n_shared, category, name, excused)
        rand = random_pair_cosines(corpus, groups_shared, args.random_pairs,
                                   np.random.default_rng(args.seed + 1))
        neg = np.concatenate([hard_negative_pairs(stats), rand])
        rows = curve(pos.ravel(), neg, stats, n_shared, outside)
        return stats, rand, neg, rows, *choose(rows, args.max_false_rate)

    raw_rows, raw_chosen = analyse(bytes_groups, None)[3:5]
    stats, rand, neg, rows, chosen, best_f1 = analyse(bytes_groups, excused)
    text = report(args, images, sources, pos, neg, rand, stats, rows, chosen, best_f1,
                  len(vectors), len(set(bytes_groups.tolist())), int(outside.sum()))
    text += pixel_section(images, bytes_groups, merged, raw_rows, raw_chosen)
    text += ("\n## Highest-scoring distinct shared images left (what the threshold must "
             "reject)\n\n| cos | image | nearest distinct image |\n|---|---|---|\n"
             + "\n".join(top_wrong_pairs(stats, images, n_shared, 25)) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
