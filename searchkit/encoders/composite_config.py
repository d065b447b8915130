"""The torch-free half of composite models: their config, file names and weight references.

Kept apart from :mod:`searchkit.encoders.composite` so that code which only needs to *describe*
a composite model (the query fast path, ``searchkit models``) does not import torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import EncoderError

CONFIG_NAME = "searchkit_composite.json"
HEADS_FILE = "heads.safetensors"
TOKENIZER_FILE = "tokenizer.json"
IMAGE_TOWER_FILE = "image_tower.safetensors"
TEXT_TOWER_FILE = "text_tower.safetensors"
TEXT_PATCH_FILE = "text_tower_patch.safetensors"
FORMAT_VERSION = 1

PACKAGE_PREFIX = "package:"
FILE_PREFIX = "file:"

TF_INCEPTION_MEAN = (0.5, 0.5, 0.5)  # TF EfficientNet-Lite checkpoints expect inputs in [-1, 1]
TF_INCEPTION_STD = (0.5, 0.5, 0.5)
TF_BN_EPS = 1e-3
DEFAULT_MAX_TEXT_TOKENS = 64

# Image features a geffnet tower can hand to its head.
FEATURES_POOLED = "pooled"              # global-average-pooled last feature map
FEATURES_POOLED_PROBS = "pooled+probs"  # ... concatenated with the classifier's probabilities


@dataclass(frozen=True)
class ImageTowerConfig:
    arch: str = "tf_efficientnet_lite0"       # a geffnet constructor
    weights: str | None = None                # package:/file: reference; None = random
    features: str = FEATURES_POOLED
    num_classes: int = 1000
    bn_eps: float = TF_BN_EPS


@dataclass(frozen=True)
class TextTowerConfig:
    """A BERT encoder (HF ``BertModel`` key names) with mean pooling."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    normalize: bool = True                    # sentence-transformers' Normalize module
    max_tokens: int = DEFAULT_MAX_TEXT_TOKENS
    weights: str | None = None
    # Tensors that override ``weights`` (the tuned top layers of a LiT-unlocked text tower).
    patch: str | None = None
    tokenizer: str = FILE_PREFIX + TOKENIZER_FILE


@dataclass(frozen=True)
class CompositeConfig:
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    embed_dim: int = 512
    image_size: int = 224
    image_mean: tuple[float, float, float] = TF_INCEPTION_MEAN
    image_std: tuple[float, float, float] = TF_INCEPTION_STD
    description: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "CompositeConfig":
        d = dict(d)
        if d.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise EncoderError(f"composite format {d['format_version']} is newer than this "
                               f"searchkit understands ({FORMAT_VERSION}); upgrade searchkit")
        image = ImageTowerConfig(**d.pop("image", {}))
        text = TextTowerConfig(**d.pop("text", {}))
        for key in ("image_mean", "image_std"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(image=image, text=text, **d)


# ---------------------------------------------------------------------------------------------
# Weight references
# ---------------------------------------------------------------------------------------------

def package_path(ref: str) -> Path:
    """``package:NAME/rel/path`` -> the file inside the installed package (no import)."""
    name, _, rel = ref[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError(f"the model needs the Python package {name!r}: "
                           f"pip install {name.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise EncoderError(f"package {name!r} has no file {rel!r} (broken install?)")
    return path


def resolve_ref(ref: str, model_dir: Path | None) -> Path:
    if ref.startswith(PACKAGE_PREFIX):
        return package_path(ref)
    if ref.startswith(FILE_PREFIX):
        if model_dir is None:
            raise EncoderError(f"{ref!r} needs a model directory")
        path = model_dir / ref[len(FILE_PREFIX):]
        if not path.is_file():
            raise EncoderError(f"model directory {model_dir} lacks {path.name}")
        return path
    raise EncoderError(f"bad weights reference {ref!r} (want package:... or file:...)")


def read_config(model_dir: str | os.PathLike) -> CompositeConfig:
    path = Path(model_dir) / CONFIG_NAME
    try:
        return CompositeConfig.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise EncoderError(f"cannot read {path}: {e}") from e


def load_tokenizer(path: Path, max_tokens: int):
    """A ``tokenizers`` WordPiece tokenizer padding to the longest text, truncating to
    ``max_tokens`` (shared by the torch encoder and the ONNX query path)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(path))
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
    tok.enable_truncation(max_length=max_tokens)
    return tok


def unknown_only(tok, texts: list[str]) -> list[bool]:
    """Per text: whether every token the model sees (after truncation, special tokens aside)
    is the tokenizer's unknown token, or there is none; such texts all encode alike."""
    unk = tok.token_to_id("[UNK]")
    out = []
    for e in tok.encode_batch([str(t) for t in texts]):
        seen = [i for i, special, m in zip(e.ids, e.special_tokens_mask, e.attention_mask)
                if m and not special]
        out.append(all(i == unk for i in seen))
    return out
