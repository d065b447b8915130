"""Image-caption pairs through Hugging Face ``datasets``.

Sources: an ``imagefolder`` directory (``train/``, ``validation/``, ... each with
``metadata.jsonl`` or ``metadata.csv``: ``file_name`` + a caption column), a single
``metadata.jsonl``/``.csv`` at a directory's top, a CSV / JSONL file of image path + caption, or a
hub dataset name (its image column is read undecoded). Splits are used as given; without a
validation split a fraction is held out with a fixed seed. Bad rows (missing or unreadable
image, empty caption) are counted, reported and skipped.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from searchkit.errors import SearchkitError
from searchkit.imageio import ImageDecodeError, open_image

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
IMAGE_COLUMNS = ("image", "file_name", "image_path", "path", "filepath", "file", "img")
TRAIN_SPLITS = ("train",)
VALIDATION_SPLITS = ("validation", "valid", "val", "test")
DECODE_WORKERS = 4
MIN_SIDE = 8          # smaller images are bad rows (likely broken thumbnails)


class DataError(SearchkitError):
    """The dataset cannot be read at all (wrong path, no caption column, ...)."""


@dataclass(frozen=True)
class DataConfig:
    caption_column: str = "text"
    image_column: str | None = None             # None: the first of IMAGE_COLUMNS present
    keyword_column: str | None = None           # extra captions (a list or comma string)
    train_split: str | None = None              # None: "train" or the only split
    validation_split: str | None = None         # None: "validation"/"val"/"test" if present
    holdout: float = 0.1                        # fraction held out when there is no val split
    seed: int = 0
    where: tuple[tuple[str, str], ...] = ()     # keep rows whose column equals the value
    where_not: tuple[tuple[str, str], ...] = ()  # ... and drop rows whose column equals it
    limit: int | None = None                    # at most this many rows per split (first ones)
    decode_workers: int = DECODE_WORKERS


@dataclass(frozen=True)
class Pair:
    image: str | bytes                 # a file path, or encoded bytes (hub datasets)
    caption: str
    keywords: tuple[str, ...] = ()
    key: str = ""                      # a readable id (path or split:row) for reports


@dataclass(frozen=True)
class BadRow:
    split: str
    key: str
    reason: str


@dataclass
class PairSplit:
    name: str
    pairs: list[Pair]
    bad: list[BadRow] = field(default_factory=list)

    def captions(self) -> list[str]:
        return [p.caption for p in self.pairs]


@dataclass
class PairData:
    train: PairSplit
    validation: PairSplit

    @property
    def bad(self) -> list[BadRow]:
        return self.train.bad + self.validation.bad


# ---- reading rows ------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    builder: str                       # "json", "csv" or a hub name
    data_files: dict[str, str] | None  # split -> file
    base_dirs: dict[str, Path]         # split -> folder that relative image paths start from


def _metadata_file(folder: Path) -> Path | None:
    return next((folder / m for m in METADATA_FILES if (folder / m).is_file()), None)


def _builder_for(path: Path) -> str:
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "json"


def find_source(data: str) -> _Source:
    """Where the rows of DATA are: local metadata files per split, or a hub dataset."""
    path = Path(data).expanduser()
    if path.is_file():
        return _Source(_builder_for(path), {"train": str(path)}, {"train": path.parent})
    if path.is_dir():
        files, bases = {}, {}
        top = _metadata_file(path)
        if top is not None:
            files["train"], bases["train"] = str(top), path
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            meta = _metadata_file(sub)
            if meta is not None:
                files[sub.name], bases[sub.name] = str(meta), sub
        if not files:
            raise DataError(f"{data}: no metadata.jsonl or metadata.csv in it or its split folders")
        builders = {_builder_for(Path(f)) for f in files.values()}
        if len(builders) > 1:
            raise DataError(f"{data}: mixes CSV and JSONL metadata files")
        return _Source(builders.pop(), files, bases)
    if data.startswith((".", "/", "~")) or not data.strip():
        raise DataError(f"dataset not found: {data}")
    return _Source(data, None, {})


def _load_rows(src: _Source) -> dict[str, Any]:
    """split -> a ``datasets.Dataset`` (images undecoded)."""
    import datasets
    try:
        if src.data_files is not None:
            dd = datasets.load_dataset(src.builder, data_files=src.data_files)
        else:
            dd = datasets.load_dataset(src.builder)
    except Exception as e:  # datasets raises many types; all mean "cannot read it"
        raise DataError(f"cannot read dataset {src.builder!r}: {str(e).splitlines()[0]}") from e
    out = {}
    for name, ds in dd.items():
        for col, feat in ds.features.items():
            if isinstance(feat, datasets.Image):
                ds = ds.cast_column(col, datasets.Image(decode=False))
        out[name] = ds
    return out


def _choose_split(names: Sequence[str], wanted: str | None, preferred: Sequence[str],
                  what: str) -> str:
    """The named split, else the first preferred one present, else the only one."""
    split = wanted or next((s for s in preferred if s in names), None)
    if split is None:
        if len(names) != 1:
            raise DataError(f"no {what} split among {', '.join(names)}: name one")
        split = names[0]
    if split not in names:
        raise DataError(f"no split {split!r} (have {', '.join(names)})")
    return split


def _pick_splits(names: Sequence[str], cfg: DataConfig) -> tuple[str, str | None]:
    train = _choose_split(names, cfg.train_split, TRAIN_SPLITS, "train")
    val = cfg.validation_split or next((s for s in VALIDATION_SPLITS if s in names), None)
    if val is not None and val not in names:
        raise DataError(f"no split {val!r} (have {', '.join(names)})")
    return train, val


def _image_column(columns: Sequence[str], cfg: DataConfig) -> str:
    if cfg.image_column:
        if cfg.image_column not in columns:
            raise DataError(f"no image column {cfg.image_column!r} (have {', '.join(columns)})")
        return cfg.image_column
    col = next((c for c in IMAGE_COLUMNS if c in columns), None)
    if col is None:
        raise DataError(f"no image column (looked for {', '.join(IMAGE_COLUMNS)}; "
                        f"have {', '.join(columns)})")
    return col


def _keywords(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(k.strip() for k in value if isinstance(k, str) and k.strip())


def _image_ref(value: Any, base: Path | None) -> str | bytes | None:
    if isinstance(value, dict):  # a datasets.Image cell, undecoded
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if not isinstance(value, str) or not value.strip():
        return None
    p = Path(value).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p)


def rows_to_pairs(rows: Sequence[dict], split: str, base: Path | None, cfg: DataConfig
                  ) -> PairSplit:
    """Typed pairs from raw rows; rows without a caption or image reference are bad rows."""
    pairs, bad = [], []
    for i, row in enumerate(rows):
        if any(str(row.get(k)) != v for k, v in cfg.where) or \
                any(str(row.get(k)) == v for k, v in cfg.where_not):
            continue
        img_col = _image_column(list(row), cfg)
        image = _image_ref(row.get(img_col), base)
        key = image if isinstance(image, str) else f"{split}:{i}"
        caption = row.get(cfg.caption_column)
        if image is None:
            bad.append(BadRow(split, key, "no image path"))
        elif not isinstance(caption, str) or not caption.strip():
            bad.append(BadRow(split, key, "empty caption"))
        else:
            kw = _keywords(row.get(cfg.keyword_column)) if cfg.keyword_column else ()
            pairs.append(Pair(image, " ".join(caption.split()), kw, key))
        if cfg.limit and len(pairs) >= cfg.limit:
            break
    return PairSplit(split, pairs, bad)


# ---- checking images ---------------------------------------------------------------------------
def load_image(ref: str | bytes) -> Image.Image:
    """Decode one pair's image to RGB (raises ImageDecodeError with a reason)."""
    image, _ = open_image(ref)
    if min(image.size) < MIN_SIDE:
        raise ImageDecodeError(f"image too small ({image.size[0]}x{image.size[1]})")
    return image


