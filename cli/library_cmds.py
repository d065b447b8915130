"""CLI commands over a library: index, search, similar, status."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer

from .common import (LibraryOption, UserError, Whole, console, library_location, print_json,
                     print_paths, show, table_console, user_errors, warn)

ModelOption = typer.Option(None, "--model", "-m",
                           help="Encoder (registry name, hub id or directory). Chosen when the "
                                "library is created; see `searchkit models`.")
JsonOption = typer.Option(False, "--json", help="Machine-readable JSON output.")


def _open(library: Path | None, model: str | None, create: bool = False):
    from searchkit import Library
    return Library.open(library_location(library), model=model, create=create)


# ---- index -----------------------------------------------------------------------------------
def index_cmd(
    paths: list[Path] = typer.Argument(None, help="Folders or files to index (default: every "
                                       "folder indexed before)."),
    library: Optional[str] = LibraryOption,
    model: Optional[str] = ModelOption,
    reindex: bool = typer.Option(False, "--reindex", help="Drop all vectors and encode every "
                                 "file again (needed to switch --model)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Decoding threads."),
    max_pixels: int = typer.Option(100_000_000, "--max-pixels",
                                   help="Skip larger images (decompression-bomb guard)."),
    watch: Optional[float] = typer.Option(None, "--watch", metavar="SECONDS",
                                          help="Keep going: re-scan every SECONDS and bring "
                                          "new, changed and deleted files up to date."),
    ocr: Optional[bool] = typer.Option(None, "--ocr/--no-ocr", help="Read the text in images "
                                       "(signs, labels, screenshots) for --text-contains and "
                                       "text queries; remembered by the library (needs "
                                       "searchkit[ocr]). --no-ocr: stop reading it."),
    executor: str = typer.Option("local", "--executor", help="Who embeds the images: local "
                                 "(this process) or ray (a Ray cluster; needs searchkit[ray])."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="The Ray cluster "
                                              "(default: a Ray instance on this machine)."),
    ray_batch_size: Optional[int] = typer.Option(None, "--ray-batch-size", help="Images per "
                                                 "batch on a Ray actor (default: 128 on a GPU, "
                                                 "else 32)."),
    ray_actors: Optional[int] = typer.Option(None, "--ray-actors", help="Ray actors embedding "
                                             "(default: one per GPU, else per 4 cores)."),
    json_out: bool = JsonOption,
) -> None:
    """Index folders of images: new, changed, moved and deleted files are brought up to date."""
    from searchkit.indexer import Indexer
    from searchkit.indexer.executors import RayOptions, make_executor
    from searchkit import Library

    runner = make_executor(executor, RayOptions(ray_address, ray_batch_size, ray_actors))
    if ocr:
        from searchkit.ocr import default_engine
        default_engine()  # the extra is installed, before anything is written
    plan = Library.open_for_indexing(library_location(library), model=model, paths=paths or [],
                                     reindex=reindex)
    if ocr is not None:
        plan.library.set_ocr(ocr)
    indexer = Indexer(plan.library, workers=workers, max_pixels=max_pixels, executor=runner)
    report = _run_with_progress(indexer, plan.paths, json_out)
    _print_report(report, json_out)
    plan.library.prepare_fast_queries()  # once per model: later searches need not import torch
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
        print_json(asdict(report))
        return
    console.print(f"added {report.added}, updated {report.updated}, moved {report.moved}, "
                  f"duplicates {report.duplicates}, removed {report.removed}, "
                  f"unchanged {report.unchanged}, skipped {len(report.skipped)} "
                  f"({report.encoded} encoded in {report.seconds:.1f}s)", highlight=False)
    for s in report.skipped[:20]:
        show("  skipped ", s.path, ": ", s.reason, console=console)
    if len(report.skipped) > 20:
        console.print(f"  ... and {len(report.skipped) - 20} more (searchkit status)")
    for r in report.missing_roots:
        show("  folder not found, left as it was: ", r, console=console)
    if report.texts_read:
        console.print(f"read the text in {report.texts_read} images"
                      + (f" ({report.texts_failed} failed: searchkit status)"
                         if report.texts_failed else ""), highlight=False)
    if report.ocr_problem:
        warn(f"text in images not read: {report.ocr_problem}")


# ---- search ----------------------------------------------------------------------------------
# The options both `search` and `similar` take; their values are read by searchkit.spec.
NegativeOption = typer.Option(None, "--not", help="Push results away from this text "
                              "(repeatable), e.g. --not \"people\".")
TextWeightOption = typer.Option(1.0, "--text-weight", help="Weight of the text term.")
ImageWeightOption = typer.Option(1.0, "--image-weight", help="Weight of image terms.")
NotWeightOption = typer.Option(0.5, "--not-weight", help="Weight of each --not term.")
KOption = typer.Option(10, "-k", "--top", help="How many results.")
ThresholdOption = typer.Option(None, "--threshold", help="Minimum score.")
PathOption = typer.Option(None, "--path", help="Only files under this folder.")
GlobOption = typer.Option(None, "--glob", help="Only paths matching this glob, e.g. '*.png' or "
                          "'*/2024/*'.")
AfterOption = typer.Option(None, "--after", help="Taken/modified on or after (YYYY, YYYY-MM, "
                           "YYYY-MM-DD or ISO 8601).")
BeforeOption = typer.Option(None, "--before", help="Taken/modified on or before (a year, month "
                            "or day includes all of it).")
DateFieldOption = typer.Option("taken", "--date-field", help="taken (EXIF) or modified.")
MinWidthOption = typer.Option(None, "--min-width", help="Minimum width in px.")
MinHeightOption = typer.Option(None, "--min-height", help="Minimum height in px.")
FormatOption = typer.Option(None, "--format", help="Only these formats (jpeg, png, webp, gif, "
                            "bmp, tiff, heic, avif, raw); repeatable or comma-separated.")
CameraOption = typer.Option(None, "--camera", help="Camera make/model contains.")
TextContainsOption = typer.Option(None, "--text-contains", help="Only images whose text (read "
                                  "by index --ocr) contains this, ignoring case, e.g. "
                                  "--text-contains \"42.50\".")
NoHybridOption = typer.Option(False, "--no-hybrid", help="Rank by the image model alone (by "
                              "default, when the library has text read in images, a text "
                              "query's words found in an image's text lift it).")
PathsOption = typer.Option(False, "--paths", "-f", help="Print only the paths, one per line, "
                           "best first (for scripts; control characters escaped).")


@contextmanager
def _read_as_options(**names: str) -> Iterator[None]:
    """A value searchkit.spec cannot read becomes one line naming the option it came from."""
    from searchkit.spec import FieldError
    try:
        yield
    except FieldError as e:
        option = names.get(e.field) or ("-k" if e.field == "k" else
                                        "--" + e.field.replace("_", "-"))
        raise UserError(f"{option}: {e.problem}") from None


def _filters(path, glob, after, before, date_field, min_width, min_height, formats, camera,
             text_contains=None):
    from searchkit.spec import parse_filters
    return parse_filters(path=str(path) if path else None, glob=glob, after=after,
                         before=before, date_field=date_field, min_width=min_width,
                         min_height=min_height, formats=formats or (), camera=camera,
                         text_contains=text_contains)


def _spec(text: str | None, images: list[Path], negatives: list[str], like: list[int],
          text_weight: float, image_weight: float, not_weight: float, k: int):
    from searchkit.spec import parse_query_spec
    return parse_query_spec({
        "text": text, "image": [str(p) for p in images or []] or None,
        "not": list(negatives or []) or None, "like": list(like or []) or None,
        "text_weight": text_weight, "image_weight": image_weight, "not_weight": not_weight,
        "like_weight": image_weight, "k": k})


def _output(json_out: bool, paths_out: bool) -> str:
    if json_out and paths_out:
        raise UserError("give --json or --paths, not both")
    return "json" if json_out else "paths" if paths_out else "table"


def _search(lib, spec, filters, threshold, output: str, hybrid: bool | None = None) -> None:
    hits = lib.search(spec.query, k=spec.k, filters=filters, threshold=threshold,
                      hybrid=hybrid)
    _warn_unknown(lib, spec.query)
    _print_hits(hits, output)


def _warn_unknown(lib, query, where: str = "") -> None:
    for text in lib.unknown_terms(query):
        shown = text if len(text) <= 40 else text[:40] + "…"
        warn(f"{where}the model knows no word of {shown!r}: to it, such queries all look "
             "alike (results unrelated to them)")


def _print_hits(hits, output: str) -> None:
    if output == "json":
        print_json([h.to_json() for h in hits])
        return
    if output == "paths":
        print_paths(h.path for h in hits)
        return
    if not hits:
        console.print("no results")
        return
    from rich.table import Table
    copies = any(h.duplicates for h in hits)  # a column only when a hit has copies
    t = Table("#", "score", *(["copies"] if copies else []), "path", "size", "date", box=None,
              pad_edge=False)
    for column in t.columns:
        column.no_wrap = column.header != "path"
    for i, h in enumerate(hits, 1):
        date = (h.taken_at or h.modified_at).strftime("%Y-%m-%d")
        size = f"{h.width}x{h.height}" if h.width else ""
        marker = [f"x{h.duplicates + 1}" if h.duplicates else ""] if copies else []
        t.add_row(str(i), f"{h.score:.3f}", *marker, Whole(h.path), size, date)
    table_console().print(t)
    if copies:
        console.print("copies xN: N files with the same content (searchkit dupes lists them)",
                      highlight=False)


def search_cmd(
    text: Optional[str] = typer.Argument(None, help="What to look for, in words."),
    image: list[Path] = typer.Option(None, "--image", "-i", help="Also match this image "
                                     "(repeatable): combined with the text by weights."),
    negative: list[str] = NegativeOption,
    like: list[int] = typer.Option(None, "--like", help="More like this indexed image id."),
    text_weight: float = TextWeightOption,
    image_weight: float = ImageWeightOption,
    not_weight: float = NotWeightOption,
    k: int = KOption,
    threshold: Optional[float] = ThresholdOption,
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
    no_hybrid: bool = NoHybridOption,
    queries: Optional[Path] = typer.Option(None, "--queries", help="Run one query per line of "
                                           "this file ('-' for stdin): plain text or a JSON "
                                           "object; prints JSON Lines."),
    paths_out: bool = PathsOption,
    library: Optional[str] = LibraryOption,
    model: Optional[str] = ModelOption,
    json_out: bool = JsonOption,
) -> None:
    """Search the library by text, image, or both (with weights and negative terms).

    Examples: searchkit search "a red bicycle leaning on a wall";
    searchkit search "beach" --not "people" --after 2023 --format jpeg;
    searchkit search "in winter" --image photo.jpg --image-weight 0.7 --json
    """
    from searchkit.spec import parse_threshold
    output = _output(json_out, paths_out)
    if queries is not None and (text is not None or image or negative or like):
        raise UserError("give a query or --queries FILE, not both")
    with _read_as_options(text="TEXT"):
        filters = _filters(path, glob, after, before, date_field, min_width, min_height,
                           formats, camera, text_contains)
        spec = _spec(text if queries is None else None, image, negative, like, text_weight,
                     image_weight, not_weight, k)
        threshold = parse_threshold(threshold)
    lib = _open(library, model)
    hybrid = False if no_hybrid else None
    if queries is not None:
        _run_queries(lib, queries, spec, filters, threshold, hybrid)
        return
    _search(lib, spec, filters, threshold, output, hybrid)


def _run_queries(lib, queries: Path, defaults, filters, threshold,
                 hybrid: bool | None = None) -> None:
    """One query per line: plain text, or a JSON object (a query spec, see searchkit.spec).
    Every line is read before the first is answered, so a bad line costs no output."""
    from searchkit.errors import SearchkitError
    from searchkit.spec import parse_query_line
    name = "stdin" if str(queries) == "-" else str(queries)
    specs = []
    for n, line in enumerate(_query_lines(queries), 1):
        if line.strip():
            try:
                specs.append((n, parse_query_line(line, defaults.k, defaults.weights)))
            except SearchkitError as e:
                raise UserError(f"{name}:{n}: {e}") from None
    for n, spec in specs:
        try:
            hits = lib.search(spec.query, k=spec.k, filters=filters, threshold=threshold,
                              hybrid=hybrid)
        except SearchkitError as e:
            raise UserError(f"{name}:{n}: {e}") from None
        _warn_unknown(lib, spec.query, f"{name}:{n}: ")
        print_json([h.to_json() for h in hits], indent=None)


def _query_lines(queries: Path) -> list[str]:
    """The lines of a queries file (or stdin), which must be UTF-8 text."""
    try:
        data = sys.stdin.buffer.read() if str(queries) == "-" else queries.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read queries file {queries}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{'stdin' if str(queries) == '-' else queries}:{line}: not UTF-8 "
                        "text (save the queries file as UTF-8)") from None
    return [line.removesuffix("\r") for line in text.removeprefix("\ufeff").split("\n")]


def similar_cmd(
    image: Path = typer.Argument(..., help="Find images similar to this one."),
    text: Optional[str] = typer.Option(None, "--text", "-t", help="Also match this text."),
    text_weight: float = TextWeightOption,
    image_weight: float = ImageWeightOption,
    negative: list[str] = NegativeOption,
    not_weight: float = NotWeightOption,
    k: int = KOption,
    threshold: Optional[float] = ThresholdOption,
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
    no_hybrid: bool = NoHybridOption,
    paths_out: bool = PathsOption,
    library: Optional[str] = LibraryOption,
    model: Optional[str] = ModelOption,
    json_out: bool = JsonOption,
) -> None:
    """Find images that look like IMAGE (a product photo, say). Same filters as `search`."""
    from searchkit.spec import parse_threshold
    output = _output(json_out, paths_out)
    if not image.is_file():
        raise UserError(f"query image not found: {image}")
    with _read_as_options(image="IMAGE"):
        filters = _filters(path, glob, after, before, date_field, min_width, min_height,
                           formats, camera, text_contains)
        spec = _spec(text, [image], negative, [], text_weight, image_weight, not_weight, k)
        threshold = parse_threshold(threshold)
    _search(_open(library, model), spec, filters, threshold, output,
            False if no_hybrid else None)


# ---- status ----------------------------------------------------------------------------------
def status_cmd(library: Optional[str] = LibraryOption, json_out: bool = JsonOption) -> None:
    """Show the library's model, counts, index state and skipped files."""
    from dataclasses import asdict
    lib = _open(library, None)
    st, absent = lib.status(), lib.absent_files()
    if json_out:
        print_json(dict(asdict(st), absent_files=dict(asdict(absent), exact=absent.exact,
                                                         estimate=absent.estimate)))
        return
    show("library   ", st.directory)
    show("model     ", st.model_name, f" (fingerprint {st.model_fingerprint[:12]}, dim {st.dim})")
    show(f"queries   encoded with {st.queries}"
         + (" (no torch import)" if st.queries == "onnx" else ""))
    show(f"images    {st.indexed} indexed, {st.skipped} skipped")
    if st.ocr or st.ocr_with_text or st.ocr_failed:
        show(f"text      OCR {'on' if st.ocr else 'off'}: text found in {st.ocr_with_text} "
             "images" + (f", {st.ocr_failed} could not be read" if st.ocr_failed else ""))
    else:
        show("text      OCR off (searchkit index --ocr reads the text in images)")
    if absent.absent:  # imported rows, or files deleted since the last index run
        show(f"absent    {absent.absent} of {absent.indexed} indexed images have no file here"
             " (searchkit check lists them)" if absent.exact else
             f"absent    about {absent.estimate} of {absent.indexed} indexed images have no "
             f"file here ({absent.absent} of {absent.checked} looked for; searchkit check "
             "counts them all)")
    show(f"index     {st.index_kind} on {st.index_device}, {st.index_state}"
         + (f", {st.index_pending} changes since it was saved" if st.index_pending else "")
         + (" (an index run is in progress)" if st.busy else ""))
    for problem in st.problems:  # details and repair: searchkit check [--repair]
        show("problem   ", problem, " (see searchkit check)")
    for r in st.roots:
        show("folder    ", r)
    if st.skipped_files:
        show("skipped:")
        for s in st.skipped_files:
            show("  ", s.path, ": ", s.reason)


def forget_cmd(
    path: Path = typer.Argument(..., help="A folder indexed before (it may no longer exist)."),
    library: Optional[str] = LibraryOption,
) -> None:
    """Stop tracking a folder: its images leave the library (the files are not touched)."""
    forgotten = _open(library, None).forget(path)
    show(f"removed {forgotten.removed} files under ", forgotten.root, console=console)


def register(app: typer.Typer) -> None:
    app.command("index")(user_errors(index_cmd))
    app.command("search")(user_errors(search_cmd))
    app.command("similar")(user_errors(similar_cmd))
    app.command("status")(user_errors(status_cmd))
    app.command("forget")(user_errors(forget_cmd))
