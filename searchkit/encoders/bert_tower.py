"""The text tower of composite models: BERT (Hugging Face ``BertModel`` key names) with masked
mean pooling and optional L2 normalisation, as sentence-transformers runs all-MiniLM-L6-v2.

Written in pure torch so loading imports neither ``transformers`` nor the network. The forward
pass is split at layer boundaries (:meth:`BertTower.hidden_states`, :meth:`BertTower.forward_from`)
so a caller that locks the lower layers can cache their output and run only the top ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import EncoderError
from .composite_config import TextTowerConfig


class _Embeddings(nn.Module):
    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)[None] + \
            self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.heads = c.num_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t):
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
        out = nn.functional.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x)), attn_mask=bias)
        return out.transpose(1, 2).reshape(b, n, d)


class _DenseNorm(nn.Module):
    def __init__(self, d_in: int, d_out: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x, bias):
        return self.output(self.self(x, bias), x)


class _Intermediate(nn.Module):
    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x):
        return nn.functional.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, x, bias):
        x = self.attention(x, bias)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    """The layer stack (a module of its own for the ``encoder.layer.N`` key names)."""

    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_layers))

    def run(self, x: torch.Tensor, bias: torch.Tensor, start: int = 0,
            stop: int | None = None) -> torch.Tensor:
        for layer in self.layer[start:stop]:
            x = layer(x, bias)
        return x


def _attention_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, 1, 1, tokens) bool: which keys each query may attend to."""
    return attention_mask[:, None, None, :].to(torch.bool)


class BertTower(nn.Module):
    """BERT + masked mean pooling (+ L2 normalisation), as sentence-transformers runs MiniLM."""

    def __init__(self, cfg: TextTowerConfig):
        super().__init__()
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self.normalize = cfg.normalize
        self.out_dim = cfg.hidden_size

    @property
    def num_layers(self) -> int:
        return len(self.encoder.layer)

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        state = {k: v for k, v in state.items()
                 if not k.startswith("pooler.") and not k.endswith("position_ids")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise EncoderError(f"text tower weights do not fit: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")

    def load_patch(self, patch: dict[str, torch.Tensor]) -> None:
        """Override some tensors (e.g. tuned top layers); every key must exist, shapes equal."""
        own = self.state_dict()
        bad = [k for k, v in patch.items() if k not in own or own[k].shape != v.shape]
        if bad:
            raise EncoderError(f"text tower patch does not fit: {bad[:3]}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in patch.items()}, strict=False)

    def layer_parameters(self, first: int) -> list[nn.Parameter]:
        """The parameters of layers ``[first, num_layers)`` (what unlocking the top tunes)."""
        return [p for layer in self.encoder.layer[first:] for p in layer.parameters()]

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      upto: int) -> torch.Tensor:
        """Token states entering layer ``upto``: the embeddings, then layers ``[0, upto)``."""
        x = self.embeddings(input_ids)
        return self.encoder.run(x, _attention_bias(attention_mask), 0, upto)

    def forward_from(self, first: int, states: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """Layers ``[first, num_layers)`` on token states, then pooling (and normalisation):
        ``forward_from(k, hidden_states(ids, mask, k), mask)`` equals ``forward(ids, mask)``."""
        x = self.encoder.run(states, _attention_bias(attention_mask), first)
        return self.pool(x, attention_mask)

    def pool(self, states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Masked mean over tokens, L2-normalised when the config says so."""
        m = attention_mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled

    def forward(self, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.forward_from(0, self.embeddings(input_ids), attention_mask)
