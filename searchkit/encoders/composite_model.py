"""The dual model of a composite directory: image tower + text tower + linear projection heads
+ a learned temperature, behind the :class:`~searchkit.encoders.base.DualModel` contract."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import EncoderError
from .base import DualModel
from .bert_tower import BertTower
from .composite_config import CompositeConfig, resolve_ref
from .composite_format import read_state_dict
from .geffnet_tower import GeffnetTower
from .logit_scale import INIT_LOGIT_SCALE_LOG


class CompositeDualModel(DualModel):
    """Image tower + text tower + linear projection heads + a learned temperature."""

    loss_kind = "clip"

    def __init__(self, cfg: CompositeConfig):
        super().__init__()
        self.config = cfg
        self.image_tower = GeffnetTower(cfg.image)
        self.text_tower = BertTower(cfg.text)
        self.image_head = nn.Linear(self.image_tower.out_dim, cfg.embed_dim)
        self.text_head = nn.Linear(self.text_tower.out_dim, cfg.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE_LOG))
        self.logit_bias = None

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.image_tower(pixel_values))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                    **kw) -> torch.Tensor:
        return self.text_head(self.text_tower(input_ids, attention_mask))

    def image_module(self) -> nn.Module:
        return nn.ModuleList([self.image_tower, self.image_head])

    def text_module(self) -> nn.Module:
        return nn.ModuleList([self.text_tower, self.text_head])

    def projection_parameters(self) -> list[nn.Parameter]:
        return list(self.image_head.parameters()) + list(self.text_head.parameters())

    def heads_state(self) -> dict[str, torch.Tensor]:
        out = {f"image_head.{k}": v for k, v in self.image_head.state_dict().items()}
        out.update({f"text_head.{k}": v for k, v in self.text_head.state_dict().items()})
        out["logit_scale"] = self.logit_scale.detach().reshape(1)
        return out

    def load_heads(self, state: dict[str, torch.Tensor]) -> None:
        scale = state.get("logit_scale")
        if scale is None:
            raise EncoderError("heads file lacks logit_scale")
        try:
            self.image_head.load_state_dict(_strip(state, "image_head."))
            self.text_head.load_state_dict(_strip(state, "text_head."))
        except RuntimeError as e:
            raise EncoderError(f"projection heads do not fit the config: {e}") from e
        with torch.no_grad():
            self.logit_scale.copy_(scale.reshape(()).to(self.logit_scale.dtype))


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def build_model(cfg: CompositeConfig, model_dir: Path | None = None) -> CompositeDualModel:
    """Build the model and load tower weights from their references (heads stay random)."""
    model = CompositeDualModel(cfg)
    if cfg.image.weights:
        model.image_tower.load_by_order(read_state_dict(resolve_ref(cfg.image.weights, model_dir)))
    if cfg.text.weights:
        model.text_tower.load_weights(read_state_dict(resolve_ref(cfg.text.weights, model_dir)))
    if cfg.text.patch:
        model.text_tower.load_patch(read_state_dict(resolve_ref(cfg.text.patch, model_dir)))
    return model.eval()
