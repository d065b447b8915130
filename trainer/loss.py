"""Contrastive objectives over a batch of paired image/text features (open_clip's ``loss.py``).

Convention: ``logit_scale`` passed to a loss is the *multiplier* (``model.logit_scale.exp()``,
about 1/0.07 = 14.3 at CLIP's initialisation), not the log parameter the model stores (the
constants' units: :mod:`searchkit.encoders.logit_scale`). The loss clamps it at
:data:`MAX_LOGIT_SCALE` (100) as CLIP does; :func:`clamp_logit_scale_` applies the same bound
(:data:`MAX_LOGIT_SCALE_LOG`) to the stored log parameter after an optimizer step so it cannot
drift past it.
Features need not be normalised: both losses L2-normalise them first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from searchkit.encoders.logit_scale import (INIT_LOGIT_SCALE, MAX_LOGIT_SCALE,  # noqa: F401
                                            MAX_LOGIT_SCALE_LOG)

SIGLIP_INIT_LOGIT_SCALE = 10.0     # SigLIP's initial scale (a multiplier) and bias
SIGLIP_INIT_LOGIT_BIAS = -10.0


def scale_from_log(log_scale: torch.Tensor) -> torch.Tensor:
    """The multiplier for a stored log-temperature parameter, clamped at 100."""
    return log_scale.exp().clamp(max=MAX_LOGIT_SCALE)


@torch.no_grad()
def clamp_logit_scale_(log_scale: torch.Tensor) -> None:
    """Clamp a stored log parameter in place to [0, log 100] (call after ``optimizer.step``)."""
    log_scale.clamp_(0.0, MAX_LOGIT_SCALE_LOG)


def similarity_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                      logit_scale: torch.Tensor | float,
                      logit_bias: torch.Tensor | float | None = None) -> torch.Tensor:
    """The N x M image-by-text logit matrix: clamped scale times cosine, plus bias."""
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=img.dtype, device=img.device).clamp(
        max=MAX_LOGIT_SCALE)
    logits = scale * img @ txt.t()
    if logit_bias is not None:
        logits = logits + logit_bias
    return logits


class ClipLoss(nn.Module):
    """Symmetric InfoNCE: cross-entropy over the N x N matrix, image->text and text->image.

    ``targets`` (optional, length N) gives the index of each image's positive text; by default
    it is the diagonal. Pairs that share a caption are handled by the caller (the sampler avoids
    duplicates in a batch).
    """

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor | float = INIT_LOGIT_SCALE,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        logits = similarity_logits(image_features, text_features, logit_scale)
        if targets is None:
            targets = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


class SigLipLoss(nn.Module):
    """Pairwise sigmoid loss (SigLIP): every (image, text) cell is a binary problem.

    Positives on the diagonal (label +1), all other cells negatives (-1); the sum over cells is
    divided by the batch size, as in the paper.
    """

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor | float = SIGLIP_INIT_LOGIT_SCALE,
                logit_bias: torch.Tensor | float = SIGLIP_INIT_LOGIT_BIAS) -> torch.Tensor:
        logits = similarity_logits(image_features, text_features, logit_scale, logit_bias)
        n = logits.shape[0]
        labels = 2 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1
        return -F.logsigmoid(labels * logits).sum() / n


def loss_for(loss_kind: str) -> nn.Module:
    """The loss module for a :class:`~searchkit.encoders.base.DualModel`'s ``loss_kind``."""
    if loss_kind == "clip":
        return ClipLoss()
    if loss_kind == "siglip":
        return SigLipLoss()
    raise ValueError(f"unknown loss kind {loss_kind!r} (expected 'clip' or 'siglip')")


def model_loss(model, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """The model's own objective with its own temperature (and bias for SigLIP)."""
    scale = model.logit_scale.exp()
    if model.loss_kind == "siglip":
        bias = model.logit_bias if model.logit_bias is not None else SIGLIP_INIT_LOGIT_BIAS
        return SigLipLoss()(image_features, text_features, scale, bias)
    return ClipLoss()(image_features, text_features, scale)
