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

from searchkit.classify import EncodedImages
from searchkit.imageio import ImageDecodeError

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

    @property
    def mean_r10(self) -> float:
        return (self.text_to_image.r10 + self.image_to_text.r10) / 2

    def to_json(self) -> dict:
        return {"n": self.n, "text_to_image": self.text_to_image.to_json(),
                "image_to_text": self.image_to_text.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "RetrievalMetrics":
        def rec(x):
            return Recall(x["R@1"], x["R@5"], x["R@10"])
        return cls(d["n"], rec(d["text_to_image"]), rec(d["image_to_text"]))


def ranked_hits(sim: np.ndarray, relevant: np.ndarray, k: int,
                kind: str = "stable") -> np.ndarray:
    """sim: (queries, gallery); relevant: same-shape bool. (queries, k) bool: whether the
    gallery item at each of the top k ranks is relevant. ``kind`` (numpy's sort) decides ties:
    stable ranks tied items in gallery order."""
    top = np.argsort(-sim, axis=1, kind=kind)[:, :min(k, sim.shape[1])]
    return np.take_along_axis(relevant, top, axis=1)


def caption_relevance(captions: Sequence[str]) -> np.ndarray:
    """(n, n) bool: pair j answers query i when their captions are identical (so a title
    shared by several images counts for each of them)."""
    ids = {c: i for i, c in enumerate(dict.fromkeys(captions))}
    cap = np.array([ids[c] for c in captions])
    return cap[:, None] == cap[None, :]


def percent(hits: np.ndarray) -> float:
    """The share of true values in percent, 2 decimals."""
    return round(100.0 * float(np.mean(hits)), 2)


def retrieval_hits(image_vectors: np.ndarray, text_vectors: np.ndarray,
                   captions: Sequence[str], k: int = max(RECALL_KS),
                   kind: str = "stable") -> tuple[np.ndarray, np.ndarray]:
    """Per query and rank, whether the top ``k`` hold a relevant item: (text->image,
    image->text), each (n, k) bool. Row i of both arrays is pair i; ``kind`` breaks ties
    (:func:`ranked_hits`)."""
    same = caption_relevance(captions)
    sim = np.asarray(text_vectors, np.float32) @ np.asarray(image_vectors, np.float32).T
    return ranked_hits(sim, same, k, kind), ranked_hits(sim.T, same, k, kind)


def retrieval_metrics(image_vectors: np.ndarray, text_vectors: np.ndarray,
                      captions: Sequence[str], kind: str = "stable") -> RetrievalMetrics:
    """Row i of both arrays is pair i; vectors are L2-normalised."""
    n = len(captions)
    if n == 0:
        return RetrievalMetrics(0, Recall(0, 0, 0), Recall(0, 0, 0))
    t2i, i2t = retrieval_hits(image_vectors, text_vectors, captions, max(RECALL_KS), kind)
    return RetrievalMetrics(n, Recall(*(percent(t2i[:, :k].any(axis=1)) for k in RECALL_KS)),
                            Recall(*(percent(i2t[:, :k].any(axis=1)) for k in RECALL_KS)))


def _pixels_or_reason(encoder, ref) -> np.ndarray | str:
    try:
        return encoder.preprocess(load_image(ref))
    except ImageDecodeError as e:
        return str(e)
    except Exception as e:  # a broken image never stops an evaluation
        return f"cannot decode: {type(e).__name__}"


@torch.no_grad()
def _run_images(encoder, refs: Sequence, fn: Callable[[torch.Tensor], torch.Tensor],
                batch_size: int = EVAL_BATCH, workers: int = DECODE_WORKERS,
                progress: Callable[[int, int], None] | None = None
                ) -> tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]:
    """``fn`` over decoded, eval-transformed images in batches (decoding in threads)."""
    outs, kept, skipped = [], [], []
    device = torch.device(getattr(encoder, "device", "cpu"))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for i in range(0, len(refs), batch_size):
            arrays = []
            for j, a in enumerate(pool.map(lambda r: _pixels_or_reason(encoder, r),
                                           refs[i:i + batch_size]), start=i):
                if isinstance(a, str):
                    skipped.append((j, a))
                else:
                    kept.append(j)
                    arrays.append(a)
            if arrays:
                x = torch.from_numpy(np.stack(arrays)).to(device)
                outs.append(fn(x).float().cpu())
            if progress:
                progress(min(len(refs), i + batch_size), len(refs))
    return (torch.cat(outs) if outs else None), kept, skipped


def _normalised(t: torch.Tensor | None, dim: int) -> np.ndarray:
    if t is None:
        return np.zeros((0, dim), np.float32)
    return torch.nn.functional.normalize(t.float(), dim=-1).numpy()


