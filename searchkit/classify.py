"""Zero-shot classification: class names + prompt templates -> class vectors -> labels.

Each label is written into one or several prompt templates ("a photo of a {}."); the text
vectors of its prompts are averaged and re-normalised (CLIP's prompt ensembling). Images are
decoded in a thread pool and encoded in batches; unreadable files are skipped with a reason.
:func:`evaluate_folder` measures top-1/top-5 accuracy on a folder whose subfolders are the
labels (CIFAR-10 style), which is also the trainer's forgetting guard.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .encoders.logit_scale import MAX_LOGIT_SCALE
from .errors import SearchkitError
from .imageio import IMAGE_EXTENSIONS, ImageDecodeError, open_image

if TYPE_CHECKING:
    from .encoders.base import Encoder

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = ("a photo of a {}.",)
DEFAULT_BATCH_SIZE = 128
DEFAULT_WORKERS = 4
TOP_CONFUSIONS = 10

Progress = Callable[[int, int], None]


class ClassifyError(SearchkitError):
    """Bad labels, templates or folders (a user error)."""


@dataclass(frozen=True)
class SkippedImage:
    path: str
    reason: str


@dataclass(frozen=True)
class Prediction:
    path: str
    label: str
    probability: float
    top: tuple[tuple[str, float], ...]   # best k (label, probability), best first


@dataclass(frozen=True)
class Confusion:
    true: str
    predicted: str
    count: int


@dataclass(frozen=True)
class ClassAccuracy:
    label: str
    n: int
    top1: float   # percent


@dataclass
class AccuracyReport:
    n: int
    top1: float            # percent
    top5: float            # percent
    per_class: list[ClassAccuracy] = field(default_factory=list)
    confusions: list[Confusion] = field(default_factory=list)   # most frequent mistakes
    skipped: list[SkippedImage] = field(default_factory=list)


@dataclass
class EncodedImages:
    """Vectors of the inputs that decoded (in input order) and why the others did not; the
    one record for encoded image batches (the trainer's evaluation returns it too)."""

    vectors: np.ndarray                  # (len(kept), dim) L2-normalised
    kept: list[int]                      # indices of the inputs that decoded
    skipped: list[tuple[int, str]] = field(default_factory=list)   # (input index, reason)


# ---- labels and templates ----------------------------------------------------------------------
def parse_labels(text: str) -> list[str]:
    """Comma- or newline-separated labels, stripped, empty ones dropped, order kept."""
    labels = [s.strip() for part in text.splitlines() for s in part.split(",")]
    return check_labels([s for s in labels if s])


def check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if not labels:
        raise ClassifyError("no labels given")
    dup = [k for k, c in Counter(labels).items() if c > 1]
    if dup:
        raise ClassifyError(f"duplicate labels: {', '.join(dup)}")
    return labels


def check_templates(templates: Sequence[str] | None) -> list[str]:
    templates = list(templates or DEFAULT_TEMPLATES)
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ClassifyError(f"template {bad[0]!r} has no '{{}}' where the label goes")
    return templates


def prompt_label(label: str) -> str:
    """A folder name as words: 'golden_retriever' -> 'golden retriever'."""
    return label.replace("_", " ").strip()


def class_text_embeddings(encoder: "Encoder", labels: Sequence[str],
                          templates: Sequence[str] | None = None) -> np.ndarray:
    """(n_labels, dim) normalised class vectors: the mean over templates of each prompt vector."""
    labels, templates = check_labels(labels), check_templates(templates)
    prompts = [t.format(prompt_label(lab)) for lab in labels for t in templates]
    vecs = encoder.encode_texts(prompts).reshape(len(labels), len(templates), -1).mean(axis=1)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)


