"""The fine-tuning loop: data -> views -> gradient-cached contrastive steps -> evaluation ->
best epoch -> WiSE-FT -> exported model directory + metrics.json.

Objects are built in one place (:func:`finetune` / :class:`Trainer`) and passed in; the loop
reports through :class:`Callbacks` and never prints. Everything random is derived from the seed
(epoch order from (seed, epoch), augmentations from (seed, epoch, item)) or saved with the
checkpoint, so a resumed run continues with the same loss curve.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from searchkit.errors import SearchkitError

from . import checkpoint as ckpt
from .augment import AugmentConfig, augment, to_array
from .batches import epoch_batches, epoch_order  # noqa: F401  (the batcher; re-exported)
from .data import BadRow, Pair, PairData, load_image
from .evaluate import (EvalPoint, ImageVectorCache, ReferenceScore, ReferenceSet,
                       RetrievalMetrics, embed_pair_images, evaluate_pairs)
from .gradcache import gradcache_step
from .loss import clamp_logit_scale_, model_loss
from .modes import LoraSettings, TrainMode, apply_mode, check_mode_packages, has_lora, merge_lora
from .optim import make_optimizer, set_lr
from .schedule import lr_at
from .towers import split_image, trunk_frozen_head_trains
from .wise import (DEFAULT_ALPHAS, MAX_REFERENCE_DROP, WiseChoice, interpolate, pick_alpha,
                   wise_curve)

log = logging.getLogger(__name__)

MODEL_SUBDIR = "model"
FINETUNED_SUBDIR = "finetuned"     # with WiSE-FT: the best epoch's weights before mixing
METRICS_FILE = "metrics.json"
CHECKPOINT_SUBDIR = "checkpoints"


class TrainError(SearchkitError):
    """The run cannot go on (bad settings, nothing to train, incompatible checkpoint)."""


class TrainStopped(TrainError):
    """The run failed after it had saved a checkpoint; the checkpoint is kept, and the same
    settings with ``resume=True`` continue from it instead of starting over."""

    def __init__(self, cause: Exception, checkpoint: Path, step: int, total_steps: int):
        self.cause, self.checkpoint = cause, checkpoint
        self.step, self.total_steps = step, total_steps
        super().__init__(f"{self.reason} (checkpoint kept: {checkpoint}, step {step} of "
                         f"{total_steps})")

    @property
    def reason(self) -> str:
        c = self.cause
        return str(c) if isinstance(c, SearchkitError) else f"{type(c).__name__}: {c}"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 256
    chunk_size: int = 64                 # gradient-caching chunk (memory of this many pairs)
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 20
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    mode: str = TrainMode.FULL.value
    lora: LoraSettings = LoraSettings()
    augment: AugmentConfig = AugmentConfig()
    caption_template: str = "{}"         # e.g. "a 3D render of {}"
    keyword_p: float = 0.0               # chance a training view uses a keyword caption
    keyword_template: str = "{}"
    seed: int = 0
    bf16: bool = True                    # autocast on CUDA only
    checkpoint_every: int = 0            # steps between checkpoints (0: at each epoch end)
    eval_each_epoch: bool = True
    workers: int = 4
    wise: str = "off"                    # "off", "auto" or an alpha such as "0.5"
    wise_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    wise_max_drop: float = MAX_REFERENCE_DROP

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["lora"] = LoraSettings(**d.get("lora", {}))
        aug = dict(d.get("augment", {}))
        for k in ("crop_scale", "crop_ratio", "blur_radius"):
            if k in aug:
                aug[k] = tuple(aug[k])
        d["augment"] = AugmentConfig(**aug)
        d["wise_alphas"] = tuple(d.get("wise_alphas", DEFAULT_ALPHAS))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class StepInfo:
    step: int
    total_steps: int
    epoch: int
    loss: float
    lr: float
    images_per_s: float


@dataclass
class Callbacks:
    on_step: Callable[[StepInfo], None] | None = None
    on_eval: Callable[[EvalPoint], None] | None = None
    on_stage: Callable[[str], None] | None = None

    def step(self, info: StepInfo) -> None:
        if self.on_step:
            self.on_step(info)

    def eval(self, point: EvalPoint) -> None:
        if self.on_eval:
            self.on_eval(point)

    def stage(self, text: str) -> None:
        log.info(text)
        if self.on_stage:
            self.on_stage(text)


@dataclass
class TrainResult:
    output: Path | None
    before: EvalPoint
    after: EvalPoint                     # the best epoch (WiSE alpha 1)
    final: EvalPoint                     # what was exported (after WiSE-FT when used)
    epochs: list[EvalPoint]
    best_epoch: int | None
    wise: WiseChoice | None
    losses: list[float]
    skipped: list[BadRow] = field(default_factory=list)
    completed: bool = True               # False when stopped early (max_steps)

    def to_json(self) -> dict:
        return {"before": self.before.to_json(), "after": self.after.to_json(),
                "final": self.final.to_json(), "epochs": [e.to_json() for e in self.epochs],
                "best_epoch": self.best_epoch,
                "wise": self.wise.to_json() if self.wise else None,
                "losses": self.losses, "completed": self.completed,
                "skipped": {"count": len(self.skipped),
                            "rows": [asdict(b) for b in self.skipped]}}


# ---- batches -----------------------------------------------------------------------------------
def train_caption(pair: Pair, cfg: TrainConfig, rng: np.random.Generator) -> str:
    if pair.keywords and cfg.keyword_p > 0 and rng.random() < cfg.keyword_p:
        kw = pair.keywords[int(rng.integers(len(pair.keywords)))]
        return cfg.keyword_template.format(kw)
    return cfg.caption_template.format(pair.caption)


class ViewMaker:
    """Training views of pairs: augmented pixels (or the eval transform) and a caption."""

    def __init__(self, encoder, cfg: TrainConfig):
        self.encoder = encoder
        self.cfg = cfg
        self.size = int(getattr(encoder, "image_size", 224))
        self.mean = getattr(encoder, "image_mean", (0.5, 0.5, 0.5))
        self.std = getattr(encoder, "image_std", (0.5, 0.5, 0.5))

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, epoch, index])

    def pixels(self, pair: Pair, epoch: int, index: int) -> np.ndarray:
        image = load_image(pair.image)
        if not self.cfg.augment.enabled:
            return self.encoder.preprocess(image)
        view = augment(image, self.size, self.cfg.augment, self.rng(epoch, index))
        return to_array(view, self.mean, self.std)

    def caption(self, pair: Pair, epoch: int, index: int) -> str:
        return train_caption(pair, self.cfg, np.random.default_rng([self.cfg.seed, epoch, index, 1]))


# ---- the trainer -------------------------------------------------------------------------------
class Trainer:
    """Fine-tunes ``encoder.model`` in place on ``data``; see :func:`finetune`."""

    def __init__(self, encoder, data: PairData, cfg: TrainConfig, output: Path | None = None,
                 reference: ReferenceSet | None = None, callbacks: Callbacks | None = None,
                 cache_dir: Path | None = None):
        self.encoder = encoder
        self.model = encoder.model
        self.data = data
        self.cfg = cfg
        self.output = Path(output) if output else None
        self.reference = reference
        self.cb = callbacks or Callbacks()
        self.device = torch.device(getattr(encoder, "device", "cpu"))
        self.views = ViewMaker(encoder, cfg)
        self.captions = data.train.captions()
        self.epoch_sizes = [len(epoch_batches(self.captions, cfg.batch_size, cfg.seed, e))
                            for e in range(cfg.epochs)]
        if not all(self.epoch_sizes):
            raise TrainError("too few distinct training captions to form a batch")
        self.total_steps = sum(self.epoch_sizes)
        self.base_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.model.float()
        apply_mode(self.model, cfg.mode, cfg.lora)
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.state = ckpt.TrainState()
        self.image_cache = ImageVectorCache(cache_dir)
        self._train_image_features: torch.Tensor | None = None
        self._trunk_features: torch.Tensor | None = None
        self._best_in_memory: dict[str, torch.Tensor] | None = None   # when there is no output
        self.saved: Path | None = None      # the checkpoint this run wrote or resumed from

    # -- measuring --
    def measure(self, label: str) -> EvalPoint:
        self.cb.stage(f"evaluating ({label})")
        domain = evaluate_pairs(self.encoder, self.data.validation.pairs, workers=self.cfg.workers,
                                cache=self.image_cache, cache_name="validation") \
            if self.data.validation.pairs else RetrievalMetrics.from_json(
                {"n": 0, **{d: {"R@1": 0, "R@5": 0, "R@10": 0}
                            for d in ("text_to_image", "image_to_text")}})
        ref = self.reference.evaluate(self.encoder, self.image_cache) if self.reference else None
        point = EvalPoint(label, domain, ref)
        self.cb.eval(point)
        return point

    # -- checkpoints --
    @property
    def checkpoint_dir(self) -> Path | None:
        return self.output / CHECKPOINT_SUBDIR if self.output else None

    def save(self) -> None:
        if self.checkpoint_dir is not None:
            path = self.checkpoint_dir / ckpt.LAST
            ckpt.save_checkpoint(path, self.model, self.optimizer, self.state, self.cfg.to_json())
            self.saved = path

    def resume(self, path: Path) -> None:
        c = ckpt.load_checkpoint(path)
        saved = TrainConfig.from_json(c.config)
        if saved != self.cfg:
            raise TrainError(f"checkpoint {path} was made with other settings; resume with the "
                             "same settings (they are stored in the checkpoint)")
        ckpt.restore(self.model, self.optimizer, c)
        self.state = c.state
        self.saved = path
        self.cb.stage(f"resumed at step {self.state.step} of {self.total_steps}")

    # -- training --
    def _model_train_mode(self) -> None:
        """Train mode, except frozen towers and batch norms (running stats stay as they are,
        which also keeps gradient caching exact)."""
        self.model.train()
        for part in (self.model.image_module(), self.model.text_module()):
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
        for m in self.model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()

    @property
    def images_fixed(self) -> bool:
        """Locked image tower and no augmentation: training image features never change."""
        frozen = not any(p.requires_grad for p in self.model.image_module().parameters())
        return frozen and not self.cfg.augment.enabled

    def _train_image_vectors(self) -> torch.Tensor:
        """Every training image encoded once (LiT), reused by every step."""
        if self._train_image_features is None:
            self.cb.stage("encoding the training images once (locked image tower)")
            vecs = embed_pair_images(self.encoder, self.data.train.pairs, self.image_cache,
                                     "train", workers=self.cfg.workers)
            self._train_image_features = torch.from_numpy(vecs).to(self.device)
        return self._train_image_features

    @property
    def trunk_cached(self) -> bool:
        """Locked image trunk, trainable head, no augmentation: cache the trunk's output."""
        return not self.cfg.augment.enabled and trunk_frozen_head_trains(self.model)

    def _train_trunk_features(self) -> torch.Tensor:
        if self._trunk_features is None:
            self.cb.stage("encoding the training images once (locked image trunk)")
            split = split_image(self.model)
            feats, kept, skipped = self.image_cache.trunk_outputs(
                self.encoder, "train-trunk", [p.image for p in self.data.train.pairs],
                split, workers=self.cfg.workers)
            if skipped:
                raise TrainError(f"{len(skipped)} training images no longer decode")
            self._trunk_features = feats.to(self.device)
        return self._trunk_features

    def _batch(self, idxs: list[int], epoch: int, pool: ThreadPoolExecutor):
        pairs = [self.data.train.pairs[i] for i in idxs]
        caps = [self.views.caption(p, epoch, i) for p, i in zip(pairs, idxs)]
        tokens = {k: v.to(self.device) for k, v in self.encoder.tokenize(caps).items()}
        if self.images_fixed:
            return self._train_image_vectors()[idxs], tokens
        if self.trunk_cached:
            return self._train_trunk_features()[idxs], tokens
        pix = list(pool.map(lambda a: self.views.pixels(a[0], epoch, a[1]), zip(pairs, idxs)))
        return torch.from_numpy(np.stack(pix)).to(self.device), tokens

    def _step(self, pixels, tokens) -> float:
        cfg = self.cfg
        lr = lr_at(self.state.step, self.total_steps, cfg.lr, cfg.warmup_steps, cfg.min_lr_ratio)
        set_lr(self.optimizer, lr)
        self.optimizer.zero_grad(set_to_none=True)
        fixed = self.images_fixed
        head = split_image(self.model).head if not fixed and self.trunk_cached else None
        out = gradcache_step(self.model, None if fixed else pixels, tokens,
                             lambda i, t: model_loss(self.model, i, t), cfg.chunk_size,
                             bf16=cfg.bf16, image_features=pixels if fixed else None,
                             image_encoder=head, image_trainable=True if head else None)
        if cfg.grad_clip:
            params = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        self.optimizer.step()
        clamp_logit_scale_(self.model.logit_scale.data)
        self.state.losses.append(out.loss)
        self.state.lrs.append(lr)
        self.state.step += 1
        return lr

    def _end_epoch(self, epoch: int) -> None:
        self.state.epoch = epoch + 1
        if self.cfg.eval_each_epoch:
            point = self.measure(f"epoch {epoch + 1}")
            self.state.evals.append(point.to_json())
            score = point.domain.mean_r1
            if self.state.best_score is None or score > self.state.best_score:
                self.state.best_epoch, self.state.best_score = epoch + 1, score
                if self.checkpoint_dir is not None:
                    ckpt.save_weights(self.checkpoint_dir / ckpt.BEST, self.model)
                else:
                    self._best_in_memory = copy.deepcopy(self.model.state_dict())
        self.save()

    def train(self, max_steps: int | None = None) -> bool:
        """Run (or continue) the epochs; False when stopped at ``max_steps``."""
        cfg = self.cfg
        if self.images_fixed:      # caches first: they switch the model to eval and back
            self._train_image_vectors()
        elif self.trunk_cached:
            self._train_trunk_features()
        with ThreadPoolExecutor(max_workers=max(1, cfg.workers)) as pool:
            while self.state.epoch < cfg.epochs:
                epoch = self.state.epoch
                batches = epoch_batches(self.captions, cfg.batch_size, cfg.seed, epoch)
                self._model_train_mode()
                for b in range(self.state.step - sum(self.epoch_sizes[:epoch]), len(batches)):
                    if max_steps is not None and self.state.step >= max_steps:
                        self.save()
                        return False
                    t0 = time.perf_counter()
                    pixels, tokens = self._batch(batches[b], epoch, pool)
                    lr = self._step(pixels, tokens)
                    dt = max(time.perf_counter() - t0, 1e-9)
                    self.cb.step(StepInfo(self.state.step, self.total_steps, epoch + 1,
                                          self.state.losses[-1], lr, len(batches[b]) / dt))
                    if cfg.checkpoint_every and self.state.step % cfg.checkpoint_every == 0:
                        self.save()
                self._end_epoch(epoch)
        return True

    def load_best(self) -> None:
        if self.state.best_epoch is None:
            return
        best = self.checkpoint_dir / ckpt.BEST if self.checkpoint_dir else None
        if best is not None and best.is_file():
            ckpt.load_weights(best, self.model)
        elif self._best_in_memory is not None:
            self.model.load_state_dict(self._best_in_memory)

    def finished_state(self) -> dict[str, torch.Tensor]:
        """The best epoch's weights with LoRA folded in (same keys as the base model)."""
        self.load_best()
        if has_lora(self.model):
            merge_lora(self.model)
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def apply_wise(self, tuned: dict[str, torch.Tensor], before: EvalPoint, after: EvalPoint
                   ) -> WiseChoice | None:
        mode = self.cfg.wise
        if mode == "off":
            return None
        if mode == "auto":
            alphas = self.cfg.wise_alphas
        else:
            alphas = (0.0, float(mode), 1.0)
        self.cb.stage("WiSE-FT: measuring the interpolation curve")
        curve = wise_curve(self.model, self.base_state, tuned, sorted(set(alphas)), self.measure,
                           known={0.0: before, 1.0: after})
        choice = pick_alpha(curve, self.cfg.wise_max_drop) if mode == "auto" else \
            WiseChoice(float(mode), tuple(curve), "given")
        self.model.load_state_dict(interpolate(self.base_state, tuned, choice.alpha))
        return choice


