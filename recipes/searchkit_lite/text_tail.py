"""LiT with the text tower's top layers unlocked, on CPU, at a cost the recipe can afford.

The text tower's lower layers stay locked, so each caption goes through them once: their output
(``BertTower.hidden_states``, the token states entering the first unlocked layer) is cached, and
training runs only the unlocked top layers, the pooling (``BertTower.forward_from``) and the
head. Tuned weights are rounded to float16 after every step, so what the recipe measures is
exactly what the model directory stores (a float16 patch of the tuned layers over the package's
MiniLM).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import torch

from searchkit.encoders.bert_tower import BertTower
from searchkit.encoders.composite import CompositeEncoder

log = logging.getLogger(__name__)

PREFIX_BATCH = 256


class TextPrefix:
    """Hidden states of every caption entering the first tuned layer (flat, float16)."""

    def __init__(self, states: torch.Tensor, lengths: torch.Tensor):
        self.states = states      # (total tokens, hidden) float16, caption after caption
        self.lengths = lengths    # (N,) tokens per caption
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])

    def batch(self, ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 states padded to the longest caption in the batch, and the attention mask."""
        ids = list(ids)
        lens = self.lengths[ids]
        x = torch.zeros(len(ids), int(lens.max()), self.states.shape[1])
        for row, i in enumerate(ids):
            x[row, :lens[row]] = self.states[self.offsets[i]:self.offsets[i + 1]]
        mask = (torch.arange(x.shape[1])[None, :] < lens[:, None]).long()
        return x, mask


def tower_prefix(encoder: CompositeEncoder, texts: Sequence[str], first_tuned: int,
                 cache_dir: Path) -> TextPrefix:
    """Run the locked embeddings and layers ``[0, first_tuned)`` once per caption (cached)."""
    tower: BertTower = encoder.model.text_tower
    key = hashlib.blake2b("\n".join(texts).encode(), digest_size=8).hexdigest()
    path = cache_dir / f"text_prefix_l{first_tuned}_{len(texts)}_{key}.pt"
    if path.exists():
        saved = torch.load(path, weights_only=True)
        return TextPrefix(saved["states"], saved["lengths"])
    tok = encoder.tokenize(list(texts))
    lengths = tok["attention_mask"].sum(1)
    order = torch.argsort(lengths)            # similar lengths together: little padding
    per_caption: list[torch.Tensor | None] = [None] * len(texts)
    with torch.inference_mode():
        for i in range(0, len(texts), PREFIX_BATCH):
            idx = order[i:i + PREFIX_BATCH]
            n = int(lengths[idx].max())
            x = tower.hidden_states(tok["input_ids"][idx, :n], tok["attention_mask"][idx, :n],
                                    first_tuned)
            for row, j in enumerate(idx.tolist()):
                per_caption[j] = x[row, :lengths[j]].half()
            if (i // PREFIX_BATCH) % 20 == 0:
                log.info("text prefix %d/%d", i, len(texts))
    states = torch.cat(per_caption)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"states": states, "lengths": lengths}, tmp)
    tmp.rename(path)
    return TextPrefix(states, lengths)


def round_to_half(params: Sequence[torch.nn.Parameter]) -> None:
    with torch.no_grad():
        for p in params:
            p.copy_(p.half().float())


def tail_features(tower: BertTower, first_tuned: int, prefix: TextPrefix,
                  ids: Sequence[int], batch: int = 512) -> torch.Tensor:
    """Pooled text-tower outputs for captions ``ids`` through the (tuned) top layers."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(ids), batch):
            outs.append(tower.forward_from(first_tuned, *prefix.batch(ids[i:i + batch])))
    return torch.cat(outs)
