"""Run an index in a child process for the crash tests: prints 'ready' once the model is
loaded, 'committed' after each transaction of rows, 'updating' when the run brings the index up
to date, then indexes with small commits so that a kill can land anywhere.

    crash_driver.py LIBRARY MODEL FOLDER [save|prune|fold]

With a last argument every index update folds its delta (no threshold), and the process kills
itself inside the fold's save (``save``: in an fsync of the new index) or right after it, before
the change log is pruned (``prune``); ``fold`` leaves the kill to the test."""

import os
import signal
import sys

from searchkit import Library, index
from searchkit.indexer import Indexer
from searchkit.store import Store


def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def announce(owner, name: str, line: str, before: bool) -> None:
    """Print ``line`` before or after every call of ``owner.name``."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before:
            print(line, flush=True)
        result = real(*args, **kwargs)
        if not before:
            print(line, flush=True)
        return result
    setattr(owner, name, wrapper)


if __name__ == "__main__":
    lib_dir, model_dir, folder = sys.argv[1:4]
    kill_at = sys.argv[4] if len(sys.argv) > 4 else None
    lib = Library.open(lib_dir, model=model_dir, create=True)
    lib.encoder  # load before signalling
    announce(Store, "apply", "committed", before=False)
    announce(Library, "update_index", "updating", before=True)
    if kill_at:
        index.FOLD_MIN_ROWS, index.FOLD_FRACTION = 0, 0.0
    if kill_at == "save":
        index.os.fsync = die
    elif kill_at == "prune":
        Store.prune_changes = die
    print("ready", flush=True)
    Indexer(lib, encode_batch=4, commit_every=8, workers=2).run([folder])
    print("done", flush=True)
