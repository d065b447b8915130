"""Index a folder into a library in a child process, for the SIGKILL test on a Milvus server:
prints 'ready' once the model is loaded, 'applying' before every batch of changes the library's
engine stores and 'applied PATHS' (a JSON list of the rows it upserted) once the engine has
acknowledged it, with small batches so that a kill lands mid-run.

    index_driver.py LIBRARY MODEL FOLDER
"""

import json
import sys

from searchkit import Library
from searchkit.indexer import Indexer

ENCODE_BATCH = 4
COMMIT_EVERY = 16


def announce(owner: type, name: str) -> None:
    """Print 'applying' before and 'applied PATHS' after every call of ``owner.name``."""
    real = getattr(owner, name)

    def wrapper(self, changes, *args, **kwargs):
        print("applying", flush=True)
        result = real(self, changes, *args, **kwargs)
        print("applied", json.dumps([row.path for row in changes.upserts]), flush=True)
        return result
    setattr(owner, name, wrapper)


if __name__ == "__main__":
    location, model_dir, folder = sys.argv[1:4]
    lib = Library.open(location, model=model_dir, create=True)
    lib.encoder  # load before signalling
    announce(type(lib.engine), "apply")
    print("ready", flush=True)
    Indexer(lib, encode_batch=ENCODE_BATCH, commit_every=COMMIT_EVERY, workers=1).run([folder])
    print("done", flush=True)
