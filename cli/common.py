"""Shared CLI plumbing: logging set-up, the library option, one-line user errors, and how
names reach a terminal (literally, whole, with control characters made visible)."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, Iterable

import typer
from rich.cells import chop_cells, cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

LIBRARY_ENV = "SEARCHKIT_LIBRARY"


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def default_library_dir() -> Path:
    from platformdirs import user_data_dir
    return Path(user_data_dir("searchkit")) / "library"


LibraryOption = typer.Option(None, "--library", "-L", envvar=LIBRARY_ENV,
                             help="Library directory, or milvus://HOST:PORT/COLLECTION for a "
                                  "library on Milvus (env SEARCHKIT_LIBRARY; default: per-user "
                                  "data dir).")


def library_location(value: str | None) -> str | Path:
    """Where the library is: a ``milvus://`` URI as given, else a directory."""
    from searchkit.engine import is_milvus
    if value and is_milvus(value):
        return value
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


# ---- showing names ---------------------------------------------------------------------------
# A file name is shown as it is, except what would act on the terminal or hide what the name
# is: C0/C1 controls and DEL, line and paragraph separators, bidirectional overrides, and bytes
# that are not UTF-8 (surrogate-escaped by Python). Those become escapes: \n, \t, \r, \x1b
# (C0 and DEL), \u009b (C1 and other code points) and \xff (one byte that is not UTF-8).
_CONTROLS = "\x00-\x1f\x7f-\x9f"
_HIDING = "\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[{_CONTROLS}{_HIDING}\ud800-\udfff]")
# --paths writes the file system's bytes, so a name whose only oddity is an undecodable byte
# can still be opened; only controls (and surrogates that stand for no byte) are escaped.
_UNSAFE_IN_PATHS = re.compile(f"[{_CONTROLS}\ud800-\udc7f\udd00-\udfff]")
_JSON_UNSAFE = re.compile(f"[\x7f-\x9f{_HIDING}\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match) -> str:
    ch = match.group()
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x80:
        return _NAMED.get(ch, f"\\x{code:02x}")
    return _escape_code(code)


def _escape_code(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(text: object) -> str:
    """``text`` as it may reach a terminal: literal, with nothing in it acting on the terminal
    or hiding characters (see the escapes above). A text that begins with a character of no
    width (a combining mark or modifier: nothing to attach to, so a terminal may show nothing)
    has that character escaped too."""
    shown = _UNSAFE.sub(_escape, str(text))
    if shown and cell_len(shown[0]) == 0:
        shown = _escape_code(ord(shown[0])) + shown[1:]
    return shown


def literal(text: object, style: str = "") -> Text:
    """A rich Text of :func:`visible` ``text``: never read as markup, never highlighted."""
    return Text(visible(text), style=style)


class Whole:
    """A name in a table cell: folded at any character when the column is narrow, never cut,
    and never broken at (and so losing) a space."""

    def __init__(self, text: object):
        self.text = visible(text)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(min(8, cell_len(self.text)), cell_len(self.text))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = chop_cells(self.text, max(1, options.max_width)) or [""]
        yield Text("\n".join(lines), no_wrap=True, overflow="ignore")


def show(*parts: object, sep: str = "", console: Console | None = None) -> None:
    """Print one line made of ``parts`` (names and messages, each shown literally) joined by
    ``sep`` (printed as it is, a tab say). Plain text: no markup, no wrapping."""
    file = (console or out).file
    file.write(sep.join(visible(p) for p in parts) + "\n")
    file.flush()


def table_console() -> Console:
    """Where tables go: the terminal at its width (names fold), or, piped, one line per row
    at whatever width the rows need (nothing folds or is cut)."""
    return out if out.is_terminal else Console(soft_wrap=True, width=1_000_000)


def print_json(value: object, indent: int | None = 2) -> None:
    """JSON on stdout, escaped so that no string in it acts on a terminal."""
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    _write_line(_JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))


def print_paths(paths: Iterable[str]) -> None:
    """One path per line for scripts: the file system's bytes, control characters escaped."""
    for path in paths:
        _write_bytes(os.fsencode(_UNSAFE_IN_PATHS.sub(_escape, path)) + b"\n")


def _write_line(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _write_bytes(data: bytes) -> None:
    sys.stdout.flush()
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(data.decode("utf-8", "backslashreplace"))
    else:
        buffer.write(data)
        buffer.flush()


def warn(message: str) -> None:
    """One warning line on stderr."""
    typer.echo(f"warning: {visible(message.strip())}", err=True)


def fail(message: str, code: int = 2) -> None:
    """One line on stderr, never wrapped (a newline in it shows as \\n), then exit non-zero."""
    typer.echo(f"error: {visible(message.strip())}", err=True)
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
