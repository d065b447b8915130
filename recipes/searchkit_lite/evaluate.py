"""Evaluate a composite model from cached tower features (fast ablations; report only).

    python -m recipes.searchkit_lite.evaluate MODEL_DIR [--cifar DIR] [--data DIR] [--cache DIR]

Reports align/validation R@10 without fluent3d (overall and per source, with the recipe's
selection tie-breaking) and, when ``--cifar`` is given, CIFAR-10 zero-shot top-1/top-5 with the
template "a photo of a {label}." through the library's classifier
(``searchkit.classify``: its folder reader, class vectors and accuracy report) on cached image
features. CIFAR-10 is evaluation data: this module only measures; nothing here feeds back into
training or selection. ``searchkit evaluate`` / ``searchkit classify --accuracy`` give the
numbers a user sees.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from searchkit.classify import ZeroShotClassifier, accuracy_report, labelled_folder
from searchkit.encoders.composite import CompositeEncoder, load_composite
from searchkit.trainer.evaluate import percent, retrieval_hits

from .data import read_align
from .features import head_inputs, pooled_features
from .train import DEFAULT_DATA, Inputs, default_cache, validation_set
from .training import SELECTION_SORT, project

log = logging.getLogger(__name__)

CIFAR_TEMPLATE = "a photo of a {}."
RECALL_K = 10


def variant_of(encoder: CompositeEncoder) -> str:
    return encoder.config.image.arch.replace("tf_efficientnet_", "")


def image_vectors(encoder: CompositeEncoder, paths: list[Path], cache: Path) -> np.ndarray:
    """Normalised image embeddings from cached pooled features."""
    pooled = pooled_features(encoder, paths, cache / "features", variant_of(encoder))
    with torch.no_grad():
        img = encoder.model.image_head(torch.from_numpy(head_inputs(encoder, pooled)))
    return torch.nn.functional.normalize(img, dim=-1).numpy()


def zero_shot(encoder: CompositeEncoder, root: Path, cache: Path) -> dict:
    labels, paths, truth = labelled_folder(root)
    clf = ZeroShotClassifier(encoder, labels, [CIFAR_TEMPLATE])
    rep = accuracy_report(clf.probabilities(image_vectors(encoder, paths, cache)), truth, labels)
    return {"n": rep.n, "top1": rep.top1, "top5": rep.top5}


def align_metrics(encoder: CompositeEncoder, inputs: Inputs) -> dict:
    val = validation_set(encoder, variant_of(encoder), inputs)
    img, txt = project(encoder, val.X, val.T)
    t2i, i2t = (h.any(axis=1) for h in retrieval_hits(img, txt, val.texts, RECALL_K,
                                                         SELECTION_SORT))
    sources = np.array([r.source for r in read_align(inputs.align / "validation")])
    out = {"t2i_r10": percent(t2i), "i2t_r10": percent(i2t)}
    for s in sorted(set(sources)):
        m = sources == s
        out[s] = {"n": int(m.sum()), "t2i_r10": percent(t2i[m]), "i2t_r10": percent(i2t[m])}
    return out


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--align", type=Path)
    p.add_argument("--cifar", type=Path)
    p.add_argument("--cache", type=Path, default=None)
    a = p.parse_args(argv)
    inputs = Inputs.under(a.data, a.cache or default_cache())
    if a.align:
        inputs = Inputs(a.align, inputs.imagenet_classes, inputs.wordnet, inputs.cache)
    torch.set_grad_enabled(False)
    enc = load_composite(a.model, device="cpu")
    out = {"model": str(a.model), "align_val_no_fluent3d": align_metrics(enc, inputs)}
    if a.cifar:
        out["cifar10_zero_shot"] = zero_shot(enc, a.cifar, inputs.cache)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
