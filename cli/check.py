"""`searchkit check`: verify a library (like git fsck) and, with --repair, fix it."""

from __future__ import annotations

from typing import Optional

import typer

from .common import LibraryOption, library_location, print_json, show, user_errors

EXIT_PROBLEMS = 1   # problems remain (errors a user caused exit 2, as everywhere)


def check_cmd(
    library: Optional[str] = LibraryOption,
    repair: bool = typer.Option(False, "--repair", help="Fix what can be fixed without losing "
                                "a stored row: rebuild the index, mark damaged vectors to be "
                                "encoded again, remove stray temp files."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable JSON output."),
) -> None:
    """Verify a library: database, meta, every vector, files on disk, the saved index, temp
    files. Exits 0 when healthy (or repaired), 1 when problems remain."""
    from searchkit import Library
    report = Library.check(library_location(library), repair=repair)
    if json_out:
        print_json(report.to_json())
    else:
        _print(report)
    raise typer.Exit(0 if report.healthy else EXIT_PROBLEMS)


def _print(report) -> None:
    """Every line through show(): paths and messages are printed literally."""
    show("library   ", report.directory)
    for what in report.checked:
        show("checked   ", what)
    for f in report.findings:
        label = "repaired" if f.repaired else "problem" if f.problem else "note"
        show(f"{label:<9} {f.area}: ", f.message)
        for path in f.examples:
            show("            ", path)
        if f.repaired:
            show("          -> ", f.repaired)
    remaining = [f for f in report.findings if f.remains]
    if remaining:
        fixable = not report.repair and any(f.repairable for f in remaining)
        show(f"problems remain: {len(remaining)}",
             " (searchkit check --repair fixes them)" if fixable else "")
    else:
        show("library is healthy", " (repaired)" if any(f.repaired for f in report.findings)
             else "")


def register(app: typer.Typer) -> None:
    app.command("check")(user_errors(check_cmd))
