"""Realistic 512-d bench vectors: a mixture fitted to real searchkit-lite embeddings.

Synthetic isotropic clusters flatter IVF (recall 1.0 at any nprobe). This module embeds the
shared align images (train + validation, never CIFAR or other evaluation-only data) and
augmented views of them (random crop, flip, colour jitter) with ``searchkit-lite``, fits a
mixture of probabilistic PCA models (k-means clusters, each a Gaussian with a rank-r covariance
plus isotropic residual), and samples as many L2-normalised vectors as a bench needs.

    python bench/realistic_vectors.py embed --views 2          # cache real embeddings
    python bench/realistic_vectors.py check                    # real vs sampled statistics,
                                                               #   IVF recall isotropic vs realistic
    python bench/realistic_vectors.py sample --n 1000000       # write base + query vectors

Embeddings are cached in ``~/.cache/searchkit-bench``; samples go to ``/tmp/searchkit-bench``
(2 GB per million vectors: never commit them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ALIGN = Path("/work/shared/datasets/align")
SPLITS = ("train", "validation")
CACHE = Path.home() / ".cache" / "searchkit-bench"
SAMPLES = Path("/tmp/searchkit-bench")
MODEL = "searchkit-lite"
BATCH = 64
CROP_SCALE = (0.35, 1.0)       # fraction of the image area a random crop keeps
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.4                   # brightness / contrast / saturation factor in 1 +- JITTER
AUGMENTED_EVERY = 3            # augmented views of every 3rd image (2 shared cores: time)
CLUSTERS = 1024                # mixture components (12-25 real vectors each: local structure)
RANK = 16                      # per-component covariance rank, the rest is isotropic
SEED = 0


# ---- real embeddings --------------------------------------------------------------------------
def align_files() -> list[Path]:
    files = []
    for split in SPLITS:
        with open(ALIGN / split / "metadata.jsonl") as f:
            files += [ALIGN / split / json.loads(line)["file_name"] for line in f if line.strip()]
    return files


def augment(image, rng: np.random.Generator):
    """A random view: crop (area 35-100 %, aspect 3:4-4:3), flip, colour jitter."""
    from PIL import Image, ImageEnhance
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(*CROP_SCALE)
        ratio = np.exp(rng.uniform(*np.log(CROP_RATIO)))
        cw, ch = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            image = image.crop((x, y, x + cw, y + ch))
            break
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhance(image).enhance(rng.uniform(1 - JITTER, 1 + JITTER))
    return image


def view_path(view: int) -> Path:
    return CACHE / f"align_{MODEL}_view{view}.npy"


def embed_view(view: int, files: list[Path]) -> np.ndarray:
    """Embeddings of view ``view`` of the files (0: the images themselves; an augmented view
    of every ``AUGMENTED_EVERY``-th file otherwise), cached."""
    path = view_path(view)
    files = files if view == 0 else files[::AUGMENTED_EVERY]
    if path.exists():
        return np.load(path)
    from PIL import Image

    from searchkit.encoders import load_encoder
    enc = load_encoder(MODEL)
    out, t0 = [], time.perf_counter()
    for start in range(0, len(files), BATCH):
        images = []
        for f in files[start:start + BATCH]:
            image = Image.open(f).convert("RGB")
            if view:
                seed = int.from_bytes(hashlib.sha1(f"{f.name}:{view}".encode()).digest()[:8], "little")
                image = augment(image, np.random.default_rng(seed))
            images.append(image)
        out.append(enc.encode_images(images))
        if start // BATCH % 20 == 0:
            print(f"view {view}: {start + len(images)}/{len(files)} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    vectors = np.concatenate(out).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def real_vectors() -> np.ndarray:
    """The cached real embeddings, all cached views."""
    parts, v = [], 0
    while view_path(v).exists():
        parts.append(np.load(view_path(v)))
        v += 1
    if not parts:
        raise SystemExit("no cached embeddings: run `python bench/realistic_vectors.py embed`")
    return np.concatenate(parts)


# ---- the mixture ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mixture:
    """Mixture of probabilistic PCA: component c is N(mean[c], U S^2 U^T + noise[c]^2 I)."""
    weights: np.ndarray      # (k,)
    means: np.ndarray        # (k, d)
    bases: np.ndarray        # (k, d, r) orthonormal columns
    scales: np.ndarray       # (k, r) std along each basis column beyond the isotropic part
    noise: np.ndarray        # (k,) isotropic std

    def sample(self, n: int, seed: int, chunk: int = 65_536) -> np.ndarray:
        """``n`` L2-normalised float32 samples."""
        rng = np.random.default_rng(seed)
        comp = rng.choice(len(self.weights), size=n, p=self.weights)
        out = np.empty((n, self.means.shape[1]), np.float32)
        for start in range(0, n, chunk):
            out[start:start + chunk] = self._draw(comp[start:start + chunk], rng)
        return out

    def _draw(self, comp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        d, r = self.means.shape[1], self.scales.shape[1]
        x = self.noise[comp, None] * rng.standard_normal((len(comp), d)).astype(np.float32)
        for c in np.unique(comp):
            rows = np.flatnonzero(comp == c)
            z = rng.standard_normal((len(rows), r)).astype(np.float32) * self.scales[c]
            x[rows] += self.means[c] + z @ self.bases[c].T
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def fit_mixture(x: np.ndarray, clusters: int = CLUSTERS, rank: int = RANK,
                seed: int = SEED) -> Mixture:
    import faiss
    d = x.shape[1]
    km = faiss.Kmeans(d, clusters, niter=25, seed=seed, min_points_per_centroid=1)
    km.train(x)
    _, assign = km.index.search(x, 1)
    assign = assign[:, 0]
    weights, means, bases, scales, noise = [], [], [], [], []
    for c in range(clusters):
        xc = x[assign == c]
        if len(xc) < 2:
            continue
        mean = xc.mean(0)
        _, s, vt = np.linalg.svd(xc - mean, full_matrices=False)
        var = s ** 2 / (len(xc) - 1)
        r = min(rank, len(var))
        residual = var[r:].sum() / (d - r)  # the variance the rank-r part does not explain
        weights.append(len(xc))
        means.append(mean)
        basis = np.zeros((d, rank), np.float32)
        basis[:, :r] = vt[:r].T
        scale = np.zeros(rank, np.float32)
        scale[:r] = np.sqrt(np.maximum(var[:r] - residual, 0))
        bases.append(basis)
        scales.append(scale)
        noise.append(np.sqrt(residual))
    w = np.asarray(weights, np.float64)
    return Mixture(w / w.sum(), np.asarray(means, np.float32), np.asarray(bases, np.float32),
                   np.asarray(scales, np.float32), np.asarray(noise, np.float32))


# ---- statistics -------------------------------------------------------------------------------
def neighbours(x: np.ndarray, queries: np.ndarray, k: int, skip_self: bool) -> np.ndarray:
    import faiss
    scores, _ = faiss.knn(queries, x, k + skip_self, faiss.METRIC_INNER_PRODUCT)
    return scores[:, 1:] if skip_self else scores


def statistics(x: np.ndarray, n_queries: int = 2000, seed: int = 1) -> dict[str, float]:
    """Nearest-neighbour cosine, top-10 gaps, local intrinsic dimension, explained variance."""
    rng = np.random.default_rng(seed)
    q = x[rng.choice(len(x), size=min(n_queries, len(x)), replace=False)]
    s = neighbours(x, q, 10, skip_self=True)
    dist = np.sqrt(np.maximum(2 - 2 * s, 1e-12))
    with np.errstate(divide="ignore"):  # exact duplicates: an infinite local dimension
        lid = (10 - 1) / np.log(dist[:, -1:] / dist[:, :-1]).sum(1)  # Levina-Bickel MLE, k=10
    eig = np.linalg.eigvalsh(np.cov(x[rng.choice(len(x), min(len(x), 20_000), replace=False)].T))
    ratio = np.cumsum(eig[::-1]) / eig.sum()
    stats = {f"nn cos p{p}": float(np.percentile(s[:, 0], p)) for p in (10, 50, 90)}
    stats |= {f"top1-top10 gap p{p}": float(np.percentile(s[:, 0] - s[:, 9], p))
              for p in (10, 50, 90)}
    stats |= {"top-10 mean consecutive gap": float(np.mean(s[:, 0] - s[:, 9]) / 9),
              "local intrinsic dim (median)": float(np.median(lid)),
              "norm of the mean vector": float(np.linalg.norm(x.mean(0))),
              "mean cosine of random pairs": float(np.mean(np.sum(
                  x[rng.integers(0, len(x), 5000)] * x[rng.integers(0, len(x), 5000)], 1)))}
    stats |= {f"PCs for {int(f * 100)} % variance": int(np.searchsorted(ratio, f) + 1)
              for f in (0.5, 0.8, 0.9, 0.95)}
    return stats


def isotropic(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """The clustered synthetic vectors the older benches use (bench_search.clustered)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_search import clustered
    return clustered(n, dim, seed)