def logit_scale_of(encoder: "Encoder") -> float:
    """The model's learned temperature as a multiplier, capped at CLIP's 100; 100 (where a
    trained CLIP's sits) for a model without one."""
    exported = getattr(encoder, "logit_scale", None)  # the ONNX query path records the multiplier
    if isinstance(exported, float):
        return min(MAX_LOGIT_SCALE, exported)
    model = getattr(encoder, "model", None)
    log_param = getattr(model, "logit_scale", None)   # models store the log
    if log_param is None:
        return MAX_LOGIT_SCALE
    return float(min(MAX_LOGIT_SCALE, np.exp(float(log_param.detach().float().cpu()))))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class ZeroShotClassifier:
    """Class vectors built once; ``probabilities`` for any batch of image vectors."""

    def __init__(self, encoder: "Encoder", labels: Sequence[str],
                 templates: Sequence[str] | None = None):
        self.labels = check_labels(labels)
        self.templates = check_templates(templates)
        self.class_vectors = class_text_embeddings(encoder, self.labels, self.templates)
        self.scale = logit_scale_of(encoder)

    def probabilities(self, image_vectors: np.ndarray) -> np.ndarray:
        return softmax(self.scale * np.asarray(image_vectors, np.float32) @ self.class_vectors.T)

    def predict(self, paths: Sequence[str], image_vectors: np.ndarray, k: int = 5
                ) -> list[Prediction]:
        probs = self.probabilities(image_vectors)
        k = min(k, len(self.labels))
        order = np.argsort(-probs, axis=1)[:, :k]
        return [Prediction(p, self.labels[o[0]], float(pr[o[0]]),
                           tuple((self.labels[j], float(pr[j])) for j in o))
                for p, pr, o in zip(paths, probs, order)]


