"""The recipe's two training phases on cached features, built from the trainer's pieces: its
batcher (``trainer.batches``, repeated captions dropped from their window), its loss and
temperature clamp (``searchkit.trainer.loss``) and its retrieval metrics (``searchkit.trainer.evaluate``).

What the recipe keeps of its own, because the shipped weights depend on it: torch's one-cycle
schedule, one sampled caption per item and epoch, and the epoch chosen by mean R@10 with numpy's
default (quicksort) tie-breaking, as when the shipped model was selected.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from searchkit.encoders.composite import CompositeEncoder
from searchkit.trainer.batches import DROP, caption_batches
from searchkit.trainer.evaluate import RetrievalMetrics, retrieval_metrics
from searchkit.trainer.loss import clamp_logit_scale_, model_loss

from .text_tail import TextPrefix, round_to_half, tail_features, tower_prefix

log = logging.getLogger(__name__)

SELECTION_SORT = "quicksort"   # numpy's default, as when the shipped model was selected
TEXT_HEAD_LR_FACTOR = 0.1      # phase 2: the heads' learning rate relative to phase 1's
PCT_WARMUP = 0.1               # one-cycle: share of the steps spent rising


@dataclass
class Pairs:
    """Training items: each has image-feature rows (views) and caption ids."""

    views: list[np.ndarray] = field(default_factory=list)     # per item: row indices into X
    captions: list[list[int]] = field(default_factory=list)   # per item: caption ids
    repeats: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Schedule:
    """What one phase trains with: batch size, epochs, per-group learning rates, seed."""

    batch_size: int
    epochs: int
    lrs: tuple[float, ...]
    seed: int
    primary_caption_p: float
    weight_decay: float = 0.0


@dataclass
class Validation:
    """align/validation as head inputs and caption features (row i pairs with image i)."""

    X: np.ndarray
    T: np.ndarray
    texts: list[str]


@dataclass
class Selection:
    """The best epoch so far by mean R@10 on validation (a tie keeps the earlier epoch)."""

    score: float = -1.0
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    heads: dict[str, torch.Tensor] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def offer(self, epoch: int, loss: float, m: RetrievalMetrics, phase: str | None = None
              ) -> bool:
        r10 = {"t2i_r10": m.text_to_image.r10, "i2t_r10": m.image_to_text.r10}
        self.history.append({"epoch": epoch, **({"phase": phase} if phase else {}),
                             "loss": loss, **r10})
        log.info("epoch %d%s loss %.3f val t2i R@10 %.1f i2t R@10 %.1f", epoch,
                 f" ({phase})" if phase else "", loss, r10["t2i_r10"], r10["i2t_r10"])
        if m.mean_r10 <= self.score:
            return False
        self.score, self.epoch, self.metrics = m.mean_r10, epoch, r10
        return True


# ---- one epoch ---------------------------------------------------------------------------------
def sample_epoch(pairs: Pairs, rng: random.Random, primary_p: float) -> list[tuple[int, int]]:
    """One (feature row, caption id) per item and repeat; the title with ``primary_p``."""
    out = []
    for views, caps, rep in zip(pairs.views, pairs.captions, pairs.repeats):
        for _ in range(rep):
            cap = caps[0] if rng.random() < primary_p or len(caps) == 1 else \
                rng.choice(caps[1:])
            out.append((int(rng.choice(views)), cap))
    rng.shuffle(out)
    return out


def epoch_batches(pairs: Pairs, rng: random.Random, sched: Schedule
                  ) -> list[tuple[list[int], list[int]]]:
    """(feature rows, caption ids) per batch: the trainer's batcher, repeats dropped."""
    items = sample_epoch(pairs, rng, sched.primary_caption_p)
    batches = caption_batches([cap for _, cap in items], range(len(items)), sched.batch_size,
                              DROP)
    return [([items[j][0] for j in b], [items[j][1] for j in b]) for b in batches]


def steps_per_epoch(pairs: Pairs, batch_size: int) -> int:
    return max(1, sum(pairs.repeats) // batch_size + 1)


def one_cycle(groups: list[dict], sched: Schedule, pairs: Pairs):
    """AdamW over ``groups`` and torch's one-cycle schedule over the phase's steps."""
    opt = torch.optim.AdamW(groups, lr=sched.lrs[0], weight_decay=sched.weight_decay)
    steps = sched.epochs * steps_per_epoch(pairs, sched.batch_size)
    max_lr = sched.lrs[0] if len(sched.lrs) == 1 else list(sched.lrs)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=steps,
                                                    pct_start=PCT_WARMUP), steps