def ivf_recall(base: np.ndarray, queries: np.ndarray, nprobe: int, k: int = 10) -> float:
    """Recall@k of IVF-Flat (nlist = 4 sqrt(n), as searchkit builds it) against exact."""
    import faiss
    n, d = base.shape
    nlist = int(4 * np.sqrt(n))
    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(base[:nlist * 64])
    ivf.add(base)
    ivf.nprobe = nprobe
    _, got = ivf.search(queries, k)
    _, want = faiss.knn(queries, base, k, faiss.METRIC_INNER_PRODUCT)
    return float(np.mean([len(set(g) & set(w)) / k for g, w in zip(got, want)]))


# ---- commands ---------------------------------------------------------------------------------
def cmd_embed(args) -> None:
    files = align_files()
    print(f"{len(files)} align images (train + validation); view 0 of each, {args.views - 1} "
          f"augmented views of every {AUGMENTED_EVERY}rd")
    for view in range(args.views):
        t = time.perf_counter()
        v = embed_view(view, files)
        print(f"view {view}: {v.shape} in {time.perf_counter() - t:.0f} s -> {view_path(view)}")


def cmd_check(args) -> None:
    x = real_vectors()
    mix = fit_mixture(x, args.clusters, args.rank)
    fake = mix.sample(len(x), seed=SEED + 1)
    iso = isotropic(len(x), x.shape[1])
    rows = [statistics(x), statistics(fake), statistics(iso)]
    print(f"{len(x)} real vectors (align, all cached views); mixture of {len(mix.weights)} "
          f"PPCA components, rank {args.rank}; the same number sampled; isotropic clusters\n")
    print(f"| statistic | real | sampled | isotropic |\n|---|---|---|---|")
    for key in rows[0]:
        print(f"| {key} | " + " | ".join(f"{r[key]:.3g}" for r in rows) + " |")
    n = args.ivf_n
    print(f"\nIVF-Flat recall@10 at {n} rows, nlist = 4 sqrt(n), 500 queries not in the base:")
    big = mix.sample(n + 500, seed=SEED + 2)
    iso = isotropic(n + 500, x.shape[1], seed=3)
    print("| nprobe | isotropic clusters | realistic (mixture) |\n|---|---|---|")
    for nprobe in (1, 4, 16, 64):
        print(f"| {nprobe} | {ivf_recall(iso[:n], iso[n:], nprobe):.3f} | "
              f"{ivf_recall(big[:n], big[n:], nprobe):.3f} |")


