"""Encoders: one interface over hub models, the bundled offline model and test models."""

from .base import DualModel, Encoder, EncoderError, ImageTransform, TorchEncoder, l2_normalize
from .registry import (DEFAULT_MODEL, REGISTRY, ModelSpec, list_models, load_encoder, register,
                       resolve)

__all__ = ["DualModel", "Encoder", "EncoderError", "ImageTransform", "TorchEncoder",
           "l2_normalize", "DEFAULT_MODEL", "REGISTRY", "ModelSpec", "list_models",
           "load_encoder", "register", "resolve"]
