"""Shared CLI plumbing: logging set-up, the library option, and one-line user errors."""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

LIBRARY_ENV = "SEARCHKIT_LIBRARY"


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def default_library_dir() -> Path:
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir
    return Path(user_data_dir("searchkit")) / "library"


LibraryOption = typer.Option(None, "--library", "-L", envvar=LIBRARY_ENV,
                             help="Library directory (env SEARCHKIT_LIBRARY; default: per-user data dir).")


def library_dir(value: Path | None) -> Path:
    return Path(value).expanduser() if value else default_library_dir()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "datasets", "huggingface_hub", "faiss", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # read by transformers / huggingface_hub when (and only if) they are imported
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "debug" if verbose else "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, never wrapped, then exit non-zero."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn known error types into a one-line message and a non-zero exit."""
    from searchkit.errors import SearchkitError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, SearchkitError) as e:
            fail(str(e))
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130)
        except BrokenPipeError:  # e.g. `searchkit search ... | head`
            sys.stderr.close()
            raise typer.Exit(0)
    return wrapper
