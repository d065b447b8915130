"""Precomputed embeddings as Parquet: the one definition of the format, and pure functions that
read (validating every row) and write it. No database here: ``Library.import_parquet`` and
``Library.export_parquet`` store and read the rows.

The format (what ``searchkit export`` writes and ``searchkit import`` reads):

- ``path``: the image's path, text, stored as given (it need not exist where it is imported);
  it must be absolute, since the library names every file by its absolute path;
- ``vector``: a list of floats of the model's dimension (export writes a fixed-size list of
  float32); a vector that is not of unit norm is normalised (only its direction counts);
- optional ``width``, ``height`` (integers), ``format`` (``JPEG``, ``PNG``, ...), ``taken_at``
  (timestamp), ``camera_make``, ``camera_model`` (text), and ``content_hash`` (the blake2b-128
  hex digest of the file's bytes, as the indexer computes it: a later index run that finds the
  file with this content keeps the imported vector instead of encoding the file again);
- schema metadata ``searchkit.model`` and ``searchkit.model_fingerprint``: the model that made
  the vectors, as a library records it.

A bad row (no path, a relative or non-text path, a duplicate path, a vector that is missing, of
another dimension, zero, NaN or infinite, a value out of range) is reported and skipped; a bad
file (not Parquet, no ``path`` or ``vector`` column, a column of the wrong type) is one error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import SearchkitError
from .fsinfo import CONTENT_HASH_BYTES
from .store import META_COLUMNS, NORM_TOLERANCE

MODEL_KEY = "searchkit.model"
FINGERPRINT_KEY = "searchkit.model_fingerprint"
PATH, VECTOR, CONTENT_HASH = "path", "vector", "content_hash"
INT_COLUMNS = ("width", "height")
TEXT_COLUMNS = ("format", "camera_make", "camera_model")
TAKEN_AT = "taken_at"
OPTIONAL_COLUMNS = META_COLUMNS + (CONTENT_HASH,)
BATCH_ROWS = 8192              # rows read (and stored) at a time: memory stays flat
MAX_SIDE = 2 ** 31 - 1         # width and height beyond this are not an image's
_HASH = re.compile(f"[0-9a-f]{{{2 * CONTENT_HASH_BYTES}}}")


@dataclass(frozen=True)
class FileModel:
    """The model a file's vectors come from, as its schema metadata names it (None: absent)."""
    name: str | None
    fingerprint: str | None

    @property
    def named(self) -> bool:
        return self.name is not None and self.fingerprint is not None


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped: its number in the file (from 0), its path if it has one."""
    row: int
    path: str | None
    reason: str


@dataclass
class RowBatch:
    """The valid rows of one batch, in file order, and the bad ones."""
    paths: list[str]
    vectors: np.ndarray                        # (len(paths), dim) float32, unit norm
    columns: dict[str, list]                   # each optional column the file has, by name
    renormalised: int = 0                      # vectors that were not of unit norm
    bad: list[BadRow] = field(default_factory=list)


def file_error(path: str | os.PathLike, what: str) -> SearchkitError:
    return SearchkitError(f"cannot import {os.fspath(path)}: {what}")


class EmbeddingsReader:
    """A Parquet file of embeddings, opened and its schema checked; :meth:`batches` streams
    its rows (``BATCH_ROWS`` at a time, only the columns it needs)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = _open_parquet(self.path)
        schema = self._file.schema_arrow
        self.model = _file_model(schema)
        self.rows = self._file.metadata.num_rows
        for name in (PATH, VECTOR):
            if schema.get_field_index(name) < 0:
                raise file_error(path, f"it has no {name!r} column")
        _check_types(self.path, schema)
        self.optional = tuple(c for c in OPTIONAL_COLUMNS if schema.get_field_index(c) >= 0)
        vtype = schema.field(VECTOR).type
        self.dim = vtype.list_size if pa.types.is_fixed_size_list(vtype) else None

    def batches(self, dim: int, batch_rows: int = BATCH_ROWS) -> Iterator[RowBatch]:
        """Every row checked against ``dim``; a path seen before in the file is a bad row."""
        if self.dim is not None and self.dim != dim:
            raise file_error(self.path, f"its vectors have {self.dim} values, the library's "
                             f"model {dim}")
        seen: set[str] = set()
        first = 0
        try:
            for batch in self._file.iter_batches(batch_rows, columns=[PATH, VECTOR,
                                                                      *self.optional]):
                yield _validate(batch, first, dim, seen)
                first += batch.num_rows
        except (OSError, pa.ArrowException) as e:
            raise file_error(self.path, f"row {first} onwards cannot be read ({e})") from e


