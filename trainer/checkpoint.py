"""Training checkpoints: model, optimizer, schedule position, RNG state and the run's config,
so that ``--resume`` continues exactly where the run stopped."""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from searchkit.errors import SearchkitError

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"
FORMAT_VERSION = 1


class CheckpointError(SearchkitError):
    """A checkpoint cannot be read or does not fit the model."""


@dataclass
class TrainState:
    """Where a run is: the next optimizer step to take and what it measured so far."""

    step: int = 0                       # optimizer steps taken
    epoch: int = 0                      # epoch that step ``step`` belongs to
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)   # EvalPoint.to_json() per measurement
    best_epoch: int | None = None
    best_score: float | None = None


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState, config: dict, scaler: Any = None) -> None:
    """Everything needed to resume; written atomically."""
    _atomic_save({"format_version": FORMAT_VERSION, "model": _trainable_state(model),
                  "optimizer": optimizer.state_dict(), "state": state.__dict__,
                  "config": config, "rng": rng_state(),
                  "scaler": scaler.state_dict() if scaler is not None else None}, path)
    log.info("checkpoint at step %d -> %s", state.step, path)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Weights that can change: trainable parameters plus all buffers (frozen ones come back
    from the base model)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    sd = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    return {k: v.detach().cpu().clone() for k, v in sd.items()
            if k in trainable or k not in params}


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict
    state: TrainState
    config: dict
    rng: dict
    scaler: dict | None


def load_checkpoint(path: Path) -> Checkpoint:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)
        if raw.get("format_version", 0) > FORMAT_VERSION:
            raise CheckpointError(f"{path} was written by a newer searchkit")
        return Checkpoint(raw["model"], raw["optimizer"], TrainState(**raw["state"]),
                          raw["config"], raw["rng"], raw.get("scaler"))
    except CheckpointError:
        raise
    except Exception as e:   # truncated, not a checkpoint, missing keys: all unreadable
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
                              "delete it to train from the start") from e


def restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    missing = set(ckpt.model) - set(model.state_dict())
    if missing:
        raise CheckpointError(f"checkpoint does not fit the model (e.g. {sorted(missing)[:2]})")
    model.load_state_dict(ckpt.model, strict=False)
    optimizer.load_state_dict(ckpt.optimizer)
    set_rng_state(ckpt.rng)


def save_weights(path: Path, model: torch.nn.Module) -> None:
    _atomic_save(_trainable_state(model), path)


def load_weights(path: Path, model: torch.nn.Module) -> None:
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=False)
