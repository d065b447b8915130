"""Procedurally drawn shapes with captions ("a red circle on the left"): a dataset on which a
tiny random model can learn retrieval from scratch in seconds (tests, demos)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (40, 60, 230),
           "yellow": (235, 210, 30)}
SHAPES = ("circle", "square", "triangle")
PLACES = {"on the left": (0.28, 0.5), "on the right": (0.72, 0.5), "at the top": (0.5, 0.28),
          "at the bottom": (0.5, 0.72)}


def caption(colour: str, shape: str, place: str) -> str:
    return f"a {colour} {shape} {place}"


def all_captions() -> list[str]:
    return [caption(c, s, p) for c in COLOURS for s in SHAPES for p in PLACES]


def draw(colour: str, shape: str, place: str, size: int, rng: np.random.Generator
         ) -> Image.Image:
    """One picture: jittered position, size and background grey."""
    bg = int(rng.integers(200, 256))
    im = Image.new("RGB", (size, size), (bg, bg, bg))
    d = ImageDraw.Draw(im)
    cx, cy = PLACES[place]
    cx = (cx + rng.uniform(-0.06, 0.06)) * size
    cy = (cy + rng.uniform(-0.06, 0.06)) * size
    r = size * rng.uniform(0.14, 0.2)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        d.polygon(((cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)), fill=fill)
    return im


def write_shapes_dataset(root: str | Path, per_caption: dict[str, int] | None = None,
                         size: int = 32, seed: int = 0) -> Path:
    """An imagefolder dataset (train/ and validation/ with metadata.jsonl) of shape pictures."""
    per_caption = per_caption or {"train": 6, "validation": 2}
    root = Path(root)
    rng = np.random.default_rng(seed)
    combos = [(c, s, p) for c in COLOURS for s in SHAPES for p in PLACES]
    for split, n in per_caption.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for k, (c, s, p) in enumerate(combos):
            for j in range(n):
                name = f"{k:03d}_{j}.png"
                draw(c, s, p, size, rng).save(folder / name)
                rows.append({"file_name": name, "text": caption(c, s, p),
                             "keywords": [c, s]})
        with open(folder / "metadata.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return root
