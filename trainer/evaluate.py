"""Retrieval recall in both directions, zero-shot accuracy on a reference set.

A hit counts when a retrieved item has the *same caption* as the query's own (catalogs repeat
titles, so an identical title on another item is not a miss).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data import Pair, load_image

log = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)
EVAL_BATCH = 64
DECODE_WORKERS = 4


@dataclass(frozen=True)
class Recall:
    r1: float    # percent
    r5: float
    r10: float

    def to_json(self) -> dict[str, float]:
        return {"R@1": self.r1, "R@5": self.r5, "R@10": self.r10}


@dataclass(frozen=True)
class RetrievalMetrics:
    n: int
    text_to_image: Recall
    image_to_text: Recall

    @property
    def mean_r1(self) -> float:
        return round((self.text_to_image.r1 + self.image_to_text.r1) / 2, 2)

    def to_json(self) -> dict:
        return {"n": self.n, "text_to_image": self.text_to_image.to_json(),
                "image_to_text": self.image_to_text.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "RetrievalMetrics":
        def rec(x):
            return Recall(x["R@1"], x["R@5"], x["R@10"])
        return cls(d["n"], rec(d["text_to_image"]), rec(d["image_to_text"]))


def _recall_at(sim: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> list[float]:
    """sim: (queries, gallery); relevant: same-shape bool. Percent of queries hit in top k."""
    kmax = min(max(ks), sim.shape[1])
    top = np.argsort(-sim, axis=1, kind="stable")[:, :kmax]
    hits = np.take_along_axis(relevant, top, axis=1)
    return [round(100.0 * float(hits[:, :min(k, kmax)].any(axis=1).mean()), 2) for k in ks]


def retrieval_metrics(image_vectors: np.ndarray, text_vectors: np.ndarray,
                      captions: Sequence[str]) -> RetrievalMetrics:
    """Row i of both arrays is pair i; vectors are L2-normalised."""
    n = len(captions)
    if n == 0:
        return RetrievalMetrics(0, Recall(0, 0, 0), Recall(0, 0, 0))
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    cap = np.array([ids[c] for c in captions])
    same = cap[:, None] == cap[None, :]
    sim = np.asarray(text_vectors, np.float32) @ np.asarray(image_vectors, np.float32).T
    t2i = _recall_at(sim, same, RECALL_KS)
    i2t = _recall_at(sim.T, same, RECALL_KS)
    return RetrievalMetrics(n, Recall(*t2i), Recall(*i2t))


class ImageVectorCache:
    """Image vectors that stay valid while the image tower's weights do not change.

    Keyed by a fingerprint of ``model.image_module()``: with a locked image tower (LiT), and
    along a WiSE-FT curve of such a run, images are encoded once; any weight change clears it.
    """

    def __init__(self):
        self._key: str | None = None
        self._store: dict[str, object] = {}

    def _check(self, encoder) -> None:
        from searchkit.encoders.base import fingerprint_module
        key = fingerprint_module(encoder.model.image_module())
        if key != self._key:
            self._key, self._store = key, {}

    def get(self, encoder, name: str, compute: Callable[[], object]):
        self._check(encoder)
        if name not in self._store:
            self._store[name] = compute()
        return self._store[name]


def _eval_pixels(encoder, pair: Pair) -> np.ndarray:
    return encoder.preprocess(load_image(pair.image))


@torch.no_grad()
def embed_pair_images(encoder, pairs: Sequence[Pair], batch_size: int = EVAL_BATCH,
                      workers: int = DECODE_WORKERS,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Normalised image vectors of pairs (eval transform, eval mode)."""
    model = encoder.model
    was_training = model.training
    model.eval()
    imgs = []
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for i in range(0, len(pairs), batch_size):
                chunk = pairs[i:i + batch_size]
                pix = np.stack(list(pool.map(lambda p: _eval_pixels(encoder, p), chunk)))
                imgs.append(encoder.encode_pixels(pix))
                if progress:
                    progress(min(len(pairs), i + batch_size), len(pairs))
    finally:
        model.train(was_training)
    return np.concatenate(imgs) if imgs else np.zeros((0, encoder.dim), np.float32)


@torch.no_grad()
def embed_texts(encoder, texts: Sequence[str]) -> np.ndarray:
    model = encoder.model
    was_training = model.training
    model.eval()
    try:
        return encoder.encode_texts(list(texts))
    finally:
        model.train(was_training)


def embed_pairs(encoder, pairs: Sequence[Pair], cache: ImageVectorCache | None = None,
                cache_name: str = "pairs", **kw) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (image, text) vectors of pairs; image vectors from ``cache`` when valid."""
    if cache is not None:
        img = cache.get(encoder, cache_name, lambda: embed_pair_images(encoder, pairs, **kw))
    else:
        img = embed_pair_images(encoder, pairs, **kw)
    return img, embed_texts(encoder, [p.caption for p in pairs])


def evaluate_pairs(encoder, pairs: Sequence[Pair], **kw) -> RetrievalMetrics:
    img, txt = embed_pairs(encoder, pairs, **kw)
    return retrieval_metrics(img, txt, [p.caption for p in pairs])


# ---- reference zero-shot set (forgetting guard) -------------------------------------------------
@dataclass(frozen=True)
class ReferenceSet:
    """A folder of label subfolders measured by zero-shot classification (e.g. CIFAR-10)."""

    root: str
    templates: tuple[str, ...] = ("a photo of a {}.",)
    per_class: int | None = None     # subsample (fixed seed) to keep the guard cheap

    def evaluate(self, encoder, cache: ImageVectorCache | None = None) -> "ReferenceScore":
        from searchkit.classify import (ZeroShotClassifier, accuracy_report, encode_image_files,
                                        labelled_folder, subsample_per_class)
        labels, paths, truth = labelled_folder(self.root)
        if self.per_class:
            paths, truth = subsample_per_class(paths, truth, self.per_class)
        model = encoder.model
        was_training = model.training
        model.eval()
        try:
            def encode():
                with torch.no_grad():
                    return encode_image_files(encoder, paths)
            enc = cache.get(encoder, f"reference:{self.root}", encode) if cache else encode()
            with torch.no_grad():
                clf = ZeroShotClassifier(encoder, labels, self.templates)
        finally:
            model.train(was_training)
        index = {str(p): i for i, p in enumerate(paths)}
        kept = truth[[index[p] for p in enc.paths]] if enc.paths else truth[:0]
        rep = accuracy_report(clf.probabilities(enc.vectors), kept, labels, enc.skipped)
        return ReferenceScore(Path(self.root).name, rep.n, rep.top1, rep.top5)


@dataclass(frozen=True)
class ReferenceScore:
    name: str
    n: int
    top1: float
    top5: float


@dataclass(frozen=True)
class EvalPoint:
    """One measurement: domain recall and, when a reference set is given, its accuracy."""

    label: str                         # "before", "epoch 1", ...
    domain: RetrievalMetrics
    reference: ReferenceScore | None = None

    def to_json(self) -> dict:
        return {"label": self.label, "domain": self.domain.to_json(),
                "reference": asdict(self.reference) if self.reference else None}
