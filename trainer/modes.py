"""What trains: full, image tower locked (LiT), text tower locked, projections only, LoRA.

The temperature (and SigLIP's bias) trains in every mode. LoRA adapters (peft) go on the
attention projections of whichever towers have attention; :func:`merge_lora` folds them back
into plain layers so the exported model needs no peft. peft is optional (the ``train`` extra):
only LoRA imports it, and :func:`check_mode_packages` says so before a run starts.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from dataclasses import dataclass
from enum import Enum

import torch

from searchkit.errors import SearchkitError

log = logging.getLogger(__name__)

# attention projections: HF CLIP/SigLIP (q_proj...), BERT/MiniLM (query/key/value), timm (qkv)
ATTENTION_PATTERN = r".*\.(q_proj|k_proj|v_proj|query|key|value|qkv)$"


class TrainMode(str, Enum):
    FULL = "full"
    LOCK_IMAGE = "lock-image"
    LOCK_IMAGE_TRUNK = "lock-image-trunk"   # image backbone locked, its projection trains
    LOCK_TEXT = "lock-text"
    PROJECTIONS = "projections"
    LORA = "lora"


class ModeError(SearchkitError):
    """A training mode cannot be applied to this model."""


class MissingPackageError(ModeError):
    """A training mode needs an optional package that is not installed."""


# optional packages (module name, what to pip install) that a mode needs beyond the base install
MODE_PACKAGES: dict[TrainMode, tuple[tuple[str, str], ...]] = {TrainMode.LORA: (("peft", "peft"),)}


def check_mode_packages(mode: TrainMode | str) -> None:
    """Raise :class:`MissingPackageError` when ``mode`` needs a package that is not installed;
    cheap (nothing is imported), so callers run it before any work."""
    mode = TrainMode(mode)
    for module, pip_name in MODE_PACKAGES.get(mode, ()):
        if importlib.util.find_spec(module) is None:
            raise MissingPackageError(f"mode {mode.value!r} needs the {module} package, which is "
                                      f"not installed: pip install {pip_name}")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_pattern: str = ATTENTION_PATTERN


def _temperature_params(model) -> list[torch.nn.Parameter]:
    out = [model.logit_scale]
    if getattr(model, "logit_bias", None) is not None:
        out.append(model.logit_bias)
    return [p for p in out if isinstance(p, torch.nn.Parameter)]


def apply_mode(model, mode: TrainMode | str, lora: LoraSettings = LoraSettings()) -> None:
    """Set ``requires_grad`` (and inject LoRA) in place for the chosen mode."""
    mode = TrainMode(mode)
    check_mode_packages(mode)
    if mode == TrainMode.LORA:
        _inject_lora(model, lora)
    else:
        model.requires_grad_(mode != TrainMode.PROJECTIONS)
        if mode == TrainMode.LOCK_IMAGE:
            model.image_module().requires_grad_(False)
        elif mode == TrainMode.LOCK_IMAGE_TRUNK:
            _lock_image_trunk(model)
        elif mode == TrainMode.LOCK_TEXT:
            model.text_module().requires_grad_(False)
        elif mode == TrainMode.PROJECTIONS:
            for p in model.projection_parameters():
                p.requires_grad_(True)
    for p in _temperature_params(model):
        p.requires_grad_(True)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise ModeError(f"mode {mode.value!r} leaves nothing to train in this model")
    log.info("mode %s: %d trainable parameters", mode.value, n)


def _lock_image_trunk(model) -> None:
    from .towers import split_image
    split = split_image(model)
    if split is None:
        raise ModeError("lock-image-trunk: the image tower's projection head is not known for "
                        "this model; use lock-image")
    split.trunk_module.requires_grad_(False)


def attention_targets(model, pattern: str = ATTENTION_PATTERN) -> list[str]:
    rx = re.compile(pattern)
    return [name for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and rx.fullmatch(name)]


def _inject_lora(model, s: LoraSettings) -> None:
    from peft import LoraConfig, inject_adapter_in_model
    targets = attention_targets(model, s.target_pattern)
    if not targets:
        raise ModeError("LoRA: this model has no attention layers to adapt")
    model.requires_grad_(False)
    cfg = LoraConfig(r=s.rank, lora_alpha=s.alpha, lora_dropout=s.dropout,
                     target_modules=targets)
    inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    log.info("LoRA rank %d on %d attention layers", s.rank, len(targets))


def _loaded_lora_layer() -> type | None:
    """peft's LoRA layer class if peft is already imported, else None: adapters exist only
    after :func:`_inject_lora` imported peft, so asking never imports it."""
    lora = sys.modules.get("peft.tuners.lora")
    return getattr(lora, "LoraLayer", None)


def has_lora(model) -> bool:
    layer = _loaded_lora_layer()
    return layer is not None and any(isinstance(m, layer) for m in model.modules())


def merge_lora(model) -> None:
    """Fold LoRA adapters into their base layers and put the plain layers back."""
    LoraLayer = _loaded_lora_layer()
    if LoraLayer is None:
        return
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
