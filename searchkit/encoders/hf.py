"""CLIP- and SigLIP-family models through ``transformers`` (hub ids and local directories).

Preprocessing and tokenisation are transformers' own (the model's processor), so a hub model's
embeddings here equal what ``transformers`` gives for the same input and published quality
carries over.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import DualModel, EncoderError, TorchEncoder
from .transform import limit_aspect

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("clip", "siglip")


def _features(out) -> torch.Tensor:
    """transformers 5 returns an output object (projected features in ``pooler_output``)."""
    if isinstance(out, torch.Tensor):
        return out
    return out.pooler_output


class HFDualModel(DualModel):
    """A transformers CLIPModel / SiglipModel behind the :class:`DualModel` contract."""

    def __init__(self, hf_model: torch.nn.Module):
        super().__init__()
        self.hf = hf_model
        self.model_type = hf_model.config.model_type
        self.loss_kind = "siglip" if self.model_type == "siglip" else "clip"

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        return self.hf.logit_scale

    @property
    def logit_bias(self) -> torch.nn.Parameter | None:
        return getattr(self.hf, "logit_bias", None)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return _features(self.hf.get_image_features(pixel_values=pixel_values))

    def encode_text(self, input_ids, attention_mask=None, **kw) -> torch.Tensor:
        if attention_mask is not None:
            kw["attention_mask"] = attention_mask
        return _features(self.hf.get_text_features(input_ids=input_ids, **kw))

    def image_module(self) -> torch.nn.Module:
        parts = [self.hf.vision_model]
        if hasattr(self.hf, "visual_projection"):
            parts.append(self.hf.visual_projection)
        return torch.nn.ModuleList(parts)

    def text_module(self) -> torch.nn.Module:
        parts = [self.hf.text_model]
        if hasattr(self.hf, "text_projection"):
            parts.append(self.hf.text_projection)
        return torch.nn.ModuleList(parts)

    def projection_parameters(self) -> list[torch.nn.Parameter]:
        params = []
        for name in ("visual_projection", "text_projection"):
            if hasattr(self.hf, name):
                params += list(getattr(self.hf, name).parameters())
        if self.model_type == "siglip":  # SigLIP's projections are the towers' heads
            params += list(self.hf.vision_model.head.parameters())
            params += list(self.hf.text_model.head.parameters())
        return params

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.hf.save_pretrained(path)


class HFEncoder(TorchEncoder):
    """Encoder for a transformers model + processor."""

    def __init__(self, name: str, hf_model, processor, device=None, fp16=None):
        self.processor = processor
        self._image_processor = processor.image_processor
        self._tokenizer = processor.tokenizer
        model_type = hf_model.config.model_type
        self._padding = "max_length" if model_type == "siglip" else True
        self._max_length = _max_text_length(hf_model)
        dim = hf_model.config.projection_dim if model_type == "clip" else \
            hf_model.config.text_config.hidden_size
        super().__init__(name, HFDualModel(hf_model), self._tokenize, self._transform, dim,
                         device=device, fp16=fp16)
        ip = self._image_processor
        crop = getattr(ip, "crop_size", None) or getattr(ip, "size", None) or {}
        self.image_size = int(crop.get("height") or crop.get("shortest_edge") or 224)
        self.image_mean = tuple(ip.image_mean)
        self.image_std = tuple(ip.image_std)

    def _transform(self, image: Image.Image) -> np.ndarray:
        image = limit_aspect(image.convert("RGB"))  # bounds the processor's intermediates
        out = self._image_processor(images=image, return_tensors="np")
        return np.asarray(out["pixel_values"][0], dtype=np.float32)

    def _tokenize(self, texts: list[str]) -> dict:
        tok = self._tokenizer(texts, padding=self._padding, truncation=True,
                              max_length=self._max_length, return_tensors="pt")
        keep = ("input_ids", "attention_mask") if self.model.loss_kind == "clip" else ("input_ids",)
        return {k: tok[k] for k in keep if k in tok}

    def save_pretrained(self, path: str | os.PathLike) -> None:
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)


def _max_text_length(hf_model) -> int:
    return int(getattr(hf_model.config.text_config, "max_position_embeddings", 77))


def is_hf_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    import json
    try:
        return json.loads(cfg.read_text()).get("model_type") in SUPPORTED_TYPES
    except (OSError, ValueError):
        return False


def load_hf(name_or_path: str, device: str | None = None, fp16: bool | None = None,
            offline: bool = False) -> HFEncoder:
    """Load a CLIP/SigLIP model and its processor from the hub or a local directory."""
    from transformers import AutoModel, AutoProcessor

    kw = {"local_files_only": True} if offline or Path(name_or_path).is_dir() else {}
    try:
        model = AutoModel.from_pretrained(name_or_path, **kw)
        processor = AutoProcessor.from_pretrained(name_or_path, **kw)
    except (OSError, ValueError) as e:
        raise EncoderError(f"cannot load model {name_or_path!r}: {str(e).splitlines()[0]}") from e
    if model.config.model_type not in SUPPORTED_TYPES:
        raise EncoderError(f"model {name_or_path!r} is a {model.config.model_type!r} model; "
                           f"searchkit supports {', '.join(SUPPORTED_TYPES)}")
    return HFEncoder(name_or_path, model, processor, device=device, fp16=fp16)