class _Eval:
    """The model in eval mode for the duration (restored after)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was)


class ImageVectorCache:
    """Image encodings reused while the weights that produce them do not change.

    When the model's image trunk/head split is known (:mod:`trainer.towers`), the trunk's
    outputs are kept while the trunk's weights are unchanged and only the cheap head runs again
    (lock-image-trunk, projections, and WiSE-FT curves of such runs); otherwise whole image
    vectors are kept while ``image_module()`` is unchanged (LiT). Keys are weight fingerprints.
    """

    def __init__(self, disk_dir: str | Path | None = None):
        self._entries: dict[str, tuple[str, tuple]] = {}
        self.disk_dir = Path(disk_dir) if disk_dir else None

    def encode(self, encoder, name: str, refs: Sequence, **kw) -> EncodedImages:
        from searchkit.encoders.base import fingerprint_module

        from .towers import split_image
        model = encoder.model
        split = split_image(model)
        with _Eval(model):
            if split is not None:
                key = "trunk:" + fingerprint_module(split.trunk_module)
                feats, kept, skipped = self._get(name, key, lambda: self._disk(
                    encoder, key, refs, lambda: _run_images(encoder, refs, split.trunk, **kw)))
                with torch.no_grad():
                    vec = split.head(feats.to(next(split.head.parameters()).device)) \
                        if feats is not None else None
                return EncodedImages(_normalised(vec.cpu() if vec is not None else None,
                                                 encoder.dim), kept, skipped)
            key = "tower:" + fingerprint_module(model.image_module())
            vec, kept, skipped = self._get(name, key, lambda: _run_images(
                encoder, refs, model.encode_image, **kw))
            return EncodedImages(_normalised(vec, encoder.dim), kept, skipped)

    def trunk_outputs(self, encoder, name: str, refs: Sequence, split, **kw) -> tuple:
        """(trunk outputs, kept indices, skipped) for images, cached like :meth:`encode`."""
        from searchkit.encoders.base import fingerprint_module
        key = "trunk:" + fingerprint_module(split.trunk_module)
        with _Eval(encoder.model):
            return self._get(name, key, lambda: self._disk(
                encoder, key, refs, lambda: _run_images(encoder, refs, split.trunk, **kw)))

    def _disk(self, encoder, key: str, refs: Sequence, compute: Callable[[], tuple]) -> tuple:
        """Trunk outputs persisted under ``disk_dir`` (keyed by weights, image config, files)."""
        if self.disk_dir is None:
            return compute()
        path = self.disk_dir / f"trunk-{_disk_key(encoder, key, refs)}.pt"
        if path.is_file():
            try:
                d = torch.load(path, map_location="cpu", weights_only=True)
                return d["feats"], list(d["kept"]), [(int(i), r) for i, r in d["skipped"]]
            except Exception as e:  # a damaged cache file is recomputed
                log.warning("ignoring cache file %s: %s", path, e)
        feats, kept, skipped = compute()
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"feats": feats, "kept": kept, "skipped": skipped}, tmp)
        tmp.replace(path)
        return feats, kept, skipped

    def _get(self, name: str, key: str, compute: Callable[[], tuple]) -> tuple:
        entry = self._entries.get(name)
        if entry is None or entry[0] != key:
            entry = (key, compute())
            self._entries[name] = entry
        return entry[1]


def _disk_key(encoder, key: str, refs: Sequence) -> str:
    """Weights + what shapes the trunk's input/output + each file's path, size and mtime."""
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    model = encoder.model
    image_cfg = getattr(getattr(model, "config", None), "image", None)
    h.update(repr((key, type(model).__name__, repr(image_cfg), getattr(encoder, "image_size", 0),
                   tuple(getattr(encoder, "image_mean", ())),
                   tuple(getattr(encoder, "image_std", ())))).encode())
    for r in refs:
        if isinstance(r, bytes):
            h.update(hashlib.blake2b(r, digest_size=16).digest())
            continue
        try:
            st = Path(r).stat()
            h.update(f"{r}|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"{r}|missing".encode())
    return h.hexdigest()


def encode_images(encoder, refs: Sequence, cache: ImageVectorCache | None = None,
                  name: str = "images", **kw) -> EncodedImages:
    """Normalised image vectors of image paths/bytes, eval transform, eval mode."""
    if cache is not None:
        return cache.encode(encoder, name, refs, **kw)
    with _Eval(encoder.model):
        vec, kept, skipped = _run_images(encoder, refs, encoder.model.encode_image, **kw)
    return EncodedImages(_normalised(vec, encoder.dim), kept, skipped)


def embed_pair_images(encoder, pairs: Sequence[Pair], cache: ImageVectorCache | None = None,
                      name: str = "pairs", **kw) -> np.ndarray:
    """Normalised image vectors of (already checked) pairs."""
    enc = encode_images(encoder, [p.image for p in pairs], cache, name, **kw)
    if enc.skipped:
        raise ValueError(f"{len(enc.skipped)} pair images no longer decode, e.g. "
                         f"{pairs[enc.skipped[0][0]].key}: {enc.skipped[0][1]}")
    return enc.vectors


@torch.no_grad()
def embed_texts(encoder, texts: Sequence[str]) -> np.ndarray:
    with _Eval(encoder.model):
        return encoder.encode_texts(list(texts))


def embed_pairs(encoder, pairs: Sequence[Pair], cache: ImageVectorCache | None = None,
                cache_name: str = "pairs", **kw) -> tuple[np.ndarray, np.ndarray]:
    """Normalised (image, text) vectors of pairs; image encodings from ``cache`` when valid."""
    img = embed_pair_images(encoder, pairs, cache, cache_name, **kw)
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
        from searchkit.classify import (ZeroShotClassifier, accuracy_report, labelled_folder,
                                        skipped_images, subsample_per_class)
        labels, paths, truth = labelled_folder(self.root)
        if self.per_class:
            paths, truth = subsample_per_class(paths, truth, self.per_class)
        enc = encode_images(encoder, [str(p) for p in paths], cache, f"reference:{self.root}")
        with _Eval(encoder.model), torch.no_grad():
            clf = ZeroShotClassifier(encoder, labels, self.templates)
        rep = accuracy_report(clf.probabilities(enc.vectors), truth[enc.kept], labels,
                              skipped_images(paths, enc))
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
