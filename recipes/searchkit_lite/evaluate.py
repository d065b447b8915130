"""Evaluate a composite model from cached tower features (fast ablations; report only).

    python -m trainer.recipes.evaluate_lite MODEL_DIR [--cifar DIR]

Reports align/validation R@10 without fluent3d and, when ``--cifar`` is given, CIFAR-10
zero-shot top-1 with the template "a photo of a {label}.". CIFAR-10 is evaluation data: this
module only measures; nothing here feeds back into training or selection.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch

from searchkit.encoders.composite import load_composite

from .lite_features import pooled_features
from .searchkit_lite import (DEFAULT_ALIGN, DEFAULT_CACHE, TextBank, head_inputs, percent,
                             project, retrieval_hits)
from .lite_data import read_align

log = logging.getLogger(__name__)

CIFAR_TEMPLATE = "a photo of a {}."
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def variant_of(encoder) -> str:
    return encoder.config.image.arch.replace("tf_efficientnet_", "")


def labelled_folder(root: Path) -> tuple[list[Path], list[str], np.ndarray]:
    labels = sorted(d.name for d in root.iterdir() if d.is_dir())
    paths, y = [], []
    for k, label in enumerate(labels):
        files = sorted(p for p in (root / label).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        y += [k] * len(files)
    return paths, labels, np.array(y)


def zero_shot_accuracy(encoder, root: Path, cache: Path) -> float:
    paths, labels, y = labelled_folder(root)
    pooled = pooled_features(encoder.model.image_tower, encoder.transform, paths,
                             cache / "features", variant_of(encoder))
    bank = TextBank()
    ids = [bank.add(CIFAR_TEMPLATE.format(label)) for label in labels]
    T = bank.features(encoder, cache / "text")[ids]
    img, txt = project(encoder, head_inputs(encoder, pooled), T)
    return round(100 * float(((img @ txt.T).argmax(1) == y).mean()), 2)


def align_metrics(encoder, align_dir: Path, cache: Path) -> dict:
    rows = read_align(align_dir / "validation")
    pooled = pooled_features(encoder.model.image_tower, encoder.transform,
                             [r.path for r in rows], cache / "features", variant_of(encoder))
    bank = TextBank()
    ids = [bank.add(r.text) for r in rows]
    T = bank.features(encoder, cache / "text")[ids]
    t2i, i2t = retrieval_hits(encoder, head_inputs(encoder, pooled), T, [r.text for r in rows])
    sources = np.array([r.source for r in rows])
    out = {"t2i_r10": percent(t2i), "i2t_r10": percent(i2t)}
    for s in sorted(set(sources)):
        out[s] = {"n": int((sources == s).sum()), "t2i_r10": percent(t2i[sources == s]),
                  "i2t_r10": percent(i2t[sources == s])}
    return out


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--align", type=Path, default=DEFAULT_ALIGN)
    p.add_argument("--cifar", type=Path)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    enc = load_composite(a.model, device="cpu")
    out = {"model": str(a.model), "align_val_no_fluent3d": align_metrics(enc, a.align, a.cache)}
    if a.cifar:
        out["cifar10_zero_shot_top1"] = zero_shot_accuracy(enc, a.cifar, a.cache)
    log.info("%s", json.dumps(out))


if __name__ == "__main__":
    main()
