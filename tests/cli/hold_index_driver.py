"""An index run that holds the library for the CLI busy test: once the run holds the write
lock (its first progress report comes from inside it), it prints 'holding' and waits for a line
on stdin, or its end, before it goes on. The test orders the two processes by these lines, never by time."""

import sys

from searchkit.indexer import Indexer
from searchkit import Library


def hold_once():
    held = False

    def progress(done: int, total: int) -> None:
        nonlocal held
        if not held:
            held = True
            print("holding", flush=True)
            sys.stdin.readline()  # the test's "go": a line, or stdin closed
    return progress


if __name__ == "__main__":
    lib_dir, model_dir, folder = sys.argv[1:4]
    lib = Library.open(lib_dir, model=model_dir, create=True)
    indexer = Indexer(lib)
    indexer.progress = hold_once()  # as the CLI sets it
    indexer.run([folder])
    print("done", flush=True)
