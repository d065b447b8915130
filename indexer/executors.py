"""Who embeds the files of an index run: the executors, and the one batch function they share.

The driver (the process running ``searchkit index``) always lists and plans the files, and
decides and writes every row (:class:`~searchkit.indexer.run.IndexRun`), so the store it writes
to is the library's whichever executor embeds. An executor only turns the files the run claims
(one per new content) into vectors:

- ``local`` (the default): worker threads read, hash and decode files ahead of the encoder,
  which encodes them in batches in this process (bounded prefetch, content-hash claims).
- ``ray``: the driver reads and hashes the files (the same claims), and a Ray Data actor pool
  decodes and encodes the claimed ones, on GPUs when the cluster has them
  (:mod:`searchkit.indexer.ray_executor`, needs ``searchkit[ray]``).

Both encode through :func:`embed_batch`, so their vectors are the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np

from searchkit.errors import SearchkitError

from .prepare import Prepared, WorkItem, prepare_in_order

if TYPE_CHECKING:
    from searchkit.encoders.base import Encoder

    from .run import IndexRun

ProgressFn = Callable[[int, int], None]   # (files decided, files to read)

LOCAL, RAY = "local", "ray"
EXECUTORS = (LOCAL, RAY)


def embed_batch(encoder: "Encoder", prepared: Sequence[Prepared]) -> np.ndarray:
    """The vectors of decoded files, in one forward pass: the batch function of every executor
    (the local encode step and the Ray actor), so that they embed alike."""
    return encoder.encode_pixels(np.stack([p.pixels for p in prepared]))


class Executor(Protocol):
    def execute(self, run: "IndexRun", work: list[WorkItem], workers: int,
                progress: ProgressFn) -> None:
        """Have every file of ``work`` decided by ``run`` (``workers``: reading threads here)."""


class LocalExecutor:
    """Decode in ``workers`` threads ahead of the encoder; encode in batches in this process."""

    def execute(self, run: "IndexRun", work: list[WorkItem], workers: int,
                progress: ProgressFn) -> None:
        for done, prep in enumerate(prepare_in_order(work, run.prepare, workers), start=1):
            run.decide(prep)
            progress(done, len(work))


@dataclass(frozen=True)
class RayOptions:
    """``index --executor ray``: the cluster (None: a local one on this machine's cores), images
    per batch and actors in the pool (None: chosen from the cluster's GPUs or cores)."""
    address: str | None = None
    batch_size: int | None = None
    actors: int | None = None


def make_executor(name: str, ray: RayOptions = RayOptions()) -> Executor:
    """The executor called ``name``; an unknown name, or ``ray`` without Ray installed, is a
    :class:`~searchkit.errors.SearchkitError`."""
    if name == LOCAL:
        if ray != RayOptions():
            raise SearchkitError("--ray-address, --ray-batch-size and --ray-actors need "
                                 "--executor ray")
        return LocalExecutor()
    if name == RAY:
        from .ray_executor import RayExecutor  # imports ray only when it runs
        return RayExecutor(ray)
    raise SearchkitError(f"unknown executor {name!r}: use one of {', '.join(EXECUTORS)}")