def _point(d: dict) -> EvalPoint:
    ref = ReferenceScore(**d["reference"]) if d.get("reference") else None
    return EvalPoint(d["label"], RetrievalMetrics.from_json(d["domain"]), ref)


def check_config(cfg: TrainConfig) -> None:
    """Settings and the optional packages they need, checked before any work (a missing
    package must not cost a whole run at export time)."""
    try:
        mode = TrainMode(cfg.mode)
    except ValueError:
        raise TrainError(f"--mode must be one of {', '.join(m.value for m in TrainMode)}"
                         ) from None
    if cfg.wise != "off" and cfg.wise != "auto":
        try:
            float(cfg.wise)
        except ValueError:
            raise TrainError(f"--wise takes off, auto or an alpha in [0, 1], not {cfg.wise!r}")
    check_mode_packages(mode)


def finetune(encoder, data: PairData, cfg: TrainConfig, output: Path | None,
             reference: ReferenceSet | None = None, callbacks: Callbacks | None = None,
             resume: bool = False, max_steps: int | None = None,
             cache_dir: Path | None = None) -> TrainResult:
    """Measure, train, keep the best epoch, optionally WiSE-FT, export; see the module doc.

    A failure after the first checkpoint raises :class:`TrainStopped` (the checkpoint stays;
    ``resume=True`` continues from it)."""
    check_config(cfg)
    t = Trainer(encoder, data, cfg, output, reference, callbacks, cache_dir)
    last = t.checkpoint_dir / ckpt.LAST if t.checkpoint_dir else None
    if resume:
        if last is None or not last.is_file():
            raise TrainError(f"nothing to resume: no checkpoint in {t.checkpoint_dir}")
        t.resume(last)
    try:
        return _run(t, max_steps)
    except Exception as e:
        if t.saved is None:
            raise
        raise TrainStopped(e, t.saved, t.state.step, t.total_steps) from e


