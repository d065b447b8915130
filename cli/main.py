"""The searchkit command line: parses, calls the library, prints."""

from __future__ import annotations

import typer

from . import check, classify, common, dupes, library_cmds, serve, train, transfer

app = typer.Typer(name="searchkit", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Multimodal semantic search over folders of images.")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    common.setup_logging(verbose)


@app.command("models")
@common.user_errors
def models_cmd(json_out: bool = typer.Option(False, "--json", help="JSON output.")) -> None:
    """List the models in the registry."""
    import json

    from searchkit.encoders import DEFAULT_MODEL, list_models
    rows = [dict(name=s.name, family=s.family, dim=s.dim, source=s.source, offline=s.offline,
                 default=s.name == DEFAULT_MODEL, description=s.description) for s in list_models()]
    if json_out:
        common.out.print_json(json.dumps(rows))
        return
    from rich.table import Table
    t = Table("name", "family", "dim", "offline", "description")
    for r in rows:
        t.add_row(r["name"] + (" (default)" if r["default"] else ""), r["family"], str(r["dim"]),
                  "yes" if r["offline"] else "no", r["description"])
    common.out.print(t)
    common.out.print("Any hub id (owner/name) of a CLIP or SigLIP model, or a model directory, "
                     "also works as --model.")


for _module in (library_cmds, dupes, check, train, classify, serve, transfer):
    _module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