def cmd_sample(args) -> None:
    x = real_vectors()
    mix = fit_mixture(x, args.clusters, args.rank)
    SAMPLES.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    base = np.lib.format.open_memmap(SAMPLES / f"base_{args.n}.npy", "w+", np.float32,
                                     (args.n, x.shape[1]))
    for start in range(0, args.n, 1_000_000):
        stop = min(args.n, start + 1_000_000)
        base[start:stop] = mix.sample(stop - start, seed=SEED + 10 + start // 1_000_000)
    base.flush()
    np.save(SAMPLES / "queries.npy", mix.sample(args.queries, seed=SEED + 9))
    print(f"{args.n} base + {args.queries} query vectors in {time.perf_counter() - t:.0f} s "
          f"-> {SAMPLES}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--views", type=int, default=2, help="views per image; 0 is the original")
    for name in ("check", "sample"):
        s = sub.add_parser(name)
        s.add_argument("--clusters", type=int, default=CLUSTERS)
        s.add_argument("--rank", type=int, default=RANK)
    sub.choices["check"].add_argument("--ivf-n", type=int, default=100_000)
    sub.choices["sample"].add_argument("--n", type=int, default=1_000_000)
    sub.choices["sample"].add_argument("--queries", type=int, default=1000)
    args = p.parse_args()
    {"embed": cmd_embed, "check": cmd_check, "sample": cmd_sample}[args.cmd](args)


if __name__ == "__main__":
    main()
