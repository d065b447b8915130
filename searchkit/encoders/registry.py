"""The model registry: short names to model specs, and the one place encoders are built."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from ..errors import EncoderError

if TYPE_CHECKING:  # torch is imported only when a model is loaded
    from .base import Encoder

log = logging.getLogger(__name__)

COMPOSITE_CONFIG = "searchkit_composite.json"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str          # hub id, or a directory (relative ones are under the bundled models dir)
    family: str          # the architecture: "clip", "siglip" or "composite"
    dim: int
    description: str
    offline: bool = False  # ships inside the package: needs no download


REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    REGISTRY[spec.name] = spec


for _spec in (
    ModelSpec("clip-vit-b32", "openai/clip-vit-base-patch32", "clip", 512,
              "OpenAI CLIP ViT-B/32 (hub download, ~600 MB)"),
    ModelSpec("clip-vit-b16", "openai/clip-vit-base-patch16", "clip", 512,
              "OpenAI CLIP ViT-B/16 (hub download, ~600 MB)"),
    ModelSpec("clip-vit-l14", "openai/clip-vit-large-patch14", "clip", 768,
              "OpenAI CLIP ViT-L/14 (hub download, ~1.7 GB)"),
    ModelSpec("siglip-base", "google/siglip-base-patch16-224", "siglip", 768,
              "Google SigLIP B/16 224 px (hub download, ~800 MB)"),
    ModelSpec("siglip-so400m", "google/siglip-so400m-patch14-384", "siglip", 1152,
              "Google SigLIP So400m/14 384 px (hub download, ~3.5 GB)"),
):
    register(_spec)

# The bundled offline model (see searchkit/models/); the default once its weights ship.
OFFLINE_MODEL = "searchkit-lite"
register(ModelSpec(OFFLINE_MODEL, "searchkit-lite", "composite", 512,
                   "bundled offline model: EfficientNet-Lite0 + MiniLM-L6 with trained heads "
                   "(no download)", offline=True))
DEFAULT_MODEL = OFFLINE_MODEL


def list_models() -> list[ModelSpec]:
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def resolve(name_or_path: str) -> tuple[str, str]:
    """Return (loader, source) for a registry name, a local directory or a hub id: the loader
    is "hf" (transformers: CLIP and SigLIP families) or "composite" (not a ModelSpec family)."""
    if not name_or_path or not name_or_path.strip():
        raise EncoderError("empty model name")
    spec = REGISTRY.get(name_or_path)
    if spec is not None:
        src = spec.source
        if spec.family != "composite":
            return "hf", src
        if not Path(src).is_absolute():
            src = str(BUNDLED_DIR / src)
        return "composite", src
    path = Path(name_or_path).expanduser()
    if path.exists():
        if (path / COMPOSITE_CONFIG).is_file():
            return "composite", str(path)
        if (path / "config.json").is_file():
            return "hf", str(path)
        raise EncoderError(f"{name_or_path!r} is not a model directory "
                           f"(no config.json or {COMPOSITE_CONFIG})")
    if "/" in name_or_path and not name_or_path.startswith((".", "/", "~")):
        return "hf", name_or_path  # a hub id such as openai/clip-vit-base-patch32
    known = ", ".join(sorted(REGISTRY))
    raise EncoderError(f"unknown model {name_or_path!r}: use one of {known}, "
                       "a hub id (owner/name) or a model directory")


def load_encoder(name_or_path: str, device: str | None = None,
                 fp16: bool | None = None) -> "Encoder":
    """Build the encoder for a registry name, a model directory or a hub id."""
    loader, source = resolve(name_or_path)
    if loader == "composite":
        from .composite import load_composite
        enc = load_composite(source, device=device)
    else:
        from .hf import load_hf
        enc = load_hf(source, device=device, fp16=fp16)
    enc.name = name_or_path
    return enc