def train_epoch(model, Xt: torch.Tensor, encode_text: Callable[[list[int]], torch.Tensor],
                batches: list[tuple[list[int], list[int]]], optim: tuple,
                after_step: Callable[[], None] | None = None) -> float:
    """One contrastive epoch over cached image features; returns the mean loss.

    ``encode_text`` maps a batch's caption ids to text-tower outputs (cached features, or the
    tuned top layers over cached prefixes); ``optim`` is (optimizer, scheduler, total steps).
    """
    opt, lr_sched, steps = optim
    model.train()
    losses = []
    for rows, caps in batches:
        loss = model_loss(model, model.image_head(Xt[rows]), model.text_head(encode_text(caps)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if lr_sched.last_epoch < steps - 1:
            lr_sched.step()
        if after_step is not None:
            after_step()
        clamp_logit_scale_(model.logit_scale)
        losses.append(loss.item())
    model.eval()
    return float(np.mean(losses))


# ---- evaluation --------------------------------------------------------------------------------
def project(encoder: CompositeEncoder, X: np.ndarray, T: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Head inputs and caption features -> normalised (image, text) embeddings."""
    with torch.no_grad():
        img = encoder.model.image_head(torch.from_numpy(X))
        txt = encoder.model.text_head(torch.from_numpy(T))
    return F.normalize(img, dim=-1).numpy(), F.normalize(txt, dim=-1).numpy()


def validate(encoder: CompositeEncoder, X: np.ndarray, T: np.ndarray,
             texts: list[str]) -> RetrievalMetrics:
    img, txt = project(encoder, X, T)
    return retrieval_metrics(img, txt, texts, kind=SELECTION_SORT)


# ---- phase 1: the heads ------------------------------------------------------------------------
def train_heads(encoder: CompositeEncoder, X: np.ndarray, T: np.ndarray, pairs: Pairs,
                val: Validation, sched: Schedule) -> Selection:
    """Both projection heads and the temperature on cached features; the best epoch stays."""
    model = encoder.model
    params = model.projection_parameters() + [model.logit_scale]
    optim = one_cycle(params, sched, pairs)
    Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
    rng = random.Random(sched.seed)
    best = Selection()
    for epoch in range(1, sched.epochs + 1):
        loss = train_epoch(model, Xt, lambda caps: Tt[caps], epoch_batches(pairs, rng, sched),
                           optim)
        if best.offer(epoch, loss, validate(encoder, val.X, val.T, val.texts)):
            best.heads = {k: v.clone() for k, v in model.heads_state().items()}
    model.load_heads(best.heads)
    return best


# ---- phase 2: the text tower's top layers ------------------------------------------------------
@dataclass
class TextTail:
    """The unlocked top of the text tower over cached prefixes of the captions."""

    first: int                       # first unlocked layer
    train: TextPrefix                # training captions
    val: TextPrefix                  # unique validation captions
    val_rows: list[int]              # per validation pair: its caption's row in ``val``

    def val_features(self, tower) -> np.ndarray:
        ids = range(len(self.val.lengths))
        return tail_features(tower, self.first, self.val, ids).numpy()[self.val_rows]


def text_tail(encoder: CompositeEncoder, texts: list[str], val_texts: list[str], layers: int,
              cache) -> TextTail:
    first = encoder.model.text_tower.num_layers - layers
    unique = list(dict.fromkeys(val_texts))
    return TextTail(first, tower_prefix(encoder, texts, first, cache),
                    tower_prefix(encoder, unique, first, cache), _first_index(val_texts))


def train_text_tail(encoder: CompositeEncoder, X: np.ndarray, tail: TextTail, pairs: Pairs,
                    val: Validation, sched: Schedule, best: Selection) -> Selection:
    """Tune the text tower's layers ``[tail.first, ...)`` and both heads, from phase 1's heads;
    phase 1's result stays unless a tuned epoch beats it on validation."""
    model, tower = encoder.model, encoder.model.text_tower
    tuned = tower.layer_parameters(tail.first)
    start = [p.detach().clone() for p in tuned]
    trained = ("image_head.", "text_head.", "logit_scale") + tuple(
        f"text_tower.encoder.layer.{i}." for i in range(tail.first, tower.num_layers))
    heads = model.projection_parameters() + [model.logit_scale]
    optim = one_cycle([{"params": tuned, "lr": sched.lrs[0]},
                       {"params": heads, "lr": sched.lrs[1]}], sched, pairs)
    Xt = torch.from_numpy(X)
    rng = random.Random(sched.seed)
    base_epoch, best_state = len(best.history), None
    for epoch in range(base_epoch + 1, base_epoch + sched.epochs + 1):
        t0 = time.time()
        loss = train_epoch(model, Xt, lambda caps: tower.forward_from(
            tail.first, *tail.train.batch(caps)), epoch_batches(pairs, rng, sched), optim,
            after_step=lambda: round_to_half(tuned))
        m = validate(encoder, val.X, tail.val_features(tower), val.texts)
        if best.offer(epoch, loss, m, phase="text"):
            best_state = {k: v.clone() for k, v in model.state_dict().items()
                          if k.startswith(trained)}
        log.info("text epoch took %.0fs", time.time() - t0)
    if best_state is None:                 # phase 1 stays: undo the text tower's changes
        with torch.no_grad():
            for p, p0 in zip(tuned, start):
                p.copy_(p0)
        model.load_heads(best.heads)
    else:
        model.load_state_dict(best_state, strict=False)
    return best


def _first_index(texts: Sequence[str]) -> list[int]:
    """For each text, the index of its string among the unique texts (in first-seen order)."""
    ids = {t: i for i, t in enumerate(dict.fromkeys(texts))}
    return [ids[t] for t in texts]
