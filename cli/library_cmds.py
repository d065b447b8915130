"""CLI commands over a library: index, search, similar, status."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import typer

from .common import LibraryOption, UserError, console, library_dir, out, user_errors

ModelOption = typer.Option(None, "--model", "-m",
                           help="Encoder (registry name, hub id or directory). Chosen when the "
                                "library is created; see `searchkit models`.")
JsonOption = typer.Option(False, "--json", help="Machine-readable JSON output.")


def _open(library: Path | None, model: str | None, create: bool = False):
    from searchkit import Library
    return Library.open(library_dir(library), model=model, create=create)


# ---- index -----------------------------------------------------------------------------------
def index_cmd(
    paths: list[Path] = typer.Argument(None, help="Folders or files to index (default: every "
                                       "folder indexed before)."),
    library: Optional[Path] = LibraryOption,
    model: Optional[str] = ModelOption,
    reindex: bool = typer.Option(False, "--reindex", help="Drop all vectors and encode every "
                                 "file again (needed to switch --model)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding threads."),
    max_pixels: int = typer.Option(100_000_000, "--max-pixels",
                                   help="Skip larger images (decompression-bomb guard)."),
    watch: Optional[float] = typer.Option(None, "--watch", metavar="SECONDS",
                                          help="Keep going: re-scan every SECONDS and bring "
                                          "new, changed and deleted files up to date."),
    json_out: bool = JsonOption,
) -> None:
    """Index folders of images: new, changed, moved and deleted files are brought up to date."""
    from indexer import Indexer
    from searchkit import Library
    from searchkit.encoders import load_encoder
    from searchkit.errors import ModelMismatchError

    lib_dir = library_dir(library)
    for p in paths or []:
        if not p.exists():
            raise UserError(f"path does not exist: {p}")
    try:
        lib = Library.open(lib_dir, model=model, create=True)
    except ModelMismatchError:
        if not reindex:
            raise
        lib = Library.open(lib_dir)
        with lib.writer():
            lib.rebind(load_encoder(model))
    else:
        if reindex:
            with lib.writer():
                lib.rebind(lib.encoder)
    indexer = Indexer(lib, workers=workers, max_pixels=max_pixels)
    targets = [str(p) for p in paths or []]
    if reindex and targets:  # every known folder is re-encoded, the new ones too
        import os
        lib.store.add_roots([os.path.abspath(t) for t in targets], time.time())
        targets = []
    report = _run_with_progress(indexer, targets, json_out)
    _print_report(report, json_out)
    lib.prepare_fast_queries()  # once per model: later searches need not import torch
    while watch:
        time.sleep(watch)
        report = indexer.run()
        if report.added or report.updated or report.moved or report.removed or \
                report.duplicates:
            _print_report(report, json_out)


def _run_with_progress(indexer, paths: list[str], quiet: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)

    columns = [TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=quiet or not console.is_terminal,
                  transient=False) as progress:
        task = progress.add_task("index", total=None, rate="")

        def on_progress(done: int, total: int) -> None:
            t = progress.tasks[0]
            speed = t.speed or 0.0
            progress.update(task, completed=done, total=total, rate=f"{speed:6.1f} files/s")
        indexer.progress = on_progress
        return indexer.run(paths)


def _print_report(report, json_out: bool) -> None:
    from dataclasses import asdict
    if json_out:
        out.print_json(json.dumps(asdict(report)))
        return
    console.print(f"added {report.added}, updated {report.updated}, moved {report.moved}, "
                  f"duplicates {report.duplicates}, removed {report.removed}, "
                  f"unchanged {report.unchanged}, skipped {len(report.skipped)} "
                  f"({report.encoded} encoded in {report.seconds:.1f}s)", highlight=False)
    for s in report.skipped[:20]:
        console.print(f"  skipped {s.path!r}: {s.reason}", highlight=False, markup=False)
    if len(report.skipped) > 20:
        console.print(f"  ... and {len(report.skipped) - 20} more (searchkit status)")
    for r in report.missing_roots:
        console.print(f"  folder not found, left as it was: {r}", highlight=False)


# ---- search ----------------------------------------------------------------------------------
def _parse_date(value: str | None, end: bool = False) -> datetime | None:
    if not value:
        return None
    for fmt, kind in (("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year")):
        try:
            d = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if end:  # the whole day / month / year is included
            if kind == "year":
                d = d.replace(year=d.year + 1)
            elif kind == "month":
                d = d.replace(year=d.year + (d.month == 12), month=d.month % 12 + 1)
            else:
                d = d + timedelta(days=1)
            d = d - timedelta(microseconds=1)
        return d
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise UserError(f"bad date {value!r}: use YYYY, YYYY-MM, YYYY-MM-DD or ISO 8601") from None


def _filters(path, glob, after, before, date_field, min_width, min_height, formats, camera):
    from searchkit import Filters
    fmts = tuple(f for spec in formats or [] for f in spec.split(",") if f.strip())
    return Filters(path_prefix=str(path) if path else None, path_glob=glob,
                   date_from=_parse_date(after), date_to=_parse_date(before, end=True),
                   date_field=date_field, min_width=min_width, min_height=min_height,
                   formats=fmts, camera=camera)


def _query(text: str | None, images: list[Path], text_weight: float, image_weight: float,
           negatives: list[str], not_weight: float, like: list[int]):
    from searchkit import Query
    q = Query(texts=[(text, text_weight)] if text is not None else [],
              images=[(str(p), image_weight) for p in images or []],
              negatives=[(n, not_weight) for n in negatives or []],
              like=[(i, image_weight) for i in like or []])
    return q


def _print_hits(hits, json_out: bool) -> None:
    if json_out:
        out.print_json(json.dumps([h.to_json() for h in hits]))
        return
    if not hits:
        console.print("no results")
        return
    from rich.table import Table
    t = Table("#", "score", "path", "size", "date", box=None, pad_edge=False)
    for i, h in enumerate(hits, 1):
        date = (h.taken_at or h.modified_at).strftime("%Y-%m-%d")
        size = f"{h.width}x{h.height}" if h.width else ""
        t.add_row(str(i), f"{h.score:.3f}", h.path, size, date)
    out.print(t)


FILTER_HELP = "Filters (all combine): "


def search_cmd(
    text: Optional[str] = typer.Argument(None, help="What to look for, in words."),
    image: list[Path] = typer.Option(None, "--image", "-i", help="Also match this image "
                                     "(repeatable): combined with the text by weights."),
    negative: list[str] = typer.Option(None, "--not", help="Push results away from this text "
                                       "(repeatable), e.g. --not \"people\"."),
    like: list[int] = typer.Option(None, "--like", help="More like this indexed image id."),
    text_weight: float = typer.Option(1.0, "--text-weight", help="Weight of the text term."),
    image_weight: float = typer.Option(1.0, "--image-weight", help="Weight of image terms."),
    not_weight: float = typer.Option(0.5, "--not-weight", help="Weight of each --not term."),
    k: int = typer.Option(10, "-k", "--top", help="How many results."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Minimum score."),
    path: Optional[Path] = typer.Option(None, "--path", help="Only files under this folder."),
    glob: Optional[str] = typer.Option(None, "--glob", help="Only paths matching this glob, "
                                       "e.g. '*.png' or '*/2024/*'."),
    after: Optional[str] = typer.Option(None, "--after", help="Taken/modified on or after "
                                        "(YYYY, YYYY-MM, YYYY-MM-DD)."),
    before: Optional[str] = typer.Option(None, "--before", help="Taken/modified on or before."),
    date_field: str = typer.Option("taken", "--date-field", help="taken (EXIF) or modified."),
    min_width: Optional[int] = typer.Option(None, "--min-width", help="Minimum width in px."),
    min_height: Optional[int] = typer.Option(None, "--min-height", help="Minimum height in px."),
    formats: list[str] = typer.Option(None, "--format", help="Only these formats (jpeg, png, "
                                      "webp, gif, bmp, tiff); repeatable or comma-separated."),
    camera: Optional[str] = typer.Option(None, "--camera", help="Camera make/model contains."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="Run one query per line of "
                                           "this file ('-' for stdin); prints JSON Lines."),
    library: Optional[Path] = LibraryOption,
    model: Optional[str] = ModelOption,
    json_out: bool = JsonOption,
) -> None:
    """Search the library by text, image, or both (with weights and negative terms).

    Examples: searchkit search "a red bicycle leaning on a wall";
    searchkit search "beach" --not "people" --after 2023 --format jpeg;
    searchkit search "in winter" --image photo.jpg --image-weight 0.7 --json
    """
    filters = _filters(path, glob, after, before, date_field, min_width, min_height, formats,
                       camera)
    lib = _open(library, model)
    if queries is not None:
        _run_queries(lib, queries, k, filters, threshold)
        return
    q = _query(text, image, text_weight, image_weight, negative, not_weight, like)
    _print_hits(lib.search(q, k=k, filters=filters, threshold=threshold), json_out)


def _run_queries(lib, queries: Path, k: int, filters, threshold) -> None:
    """One query per line: plain text, or a JSON object {"text", "image", "not", "k"}."""
    from searchkit import Query
    from searchkit.errors import SearchkitError
    if str(queries) == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = queries.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise UserError(f"cannot read queries file {queries}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        q, qk = Query.text(line), k
        if line.lstrip().startswith("{"):
            try:
                spec = json.loads(line)
                q = Query(texts=[(spec["text"], 1.0)] if spec.get("text") else [],
                          images=[(spec["image"], 1.0)] if spec.get("image") else [],
                          negatives=[(t, 0.5) for t in spec.get("not", [])])
                qk = int(spec.get("k", k))
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{queries}:{n}: bad query object ({e})") from None
        try:
            hits = lib.search(q, k=qk, filters=filters, threshold=threshold)
        except SearchkitError as e:
            raise UserError(f"{queries}:{n}: {e}") from None
        sys.stdout.write(json.dumps([h.to_json() for h in hits]) + "\n")
        sys.stdout.flush()


def similar_cmd(
    image: Path = typer.Argument(..., help="Find images similar to this one."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Also match this text."),
    text_weight: float = typer.Option(1.0, "--text-weight"),
    image_weight: float = typer.Option(1.0, "--image-weight"),
    negative: list[str] = typer.Option(None, "--not", help="Push results away from this text."),
    not_weight: float = typer.Option(0.5, "--not-weight"),
    k: int = typer.Option(10, "-k", "--top"),
    threshold: Optional[float] = typer.Option(None, "--threshold"),
    path: Optional[Path] = typer.Option(None, "--path"),
    glob: Optional[str] = typer.Option(None, "--glob"),
    after: Optional[str] = typer.Option(None, "--after"),
    before: Optional[str] = typer.Option(None, "--before"),
    date_field: str = typer.Option("taken", "--date-field"),
    min_width: Optional[int] = typer.Option(None, "--min-width"),
    min_height: Optional[int] = typer.Option(None, "--min-height"),
    formats: list[str] = typer.Option(None, "--format"),
    camera: Optional[str] = typer.Option(None, "--camera"),
    library: Optional[Path] = LibraryOption,
    model: Optional[str] = ModelOption,
    json_out: bool = JsonOption,
) -> None:
    """Find images that look like IMAGE (a product photo, say). Same filters as `search`."""
    if not image.is_file():
        raise UserError(f"query image not found: {image}")
    filters = _filters(path, glob, after, before, date_field, min_width, min_height, formats,
                       camera)
    lib = _open(library, model)
    q = _query(text, [image], text_weight, image_weight, negative, not_weight, [])
    _print_hits(lib.search(q, k=k, filters=filters, threshold=threshold), json_out)


# ---- status ----------------------------------------------------------------------------------
def status_cmd(library: Optional[Path] = LibraryOption, json_out: bool = JsonOption) -> None:
    """Show the library's model, counts, index state and skipped files."""
    from dataclasses import asdict
    st = _open(library, None).status()
    if json_out:
        out.print_json(json.dumps(asdict(st)))
        return
    out.print(f"library   {st.directory}", highlight=False)
    out.print(f"model     {st.model_name} (fingerprint {st.model_fingerprint[:12]}, "
              f"dim {st.dim})", highlight=False)
    out.print(f"queries   encoded with {st.queries}"
              + (" (no torch import)" if st.queries == "onnx" else ""), highlight=False)
    out.print(f"images    {st.indexed} indexed, {st.skipped} skipped", highlight=False)
    out.print(f"index     {st.index_kind} on {st.index_device}, {st.index_state}"
              + (" (an index run is in progress)" if st.busy else ""), highlight=False)
    for r in st.roots:
        out.print(f"folder    {r}", highlight=False, markup=False)
    if st.skipped_files:
        out.print("skipped:")
        for s in st.skipped_files:
            out.print(f"  {s.path!r}: {s.reason}", highlight=False, markup=False)


def forget_cmd(
    path: Path = typer.Argument(..., help="A folder indexed before (it may no longer exist)."),
    library: Optional[Path] = LibraryOption,
) -> None:
    """Stop tracking a folder: its images leave the library (the files are not touched)."""
    import os
    lib = _open(library, None)
    root = os.path.abspath(os.path.expanduser(str(path)))
    with lib.writer():
        if root not in lib.store.roots() and not any(
                r.startswith(root.rstrip(os.sep) + os.sep) for r in lib.store.roots()):
            raise UserError(f"{root} is not an indexed folder (see searchkit status)")
        n = lib.store.forget(root)
        lib.search_index()
    console.print(f"removed {n} files under {root}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("index")(user_errors(index_cmd))
    app.command("search")(user_errors(search_cmd))
    app.command("similar")(user_errors(similar_cmd))
    app.command("status")(user_errors(status_cmd))
    app.command("forget")(user_errors(forget_cmd))
