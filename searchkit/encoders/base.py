"""The one narrow interface every encoder sits behind.

An :class:`Encoder` turns a batch of PIL images or a batch of texts into L2-normalised float32
arrays of one dimension. Preprocessing is split from the forward pass (``preprocess`` is a pure,
thread-safe function of one image) so that the indexer can decode and preprocess in worker
threads while the encoder runs batches, and the encoder is never waiting.

Trainable encoders expose their torch module as a :class:`DualModel` (``Encoder.model``), which
is what ``trainer/`` fine-tunes and exports.
"""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)


from ..errors import EncoderError  # noqa: F401  (re-exported)
from .transform import ImageTransform, l2_normalize  # noqa: F401  (torch-free; re-exported)


def pick_device(device: str | None = None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


class DualModel(torch.nn.Module):
    """A trainable image/text pair: the contract between the library and ``trainer/``.

    ``encode_image`` / ``encode_text`` return *unnormalised* projected features (the loss
    normalises). ``logit_scale`` is a log-temperature parameter; ``logit_bias`` is set for
    sigmoid-loss (SigLIP-family) models and ``None`` otherwise.
    """

    loss_kind: str = "clip"  # "clip" (softmax InfoNCE) or "siglip" (sigmoid)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    **kw) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def image_module(self) -> torch.nn.Module:  # pragma: no cover
        """The image tower incl. its projection (for locking / LoRA)."""
        raise NotImplementedError

    def text_module(self) -> torch.nn.Module:  # pragma: no cover
        raise NotImplementedError

    def projection_parameters(self) -> list[torch.nn.Parameter]:  # pragma: no cover
        raise NotImplementedError


def fingerprint_module(module: torch.nn.Module) -> str:
    """A stable hash of a module's weights (names, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class Encoder(ABC):
    """Encode images and texts into one L2-normalised float32 space."""

    name: str
    dim: int

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image to the model's input array (thread-safe, pure)."""

    @abstractmethod
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """A stacked batch of ``preprocess`` outputs to normalised vectors (N, dim)."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts to normalised vectors (N, dim)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A hash of the weights: a library is bound to it."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))

    def unknown_texts(self, texts: Sequence[str]) -> list[bool]:
        """Per text: whether the model knows none of its tokens (every such text encodes to
        the same vector). Encoders whose tokenizer can tell override this."""
        return [False] * len(texts)


class TorchEncoder(Encoder):
    """An :class:`Encoder` over a :class:`DualModel`, a tokenizer and an image transform.

    Subclasses set ``image_size``, ``image_mean`` and ``image_std`` (what the trainer needs to
    build augmented training views) and implement ``save_pretrained(dir)`` so that
    ``load_encoder(dir)`` loads the saved model back.
    """

    image_size: int = 224
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __init__(self, name: str, model: DualModel, tokenize: Callable[[list[str]], dict],
                 transform: Callable[[Image.Image], np.ndarray], dim: int,
                 device: str | None = None, fp16: bool | None = None, batch_size: int = 64):
        self.name = name
        self.device = pick_device(device)
        self.fp16 = (self.device.startswith("cuda")) if fp16 is None else fp16
        self._fingerprint: str | None = None
        if self.fp16:  # the fingerprint is of the stored (full-precision) weights
            self._fingerprint = fingerprint_module(model)
        self.model = model.eval().to(self.device)
        if self.fp16:
            self.model = self.model.half()
        self.tokenize = tokenize
        self.transform = transform
        self.dim = dim
        self.batch_size = batch_size

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.transform(image)

    @torch.inference_mode()
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)
        x = x.half() if self.fp16 else x.float()
        out = self.model.encode_image(x)
        return l2_normalize(out.float().cpu().numpy())

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        outs = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenize(texts[i:i + self.batch_size])
            tok = {k: v.to(self.device) for k, v in tok.items()}
            outs.append(self.model.encode_text(**tok).float().cpu().numpy())
        return l2_normalize(np.concatenate(outs))

    def unknown_texts(self, texts: Sequence[str]) -> list[bool]:
        check = getattr(self.tokenize, "unknown_texts", None)  # a tokenizer that can tell
        return check(list(texts)) if check else super().unknown_texts(texts)

    def save_pretrained(self, path) -> None:  # pragma: no cover
        raise NotImplementedError

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint_module(self.model)
        return self._fingerprint