def _check(pair: Pair) -> str | None:
    try:
        load_image(pair.image)
        return None
    except ImageDecodeError as e:
        return str(e)
    except Exception as e:  # never fatal
        return f"cannot decode: {type(e).__name__}"


def drop_unreadable(split: PairSplit, workers: int = DECODE_WORKERS) -> PairSplit:
    """Decode every image once; unreadable ones become bad rows."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(pool.map(_check, split.pairs))
    good = [p for p, r in zip(split.pairs, reasons) if r is None]
    bad = [BadRow(split.name, p.key, r) for p, r in zip(split.pairs, reasons) if r is not None]
    for b in bad:
        log.info("skipping %s: %s", b.key, b.reason)
    return PairSplit(split.name, good, split.bad + bad)


def holdout_split(split: PairSplit, fraction: float, seed: int) -> tuple[PairSplit, PairSplit]:
    """Hold out ``fraction`` of the *distinct captions* (so no caption is on both sides)."""
    if not 0 < fraction < 1:
        raise DataError(f"held-out fraction must be between 0 and 1, not {fraction}")
    captions = sorted({p.caption for p in split.pairs})
    random.Random(seed).shuffle(captions)
    n_val = max(1, round(len(captions) * fraction)) if len(captions) > 1 else 0
    val_caps = set(captions[:n_val])
    train = [p for p in split.pairs if p.caption not in val_caps]
    val = [p for p in split.pairs if p.caption in val_caps]
    return PairSplit("train", train, split.bad), PairSplit("validation", val)


def load_pairs(data: str, cfg: DataConfig = DataConfig()) -> PairData:
    """Train and validation pairs of DATA, bad rows counted and skipped."""
    src = find_source(data)
    tables = _load_rows(src)
    train_name, val_name = _pick_splits(list(tables), cfg)

    def read(name: str) -> PairSplit:
        return _read_split(tables, src, name, cfg)

    train = read(train_name)
    if val_name is None:
        train, val = holdout_split(train, cfg.holdout, cfg.seed)
    else:
        val = read(val_name)
    if not train.pairs:
        raise DataError(f"{data}: no usable training pairs ({len(train.bad)} bad rows)")
    return PairData(train, val)


def load_split(data: str, cfg: DataConfig = DataConfig(), split: str | None = None) -> PairSplit:
    """One split for evaluation: ``split``, else the validation split, else the only split."""
    src = find_source(data)
    tables = _load_rows(src)
    names = list(tables)
    split = _choose_split(names, split, VALIDATION_SPLITS, "validation")
    return _read_split(tables, src, split, cfg)


def _read_split(tables: dict[str, Any], src: _Source, name: str, cfg: DataConfig) -> PairSplit:
    rows = tables[name].to_list()
    if rows and cfg.caption_column not in rows[0]:
        raise DataError(f"no caption column {cfg.caption_column!r} in split {name!r} "
                        f"(have {', '.join(rows[0])}); use --caption-column")
    return drop_unreadable(rows_to_pairs(rows, name, src.base_dirs.get(name), cfg),
                           cfg.decode_workers)


def with_where(cfg: DataConfig, specs: Sequence[str]) -> DataConfig:
    """Parse ``column=value`` (keep) and ``column!=value`` (drop) filters into the config."""
    where, where_not = [], []
    for s in specs:
        if "=" not in s:
            raise DataError(f"bad filter {s!r}: use column=value or column!=value")
        k, v = s.split("=", 1)
        k = k.strip()
        if k.endswith("!"):
            where_not.append((k[:-1].strip(), v.strip()))
        else:
            where.append((k, v.strip()))
    return replace(cfg, where=tuple(where), where_not=tuple(where_not))
