"""Tiny random models for tests and benchmarks, built offline from configs: a CLIP
(``transformers``) and a composite (geffnet MNASNet-small + 1-layer BERT)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

BYTE_VOCAB_SPECIAL = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_byte_tokenizer(path: Path) -> int:
    """Write a byte-level CLIP tokenizer (vocab.json + header-only merges.txt); return vocab size."""
    path.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    for s in BYTE_VOCAB_SPECIAL:
        vocab[s] = len(vocab)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def make_tiny_clip(path: str | Path, width: int = 32, layers: int = 2, image_size: int = 32,
                   patch_size: int = 8, projection_dim: int = 16, seed: int = 0,
                   full_size: bool = False) -> Path:
    """Save a random CLIP model + processor to ``path`` (B/32-sized when ``full_size``)."""
    import torch
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor,
                              CLIPTokenizer)

    path = Path(path)
    tok_dir = path / "_tok"
    vocab_size = write_byte_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"))
    if full_size:
        text = dict(vocab_size=vocab_size, hidden_size=512, intermediate_size=2048,
                    num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12, image_size=224, patch_size=32)
        projection_dim, image_size = 512, 224
    else:
        text = dict(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 2,
                    num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=77)
        vision = dict(hidden_size=width, intermediate_size=width * 2, num_hidden_layers=layers,
                      num_attention_heads=2, image_size=image_size, patch_size=patch_size)
    text.update(bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ---- tiny random composites --------------------------------------------------------------------

TINY_VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", "cat",
              "dog", "car", "red", "blue", "tree", "house", ".", ",")


def write_tiny_tokenizer(path: str | os.PathLike, vocab: Sequence[str] = TINY_VOCAB) -> Path:
    """Write a BERT-style WordPiece ``tokenizer.json`` over a tiny vocabulary."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab.index("[CLS]")),
                                                  ("[SEP]", vocab.index("[SEP]"))])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def make_tiny_composite(path: str | os.PathLike, embed_dim: int = 8, image_size: int = 32,
                        seed: int = 0) -> Path:
    """Save a random composite model (random geffnet MNASNet-small, 1-layer BERT) to ``path``."""
    from .encoders.composite import new_composite
    from .encoders.composite_config import (FILE_PREFIX, TOKENIZER_FILE, CompositeConfig,
                                            ImageTowerConfig, TextTowerConfig)
    path = Path(path)
    tok = write_tiny_tokenizer(path / TOKENIZER_FILE)
    cfg = CompositeConfig(
        image=ImageTowerConfig(arch="mnasnet_small", num_classes=10),
        text=TextTowerConfig(vocab_size=len(TINY_VOCAB), hidden_size=16, num_layers=1,
                             num_heads=2, intermediate_size=32, max_position=64,
                             tokenizer=FILE_PREFIX + TOKENIZER_FILE),
        embed_dim=embed_dim, image_size=image_size, description="tiny random composite")
    new_composite(cfg, tok, device="cpu", seed=seed).save_pretrained(path)
    return path