def _run(t: Trainer, max_steps: int | None) -> TrainResult:
    encoder, data, cfg, output = t.encoder, t.data, t.cfg, t.output
    if not t.state.evals or t.state.evals[0]["label"] != "before":
        t.state.evals.insert(0, t.measure("before").to_json())
        t.save()
    before = _point(t.state.evals[0])
    completed = t.train(max_steps)
    epochs = [_point(e) for e in t.state.evals[1:]]
    if not completed:
        return TrainResult(output, before, before, before, epochs, t.state.best_epoch, None,
                           list(t.state.losses), data.bad, completed=False)
    tuned = t.finished_state()
    best = next((e for e in epochs if e.label == f"epoch {t.state.best_epoch}"), None)
    after = best or t.measure("after")
    after = replace(after, label="after")
    if output is not None and cfg.wise != "off":  # the un-interpolated model, for comparison
        encoder.model.eval()
        encoder.save_pretrained(Path(output) / FINETUNED_SUBDIR)
    wise = t.apply_wise(tuned, before, after)
    final = after
    if wise is not None:
        final = next(p.point for p in wise.curve if p.alpha == wise.alpha)
        final = replace(final, label=f"after, WiSE-FT alpha {wise.alpha:g}")
    result = TrainResult(output, before, after, final, epochs, t.state.best_epoch, wise,
                         list(t.state.losses), data.bad)
    if output is not None:
        export(encoder, output, result, cfg)
    return result


def export(encoder, output: Path, result: TrainResult, cfg: TrainConfig) -> Path:
    """The model directory (loadable by ``load_encoder``) and ``metrics.json``."""
    model_dir = Path(output) / MODEL_SUBDIR
    model_dir.mkdir(parents=True, exist_ok=True)
    encoder.model.eval()
    encoder.save_pretrained(model_dir)
    body = {"model": str(model_dir), "base_model": getattr(encoder, "name", None),
            "config": cfg.to_json(), **result.to_json()}
    (Path(output) / METRICS_FILE).write_text(json.dumps(body, indent=2))
    return model_dir
