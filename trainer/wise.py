"""WiSE-FT (Wortsman et al. 2022): interpolate base and fine-tuned weights.

``theta(alpha) = (1 - alpha) * base + alpha * fine_tuned``. ``auto`` picks the alpha with the best
domain recall among those that lose at most ``max_drop`` points on the reference set relative to
the base model, and the whole curve is reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .evaluate import EvalPoint

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_REFERENCE_DROP = 2.0   # points of reference accuracy that `auto` may give up


@dataclass(frozen=True)
class WisePoint:
    alpha: float
    point: EvalPoint

    def to_json(self) -> dict:
        return {"alpha": self.alpha, **self.point.to_json()}


@dataclass(frozen=True)
class WiseChoice:
    alpha: float
    curve: tuple[WisePoint, ...]
    reason: str

    def to_json(self) -> dict:
        return {"alpha": self.alpha, "reason": self.reason,
                "curve": [p.to_json() for p in self.curve]}


def interpolate(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float
                ) -> dict[str, torch.Tensor]:
    """Weights at ``alpha`` (0 = base, 1 = fine-tuned); non-float tensors come from ``tuned``."""
    if set(base) != set(tuned):
        diff = sorted(set(base) ^ set(tuned))[:3]
        raise ValueError(f"base and fine-tuned weights differ in keys, e.g. {diff}")
    out = {}
    for k, t in tuned.items():
        b = base[k].to(t.device)
        out[k] = torch.lerp(b.float(), t.float(), alpha).to(t.dtype) \
            if t.is_floating_point() else t.clone()
    return out


def domain_score(point: EvalPoint) -> float:
    """What ``auto`` maximises: mean R@1 of text->image and image->text."""
    return point.domain.mean_r1


def pick_alpha(curve: Sequence[WisePoint], max_drop: float = MAX_REFERENCE_DROP) -> WiseChoice:
    """Best domain score among alphas within ``max_drop`` of the base's reference accuracy."""
    curve = tuple(sorted(curve, key=lambda p: p.alpha))
    if not curve:
        raise ValueError("empty WiSE-FT curve")
    base = next((p for p in curve if p.alpha == 0.0), None)
    if base is None or base.point.reference is None:
        best = max(curve, key=lambda p: (domain_score(p.point), p.alpha))
        return WiseChoice(best.alpha, curve, "no reference set: best domain recall")
    floor = base.point.reference.top1 - max_drop
    ok = [p for p in curve if p.point.reference is not None and p.point.reference.top1 >= floor]
    best = max(ok, key=lambda p: (domain_score(p.point), p.alpha))
    return WiseChoice(best.alpha, curve, f"best domain recall with reference top-1 >= "
                                         f"{floor:.2f} (base {base.point.reference.top1:.2f} - "
                                         f"{max_drop:g})")


def wise_curve(model: torch.nn.Module, base: dict[str, torch.Tensor],
               tuned: dict[str, torch.Tensor], alphas: Sequence[float],
               measure: Callable[[str], EvalPoint],
               known: dict[float, EvalPoint] | None = None) -> list[WisePoint]:
    """Measure each alpha (loading its weights into ``model``); ``known`` points are reused.

    Leaves ``model`` holding the fine-tuned weights.
    """
    known = known or {}
    points = []
    try:
        for a in alphas:
            if a in known:
                points.append(WisePoint(a, known[a]))
                continue
            model.load_state_dict(interpolate(base, tuned, a))
            points.append(WisePoint(a, measure(f"wise {a:g}")))
            log.info("WiSE-FT alpha %.2f: %s", a, points[-1].point)
    finally:
        model.load_state_dict(tuned)
    return points
