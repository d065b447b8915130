"""`searchkit import` and `searchkit export`: precomputed embeddings as Parquet (the format:
searchkit.parquet_io). Parses, calls the library, prints."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from .common import LibraryOption, console, library_location, print_json, show, user_errors

JsonOption = typer.Option(False, "--json", help="Machine-readable JSON output.")
SHOWN_BAD_ROWS = 20


def import_cmd(
    file: Path = typer.Argument(..., help="Parquet file: columns path and vector, optionally "
                                "width, height, format, taken_at, camera_make, camera_model, "
                                "content_hash; the model in its schema metadata."),
    library: Optional[str] = LibraryOption,
    model_check: bool = typer.Option(True, "--model-check/--no-model-check",
                                     help="Require the file's model (searchkit.model, "
                                     "searchkit.model_fingerprint) to be the library's; "
                                     "--no-model-check trusts the vectors are of the "
                                     "library's model."),
    json_out: bool = JsonOption,
) -> None:
    """Add precomputed embeddings to a library (a new library takes the file's model); a
    path already in the library is updated. Bad rows are reported and skipped."""
    from searchkit import Library
    lib = Library.open_for_import(library_location(library), file)
    report = lib.import_parquet(file, check_model=model_check)
    if json_out:
        print_json(asdict(report))
        return
    show("imported ", report.file, f": added {report.added}, updated {report.updated}, "
         f"unchanged {report.unchanged}, bad rows skipped {report.bad}, renormalised "
         f"{report.renormalised}, not on this machine {report.absent} "
         f"({report.seconds:.1f}s)", console=console)
    for bad in report.bad_rows[:SHOWN_BAD_ROWS]:
        show(f"  row {bad.row}: ", bad.reason, *((": ", bad.path) if bad.path else ()),
             console=console)
    if report.bad > SHOWN_BAD_ROWS:
        show(f"  ... and {report.bad - SHOWN_BAD_ROWS} more bad rows (--json lists "
             f"the first {len(report.bad_rows)})", console=console)


def export_cmd(
    file: Path = typer.Argument(..., help="Parquet file to write."),
    library: Optional[str] = LibraryOption,
    force: bool = typer.Option(False, "--force", help="Replace the file if it exists."),
    json_out: bool = JsonOption,
) -> None:
    """Write every indexed image's path, vector and metadata to Parquet (what `searchkit
    import` reads), the model in the schema metadata."""
    from searchkit import Library
    report = Library.open(library_location(library)).export_parquet(file, overwrite=force)
    if json_out:
        print_json(asdict(report))
        return
    show(f"exported {report.rows} images to ", report.file, console=console)
    if report.left_out:
        show(f"  left out {report.left_out} images whose stored vector is damaged "
             "(searchkit check --repair)", console=console)


def register(app: typer.Typer) -> None:
    app.command("import")(user_errors(import_cmd))
    app.command("export")(user_errors(export_cmd))
