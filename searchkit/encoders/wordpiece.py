"""The tokenizer of composite models' BERT text tower (the ``tokenizers`` library)."""

from __future__ import annotations

from pathlib import Path

import torch

from .composite_config import load_tokenizer, unknown_only


class WordPieceTokenizer:
    """A ``tokenizers`` tokenizer padding to the longest text, truncating to ``max_tokens``."""

    def __init__(self, path: Path, max_tokens: int):
        self.path = path
        self.tok = load_tokenizer(path, max_tokens)

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tok.encode_batch([str(t) for t in texts])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask}

    def unknown_texts(self, texts: list[str]) -> list[bool]:
        return unknown_only(self.tok, texts)
