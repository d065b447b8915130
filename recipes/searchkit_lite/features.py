"""Cached frozen-tower features: each image goes through the locked image tower once, each
caption through the locked text tower once.

Image features are stored as float16 ``.npy`` files keyed by the tower, the view (``eval`` or an
augmentation seed) and a hash of the file list; caption features as one float16 ``.npz`` of
texts and rows. Images are decoded by the trainer's decoder (``trainer.data.load_image``:
``searchkit.imageio.open_image`` with EXIF rotation, alpha and CMYK handled) and augmented
views come from the trainer's augmentation.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from searchkit.encoders.base import fingerprint_module
from searchkit.encoders.composite import CompositeEncoder
from searchkit.trainer.augment import AugmentConfig, augment, to_array
from searchkit.trainer.data import load_image

log = logging.getLogger(__name__)

BATCH = 64
DECODE_WORKERS = 2
# Augmented views (off in the shipped recipe): crop, flip, sometimes grayscale or blurred.
AUGMENT = AugmentConfig(crop_scale=(0.5, 1.0), jitter=0.0, grayscale_p=0.1, blur_p=0.3)
SYNTH_TARGET_P = 0.9     # synthesized ImageNet features: stop once the classifier is this sure
SYNTH_STEPS = 200
RELU6_MAX = 6.0          # pooled EfficientNet-Lite features are averages of ReLU6 outputs


# ---- image features ----------------------------------------------------------------------------
def _key(paths: Sequence[Path], tag: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    for p in paths:
        h.update(str(p).encode())
    return f"{tag}-{len(paths)}-{h.hexdigest()}"


def _pixels(encoder: CompositeEncoder, path: Path, seed: int | None) -> np.ndarray:
    image = load_image(str(path))
    if seed is None:
        return encoder.preprocess(image)
    digest = hashlib.blake2b(f"{path}:{seed}".encode(), digest_size=8).digest()
    rng = np.random.default_rng(int.from_bytes(digest, "little"))
    view = augment(image, encoder.image_size, AUGMENT, rng)
    return to_array(view, encoder.image_mean, encoder.image_std)


def pooled_features(encoder: CompositeEncoder, paths: Sequence[Path], cache_dir: Path,
                    tag: str, seed: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(N, D) pooled image-tower features for ``paths`` (cached; ``seed`` = augmented view)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    view = "eval" if seed is None else f"aug{seed}"
    out_path = cache_dir / f"{_key(paths, tag + '-' + view)}.npy"
    if out_path.exists():
        return np.load(out_path).astype(np.float32)
    tower = encoder.model.image_tower
    feats = []
    with ThreadPoolExecutor(DECODE_WORKERS) as pool, torch.inference_mode():
        for i in range(0, len(paths), BATCH):
            batch = list(pool.map(lambda p: _pixels(encoder, p, seed), paths[i:i + BATCH]))
            feats.append(tower.pooled(torch.from_numpy(np.stack(batch))).numpy())
            if progress:
                progress(i + len(batch), len(paths))
    arr = np.concatenate(feats).astype(np.float16)
    tmp = out_path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.rename(out_path)
    return arr.astype(np.float32)


def head_inputs(encoder: CompositeEncoder, pooled: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return encoder.model.image_tower.head_input(torch.from_numpy(pooled)).numpy()


# ---- ImageNet pseudo-images --------------------------------------------------------------------
def imagenet_pseudo_pooled(encoder: CompositeEncoder, real_pooled: np.ndarray) -> np.ndarray:
    """Classifier rows as pseudo pooled features, rescaled to the real features' mean norm."""
    w = encoder.model.image_tower.net.classifier.weight.detach().numpy()
    target = float(np.linalg.norm(real_pooled, axis=1).mean())
    return (w / np.linalg.norm(w, axis=1, keepdims=True) * target).astype(np.float32)


def imagenet_synth_pooled(encoder: CompositeEncoder, real_pooled: np.ndarray, per_class: int,
                          seed: int, target_p: float = SYNTH_TARGET_P,
                          steps: int = SYNTH_STEPS) -> np.ndarray:
    """Class-conditional pseudo features: real features pushed until the classifier says ``c``.

    For each class, ``per_class`` real training features (icons and drawings) are moved by
    gradient ascent on log p(c | x), kept inside the range a pooled ReLU6 feature can take, until
    p(c | x) reaches ``target_p``. Unlike the raw classifier rows these lie where real pooled
    features lie. Rows are ordered class by class: (1000 * per_class, D).
    """
    classifier = encoder.model.image_tower.net.classifier
    w, b = classifier.weight.detach(), classifier.bias.detach()
    g = torch.Generator().manual_seed(seed)
    n_cls = w.shape[0]
    starts = torch.from_numpy(real_pooled).float()
    idx = torch.randint(len(starts), (n_cls * per_class,), generator=g)
    x = starts[idx].clone()
    target = torch.arange(n_cls).repeat_interleave(per_class)
    lr = 0.5 / float(w.norm(dim=1).mean())
    for _ in range(steps):
        p = (x @ w.t() + b).softmax(-1)
        done = p[torch.arange(len(x)), target] >= target_p
        if bool(done.all()):
            break
        grad = w[target] - p @ w                 # d log p(target | x) / dx
        x = torch.where(done[:, None], x, (x + lr * grad).clamp(0.0, RELU6_MAX))
    return x.numpy().astype(np.float32)


# ---- caption features --------------------------------------------------------------------------
def encode_texts_raw(encoder: CompositeEncoder, texts: Sequence[str]) -> np.ndarray:
    """Text-tower outputs before the head (for caching when training heads only).

    Texts go through in order of length, so a batch pads little; rows come back in input order.
    """
    out = np.zeros((len(texts), encoder.model.text_tower.out_dim), np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for i in range(0, len(order), encoder.batch_size):
            idx = order[i:i + encoder.batch_size]
            tok = {k: v.to(encoder.device)
                   for k, v in encoder.tokenize([texts[j] for j in idx]).items()}
            out[idx] = encoder.model.text_tower(**tok).float().cpu().numpy()
    return out


class TextBank:
    """Unique caption strings -> frozen text-tower features (cached on disk)."""

    def __init__(self):
        self.index: dict[str, int] = {}

    def add(self, text: str) -> int:
        return self.index.setdefault(text, len(self.index))

    def features(self, encoder: CompositeEncoder, cache_dir: Path) -> np.ndarray:
        texts = list(self.index)
        cache_dir.mkdir(parents=True, exist_ok=True)
        store = cache_dir / _text_cache_name(encoder)
        known: dict[str, np.ndarray] = {}
        if store.exists():
            with np.load(store, allow_pickle=False) as z:
                known = dict(zip(z["texts"].tolist(), z["feats"]))
        todo = [t for t in texts if t not in known]
        if todo:
            log.info("encoding %d new captions", len(todo))
            feats = encode_texts_raw(encoder, todo)
            known.update(zip(todo, feats.astype(np.float16)))
            keys = list(known)
            tmp = cache_dir / "text_minilm.tmp.npz"
            np.savez(tmp, texts=np.array(keys), feats=np.stack([known[k] for k in keys]))
            tmp.rename(store)
        return np.stack([known[t] for t in texts]).astype(np.float32)


def _text_cache_name(encoder: CompositeEncoder) -> str:
    """The package MiniLM's outputs are shared by all runs; a loaded tuned tower (a model
    directory with a text patch) gets its own file. Call before tuning, never after."""
    if encoder.config.text.patch is None:
        return "text_minilm.npz"
    return f"text_{fingerprint_module(encoder.model.text_tower)}.npz"
