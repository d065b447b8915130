"""Rows and engines for the storage-engine tests (tests/test_engine_contract.py,
tests/milvus/test_engine_lite.py): a catalog whose names, sizes, dates, formats and cameras
exercise every search filter, written to either engine."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from searchkit.query import Filters
from searchkit.store import STATUS_OK, STATUS_SKIPPED, SKIP_DECODE, FileRow
from tests.helpers import by_score_then_path

DIM = 8
MODEL = ("tiny-test-model", "fingerprint-1")
ENGINE_KINDS = ("local", "milvus")


def unit_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


# path, (width, height), format, taken, (camera make, model), content (rows sharing one share
# their vector, as the indexer's copies do)
D = datetime
CATALOG = [
    ("/photos/2020/IMG_0001.jpg", (4000, 3000), "JPEG", D(2020, 5, 1, 10),
     ("Canon", "Canon EOS 5D"), "a"),
    ("/photos/2020/IMG_0002.jpg", (4000, 3000), "MPO", D(2020, 6, 1), ("Canon", "EOS 50D"), "b"),
    ("/photos/2020/IMGX0003.jpg", (640, 480), "JPEG", D(2020, 6, 1, 0, 0, 1),
     ("NIKON CORPORATION", "NIKON D_X"), "c"),
    ("/photos/2020/copy of IMG_0001.jpg", (4000, 3000), "JPEG", D(2020, 5, 1, 10),
     ("Canon", "Canon EOS 5D"), "a"),
    ("/photos/2020/50%off.png", (1200, 800), "PNG", None, (None, None), "d"),
    ("/photos/2020/5Xoff.png", (1200, 800), "PNG", None, (None, "Pixel 7"), "e"),
    ("/photos/2020-extra/a1.png", (300, 300), "PNG", D(2019, 12, 31, 23, 59), (None, None), "f"),
    ("/photos/2021/ünïcode Ä.jpg", (None, None), "JPEG", D(2021, 1, 1), ("ÜBERCAM", "ü-1"), "g"),
    ("/photos/2021/a2.png", (2000, 2000), "PNG", D(2021, 2, 2), ("Apple", "iPhone 15 Pro"), "h"),
    ("/photos/2021/raw/DSC_1.nef", (6000, 4000), "NEF", D(2021, 3, 3), ("NIKON", "Z 6"), "i"),
    ("/photos/2021/raw/DSC_1 copy.nef", (6000, 4000), "NEF", D(2021, 3, 3), ("NIKON", "Z 6"),
     "i"),
    ("/photos/2021/scan.tif", (2480, 3508), "TIFF", None, ("Epson", None), "j"),
    ("/photos/2021/no-format", (None, 50), None, None, (None, None), "k"),
    ("/other/[brackets] 1.jpg", (800, 600), "JPEG", D(2022, 7, 7), ("canon", "powershot"), "l"),
    ("/other/q\"uote\\back.jpg", (801, 601), "JPEG", D(2022, 7, 8),
     ("Canon", "PowerShot G7 X"), "m"),
    ("/photos", (10, 10), "GIF", None, (None, None), "n"),
]
SKIPPED = ["/photos/2020/broken.jpg", "/photos/2021/empty.png", "/other/bad.heic"]


def catalog_rows() -> list[FileRow]:
    """The catalog as rows: ok rows with vectors, and skipped ones."""
    contents = sorted({c[-1] for c in CATALOG})
    vectors = dict(zip(contents, unit_vectors(len(contents), seed=7)))
    rows = []
    for i, (path, (w, h), fmt, taken, (make, model), content) in enumerate(CATALOG):
        rows.append(FileRow(path, 1000 + i, 1_600_000_000_000_000_000 + i * 86_400 * 10**9,
                            f"hash-{content}", w, h, fmt, taken, make, model, STATUS_OK, None,
                            None, vectors[content].tobytes(), 1.0))
    for i, path in enumerate(SKIPPED):
        rows.append(FileRow(path, 10 + i, 1_500_000_000_000_000_000, None, None, None, None,
                            None, None, None, STATUS_SKIPPED, "cannot decode", SKIP_DECODE,
                            None, 1.0))
    return rows


def milvus_available() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return True


needs_milvus = pytest.mark.skipif(
    not milvus_available(), reason="pymilvus and milvus-lite (searchkit[milvus]) not installed")
ENGINE_PARAMS = [pytest.param("local"), pytest.param("milvus", marks=needs_milvus)]


@contextmanager
def state_dir(path: Path) -> Iterator[None]:
    """Milvus write locks under ``path`` (not the user's cache) meanwhile."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEARCHKIT_STATE_DIR", str(path / "state"))
        yield


def new_engine(kind: str, base: Path, **milvus_options):
    """An empty library of ``kind`` under ``base``, bound to the test model."""
    if kind == "local":
        from searchkit.local_engine import LocalEngine
        engine = LocalEngine.at(base / "local", create=True)
    else:
        from searchkit.milvus import open_milvus_engine
        engine = open_milvus_engine(f"milvus://{base}/lite.db/lib", create=True,
                                    **milvus_options)
    engine.create(*MODEL, DIM)
    return engine


def paths_of(engine, ids) -> list[str]:
    files = engine.get_files([int(i) for i in ids])
    return [files[int(i)].path for i in ids]


# ---- every filter, and what a search within one finds --------------------------------------
FILTERS = [
    Filters(),
    Filters(path_prefix="/photos/2020"),
    Filters(path_prefix="/photos/2020/"),
    Filters(path_prefix="/photos"),
    Filters(path_glob="*.jpg"),
    Filters(path_glob="IMG_0*"),                      # no leading * or /: matches the end
    Filters(path_glob="/photos/2021/*"),              # a literal start: a range
    Filters(path_glob="/photos"),                     # a literal path
    Filters(path_glob="*50%*"),                       # % and _ are literal in a glob
    Filters(path_glob="*/a?.png"),
    Filters(path_glob="*q\"uote\\*"),
    Filters(path_glob="*"),
    Filters(date_from=datetime(2020, 6, 1)),
    Filters(date_to=datetime(2020, 6, 1)),
    Filters(date_from=datetime(2020, 5, 1, 10), date_to=datetime(2021, 1, 1)),
    Filters(date_from=datetime(2020, 6, 1, tzinfo=timezone.utc)),
    Filters(date_from=datetime(1, 1, 1), date_to=datetime(9999, 12, 31)),
    Filters(date_field="modified", date_from=datetime(2020, 9, 20)),
    Filters(date_field="modified", date_to=datetime(2020, 9, 20, 12)),
    Filters(min_width=1200),
    Filters(min_height=3000),
    Filters(min_width=-5),                            # unknown widths still never pass
    Filters(formats=("jpg",)),                        # JPEG and MPO
    Filters(formats=("png", "raw", "TIF")),
    Filters(formats=("webp",)),
    Filters(camera="canon"),
    Filters(camera="EOS 5"),
    Filters(camera="d_x"),
    Filters(camera="ü"),
    Filters(camera="apple iphone"),                   # make and model together
    Filters(camera=" "),
    Filters(path_prefix="/photos", formats=("jpeg",), min_width=1000, camera="canon"),
    Filters(path_glob="*.png", date_from=datetime(2019, 1, 1), min_height=300),
]


def filters_name(f: Filters) -> str:
    return ",".join(f"{k}={v}" for k, v in dataclasses.asdict(f).items()
                    if v not in (None, (), "") and k != "date_field") or "none"


def ranked(engine, filters: Filters) -> list[tuple[float, str]]:
    """Every ok row within ``filters`` for one query: (score, path), best first; equal
    scores (copies) in path order, since ids differ between engines."""
    query = unit_vectors(1, seed=99)[0]
    scores, ids = engine.search(query, len(CATALOG) + 5, filters)
    hits = [(float(s), p) for s, p in zip(scores, paths_of(engine, ids))]
    assert [s for s, _ in hits] == sorted((s for s, _ in hits), reverse=True)
    return by_score_then_path(hits)