# ---- images ------------------------------------------------------------------------------------
def find_images(paths: Iterable[str | Path]) -> tuple[list[Path], list[SkippedImage]]:
    """Files as given, folders walked recursively for image-named files (sorted)."""
    found: list[Path] = []
    missing: list[SkippedImage] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(f for f in p.rglob("*")
                            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.exists():
            found.append(p)
        else:
            missing.append(SkippedImage(str(p), "file not found"))
    return found, missing


def _load(encoder: "Encoder", path: Path) -> np.ndarray | str:
    try:
        image, _ = open_image(path)
        return encoder.preprocess(image)
    except ImageDecodeError as e:
        return str(e)
    except Exception as e:  # a broken file must never stop the run
        return f"cannot preprocess: {type(e).__name__}: {e}"


def encode_image_files(encoder: "Encoder", paths: Sequence[str | Path],
                       batch_size: int = DEFAULT_BATCH_SIZE, workers: int = DEFAULT_WORKERS,
                       progress: Progress | None = None) -> EncodedImages:
    """Decode in a thread pool, encode in batches; skipped files are reported, not raised."""
    paths = [Path(p) for p in paths]
    kept: list[int] = []
    vecs: list[np.ndarray] = []
    skipped: list[tuple[int, str]] = []
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            arrays = []
            for i, a in enumerate(pool.map(lambda q: _load(encoder, q), chunk), start=start):
                if isinstance(a, str):
                    log.info("skipped %s: %s", paths[i], a)
                    skipped.append((i, a))
                else:
                    kept.append(i)
                    arrays.append(a)
            if arrays:
                vecs.append(encoder.encode_pixels(np.stack(arrays)))
            done += len(chunk)
            if progress:
                progress(done, len(paths))
    dim = getattr(encoder, "dim", 0)
    vectors = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
    return EncodedImages(vectors, kept, skipped)


def skipped_images(paths: Sequence[str | Path], enc: EncodedImages) -> list[SkippedImage]:
    """The skipped inputs of ``enc`` as (path, reason) records."""
    return [SkippedImage(str(paths[i]), reason) for i, reason in enc.skipped]


def classify_images(encoder: "Encoder", paths: Sequence[str | Path], labels: Sequence[str],
                    templates: Sequence[str] | None = None, k: int = 5,
                    batch_size: int = DEFAULT_BATCH_SIZE, workers: int = DEFAULT_WORKERS,
                    progress: Progress | None = None
                    ) -> tuple[list[Prediction], list[SkippedImage]]:
    """Best label(s) for each image file (folders are walked)."""
    clf = ZeroShotClassifier(encoder, labels, templates)
    files, missing = find_images(paths)
    enc = encode_image_files(encoder, files, batch_size, workers, progress)
    kept = [str(files[i]) for i in enc.kept]
    return clf.predict(kept, enc.vectors, k), missing + skipped_images(files, enc)


# ---- accuracy on a labelled folder -------------------------------------------------------------
def labelled_folder(root: str | Path, labels: Sequence[str] | None = None
                    ) -> tuple[list[str], list[Path], np.ndarray]:
    """(labels, image paths, true label index per path) for a folder of label subfolders.

    ``labels`` defaults to the subfolder names (sorted); given, each must be a subfolder.
    """
    root = Path(root)
    if not root.is_dir():
        raise ClassifyError(f"not a folder: {root}")
    subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    labels = check_labels(labels) if labels else subdirs
    if not labels:
        raise ClassifyError(f"{root} has no label subfolders")
    missing = [lab for lab in labels if lab not in subdirs]
    if missing:
        raise ClassifyError(f"no subfolder of {root} for label(s): {', '.join(missing)}")
    paths: list[Path] = []
    truth: list[int] = []
    for i, lab in enumerate(labels):
        files, _ = find_images([root / lab])
        paths += files
        truth += [i] * len(files)
    return labels, paths, np.asarray(truth, dtype=np.int64)


def subsample_per_class(paths: Sequence[Path], truth: np.ndarray, per_class: int, seed: int = 0
                        ) -> tuple[list[Path], np.ndarray]:
    """At most ``per_class`` images of each label, chosen with a fixed seed (order kept)."""
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(truth):
        idx = np.flatnonzero(truth == c)
        keep += sorted(rng.choice(idx, size=min(per_class, len(idx)), replace=False).tolist())
    keep.sort()
    return [paths[i] for i in keep], truth[keep]


def accuracy_report(probs: np.ndarray, truth: np.ndarray, labels: Sequence[str],
                    skipped: Sequence[SkippedImage] = ()) -> AccuracyReport:
    """Top-1/top-5 in percent, per-class top-1 and the most frequent confusions."""
    n = len(truth)
    if n == 0:
        return AccuracyReport(0, 0.0, 0.0, skipped=list(skipped))
    order = np.argsort(-probs, axis=1)
    pred = order[:, 0]
    top5 = (order[:, :5] == truth[:, None]).any(axis=1)
    per_class = [ClassAccuracy(lab, int((truth == i).sum()),
                               _pct((pred[truth == i] == i).mean()) if (truth == i).any() else 0.0)
                 for i, lab in enumerate(labels)]
    pairs = Counter((int(t), int(p)) for t, p in zip(truth, pred) if t != p)
    confusions = [Confusion(labels[t], labels[p], c) for (t, p), c in pairs.most_common(TOP_CONFUSIONS)]
    return AccuracyReport(n, _pct((pred == truth).mean()), _pct(top5.mean()), per_class,
                          confusions, list(skipped))


def _pct(x: float) -> float:
    return round(100.0 * float(x), 2)


def evaluate_folder(encoder: "Encoder", root: str | Path, labels: Sequence[str] | None = None,
                    templates: Sequence[str] | None = None, per_class: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, workers: int = DEFAULT_WORKERS,
                    progress: Progress | None = None, seed: int = 0) -> AccuracyReport:
    """Zero-shot accuracy on a folder of label subfolders (``per_class`` limits the images)."""
    labels, paths, truth = labelled_folder(root, labels)
    if per_class:
        paths, truth = subsample_per_class(paths, truth, per_class, seed)
    clf = ZeroShotClassifier(encoder, labels, templates)
    enc = encode_image_files(encoder, paths, batch_size, workers, progress)
    return accuracy_report(clf.probabilities(enc.vectors), truth[enc.kept], labels,
                           skipped_images(paths, enc))
