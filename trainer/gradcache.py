"""Gradient caching (Gao et al. 2021): a big contrastive batch in the memory of a small one.

1. Embed the batch chunk by chunk without a graph.
2. Compute the full-batch loss on those embeddings (made leaf tensors) and back-propagate it
   into them (and into the temperature): that gives d loss / d embedding for every row.
3. Re-embed each chunk with a graph and back-propagate ``embedding . cached_grad``, which adds
   exactly that chunk's share of the full-batch parameter gradient.

The RNG state is replayed for step 3 so dropout draws the same masks as in step 1; a tower with
no trainable parameter skips step 3. With one chunk this is the plain full-batch step.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepOutput:
    loss: float
    image_features: torch.Tensor   # detached full-batch embeddings
    text_features: torch.Tensor


def _slices(n: int, chunk: int) -> list[slice]:
    chunk = max(1, chunk)
    return [slice(i, min(n, i + chunk)) for i in range(0, n, chunk)]


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _has_trainable(module: torch.nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _tokens_slice(tokens: dict[str, torch.Tensor], s: slice) -> dict[str, torch.Tensor]:
    return {k: v[s] for k, v in tokens.items()}


def autocast_for(device: torch.device, bf16: bool):
    """bf16 autocast on CUDA when asked; a no-op elsewhere (CPU trains in float32)."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _embed(fn, slices, device, bf16) -> tuple[torch.Tensor, list[tuple]]:
    outs, states = [], []
    with torch.no_grad():
        for s in slices:
            states.append(_rng_state(device))
            with autocast_for(device, bf16):
                outs.append(fn(s).float())
    return torch.cat(outs), states


def _backprop_chunks(fn, slices, states, grads: torch.Tensor, device, bf16) -> None:
    for s, state in zip(slices, states):
        _set_rng_state(state, device)
        with autocast_for(device, bf16):
            emb = fn(s).float()
        torch.autograd.backward(emb, grads[s])


def gradcache_step(model, pixel_values: torch.Tensor | None, tokens: dict[str, torch.Tensor],
                   loss_fn: LossFn, chunk_size: int, bf16: bool = False,
                   image_features: torch.Tensor | None = None,
                   image_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   image_trainable: bool | None = None) -> StepOutput:
    """Accumulate into ``.grad`` the full-batch gradient of ``loss_fn`` (returns the loss).

    ``loss_fn(image_features, text_features)`` must use the model's temperature itself (so its
    gradient reaches ``logit_scale``). The caller zeroes gradients and steps the optimizer.
    ``image_features`` (precomputed, for a locked image tower) replaces ``pixel_values``;
    ``image_encoder`` replaces ``model.encode_image`` (e.g. the projection head over cached
    trunk features, with ``image_trainable`` saying whether it has parameters to train).
    """
    encode_image = image_encoder or model.encode_image
    if image_trainable is None:
        image_trainable = _has_trainable(model.image_module())
    if image_features is not None:
        return _text_only_step(model, image_features, tokens, loss_fn, chunk_size, bf16)
    device = pixel_values.device
    n = pixel_values.shape[0]
    slices = _slices(n, chunk_size)
    if len(slices) == 1:  # no caching needed: one ordinary forward/backward
        with autocast_for(device, bf16):
            img = encode_image(pixel_values).float()
            txt = model.encode_text(**tokens).float()
        loss = loss_fn(img, txt)
        loss.backward()
        return StepOutput(float(loss.detach()), img.detach(), txt.detach())

    def image_fn(s):
        return encode_image(pixel_values[s])

    def text_fn(s):
        return model.encode_text(**_tokens_slice(tokens, s))

    rng_start = _rng_state(device)
    img, img_states = _embed(image_fn, slices, device, bf16)
    txt, txt_states = _embed(text_fn, slices, device, bf16)
    rng_end = _rng_state(device)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    loss = loss_fn(img, txt)
    loss.backward()
    if image_trainable:
        _backprop_chunks(image_fn, slices, img_states, img.grad, device, bf16)
    if _has_trainable(model.text_module()):
        _backprop_chunks(text_fn, slices, txt_states, txt.grad, device, bf16)
    _set_rng_state(rng_end, device)  # as if each chunk had been embedded once
    del rng_start
    return StepOutput(float(loss.detach()), img.detach(), txt.detach())


def _text_only_step(model, image_features: torch.Tensor, tokens: dict[str, torch.Tensor],
                    loss_fn: LossFn, chunk_size: int, bf16: bool) -> StepOutput:
    """The step when image features are fixed: only the text side is embedded (cached)."""
    device = image_features.device
    img = image_features.float()
    slices = _slices(img.shape[0], chunk_size)

    def text_fn(s):
        return model.encode_text(**_tokens_slice(tokens, s))

    if len(slices) == 1:
        with autocast_for(device, bf16):
            txt = text_fn(slices[0]).float()
        loss = loss_fn(img, txt)
        loss.backward()
        return StepOutput(float(loss.detach()), img, txt.detach())
    txt, states = _embed(text_fn, slices, device, bf16)
    rng_end = _rng_state(device)
    txt.requires_grad_(True)
    loss = loss_fn(img, txt)
    loss.backward()
    _backprop_chunks(text_fn, slices, states, txt.grad, device, bf16)
    _set_rng_state(rng_end, device)
    return StepOutput(float(loss.detach()), img, txt.detach())
