"""CLI command: classify (zero-shot classification of image files by label names)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from .common import UserError, console, literal, out, print_json, show, user_errors

TemplateOption = typer.Option(None, "--template", "-t", help="Prompt template with {} for the "
                              "label (repeatable: the prompts are averaged). Default: "
                              "\"a photo of a {}.\"")


def _labels(labels: str | None, labels_file: Path | None) -> list[str] | None:
    from searchkit.classify import parse_labels
    if labels and labels_file:
        raise UserError("give --labels or --labels-file, not both")
    if labels_file is not None:
        try:
            return parse_labels(labels_file.read_text(encoding="utf-8"))
        except OSError as e:
            raise UserError(f"cannot read labels file {labels_file}: {e.strerror}") from None
    return parse_labels(labels) if labels else None


def _progress_bar(total_hint: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn(total_hint), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not console.is_terminal, transient=True)


def _report_skipped(skipped) -> None:
    if skipped:
        console.print(f"skipped {len(skipped)} file(s):", highlight=False)
    for s in skipped[:20]:
        show("  ", s.path, ": ", s.reason, console=console)
    if len(skipped) > 20:
        console.print(f"  ... and {len(skipped) - 20} more", highlight=False)


def _print_accuracy(rep, json_out: bool) -> None:
    if json_out:
        print_json(asdict(rep))
        return
    out.print(f"images {rep.n}   top-1 {rep.top1:.2f}%   top-5 {rep.top5:.2f}%", highlight=False)
    from rich.table import Table
    t = Table("label", "n", "top-1 %", box=None, pad_edge=False)
    for c in rep.per_class:
        t.add_row(literal(c.label), str(c.n), f"{c.top1:.1f}")
    out.print(t)
    if rep.confusions:
        out.print("most frequent confusions (true -> predicted):")
        for c in rep.confusions:
            show("  ", c.true, " -> ", c.predicted, f": {c.count}")


def _print_predictions(preds, json_out: bool) -> None:
    if json_out:
        print_json([asdict(p) for p in preds])
        return
    for p in preds:
        show(p.label, f"{p.probability:.3f}", p.path, sep="\t")


def classify_cmd(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (walked recursively)."),
    labels: Optional[str] = typer.Option(None, "--labels", "-l", help="Comma-separated labels, "
                                         "e.g. \"cat,dog,bird\"."),
    labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="One label per line."),
    template: list[str] = TemplateOption,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Encoder (registry name, "
                                        "hub id or directory); default: the offline model."),
    accuracy: bool = typer.Option(False, "--accuracy", help="PATH is a folder whose subfolders "
                                  "are the labels: report top-1/top-5 accuracy and confusions."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="With --accuracy: at most "
                                            "this many images per label (fixed seed)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Images per encoder batch."),
    workers: int = typer.Option(4, "--workers", help="Decoding threads."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable JSON output."),
) -> None:
    """Zero-shot classify images by label names: best label and its probability per image.

    Examples: searchkit classify photos/ --labels "cat,dog,bird";
    searchkit classify cifar10-test/ --accuracy --template "a photo of a {}." --json
    """
    from searchkit.encoders import DEFAULT_MODEL, fast_query, load_encoder
    from searchkit.classify import classify_images, evaluate_folder
    label_list = _labels(labels, labels_file)
    if accuracy and len(paths) != 1:
        raise UserError("--accuracy takes one folder whose subfolders are the labels")
    if not accuracy and not label_list:
        raise UserError("give --labels or --labels-file (or --accuracy on a labelled folder)")
    # the model's ONNX export (made by an index run) when there is one: no torch import
    encoder = fast_query.load(model or DEFAULT_MODEL) or load_encoder(model or DEFAULT_MODEL)
    with _progress_bar("classifying") as bar:
        task = bar.add_task("classify", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
        if accuracy:
            rep = evaluate_folder(encoder, paths[0], label_list, template or None, per_class,
                                  batch_size, workers, progress)
        else:
            preds, skipped = classify_images(encoder, paths, label_list, template or None,
                                             batch_size=batch_size, workers=workers,
                                             progress=progress)
    if accuracy:
        _print_accuracy(rep, json_out)
        _report_skipped(rep.skipped)
    else:
        _print_predictions(preds, json_out)
        _report_skipped(skipped)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("classify")(user_errors(classify_cmd))
