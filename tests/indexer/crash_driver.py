"""Run an index in a child process for the crash test: prints 'ready' once the model is loaded,
then indexes with small commits so that a kill can land anywhere."""

import sys

from searchkit.indexer import Indexer
from searchkit import Library

if __name__ == "__main__":
    lib_dir, model_dir, folder = sys.argv[1:4]
    lib = Library.open(lib_dir, model=model_dir, create=True)
    lib.encoder  # load before signalling
    print("ready", flush=True)
    Indexer(lib, encode_batch=4, commit_every=8, workers=2).run([folder])
    print("done", flush=True)
