"""Where a DualModel's image tower ends and its projection head begins.

With the image trunk locked and no augmentation, the trunk's output for each training image
never changes, so it is computed once and only the projection head runs in each step (the
expensive part of the image side then costs one pass over the data). Models whose split is not
known here simply train without this cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class ImageSplit:
    trunk: Callable[[torch.Tensor], torch.Tensor]   # pixels -> head input
    trunk_module: torch.nn.Module
    head: torch.nn.Module                           # head input -> projected features


def split_image(model) -> ImageSplit | None:
    """The (trunk, head) split of ``model.encode_image``, or None when unknown."""
    tower, head = getattr(model, "image_tower", None), getattr(model, "image_head", None)
    if isinstance(tower, torch.nn.Module) and isinstance(head, torch.nn.Module):
        return ImageSplit(tower, tower, head)          # composite: head(tower(pixels))
    hf = getattr(model, "hf", None)
    proj = getattr(hf, "visual_projection", None)
    if hf is not None and isinstance(proj, torch.nn.Module):   # CLIP: proj(vision.pooler)
        vision = hf.vision_model
        return ImageSplit(lambda px: vision(pixel_values=px).pooler_output, vision, proj)
    return None


def trunk_frozen_head_trains(model) -> bool:
    split = split_image(model)
    if split is None:
        return False
    frozen = not any(p.requires_grad for p in split.trunk_module.parameters())
    return frozen and any(p.requires_grad for p in split.head.parameters())
