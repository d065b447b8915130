"""`searchkit dupes`: groups of exact and near-duplicate images, and which file to keep."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import LibraryOption, Whole, library_location, print_json, show, table_console, \
    user_errors
from .library_cmds import (AfterOption, BeforeOption, CameraOption, DateFieldOption,
                           FormatOption, GlobOption, JsonOption, MinHeightOption,
                           MinWidthOption, PathOption, TextContainsOption, _filters,
                           _read_as_options)


def dupes_cmd(
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Cosine similarity from which two images are near-duplicates, "
        "0 to 1 (default 0.99, measured: bench/results/dupes_threshold.md; 0.98 finds more, "
        "with more false pairs)."),
    keep: str = typer.Option("largest", "--keep", help="Which file of a group to keep: largest "
                             "(most pixels, then bytes, then oldest), oldest, newest or "
                             "shortest-path."),
    exact_only: bool = typer.Option(False, "--exact-only", help="Only files with the same "
                                    "content (same bytes); no vectors compared."),
    k: Optional[int] = typer.Option(None, "-k", "--neighbours", help="Neighbours looked at per "
                                    "image (default 16)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="List only the largest N groups "
                                        "(all are counted)."),
    path: Optional[Path] = PathOption,
    glob: Optional[str] = GlobOption,
    after: Optional[str] = AfterOption,
    before: Optional[str] = BeforeOption,
    date_field: str = DateFieldOption,
    min_width: Optional[int] = MinWidthOption,
    min_height: Optional[int] = MinHeightOption,
    formats: list[str] = FormatOption,
    camera: Optional[str] = CameraOption,
    text_contains: Optional[str] = TextContainsOption,
    library: Optional[str] = LibraryOption,
    json_out: bool = JsonOption,
) -> None:
    """Find duplicate images: exact copies (same content) and near-duplicates (recompressed,
    resized, retouched copies whose vectors are almost the same), largest groups first, with
    the file to keep. Nothing is deleted. Same filters as `search`.

    Examples: searchkit dupes; searchkit dupes --path ~/Pictures/2024 --keep oldest;
    searchkit dupes --threshold 0.98 --json
    """
    from searchkit import Library
    from searchkit.dupes import DupesOptions
    with _read_as_options():
        filters = _filters(path, glob, after, before, date_field, min_width, min_height,
                           formats, camera, text_contains)
        options = DupesOptions.parse(threshold, k, keep, exact_only, limit)
    lib = Library.open(library_location(library))
    report = lib.dupes(options.threshold, options.k, options.keep, filters, options.exact_only,
                       options.limit)
    if json_out:
        print_json(report.to_json())
        return
    _print_report(report)


def _print_report(report) -> None:
    from rich.table import Table
    for n, g in enumerate(report.groups, 1):
        show(f"group {n}: {len(g.members)} files, {_kind(g)}; keep the {_rule(report)}, "
             f"{human_bytes(g.reclaimable)} in the others")
        t = Table("", "similar", "path", "pixels", "bytes", "date", box=None, pad_edge=False)
        for column in t.columns:
            column.no_wrap = column.header != "path"
        for m in g.members:
            t.add_row("keep" if m.keep else "", _similarity(m), Whole(m.path),
                      f"{m.width}x{m.height}" if m.width else "",
                      human_bytes(m.size) if m.size is not None else "",
                      m.date.strftime("%Y-%m-%d"))
        table_console().print(t)
    show(_summary(report))


def _kind(g) -> str:
    return {"exact": "exact copies", "near": "near-duplicates",
            "mixed": "exact copies and near-duplicates"}[g.kind]


def _rule(report) -> str:
    return report.options.keep.replace("-", " ")


def _similarity(m) -> str:
    if m.keep:
        return ""
    if m.same_content:
        return "same"
    return "" if m.similarity is None else f"{m.similarity:.3f}"


def _summary(report) -> str:
    how = ("exact copies only" if report.options.exact_only else
           f"threshold {report.options.threshold:g}, {report.compared:,} contents compared")
    if not report.groups_total:
        return f"no duplicates among {report.images:,} images ({how})"
    shown = ("" if len(report.groups) == report.groups_total
             else f" (the largest {len(report.groups)} listed)")
    left = (f"; {report.left_out} images with a damaged vector compared by content only"
            if report.left_out else "")
    return (f"{report.groups_total:,} group{'s' if report.groups_total != 1 else ''}"
            f"{shown}, {report.files_in_groups:,} files: {report.redundant:,} could go "
            f"({human_bytes(report.reclaimable)}) among {report.images:,} images ({how}){left}")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def register(app: typer.Typer) -> None:
    app.command("dupes")(user_errors(dupes_cmd))
