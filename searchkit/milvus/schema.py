"""The layout of a library in Milvus: the files collection and its meta collection, the
stable row keys, the conversion of rows to entities and back, and the index chosen by size.

Fields hold no nulls (Milvus 2.3 has no nullable fields): a missing width or height is
``MISSING_INT``, a missing time taken ``MISSING_TIME``, a missing text ``""``; a skipped row
holds a zero vector (never searched: every search keeps ``status == "ok"`` only).

The vector index by size (:func:`choose_index`), on a server:

    ok rows         index     build                       search
    < 50k           FLAT      -                           exact
    >= 50k          IVF_SQ8   nlist = 4 sqrt(n) in        nprobe: lists holding ~32k rows
                              [1,024, 65,536]             (at least 16), times 1 / share of
                                                          the rows a filter keeps (counted
                                                          first), at most nlist

A filter keeps its local meaning (the best k rows it keeps): widening nprobe by the share kept
scans about as many allowed rows as an unfiltered search scans rows, as the local engine does
(:func:`searchkit.ann.filtered_nprobe`); recall@10 0.99 at 1-100 % kept on the 2.3 server,
100k rows. HNSW is not chosen: its filtered recall was 0.84-0.92 for filters keeping 10-20 %,
even with ef widened the same way (bench/results/milvus.md). Milvus Lite stays FLAT.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import numpy as np

from .. import ann
from ..store import STATUS_OK, File, FileRow, RowState

SCHEMA_VERSION = 1            # of this layout (LibraryInfo.schema_version of a Milvus library)
META_SUFFIX = "__searchkit_meta"
META_DIM = 2                  # Milvus wants a vector field in every collection
TEXT_MAX = 65_535             # VARCHAR max_length (bytes)
MISSING_INT = -1              # width / height unknown
MISSING_TIME = -(2 ** 62)     # taken_at unknown (microseconds; years 1-9999 lie within +-2**58)
EPOCH = datetime(1970, 1, 1)
ROOT_KEY = "root:"            # meta key of an indexed folder: ROOT_KEY + path -> added_at
INT_FIELDS = ("size", "mtime_ns", "width", "height", "taken_at")
TEXT_FIELDS = ("path", "content_hash", "format", "camera_make", "camera_model", "camera_key",
               "status", "reason", "skip_source")
ROW_FIELDS = ["id", *INT_FIELDS, *TEXT_FIELDS, "indexed_at"]   # every field but the vector
ROW_STATE_FIELDS = [f.name for f in fields(RowState) if f.name != "id"]
VECTOR = "vector"
METRIC = "IP"                 # inner product of L2-normalised vectors: cosine, as locally

# ---- the index by size (like searchkit.ann: exact below FLAT_MAX_ROWS) -----------------------
FLAT = "FLAT"
HNSW = "HNSW"                         # no longer chosen (filtered recall, below); still read
IVF_SQ8 = "IVF_SQ8"
IVF_FLAT = "IVF_FLAT"
IVF_KINDS = (IVF_SQ8, IVF_FLAT)
FLAT_MAX_ROWS = ann.FLAT_MAX_ROWS     # below: exact search
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
HNSW_MIN_EF = 64                      # ef at search: max(this, k) / share of rows kept
HNSW_MAX_EF = 32_768                  # the 2.3 server's limit
IVF_LISTS_PER_SQRT = 4                # nlist = 4 sqrt(n) (Milvus's advice), within these:
IVF_MIN_LISTS, IVF_MAX_LISTS = 1_024, 65_536
IVF_ROWS_PER_LIST = 39                # at least (k-means's minimum; binds below 40k rows only)
IVF_SCAN_ROWS = 32_768                # nprobe: lists holding about this many rows (no re-rank)
IVF_MIN_NPROBE = 16


@dataclass(frozen=True)
class IndexChoice:
    """The vector index for a number of rows, and how it is searched."""
    kind: str
    nlist: int = 0
    nprobe: int = 0

    def build_params(self) -> dict:
        if self.kind == HNSW:
            return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}
        if self.kind in IVF_KINDS:
            return {"nlist": self.nlist}
        return {}

    def search_params(self, k: int, kept: float = 1.0) -> dict:
        """How to search for the best ``k`` among rows of which a filter keeps the share
        ``kept``: the search widens by ``1 / kept`` (like :func:`searchkit.ann.filtered_nprobe`),
        so that about as many allowed rows are scanned as an unfiltered search scans rows."""
        widen = 1.0 / min(1.0, max(kept, 1e-9))
        if self.kind == HNSW:
            return {"ef": min(HNSW_MAX_EF, max(k, math.ceil(max(HNSW_MIN_EF, k) * widen)))}
        if self.kind in IVF_KINDS:
            return {"nprobe": min(self.nlist, math.ceil(self.nprobe * widen))}
        return {}

    def record(self) -> str:
        return json.dumps({"kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe})

    @classmethod
    def of(cls, record: str | None) -> "IndexChoice":
        try:
            data = json.loads(record or "")
            return cls(str(data["kind"]), int(data["nlist"]), int(data["nprobe"]))
        except (ValueError, KeyError, TypeError):
            return cls(FLAT)


def choose_index(n: int, flat_max_rows: int = FLAT_MAX_ROWS,
                 scan_rows: int = IVF_SCAN_ROWS) -> IndexChoice:
    """FLAT below ``flat_max_rows`` (exact, like the local engine), IVF_SQ8 from there
    (:func:`ivf_index`; a quarter of the float32 bytes, ~400 B a 512-d vector loaded).

    Not HNSW: on the 2.3 server a filtered HNSW search keeping 10-20 % of the rows found
    0.84-0.90 of the true top 10 at ef 64 and 0.92-0.95 with ef widened by 1 / share kept,
    while IVF_SQ8 with nprobe widened the same way found 0.99 at every share from 1 % to
    100 %, with HNSW's latency and a fifth of its memory (bench/results/milvus.md)."""
    if n < flat_max_rows:
        return IndexChoice(FLAT)
    return ivf_index(n, scan_rows=scan_rows)