def _open_parquet(path: Path) -> pq.ParquetFile:
    if not path.exists():
        raise file_error(path, "no such file")
    if path.is_dir():
        raise file_error(path, "it is a folder, not a Parquet file")
    try:  # pre_buffer (the default) would keep every row group read until the file is closed
        return pq.ParquetFile(path, pre_buffer=False)
    except (OSError, pa.ArrowException) as e:
        raise file_error(path, f"not a Parquet file ({str(e).splitlines()[0]})") from e


def _file_model(schema: pa.Schema) -> FileModel:
    meta = schema.metadata or {}

    def value(key: str) -> str | None:
        raw = meta.get(key.encode())
        return raw.decode("utf-8", "replace") if raw else None
    return FileModel(value(MODEL_KEY), value(FINGERPRINT_KEY))


def _check_types(path: Path, schema: pa.Schema) -> None:
    """Each column present has a type this reader takes: one error for the file, not one per
    row."""
    def kind(name: str) -> pa.DataType | None:
        i = schema.get_field_index(name)
        return schema.field(i).type if i >= 0 else None

    def require(name: str, ok: bool, what: str) -> None:
        if not ok:
            raise file_error(path, f"column {name!r} must be {what}, not {kind(name)}")

    t = kind(PATH)
    require(PATH, _is_text(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t), "text")
    t = kind(VECTOR)
    require(VECTOR, _is_list(t) and (pa.types.is_floating(t.value_type)
                                     or pa.types.is_integer(t.value_type)), "a list of floats")
    for name in INT_COLUMNS:
        t = kind(name)
        require(name, t is None or pa.types.is_integer(t) or pa.types.is_null(t), "integers")
    for name in TEXT_COLUMNS + (CONTENT_HASH,):
        t = kind(name)
        require(name, t is None or _is_text(t) or pa.types.is_null(t), "text")
    t = kind(TAKEN_AT)
    require(TAKEN_AT, t is None or pa.types.is_timestamp(t) or pa.types.is_date(t)
            or pa.types.is_null(t), "a timestamp")


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


# ---- validating one batch --------------------------------------------------------------------
def _validate(batch: pa.RecordBatch, first: int, dim: int, seen: set[str]) -> RowBatch:
    """The rows of ``batch`` (numbered from ``first``) that can be stored, and why the others
    cannot. ``seen``: the paths of the file's earlier rows (grows)."""
    paths = _paths(batch.column(PATH))
    reasons: list[str | None] = [_path_problem(p) for p in paths]
    vectors, vector_reasons = _vectors(batch.column(VECTOR), dim)
    columns = {name: _column(batch.column(name), name) for name in batch.schema.names
               if name in OPTIONAL_COLUMNS}
    value_reasons = _value_problems(columns, len(paths))
    for i in range(len(paths)):
        reasons[i] = reasons[i] or vector_reasons[i] or value_reasons[i]
        if reasons[i] is None:
            if paths[i] in seen:
                reasons[i] = "duplicate path (an earlier row has it)"
            else:
                seen.add(paths[i])
    keep = np.array([r is None for r in reasons], dtype=bool)
    bad = [BadRow(first + i, p if isinstance(p, str) else None, r)
           for i, (p, r) in enumerate(zip(paths, reasons)) if r is not None]
    kept, renormalised = _unit(vectors[keep])
    return RowBatch([p for p, k in zip(paths, keep) if k], kept,
                    {name: [v for v, k in zip(values, keep) if k]
                     for name, values in columns.items()}, renormalised, bad)


_NOT_TEXT = object()   # a path whose bytes are not UTF-8


def _paths(col: pa.Array) -> list:
    """Each row's path: a str, None, or _NOT_TEXT."""
    if _is_text(col.type):
        try:
            return col.to_pylist()
        except UnicodeDecodeError:  # a writer let invalid UTF-8 through: row by row
            col = col.cast(pa.binary())
    return [None if b is None else _decode(b) for b in col.to_pylist()]


def _decode(data: bytes):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _NOT_TEXT


def _path_problem(path) -> str | None:
    if path is None:
        return "no path"
    if path is _NOT_TEXT:
        return "path is not valid UTF-8 text"
    if "\x00" in path:
        return "path contains a NUL character"
    if not path.startswith(os.sep):  # os.path.isabs, without its cost on a million rows
        return "path is not absolute"
    return None


