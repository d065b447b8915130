"""Cached frozen-tower features: each image goes through the locked image tower once.

Features are stored as float16 ``.npy`` files keyed by the tower, the view (``eval`` or an
augmentation seed) and a hash of the file list, under a cache directory outside git.
"""

from __future__ import annotations

import hashlib
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

BATCH = 64
AUG_MIN_SCALE = 0.5          # random resized crop keeps at least this fraction of the area
AUG_LOWRES_P = 0.3           # probability of a downscale-then-upscale (thumbnail) view
AUG_LOWRES_SIZES = (32, 48, 64, 96)
AUG_GRAY_P = 0.1


def _key(paths: Sequence[Path], tag: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in paths:
        h.update(str(p).encode())
    return f"{tag}-{len(paths)}-{h.hexdigest()}"


def augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """A training view: random resized crop, flip, sometimes low resolution or grayscale."""
    image = image.convert("RGB")
    w, h = image.size
    scale = rng.uniform(AUG_MIN_SCALE, 1.0)
    aspect = rng.uniform(3 / 4, 4 / 3)
    cw = min(w, max(1, round((w * h * scale * aspect) ** 0.5)))
    ch = min(h, max(1, round((w * h * scale / aspect) ** 0.5)))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    image = image.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < AUG_LOWRES_P:
        s = rng.choice(AUG_LOWRES_SIZES)
        image = image.resize((s, s), Image.BILINEAR)
    if rng.random() < AUG_GRAY_P:
        image = image.convert("L").convert("RGB")
    return image


def _load(path: Path, transform: Callable, seed: int | None) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if seed is not None:
            digest = hashlib.blake2b(f"{path}:{seed}".encode(), digest_size=8).digest()
            im = augment(im, random.Random(int.from_bytes(digest, "little")))
        return transform(im)


def pooled_features(tower, transform: Callable, paths: Sequence[Path], cache_dir: Path,
                    tag: str, seed: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, D) pooled image-tower features for ``paths`` (cached; ``seed`` = augmented view)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    view = "eval" if seed is None else f"aug{seed}"
    out_path = cache_dir / f"{_key(paths, tag + '-' + view)}.npy"
    if out_path.exists():
        return np.load(out_path).astype(np.float32)
    feats = []
    with ThreadPoolExecutor(2) as pool, torch.inference_mode():
        for i in range(0, len(paths), BATCH):
            batch = list(pool.map(lambda p: _load(p, transform, seed), paths[i:i + BATCH]))
            feats.append(tower.pooled(torch.from_numpy(np.stack(batch))).numpy())
            if progress:
                progress(i + len(batch), len(paths))
    arr = np.concatenate(feats).astype(np.float16)
    tmp = out_path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.rename(out_path)
    return arr.astype(np.float32)
