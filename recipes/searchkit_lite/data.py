"""Training and validation data for the bundled searchkit-lite model.

Only legitimate training signals are read here: the ``align`` pairs without their ``fluent3d``
part, the ImageNet class names and WordNet (glosses, hypernyms). Evaluation-only data (CIFAR-10,
scikit-image samples, Tux Paint stamps, Twitter emoji) is never read by this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HELD_OUT_SOURCES = frozenset({"fluent3d"})  # the fine-tuning demo catalog: never trained on


@dataclass(frozen=True)
class AlignRow:
    path: Path
    text: str
    source: str
    keywords: tuple[str, ...]
    description: str
    category: str


@dataclass(frozen=True)
class ImagenetClass:
    index: int
    synset: str        # WordNet 3.0 noun offset id, e.g. n01440764
    names: tuple[str, ...]


def read_align(split_dir: str | Path, exclude: frozenset[str] = HELD_OUT_SOURCES) -> list[AlignRow]:
    """Rows of an align split (``metadata.jsonl``), without the excluded sources."""
    split_dir = Path(split_dir)
    rows = []
    with open(split_dir / "metadata.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if r.get("source") in exclude:
                continue
            rows.append(AlignRow(split_dir / r["file_name"], r["text"], r.get("source", ""),
                                 tuple(r.get("keywords") or ()), r.get("description") or "",
                                 r.get("category") or ""))
    return rows


def read_imagenet_classes(path: str | Path) -> list[ImagenetClass]:
    """``index<TAB>synset<TAB>name, name, ...`` lines, in index order."""
    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        idx, synset, names = line.split("\t")
        out.append(ImagenetClass(int(idx), synset,
                                 tuple(n.strip() for n in names.split(",") if n.strip())))
    return out


@dataclass(frozen=True)
class Synset:
    offset: str
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]
    gloss: str


def read_wordnet_nouns(data_noun: str | Path) -> dict[str, Synset]:
    """Parse WordNet 3.0's ``data.noun`` (Debian ``wordnet-base``) into synsets by offset."""
    out: dict[str, Synset] = {}
    with open(data_noun, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(" "):
                continue  # licence header
            head, _, gloss = line.partition(" | ")
            parts = head.split()
            offset, n_words = parts[0], int(parts[3], 16)
            lemmas = tuple(parts[4 + 2 * i].replace("_", " ") for i in range(n_words))
            i = 4 + 2 * n_words
            n_ptr = int(parts[i])
            hyper = tuple(parts[i + 2 + 4 * k] for k in range(n_ptr)
                          if parts[i + 1 + 4 * k] in ("@", "@i"))
            out[offset] = Synset(offset, lemmas, hyper, gloss.strip().split(";")[0].strip())
    return out


def hypernym_names(synsets: dict[str, Synset], offset: str, depth: int) -> list[str]:
    """First lemmas of the first-hypernym chain above ``offset`` (nearest first)."""
    names, cur = [], synsets.get(offset)
    while cur is not None and cur.hypernyms and len(names) < depth:
        cur = synsets.get(cur.hypernyms[0])
        if cur is not None:
            names.append(cur.lemmas[0])
    return names
