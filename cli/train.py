"""CLI commands: finetune (contrastive fine-tuning on a catalog) and evaluate (recall table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .common import UserError, console, fail, out, print_json, show, user_errors

DataArg = typer.Argument(..., help="Dataset: an imagefolder directory with metadata.jsonl "
                         "(per split folder), a CSV/JSONL of image path + caption, or a hub name.")
ModelOpt = typer.Option(None, "--model", "-m", help="Encoder to start from (registry name, hub "
                        "id or directory); default: the offline model.")
CaptionOpt = typer.Option("text", "--caption-column", help="Column holding the caption.")
ImageColOpt = typer.Option(None, "--image-column", help="Column holding the image path "
                           "(default: image, file_name, path, ...).")
WhereOpt = typer.Option(None, "--where", help="Keep rows whose column equals a value "
                        "(--where source=fluent3d) or drop those that do (--where "
                        "source!=fluent3d); repeatable.")
ThreadsOpt = typer.Option(None, "--threads", help="torch CPU threads (default: torch's).")
CacheOpt = typer.Option(None, "--cache-dir", help="Keep image-tower outputs here between runs "
                        "(keyed by weights and files; safe to delete).")
DeviceOpt = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if any).")


def _data_config(caption_column, image_column, where, **kw):
    from searchkit.trainer.data import DataConfig, with_where
    cfg = DataConfig(caption_column=caption_column, image_column=image_column, **kw)
    return with_where(cfg, where or [])


def _setup_torch(threads: int | None) -> None:
    if threads:
        import torch
        torch.set_num_threads(threads)


def _load(model: str | None, device: str | None):
    from searchkit.encoders import DEFAULT_MODEL, load_encoder
    return load_encoder(model or DEFAULT_MODEL, device=device, fp16=False)


def _report_bad(bad) -> None:
    if not bad:
        return
    console.print(f"skipped {len(bad)} bad row(s):", highlight=False)
    for b in bad[:20]:
        show(f"  [{b.split}] ", repr(b.key), ": ", b.reason, console=console)
    if len(bad) > 20:
        console.print(f"  ... and {len(bad) - 20} more (metrics.json lists them all)")


# ---- evaluate --------------------------------------------------------------------------------
def _recall_table(columns: list[tuple[str, object]]):
    """Rows: metrics; columns: (title, EvalPoint or RetrievalMetrics)."""
    from rich.table import Table
    from searchkit.trainer.evaluate import EvalPoint
    t = Table("", *[c[0] for c in columns], box=None, pad_edge=False)
    dom = [c[1].domain if isinstance(c[1], EvalPoint) else c[1] for c in columns]
    for direction, title in (("text_to_image", "text->image"), ("image_to_text", "image->text")):
        for k in ("R@1", "R@5", "R@10"):
            t.add_row(f"{title} {k}", *[f"{d.to_json()[direction][k]:.2f}" for d in dom])
    refs = [c[1].reference if isinstance(c[1], EvalPoint) else None for c in columns]
    if any(refs):
        name = next(r.name for r in refs if r)
        t.add_row(f"{name} zero-shot top-1", *[f"{r.top1:.2f}" if r else "" for r in refs])
    return t


def evaluate_cmd(
    data: str = DataArg,
    model: Optional[str] = ModelOpt,
    split: Optional[str] = typer.Option(None, "--split", help="Split to measure (default: "
                                        "validation, or the only split)."),
    caption_column: str = CaptionOpt,
    image_column: Optional[str] = ImageColOpt,
    where: list[str] = WhereOpt,
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    cache_dir: Optional[Path] = CacheOpt,
    json_out: bool = typer.Option(False, "--json", help="One JSON object: n, text_to_image, "
                                  "image_to_text (percent)."),
) -> None:
    """Retrieval recall@1/5/10 of a model on a dataset split, text->image and image->text.

    A hit is a retrieved item whose caption equals the query's own (catalogs repeat titles).
    Example: searchkit evaluate datasets/align --where source=fluent3d --json
    """
    from searchkit.trainer.data import load_split
    from searchkit.trainer.evaluate import ImageVectorCache, evaluate_pairs
    _setup_torch(threads)
    pairs = load_split(data, _data_config(caption_column, image_column, where), split)
    if not pairs.pairs:
        raise UserError(f"no usable pairs in {data} ({len(pairs.bad)} bad rows)")
    encoder = _load(model, device)
    metrics = evaluate_pairs(encoder, pairs.pairs, cache=ImageVectorCache(cache_dir),
                             cache_name="evaluate")
    if json_out:
        print_json(metrics.to_json())
    else:
        show(f"{metrics.n} pairs (", pairs.name, "), model ", encoder.name)
        out.print(_recall_table([("recall %", metrics)]))
    _report_bad(pairs.bad)


# ---- finetune --------------------------------------------------------------------------------
def _progress():
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False, disable=not console.is_terminal)


def _callbacks(progress, task):
    from searchkit.trainer.loop import Callbacks

    def on_step(s) -> None:
        progress.update(task, completed=s.step, total=s.total_steps, description=f"epoch {s.epoch}",
                        stats=f"loss {s.loss:.4f}  lr {s.lr:.2e}  {s.images_per_s:6.1f} img/s")

    def on_eval(p) -> None:
        ref = f", {p.reference.name} top-1 {p.reference.top1:.2f}" if p.reference else ""
        progress.console.print(f"{p.label}: text->image R@1 {p.domain.text_to_image.r1:.2f}, "
                               f"image->text R@1 {p.domain.image_to_text.r1:.2f}{ref}",
                               highlight=False, markup=False)

    def on_stage(text: str) -> None:
        progress.update(task, description=text)
    return Callbacks(on_step, on_eval, on_stage)


def _train_config(**kw):
    from searchkit.trainer.augment import AugmentConfig
    from searchkit.trainer.loop import TrainConfig, check_config
    from searchkit.trainer.modes import LoraSettings
    aug = AugmentConfig.off() if not kw.pop("augment") else AugmentConfig(
        crop_scale=(kw.pop("crop_min"), 1.0), flip_p=kw.pop("flip"), jitter=kw.pop("jitter"),
        grayscale_p=kw.pop("grayscale"), blur_p=kw.pop("blur"))
    for k in ("crop_min", "flip", "jitter", "grayscale", "blur"):
        kw.pop(k, None)
    rank = kw.pop("lora_rank")
    lora = LoraSettings(rank=rank, alpha=2 * rank)
    cfg = TrainConfig(augment=aug, lora=lora, **kw)
    check_config(cfg)        # settings and optional packages, before any data or model loads
    return cfg


RESUME_HINT = "run the same command with --resume to continue from there"


def _run_finetune(output: Path, run):
    """``run()`` with a failure or interrupt after a checkpoint saying where the run is kept
    and how to continue it."""
    from searchkit.trainer.checkpoint import LAST
    from searchkit.trainer.loop import CHECKPOINT_SUBDIR, TrainStopped
    try:
        return run()
    except TrainStopped as e:
        fail(f"{e.reason}; the run is kept at step {e.step} of {e.total_steps} in "
             f"{e.checkpoint}: {RESUME_HINT}", code=1)
    except KeyboardInterrupt:
        last = output / CHECKPOINT_SUBDIR / LAST
        if not last.is_file():
            raise
        show("interrupted; the last checkpoint is ", last, f": {RESUME_HINT}", console=console)
        raise typer.Exit(130)


def _final_table(res) -> None:
    cols = [("before", res.before), (f"after (epoch {res.best_epoch})", res.after)]
    if res.wise is not None:
        cols.append((f"WiSE-FT a={res.wise.alpha:g}", res.final))
    out.print(_recall_table(cols))
    if res.wise is not None:
        out.print(f"WiSE-FT: {res.wise.reason}", highlight=False, markup=False)
        for p in res.wise.curve:
            ref = f"  {p.point.reference.name} top-1 {p.point.reference.top1:.2f}" \
                if p.point.reference else ""
            out.print(f"  alpha {p.alpha:4.2f}: text->image R@1 "
                      f"{p.point.domain.text_to_image.r1:6.2f}  image->text R@1 "
                      f"{p.point.domain.image_to_text.r1:6.2f}{ref}", highlight=False)


def finetune_cmd(
    data: str = DataArg,
    model: Optional[str] = ModelOpt,
    output: Path = typer.Option(..., "--output", "-o", help="Run directory: checkpoints/, "
                                "model/ (load it with --model DIR/model) and metrics.json."),
    caption_column: str = CaptionOpt,
    image_column: Optional[str] = ImageColOpt,
    keyword_column: Optional[str] = typer.Option(None, "--keyword-column", help="Column of "
                                                 "keywords usable as extra captions."),
    where: list[str] = WhereOpt,
    holdout: float = typer.Option(0.1, "--holdout", help="Fraction held out for validation "
                                  "when the data has no validation split."),
    epochs: int = typer.Option(5, "--epochs"),
    batch_size: int = typer.Option(256, "--batch-size", help="Contrastive batch (negatives)."),
    chunk_size: int = typer.Option(64, "--chunk-size", help="Gradient-caching chunk: the "
                                   "memory of this many pairs."),
    lr: float = typer.Option(1e-5, "--lr"),
    weight_decay: float = typer.Option(0.1, "--weight-decay"),
    warmup_steps: int = typer.Option(20, "--warmup"),
    min_lr_ratio: float = typer.Option(0.0, "--min-lr-ratio"),
    grad_clip: float = typer.Option(1.0, "--grad-clip", help="0 disables clipping."),
    mode: str = typer.Option("full", "--mode", help="full, lock-image (LiT), "
                             "lock-image-trunk (image backbone locked, its projection trains), "
                             "lock-text, projections or lora."),
    lora_rank: int = typer.Option(8, "--lora-rank"),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Training image views."),
    crop_min: float = typer.Option(0.6, "--crop-min", help="Random resized crop: min area."),
    flip: float = typer.Option(0.5, "--flip", help="Horizontal flip probability."),
    jitter: float = typer.Option(0.2, "--jitter", help="Colour jitter strength."),
    grayscale: float = typer.Option(0.05, "--grayscale", help="Grayscale probability."),
    blur: float = typer.Option(0.1, "--blur", help="Blur probability."),
    caption_template: str = typer.Option("{}", "--caption-template", help="e.g. "
                                         "\"a 3D render of {}\"."),
    keyword_p: float = typer.Option(0.0, "--keyword-p", help="Chance a training view uses one "
                                    "keyword (--keyword-column) as its caption."),
    keyword_template: str = typer.Option("{}", "--keyword-template"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Forgetting guard: a "
                                             "folder of label subfolders (e.g. CIFAR-10) "
                                             "measured by zero-shot accuracy."),
    reference_per_class: Optional[int] = typer.Option(None, "--reference-per-class",
                                                      help="Images per label for the guard."),
    reference_template: list[str] = typer.Option(None, "--reference-template",
                                                 help="Prompt template(s) for the guard."),
    wise: str = typer.Option("off", "--wise", help="WiSE-FT: off, auto (best domain recall "
                             "losing <= 2 points on --reference) or an alpha in [0, 1]."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", help="Steps between "
                                         "checkpoints (0: each epoch)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output exactly "
                                "where its last checkpoint stopped (same settings)."),
    seed: int = typer.Option(0, "--seed"),
    workers: int = typer.Option(4, "--workers", help="Image decoding threads."),
    device: Optional[str] = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    cache_dir: Optional[Path] = CacheOpt,
    json_out: bool = typer.Option(False, "--json", help="Print metrics.json's content."),
) -> None:
    """Fine-tune an encoder on image-caption pairs and report recall before and after.

    Example: searchkit finetune datasets/align --where source=fluent3d --model searchkit-lite
    --output runs/fluent3d --mode lock-image --reference datasets/cifar10-test --wise auto
    """
    from searchkit.trainer.data import load_pairs
    from searchkit.trainer.evaluate import ReferenceSet
    from searchkit.trainer.loop import finetune
    if not 0 <= flip <= 1 or not 0 < crop_min <= 1:
        raise UserError("--flip must be in [0, 1] and --crop-min in (0, 1]")
    if wise != "off" and reference is None and wise == "auto":
        console.print("note: --wise auto without --reference picks the best domain recall")
    _setup_torch(threads)
    cfg = _train_config(
        epochs=epochs, batch_size=batch_size, chunk_size=chunk_size, lr=lr,
        weight_decay=weight_decay, warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio,
        grad_clip=grad_clip or None, mode=mode, lora_rank=lora_rank, augment=augment,
        crop_min=crop_min, flip=flip, jitter=jitter, grayscale=grayscale, blur=blur,
        caption_template=caption_template, keyword_p=keyword_p, keyword_template=keyword_template,
        seed=seed, checkpoint_every=checkpoint_every, workers=workers, wise=wise)
    console.print("reading the dataset ...")
    pairs = load_pairs(data, _data_config(caption_column, image_column, where,
                                          keyword_column=keyword_column, holdout=holdout,
                                          seed=seed))
    console.print(f"{len(pairs.train.pairs)} training pairs, {len(pairs.validation.pairs)} "
                  f"validation pairs, {len(pairs.bad)} bad rows skipped", highlight=False)
    ref = ReferenceSet(str(reference), tuple(reference_template or ("a photo of a {}.",)),
                       reference_per_class) if reference else None
    encoder = _load(model, device)
    with _progress() as progress:
        task = progress.add_task("starting", total=None, stats="")
        res = _run_finetune(output, lambda: finetune(
            encoder, pairs, cfg, output, reference=ref, callbacks=_callbacks(progress, task),
            resume=resume, cache_dir=cache_dir))
    if json_out:
        print_json(json.loads((output / "metrics.json").read_text()))
    else:
        _final_table(res)
        show("model saved to ", output / "model", " (use --model ", output / "model",
             "; re-index a library with `searchkit index --model DIR --reindex`)")
    _report_bad(pairs.bad)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("finetune")(user_errors(finetune_cmd))
    app.command("evaluate")(user_errors(evaluate_cmd))
