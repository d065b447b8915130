"""Writing a composite model directory: towers equal to their package reference stay
references, a text tower tuned in only some tensors is stored as a patch of those tensors,
anything else is stored whole (the layout is described in :mod:`searchkit.encoders.composite`)."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .composite_config import (CONFIG_NAME, FILE_PREFIX, HEADS_FILE, IMAGE_TOWER_FILE,
                               PACKAGE_PREFIX, TEXT_PATCH_FILE, TEXT_TOWER_FILE, TOKENIZER_FILE,
                               resolve_ref)

if TYPE_CHECKING:
    from .composite_model import CompositeDualModel

log = logging.getLogger(__name__)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def save_composite(model: "CompositeDualModel", tokenizer_path: Path,
                   path: str | os.PathLike) -> Path:
    """Write a model directory; towers equal to their package reference stay references.

    A text tower that differs from its package reference in only some tensors (LiT with the top
    layers unlocked) is stored as a patch of those tensors, so the directory stays small.
    """
    from safetensors.torch import save_file
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    image_ref, text_ref, text_patch = cfg.image.weights, cfg.text.weights, None
    if not _keeps_reference(model.image_tower.net, image_ref, True):
        save_file(_cpu_state(model.image_tower.net), str(out / IMAGE_TOWER_FILE))
        image_ref = FILE_PREFIX + IMAGE_TOWER_FILE
    changed = _changed_tensors(model.text_tower, text_ref)
    if changed is None:
        save_file(_cpu_state(model.text_tower), str(out / TEXT_TOWER_FILE))
        text_ref = FILE_PREFIX + TEXT_TOWER_FILE
    elif changed:
        save_file({k: _compact(v) for k, v in changed.items()}, str(out / TEXT_PATCH_FILE))
        text_patch = FILE_PREFIX + TEXT_PATCH_FILE
    for stale, ref in ((IMAGE_TOWER_FILE, image_ref), (TEXT_TOWER_FILE, text_ref),
                       (TEXT_PATCH_FILE, text_patch)):
        if ref != FILE_PREFIX + stale and (out / stale).exists():
            (out / stale).unlink()
    tok_target = out / TOKENIZER_FILE
    if Path(tokenizer_path).resolve() != tok_target.resolve():
        tok_target.write_bytes(Path(tokenizer_path).read_bytes())
    save_file({k: v.detach().float().cpu().contiguous() for k, v in model.heads_state().items()},
              str(out / HEADS_FILE))
    new_cfg = replace(cfg, image=replace(cfg.image, weights=image_ref),
                      text=replace(cfg.text, weights=text_ref, patch=text_patch,
                                   tokenizer=FILE_PREFIX + TOKENIZER_FILE))
    (out / CONFIG_NAME).write_text(new_cfg.to_json())
    log.info("saved composite model to %s", out)
    return out


def _tower_unchanged(module: nn.Module, reference: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    if len(own) != len(reference):
        return False
    return all(torch.equal(a.detach().cpu(), b) for a, b in zip(own.values(), reference.values()))


def _reference_state(tower: nn.Module, ref: str | None, model_dir: Path | None,
                     by_order: bool) -> dict[str, torch.Tensor] | None:
    """The referenced weights in the tower's own key order, or None when unavailable."""
    if not ref or not ref.startswith(PACKAGE_PREFIX):
        return None
    state = read_state_dict(resolve_ref(ref, model_dir))
    if by_order:
        return dict(zip(tower.state_dict().keys(), state.values()))
    state = {k: v for k, v in state.items()
             if not k.startswith("pooler.") and not k.endswith("position_ids")}
    keys = tower.state_dict().keys()
    return {k: state[k] for k in keys if k in state}


def _changed_tensors(tower: nn.Module, ref: str | None) -> dict[str, torch.Tensor] | None:
    """Tensors of ``tower`` that differ from its package reference; None: store it whole."""
    reference = _reference_state(tower, ref, None, False) if ref else None
    own = tower.state_dict()
    if reference is None or reference.keys() != own.keys():
        return None
    return {k: v for k, v in own.items() if not torch.equal(v.detach().cpu(), reference[k])}


def _compact(t: torch.Tensor) -> torch.Tensor:
    """float16 when that is lossless (the trainer rounds tuned weights to it), else float32."""
    t = t.detach().float().cpu().contiguous()
    half = t.half()
    return half if torch.equal(half.float(), t) else t


def _keeps_reference(tower: nn.Module, ref: str | None, by_order: bool) -> bool:
    if not ref or not ref.startswith(PACKAGE_PREFIX):
        return False
    reference = _reference_state(tower, ref, None, by_order)
    return reference is not None and _tower_unchanged(tower, reference)


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().contiguous() if v.is_floating_point()
            else v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
