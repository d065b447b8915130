"""Minibatches of a contrastive epoch with no caption twice in one batch (a duplicate caption
would be a false negative for its twin).

Two rules for a repeated caption, as a choice of the one batcher:
- ``DEFER`` (the trainer): it moves on to the next batch; batches under 2 are dropped.
- ``DROP`` (the bundled model's recipe, kept so that its weights reproduce): the order is cut
  into windows of ``batch_size`` and a repeat is dropped from its window, which may shrink.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

DEFER = "defer"
DROP = "drop"


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch, 0x5EED]).permutation(n)


def caption_batches(captions: Sequence[Hashable], order: Sequence[int], batch_size: int,
                    repeats: str = DEFER) -> list[list[int]]:
    """Batches of indices into ``captions``, taken in ``order``; ``repeats`` is the rule for a
    caption already in the batch (``DEFER`` or ``DROP``, see the module doc)."""
    if repeats == DEFER:
        return _deferring(captions, order, batch_size)
    if repeats == DROP:
        return _dropping(captions, order, batch_size)
    raise ValueError(f"unknown rule for repeated captions {repeats!r} ({DEFER!r} or {DROP!r})")


def _deferring(captions: Sequence[Hashable], order: Sequence[int], batch_size: int
               ) -> list[list[int]]:
    batches: list[list[int]] = []
    pending = list(order)
    while pending:
        batch, seen, rest = [], set(), []
        for i in pending:
            if len(batch) < batch_size and captions[i] not in seen:
                batch.append(int(i))
                seen.add(captions[i])
            else:
                rest.append(i)
        if len(batch) < 2:
            break
        batches.append(batch)
        pending = rest
    return batches


def _dropping(captions: Sequence[Hashable], order: Sequence[int], batch_size: int
              ) -> list[list[int]]:
    batches = []
    for start in range(0, len(order), batch_size):
        seen, batch = set(), []
        for i in order[start:start + batch_size]:
            if captions[i] not in seen:
                seen.add(captions[i])
                batch.append(int(i))
        batches.append(batch)
    return batches


def epoch_batches(captions: Sequence[str], batch_size: int, seed: int, epoch: int
                  ) -> list[list[int]]:
    """The trainer's shuffled batches for ``epoch`` (seeded), repeats deferred."""
    return caption_batches(captions, epoch_order(len(captions), seed, epoch), batch_size, DEFER)
