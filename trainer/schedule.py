"""Learning-rate schedule as a pure function of the step (nanoGPT style)."""

from __future__ import annotations

import math


def lr_at(step: int, total_steps: int, base_lr: float, warmup_steps: int = 0,
          min_lr_ratio: float = 0.0) -> float:
    """Linear warmup from ~0 to ``base_lr``, then cosine decay to ``base_lr * min_lr_ratio``.

    ``step`` counts optimizer steps from 0; the value is the lr used *for* that step.
    """
    if total_steps <= 0:
        return base_lr
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / decay_steps))
    floor = base_lr * min_lr_ratio
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
