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


def _eval_pixels(encoder, pair: Pair) -> np.ndarray:
    return encoder.preprocess(load_image(pair.image))


@torch.no_grad()
def embed_pairs(encoder, pairs: Sequence[Pair], batch_size: int = EVAL_BATCH,
                workers: int = DECODE_WORKERS, progress: Callable[[int, int], None] | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (image, text) vectors of validation pairs, eval transform, eval mode."""
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
        txt = encoder.encode_texts([p.caption for p in pairs])
    finally:
        model.train(was_training)
    img = np.concatenate(imgs) if imgs else np.zeros((0, encoder.dim), np.float32)
    return img, txt


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

    def evaluate(self, encoder) -> "ReferenceScore":
        from searchkit.classify import evaluate_folder
        model = encoder.model
        was_training = model.training
        model.eval()
        try:
            rep = evaluate_folder(encoder, self.root, templates=self.templates,
                                  per_class=self.per_class)
        finally:
            model.train(was_training)
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