def ivf_index(n: int, kind: str = IVF_SQ8, scan_rows: int = IVF_SCAN_ROWS) -> IndexChoice:
    """An IVF index for ``n`` rows: nlist = 4 sqrt(n) (Milvus's advice, within bounds, and
    ``IVF_ROWS_PER_LIST`` rows a list at least: small test libraries), and nprobe so that an unfiltered search scans about ``scan_rows`` rows (a filtered one widens
    it by 1 / share kept: :meth:`IndexChoice.search_params`)."""
    nlist = min(IVF_MAX_LISTS, max(IVF_MIN_LISTS, int(IVF_LISTS_PER_SQRT * math.sqrt(n))),
                max(1, n // IVF_ROWS_PER_LIST))
    nprobe = min(nlist, max(IVF_MIN_NPROBE, math.ceil(scan_rows * nlist / max(1, n))))
    return IndexChoice(kind, nlist, nprobe)


# ---- keys ----------------------------------------------------------------------------------
def path_key(path: str) -> int:
    """The row key of ``path``: its first 8 bytes of blake2b as a positive 63-bit integer, the
    same on every machine and every run (so a retried write replaces, never duplicates)."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def meta_name(collection: str) -> str:
    return collection + META_SUFFIX


# ---- values --------------------------------------------------------------------------------
def time_to_us(moment: datetime | None) -> int:
    """A time taken as microseconds from 1970-01-01 on its own clock (a zone it carries is
    ignored, as the local store's text does), or ``MISSING_TIME``."""
    if moment is None:
        return MISSING_TIME
    return (moment.replace(tzinfo=None) - EPOCH) // timedelta(microseconds=1)


def time_of_us(us: int) -> datetime | None:
    return None if us == MISSING_TIME else EPOCH + timedelta(microseconds=int(us))


def camera_key(make: str | None, model: str | None) -> str:
    """What the camera filter looks in: ``make model`` with ASCII letters in lower case (as
    SQLite's ``lower()``, which the local engine's filter uses, leaves other letters alone)."""
    text = f"{make or ''} {model or ''}"
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


def _text(value: str | None, name: str) -> str:
    text = value or ""
    if len(text.encode("utf-8")) > TEXT_MAX:
        raise ValueError(f"{name} is longer than Milvus stores ({TEXT_MAX} bytes)")
    return text


def vector_values(blob: bytes | None, dim: int, status: str) -> list[float]:
    """The stored vector of a row as Milvus takes it; a skipped row's is zeros. Raises
    ValueError (a row's own error: the indexer records that file as skipped) for a vector
    of the wrong size or not finite."""
    if blob is None:
        if status == STATUS_OK:
            raise ValueError("an indexed row has no vector")
        return [0.0] * dim
    if len(blob) != dim * 4:
        raise ValueError(f"vector of {len(blob)} bytes, expected {dim * 4}")
    v = np.frombuffer(blob, dtype=np.float32)
    if not np.isfinite(v).all():
        raise ValueError("vector not finite")
    return v.tolist()


def entity(row: FileRow, dim: int) -> dict:
    """A row as a Milvus entity, keyed by its path."""
    return {"id": path_key(row.path), "path": _text(row.path, "path"), "size": int(row.size),
            "mtime_ns": int(row.mtime_ns),
            "content_hash": _text(row.content_hash, "content hash"),
            "width": MISSING_INT if row.width is None else int(row.width),
            "height": MISSING_INT if row.height is None else int(row.height),
            "format": _text(row.format, "format"), "taken_at": time_to_us(row.taken_at),
            "camera_make": _text(row.camera_make, "camera make"),
            "camera_model": _text(row.camera_model, "camera model"),
            "camera_key": _text(camera_key(row.camera_make, row.camera_model), "camera"),
            "status": _text(row.status, "status"), "reason": _text(row.reason, "reason"),
            "skip_source": _text(row.skip_source, "skip source"),
            "indexed_at": float(row.indexed_at),
            VECTOR: vector_values(row.vector, dim, row.status)}


def _known_int(v) -> int | None:
    return None if v == MISSING_INT else int(v)


# An entity's values as the local store gives them (None where nothing is known), by field.
_READ = {"path": str, "size": int, "mtime_ns": int, "content_hash": lambda v: v or None,
         "width": _known_int, "height": _known_int, "format": lambda v: v or None,
         "taken_at": lambda v: time_of_us(v), "camera_make": lambda v: v or None,
         "camera_model": lambda v: v or None, "status": str, "reason": lambda v: v or None,
         "skip_source": lambda v: v or None, "indexed_at": float}


def _values(e: dict, names) -> dict:
    return {name: _READ[name](e[name]) for name in names}


def vector_blob(e: dict) -> bytes | None:
    """The stored vector of an entity as the local store keeps it (None for a skipped row)."""
    if e.get("status") != STATUS_OK or VECTOR not in e:
        return None
    return np.asarray(e[VECTOR], dtype=np.float32).tobytes()


def file_of(e: dict) -> File:
    """An entity as a (detached) :class:`~searchkit.store.File`, the record hits are made of."""
    return File(id=int(e["id"]), vector=vector_blob(e), **_values(e, _READ))


def file_row_of(e: dict) -> FileRow:
    return FileRow(vector=vector_blob(e), **_values(e, _READ))


def row_state_of(e: dict) -> RowState:
    return RowState(int(e["id"]), **_values(e, ROW_STATE_FIELDS))


def add_fields(schema, dim: int, data_type) -> None:
    """The files collection's fields (``data_type``: pymilvus.DataType)."""
    schema.add_field("id", data_type.INT64, is_primary=True)
    for name in INT_FIELDS:
        schema.add_field(name, data_type.INT64)
    for name in TEXT_FIELDS:
        schema.add_field(name, data_type.VARCHAR, max_length=TEXT_MAX)
    schema.add_field("indexed_at", data_type.DOUBLE)
    schema.add_field(VECTOR, data_type.FLOAT_VECTOR, dim=dim)


def add_meta_fields(schema, data_type) -> None:
    schema.add_field("key", data_type.VARCHAR, max_length=TEXT_MAX, is_primary=True)
    schema.add_field("value", data_type.VARCHAR, max_length=TEXT_MAX)
    schema.add_field(VECTOR, data_type.FLOAT_VECTOR, dim=META_DIM)
