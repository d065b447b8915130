"""AdamW with parameter groups: no weight decay on norms, biases, embeddings' scale-like
parameters (anything below 2-D) and the temperature."""

from __future__ import annotations

import torch

NO_DECAY_NAMES = ("logit_scale", "logit_bias", "norm", "bias", "ln_", "bn")


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    lname = name.lower()
    return param.ndim < 2 or any(k in lname for k in NO_DECAY_NAMES)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if no_decay(name, p) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": plain, "weight_decay": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6
                   ) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
