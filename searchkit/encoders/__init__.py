"""Encoders: one interface over hub models, the bundled offline model and test models.

torch is imported only when an encoder class is used, so commands that need no model
(status, a no-op re-index) start fast.
"""

from ..errors import EncoderError
from .registry import (DEFAULT_MODEL, REGISTRY, ModelSpec, list_models, load_encoder, register,
                       resolve)

_FROM_BASE = ("DualModel", "Encoder", "ImageTransform", "TorchEncoder", "l2_normalize")

__all__ = ["EncoderError", "DEFAULT_MODEL", "REGISTRY", "ModelSpec", "list_models",
           "load_encoder", "register", "resolve", *_FROM_BASE]


def __getattr__(name: str):
    if name in _FROM_BASE:
        from . import base
        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
