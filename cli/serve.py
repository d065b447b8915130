"""CLI command: serve (the web page and HTTP API over a library)."""

from __future__ import annotations

import os
from typing import Optional

import typer

from .common import LibraryOption, UserError, console, library_location, user_errors

TOKEN_ENV = "SEARCHKIT_TOKEN"


def serve_cmd(
    library: Optional[str] = LibraryOption,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this "
                             "machine only)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    token: Optional[str] = typer.Option(None, "--token", envvar=TOKEN_ENV, help="Require this "
                                        "bearer token on every request (env SEARCHKIT_TOKEN)."),
    allow_host: Optional[list[str]] = typer.Option(
        None, "--allow-host", metavar="NAME", help="Also answer requests for this host name "
        "(repeatable). Without --token the server answers only its own names: loopback, the "
        "--host address, and off loopback this machine's name and addresses; any other Host "
        "header is refused (400), so a web page cannot reach the library by DNS rebinding. "
        "With --token any name is answered unless --allow-host is given."),
    max_upload_mb: float = typer.Option(20, "--max-upload-mb", min=0.001, help="Largest query "
                                        "image upload, in MB."),
    max_pixels: int = typer.Option(50_000_000, "--max-pixels", min=1, help="Refuse uploaded "
                                   "images with more pixels (decompression-bomb guard)."),
) -> None:
    """Start the web page and HTTP API over a library (API docs at /docs).

    Example: searchkit serve --library ~/photos-lib  then open http://127.0.0.1:8000
    """
    import uvicorn

    from searchkit import Library
    from searchkit.web import WebConfig, create_app
    from searchkit.web.config import allowed_hosts, is_loopback
    from searchkit.web.search import Searcher

    if token is not None and not token.strip():
        raise UserError("--token is empty")
    hosts = allowed_hosts(host, bool(token), allow_host or ())
    if not is_loopback(host):
        console.print(f"warning: binding to {host} makes the library reachable from other "
                      "machines" + ("" if token else "; anyone who can reach it can search and "
                                    "download your images: set --token or SEARCHKIT_TOKEN"),
                      highlight=False, markup=False)
        if hosts is not None:
            console.print("answering only Host " + ", ".join(hosts) + " (add names with "
                          "--allow-host)", highlight=False, markup=False)
    lib = Library.open(library_location(library))
    searcher = Searcher(lib)
    console.print(f"loading model {lib.info.model_name} ...", highlight=False, markup=False)
    searcher.warm()
    config = WebConfig(token=token, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                       max_pixels=max_pixels, allowed_hosts=hosts)
    app = create_app(lib, config, searcher=searcher)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"serving {lib.location} on http://{shown}:{port}  (API docs: /docs; "
                  "Ctrl+C to stop)", highlight=False, markup=False)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("serve")(user_errors(serve_cmd))