def _vectors(col: pa.Array, dim: int) -> tuple[np.ndarray, list[str | None]]:
    """(rows x dim float32, with zeros where a row has no vector of ``dim`` values) and each
    row's problem, found without a Python loop over the values."""
    n = len(col)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_fixed_size_list(col.type):
        lengths = np.full(n, col.type.list_size)
        starts = (col.offset + np.arange(n)) * col.type.list_size
    else:
        offsets = np.asarray(col.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        lengths, starts = np.diff(offsets), offsets[:-1]
    values = np.asarray(col.values.to_numpy(zero_copy_only=False))  # nulls in it become NaN
    fits = valid & (lengths == dim)
    out = np.zeros((n, dim), dtype=np.float32)
    if n and fits.all():  # the common case: the rows' values lie end to end
        with np.errstate(all="ignore"):
            out[:] = values[starts[0]:starts[0] + n * dim].reshape(n, dim)
    elif fits.any():
        rows = np.flatnonzero(fits)
        with np.errstate(all="ignore"):  # a float64 beyond float32 becomes inf: caught below
            out[rows] = values[starts[rows, None] + np.arange(dim)].astype(np.float32)
    finite = np.isfinite(out).all(axis=1)
    nonzero = np.any(out != 0, axis=1)
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(~(fits & finite & nonzero)):
        reasons[i] = ("no vector" if not valid[i]
                      else f"vector of {lengths[i]} values, expected {dim}" if not fits[i]
                      else "vector has NaN or infinite values" if not finite[i]
                      else "vector is all zeros")
    return out, reasons


def _unit(vectors: np.ndarray) -> tuple[np.ndarray, int]:
    """``vectors`` with those not of unit norm (beyond the store's tolerance) scaled to it, and
    how many were; the others are kept bit for bit (an export imported again is unchanged)."""
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
    off = np.abs(norms - 1) > NORM_TOLERANCE
    if off.any():
        vectors[off] = (vectors[off] / norms[off, None]).astype(np.float32)
    return vectors, int(np.count_nonzero(off))


def _column(col: pa.Array, name: str) -> list:
    """An optional column as Python values (taken_at: naive, zoned ones in UTC; format: upper
    case)."""
    if pa.types.is_null(col.type):
        return [None] * len(col)
    if name == TAKEN_AT:
        tz = getattr(col.type, "tz", None)
        values = pc.cast(col, pa.timestamp("us", tz)).to_pylist()
        return [_naive(v) for v in values]
    if name == "format":  # stored as the decoder names it (JPEG, PNG, ...): filters match it
        return [v.upper() if v else None for v in col.to_pylist()]
    return col.to_pylist()


def _naive(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def _value_problems(columns: dict[str, list], n: int) -> list[str | None]:
    """Each row's first out-of-range optional value, if any."""
    problems: list[str | None] = [None] * n
    for name in INT_COLUMNS:
        for i, v in enumerate(columns.get(name, ())):
            if v is not None and not 0 < v <= MAX_SIDE:
                problems[i] = problems[i] or f"{name} {v} out of range"
    for i, h in enumerate(columns.get(CONTENT_HASH, ())):
        if h is not None and not _HASH.fullmatch(h):
            problems[i] = problems[i] or (f"content_hash is not {2 * CONTENT_HASH_BYTES} "
                                          "lower-case hex digits")
    return problems


# ---- writing ---------------------------------------------------------------------------------
def schema(dim: int, model: FileModel) -> pa.Schema:
    """The schema ``searchkit export`` writes: every column, the model in the metadata."""
    return pa.schema([
        (PATH, pa.string()), (VECTOR, pa.list_(pa.float32(), dim)),
        ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()),
        (TAKEN_AT, pa.timestamp("us")), ("camera_make", pa.string()),
        ("camera_model", pa.string()), (CONTENT_HASH, pa.string()),
    ], metadata={MODEL_KEY: model.name or "", FINGERPRINT_KEY: model.fingerprint or ""})


class EmbeddingsWriter:
    """Writes batches to a temporary file next to ``path``, renamed to ``path`` when the
    ``with`` block ends without error: a reader never sees half a file under that name."""

    def __init__(self, path: str | os.PathLike, dim: int, model: FileModel):
        self.path = Path(path)
        self.schema = schema(dim, model)
        self.dim = dim
        self.rows = 0
        self._temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> EmbeddingsWriter:
        try:
            self._writer = pq.ParquetWriter(self._temp, self.schema)
        except OSError as e:
            raise SearchkitError(f"cannot write {self.path}: {e}") from e
        return self

    def write(self, paths: list[str], vectors: np.ndarray, columns: dict[str, list]) -> None:
        """One batch: ``vectors`` (len(paths) x dim float32) and each optional column."""
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1))
        arrays = [pa.array(paths, pa.string()),
                  pa.FixedSizeListArray.from_arrays(flat, self.dim)]
        arrays += [pa.array(columns.get(f.name, [None] * len(paths)), f.type)
                   for f in self.schema if f.name not in (PATH, VECTOR)]
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.rows += len(paths)

    def __exit__(self, kind, error, tb) -> None:
        try:
            self._writer.close()
            if kind is None:
                os.replace(self._temp, self.path)
        except OSError as e:
            raise SearchkitError(f"cannot write {self.path}: {e}") from e
        finally:
            if self._temp.exists():
                self._temp.unlink()
