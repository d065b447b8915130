"""The FAISS index: a cache derived from the store, kept up to date incrementally.

Ids are row ids; the metric is inner product on L2-normalised vectors (cosine). Exact (flat)
while small; from ``IVF_THRESHOLD`` rows the compressed kind :func:`searchkit.ann.choose` picks
(IVF-SQ8, then OPQ-IVF-PQ), trained on a random sample and filled a chunk at a time, whose
candidates are re-scored exactly from the stored float32 vectors (read from SQLite by id).
Saved atomically (temp file, fsync, rename) with a JSON stamp of what it was built from: its
spec (``ann.IndexSpec``; stamps written before specs read as flat / IVF-Flat) and
``changes_seq``, the store's change log position it covers.

What a search uses is the saved *base* plus a *delta*: the rows changed since the base was built
(read from the store's change log, O(changes)). The base is searched with the changed ids
excluded, the delta exactly, and the two merged by score (:class:`SearchIndex`). The delta is
folded into the base (``remove_ids`` / ``add_with_ids``, no retraining) once it passes
:func:`fold_threshold`; the base is rebuilt from the store only when the quantizer must be
trained again (:func:`retrain_reason`).

Loading: an index file above ``MMAP_MIN_BYTES`` is memory-mapped (flat: ``IO_FLAG_MMAP_IFC``,
IVF: ``IO_FLAG_MMAP``, on-disk inverted lists), not read: a search process shares the page cache
instead of holding a copy. Its CRC-32 (a full read of the file, ~0.4 s at 2 GB) is then not
checked on the query path: size, stamp and structure are, and the library probes a few stored
vectors against it; the full checksum is checked by index runs (before they fold), by
``searchkit check``, and on every load of a smaller file (read whole, a few ms). A mapped index is
read-only: it is never modified (a fold reads the file into memory).
Searches run on the GPU when faiss has one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

import faiss
import numpy as np
from filelock import FileLock, Timeout

from . import ann
from .ann import IndexSpec

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
STAMP_FILE = "index.json"
SAVE_LOCK = "index.lock"
SAVE_LOCK_TIMEOUT_S = 60     # a save waits this long for another process's save to finish
TEMP_PATTERNS = (INDEX_FILE + ".*.tmp", STAMP_FILE + ".*.tmp")
IVF_THRESHOLD = ann.FLAT_MAX_ROWS  # rows; below it exact search (the kinds: searchkit.ann)
IVF_LISTS_PER_SQRT = 4       # nlist = 4 * sqrt(n), the usual FAISS guidance
IVF_NPROBE = 16
TRAIN_SAMPLE_PER_LIST = 64
RETRAIN_RATIO = 2.0          # reuse a trained IVF quantizer until the size changes this much
SEARCH_THREADS = 1           # one query is too small to split; parallelism is across queries
MMAP_MIN_BYTES = 64 << 20    # a larger index file is memory-mapped; a smaller one read and CRC'd
CHECKSUM_CHUNK = 16 << 20    # bytes read at a time when checksumming a file
FOLD_FRACTION = 0.05         # the delta is folded into the base past this share of its rows,
FOLD_MIN_ROWS = 1_000        # but never below this many changed rows (a tiny exact search)
FOLD_MAX_ROWS = 20_000       # nor above: a fresh search process reads the delta from SQLite
EXACT_FILTER_LIMIT = 256     # a filter leaving at most this many rows is searched exactly: reading
                             # them from SQLite costs what an IVF search of every list does at 1M
                             # (1 % of 1M: 62 ms exact, 5 ms through the IVF at recall 1.000)
PROBE_TOLERANCE = 1e-4       # a compressed code decoded vs the stored vector re-encoded
GPU_MARGIN_MAX = 1_024       # excluded ids the GPU search makes room for (larger: on the CPU)


@dataclass(frozen=True)
class Stamp:
    """What an index file was built from."""
    vectors_version: int
    count: int
    dim: int
    model_fingerprint: str
    kind: str
    trained_count: int = 0   # rows the IVF quantizer was trained on (0: flat)
    left_out: int = 0        # ok rows left out because their stored vector is damaged
    changes_seq: int | None = None  # the change log position it covers (None: before the log)
    spec: dict | None = None  # ann.IndexSpec record (None: stamped before specs, flat/IVF-Flat)


@dataclass(frozen=True)
class Saved:
    """An index read back from disk, verified against its stamp."""
    index: faiss.Index
    stamp: Stamp
    mapped: bool = False     # memory-mapped (read-only) rather than read into memory
    checksum: str = ""       # what its stamp records: tells this file from a later save


class DamagedIndexError(Exception):
    """The saved index or its stamp does not read back as written (the cache is rebuilt)."""


def checksum(data: bytes | np.ndarray) -> str:
    """CRC-32 of the saved bytes: catches damage at about 7 GB/s (a 1M-vector index, 2 GB,
    adds some 0.3 s to a load that reads and copies those bytes anyway)."""
    return f"crc32:{zlib.crc32(data):08x}"


def gpu_count() -> int:
    try:
        return faiss.get_num_gpus()
    except AttributeError:  # faiss-cpu builds without the symbol
        return 0


def choose_kind(n: int, threshold: int | None = None) -> str:
    return "flat" if n < (IVF_THRESHOLD if threshold is None else threshold) else "ivf"


def choose_spec(n: int, dim: int, threshold: int | None = None) -> IndexSpec:
    """The index for ``n`` vectors: flat below the threshold (:func:`choose_kind`), else the
    IVF kind :func:`ann.choose` picks for that size (IVF-SQ8, OPQ-IVF-PQ)."""
    if choose_kind(n, threshold) == "flat":
        return IndexSpec(ann.FLAT)
    return ann.choose(n, dim, flat_max_rows=0)


def spec_of(stamp: Stamp) -> IndexSpec | None:
    """The spec a stamp records; None for a stamp written before specs (flat or IVF-Flat)."""
    if stamp.spec is None:
        return None
    try:
        return IndexSpec.of(stamp.spec)
    except (ValueError, TypeError) as e:
        raise DamagedIndexError(f"{STAMP_FILE} records no valid index spec ({e})") from None


def kind_name(stamp: Stamp) -> str:
    """The index kind a stamp records, as specific as it says ("ivf-sq8", "opq-ivf-pq"; a
    stamp from before specs: "flat" or "ivf"). Reads the stamp only, never the index."""
    try:
        spec = spec_of(stamp)
    except DamagedIndexError:
        spec = None
    return spec.name if spec is not None else stamp.kind


def family(spec: IndexSpec) -> str:
    """What ``Stamp.kind`` says of a spec: "flat" or "ivf" (every IVF kind)."""
    return "ivf" if spec.is_ivf else "flat"


@dataclass(frozen=True)
class Built:
    """A new index and what its stamp records of it."""
    index: faiss.Index
    kind: str
    trained_count: int       # rows its IVF quantizer was trained on (0: flat)
    spec: IndexSpec | None = None


Chunks = Iterator[tuple[np.ndarray, np.ndarray]]  # (ids, vectors), a bounded number at a time


def rebuild(ids: np.ndarray, vectors: np.ndarray, previous: Saved | None = None,
            threshold: int | None = None) -> Built:
    """An index over ``vectors`` held in memory (see :func:`rebuild_chunked`)."""
    n, dim = _shape(vectors)
    rng = np.random.default_rng(0)
    return rebuild_chunked(n, dim, lambda m: vectors[np.sort(rng.choice(n, m, replace=False))],
                           iter([(ids, vectors)]), previous, threshold)


def rebuild_chunked(n: int, dim: int, sample: Callable[[int], np.ndarray], chunks: Chunks,
                    previous: Saved | None = None, threshold: int | None = None) -> Built:
    """An index over ``n`` vectors whose kind follows their number (:func:`choose_spec`),
    trained on ``sample(rows)`` (rows drawn at random) and filled from ``chunks``. A trained
    ``previous`` of the same kind lends its training (no k-means) while :func:`reusable`
    says so: the one place that decides whether a quantizer is reused."""
    spec = choose_spec(n, dim, threshold)
    if not spec.is_ivf:
        return Built(ann.build(spec, dim, None, chunks), "flat", 0, spec)
    if reusable(previous, dim, n) and _lends_to(previous.index, spec):
        empty = _empty_like(previous.index)
        for part_ids, part in chunks:
            ann.add(empty, part_ids, part)
        return Built(empty, "ivf", _trained_count(previous.stamp), spec)
    return Built(ann.build(spec, dim, sample(min(n, spec.train_rows or n)), chunks), "ivf",
                 n, spec)


def reusable(previous: Saved | None, dim: int, n: int) -> bool:
    """Whether ``previous`` can lend its IVF training to an index of ``n`` vectors of ``dim``:
    same dimension, and ``n`` within ``RETRAIN_RATIO`` of the rows it was trained on."""
    if previous is None or previous.index.d != dim or kind_of(previous.index) != "ivf":
        return False
    return _within_ratio(_trained_count(previous.stamp), n)


def _lends_to(index: faiss.Index, spec: IndexSpec) -> bool:
    """Whether ``index`` is of ``spec``'s kind and can be copied empty (a memory-mapped IVF-SQ8
    or PQ index cannot be cloned; IVF-Flat lends its coarse quantizer even then)."""
    kind = ann_kind_of(index)
    return kind == spec.kind and (kind == ann.IVF_FLAT or ann.writable(index))


def _empty_like(trained: faiss.Index) -> faiss.Index:
    if ann_kind_of(trained) == ann.IVF_FLAT:
        return _ivf_like(trained)
    index = faiss.clone_index(trained)
    index.reset()
    return index


def ann_kind_of(index: faiss.Index) -> str:
    """The :mod:`searchkit.ann` kind of an index, from its structure."""
    try:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    except RuntimeError:
        return ann.FLAT
    if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
        return ann.IVF_SQ8
    return ann.IVF_PQ if isinstance(ivf, faiss.IndexIVFPQ) else ann.IVF_FLAT


def _within_ratio(trained_count: int, n: int) -> bool:
    return trained_count > 0 and 1 / RETRAIN_RATIO <= n / trained_count <= RETRAIN_RATIO


def retrain_reason(stamp: Stamp, n: int, threshold: int | None = None) -> str | None:
    """Why an index stamped ``stamp`` cannot take its delta in place and grow to ``n``
    vectors (another kind for that size, or the quantizer's training no longer fits), or
    None. A stamp from before specs is compared by family (flat / IVF) only."""
    wanted = choose_spec(n, stamp.dim, threshold)
    have = spec_of(stamp)
    if (family(wanted), wanted.kind) != (stamp.kind, have.kind if have else wanted.kind):
        return (f"{n} vectors call for a {wanted.kind} index, not "
                f"{have.kind if have else stamp.kind}")
    if wanted.is_ivf and not _within_ratio(_trained_count(stamp), n):
        return (f"its quantizer was trained on {_trained_count(stamp)} vectors, the library "
                f"now has {n}")
    return None


def fold_threshold(count: int) -> int:
    """Changed rows a base of ``count`` vectors takes as a delta before they are folded in."""
    return min(FOLD_MAX_ROWS, max(FOLD_MIN_ROWS, int(FOLD_FRACTION * count)))


def fold(index: faiss.Index, changed: np.ndarray, ids: np.ndarray, vectors: np.ndarray
         ) -> None:
    """Bring an in-memory base up to date in place: the ``changed`` ids' old copies out, the
    current ``vectors`` of ``ids`` in (work proportional to the change, no retraining)."""
    ann.remove(index, changed)
    ann.add(index, ids, vectors)


def _trained_count(stamp: Stamp) -> int:
    return stamp.trained_count or stamp.count  # stamps written before trained_count: count


def _shape(vectors: np.ndarray) -> tuple[int, int]:
    return vectors.shape if vectors.ndim == 2 else (0, vectors.shape[-1])


def build(ids: np.ndarray, vectors: np.ndarray, kind: str | None = None,
          threshold: int | None = None, trained: faiss.Index | None = None) -> faiss.Index:
    """A new CPU index over ``vectors`` (float32, normalised) with the given ids. An IVF
    index reuses the coarse quantizer of ``trained`` when given (whether to is
    :func:`rebuild`'s decision), else trains one."""
    n, dim = _shape(vectors)
    kind = kind or choose_kind(n, threshold)
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "ivf" and trained is not None:
        index = _ivf_like(trained)
    elif kind == "ivf":
        index = _trained_ivf(vectors, dim)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    if n:
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32),
                           np.ascontiguousarray(ids, np.int64))
    return index


def _trained_ivf(vectors: np.ndarray, dim: int) -> faiss.Index:
    n = len(vectors)
    nlist = max(1, min(int(IVF_LISTS_PER_SQRT * math.sqrt(max(n, 1))), max(1, n // 39)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(vectors[rng.choice(n, size=min(n, nlist * TRAIN_SAMPLE_PER_LIST),
                                   replace=False)])
    index.nprobe = min(IVF_NPROBE, nlist)
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct() by row id
    return index


def _ivf_like(trained: faiss.Index) -> faiss.Index:
    """An empty IVF index on a copy of ``trained``'s coarse quantizer (``trained`` itself may be
    memory-mapped, hence read-only: it is not cloned and reset)."""
    ivf = faiss.extract_index_ivf(trained)
    index = faiss.IndexIVFFlat(faiss.clone_index(ivf.quantizer), ivf.d, ivf.nlist,
                               faiss.METRIC_INNER_PRODUCT)
    index.nprobe = ivf.nprobe
    index.set_direct_map_type(faiss.DirectMap.Hashtable)
    return index


def kind_of(index: faiss.Index) -> str:
    """"flat" or "ivf" (any IVF kind, OPQ-rotated ones included)."""
    return "flat" if ann_kind_of(index) == ann.FLAT else "ivf"


def save(index: faiss.Index, stamp: Stamp, directory: Path) -> str | None:
    """Write index and stamp atomically, under the save lock: a crash leaves the old pair or
    the new one (or, between the two renames, a pair whose checksum does not match: rebuilt).
    A saved pair that covers more of the change log than ``stamp`` is kept (another process
    saved a newer index meanwhile): returns the checksum written, None if kept. The index is
    streamed to its temp file (no second copy in memory). Raises OSError (a full disk, a
    read-only library, the lock held too long)."""
    directory = Path(directory)
    with _save_lock(directory, SAVE_LOCK_TIMEOUT_S):
        if _newer_saved(directory, stamp):
            return None
        tmps = []
        try:
            tmp, size, digest = _write_index_temp(directory / INDEX_FILE, index)
            tmps.append(tmp)
            record = dict(asdict(stamp), size=size, checksum=digest)
            tmps.append(_write_temp(directory / STAMP_FILE, json.dumps(record).encode()))
            os.replace(tmps[0], directory / INDEX_FILE)
            os.replace(tmps[1], directory / STAMP_FILE)
        except BaseException:
            for tmp in tmps:
                _unlink(tmp)
            raise
    _fsync_dir(directory)
    return digest


def _newer_saved(directory: Path, stamp: Stamp) -> bool:
    """Whether the saved stamp (callers hold the save lock) covers more changes than ``stamp``
    for the same model."""
    try:
        saved = read_stamp(directory)
    except DamagedIndexError:
        return False
    return (saved is not None and stamp.changes_seq is not None
            and saved.stamp.changes_seq is not None
            and saved.stamp.changes_seq > stamp.changes_seq
            and (saved.stamp.model_fingerprint, saved.stamp.dim)
            == (stamp.model_fingerprint, stamp.dim))


@dataclass(frozen=True)
class SavedStamp:
    """A saved index's stamp, with the size and checksum it records of the index file."""
    stamp: Stamp
    size: int
    checksum: str


def read_stamp(directory: Path, verify: bool | None = None) -> SavedStamp | None:
    """The saved stamp, without loading the index (what ``status`` reads): None if there is
    none, or no index file, or a stamp written before checksums. The index file's size is
    compared; its checksum too with ``verify`` (default: when the file is small enough that
    reading it costs milliseconds). DamagedIndexError when they do not match."""
    directory = Path(directory)
    parsed = _saved_stamp(directory)
    if parsed is None:
        return None
    stamp, size, digest = parsed
    try:
        actual = (directory / INDEX_FILE).stat().st_size
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DamagedIndexError(f"cannot read {INDEX_FILE}: {e.strerror or e}") from None
    if actual != size:
        raise DamagedIndexError(f"{INDEX_FILE} has {actual} bytes, its stamp says {size}")
    if verify or (verify is None and size <= MMAP_MIN_BYTES):
        if file_checksum(directory / INDEX_FILE) != digest:
            raise DamagedIndexError(f"{INDEX_FILE} does not match its checksum")
    return SavedStamp(stamp, size, digest)


def file_checksum(path: Path) -> str:
    """:func:`checksum` of a file, read a chunk at a time (flat memory)."""
    crc = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHECKSUM_CHUNK):
                crc = zlib.crc32(chunk, crc)
    except OSError as e:
        raise DamagedIndexError(f"cannot read {path.name}: {e.strerror or e}") from None
    return f"crc32:{crc:08x}"


def load(directory: Path, mmap: bool | None = None, verify: bool | None = None
         ) -> Saved | None:
    """The saved index and its stamp; None if there is none (or only one of the pair, or a
    stamp written before checksums); DamagedIndexError if they do not read back as written.

    ``mmap``: map the file instead of reading it (default: when it is larger than
    ``MMAP_MIN_BYTES``); a mapped index is read-only. ``verify``: check the whole file's
    checksum (default: when it is read, not mapped; see the module's note)."""
    directory = Path(directory)
    try:
        return _load_pair(directory, mmap, verify)
    except DamagedIndexError:
        pass  # perhaps a save replaced the pair between our two reads: look again
    try:
        with _save_lock(directory, SAVE_LOCK_TIMEOUT_S):  # no save is half-way through now
            return _load_pair(directory, mmap, verify)
    except OSError:  # a read-only library (nobody saves into it), or a save that hangs
        return _load_pair(directory, mmap, verify)


def _saved_stamp(directory: Path) -> tuple[Stamp, int, str] | None:
    """The stamp file's stamp, index size and checksum; None without one (or one written
    before checksums)."""
    stamp_bytes = _read(directory / STAMP_FILE)
    if stamp_bytes is None:
        return None
    stamp, size, digest = _parse_stamp(stamp_bytes)
    return None if digest is None else (stamp, size, digest)


def _load_pair(directory: Path, mmap: bool | None, verify: bool | None) -> Saved | None:
    parsed = _saved_stamp(directory)
    if parsed is None:
        return None
    stamp, size, digest = parsed
    if mmap or (mmap is None and size > MMAP_MIN_BYTES):
        return _map(directory / INDEX_FILE, stamp, size, digest, bool(verify))
    data = _read(directory / INDEX_FILE)
    if data is None:
        return None
    if len(data) != size:
        raise DamagedIndexError(f"{INDEX_FILE} has {len(data)} bytes, its stamp says {size}")
    if verify is not False and checksum(data) != digest:
        raise DamagedIndexError(f"{INDEX_FILE} does not match its checksum")
    return Saved(_deserialize(data, stamp), stamp, checksum=digest)


def _map(path: Path, stamp: Stamp, size: int, digest: str, verify: bool) -> Saved | None:
    """The index file memory-mapped (read in memory where faiss cannot map its kind)."""
    before = _identity(path)
    if before is None:
        return None
    if before[2] != size:
        raise DamagedIndexError(f"{INDEX_FILE} has {before[2]} bytes, its stamp says {size}")
    if verify and file_checksum(path) != digest:
        raise DamagedIndexError(f"{INDEX_FILE} does not match its checksum")
    try:
        index = ann.searching_in_place(faiss.read_index(str(path), _mmap_flags(stamp.kind)))
        mapped = True
    except RuntimeError as e:
        log.info("cannot memory-map %s (%s); reading it", path, e)
        data = _read(path)
        if data is None or checksum(data) != digest:
            raise DamagedIndexError(f"{INDEX_FILE} does not match its checksum") from None
        index, mapped = _deserialize_raw(data), False
    if _identity(path) != before:
        raise DamagedIndexError(f"{INDEX_FILE} was replaced while it was read")
    _check_describes(index, stamp)
    return Saved(index, stamp, mapped=mapped, checksum=digest)


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DamagedIndexError(f"cannot read {path.name}: {e.strerror or e}") from None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _mmap_flags(kind: str) -> int:
    """Flat codes map with IO_FLAG_MMAP_IFC; IVF lists with IO_FLAG_MMAP (on-disk lists,
    :func:`ann.read_flags`)."""
    if kind == "flat":
        return faiss.IO_FLAG_MMAP_IFC
    return ann.read_flags(IndexSpec(ann.IVF_FLAT, nlist=1, nprobe=1), mmap=True)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise DamagedIndexError(f"cannot read {path.name}: {e.strerror or e}") from None


def _parse_stamp(data: bytes) -> tuple[Stamp, int, str | None]:
    try:
        record = json.loads(data)
        digest, size = record.pop("checksum", None), int(record.pop("size", -1))
        return Stamp(**record), size, digest
    except (ValueError, TypeError, AttributeError) as e:
        raise DamagedIndexError(f"{STAMP_FILE} is not a valid stamp ({e})") from None


def _deserialize(data: bytes, stamp: Stamp) -> faiss.Index:
    index = _deserialize_raw(data)
    _check_describes(index, stamp)
    return index


def _deserialize_raw(data: bytes) -> faiss.Index:
    try:
        return faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        raise DamagedIndexError(f"{INDEX_FILE} cannot be read ({e})") from None


def _check_describes(index: faiss.Index, stamp: Stamp) -> None:
    spec = spec_of(stamp)
    if spec is not None and (ann_kind_of(index), family(spec)) != (spec.kind, stamp.kind):
        raise DamagedIndexError(f"{INDEX_FILE} holds a {ann_kind_of(index)} index, its stamp "
                                f"says {spec.kind}")
    if index.ntotal != stamp.count or index.d != stamp.dim or kind_of(index) != stamp.kind:
        raise DamagedIndexError(f"{INDEX_FILE} holds {index.ntotal} vectors of dimension "
                                f"{index.d}, its stamp says {stamp.count} of {stamp.dim}")


def probe(index: "faiss.Index | SearchIndex", ids: np.ndarray, vectors: np.ndarray) -> int:
    """How many of ``vectors`` (stored under ``ids``) the index does not hold as stored: a
    cheap check of a mapped file. Exact kinds compare bit for bit; a compressed kind compares
    its code with the stored vector encoded again (a PQ code can be far from the vector: a
    cosine bound would call a sound index damaged)."""
    wrong = 0
    base = index.cpu if isinstance(index, SearchIndex) else index
    exact = stores_exact_vectors(base)
    for row_id, stored in zip(ids, vectors):
        try:
            got = index.reconstruct(int(row_id))
        except RuntimeError:
            wrong += 1
            continue
        want = stored if exact else base.sa_decode(base.sa_encode(
            np.ascontiguousarray(stored, np.float32).reshape(1, -1)))[0]
        wrong += not (np.array_equal(got, want) if exact
                      else np.allclose(got, want, atol=PROBE_TOLERANCE))
    return wrong


def stores_exact_vectors(index: faiss.Index) -> bool:
    """Whether ``reconstruct`` gives the vectors back exactly (flat codes, IVF-Flat; not the
    compressed kinds, whose exact searches read the stored vectors by id)."""
    return ann_kind_of(index) in (ann.FLAT, ann.IVF_FLAT)


# ---- temp files ------------------------------------------------------------------------------
def stray_temp_files(directory: Path) -> list[Path]:
    """Temp files that no save is writing (left by a killed save); [] while one is saving."""
    try:
        with _save_lock(Path(directory), 0):
            return _temp_files(Path(directory))
    except Timeout:
        return []
    except OSError:  # a read-only library: nobody can be saving into it
        return _temp_files(Path(directory))


def remove_stray_temp_files(directory: Path) -> list[Path]:
    """Delete the temp files of killed saves (never one a live save is writing); the removed."""
    removed = []
    try:
        with _save_lock(Path(directory), 0):
            for path in _temp_files(Path(directory)):
                try:
                    path.unlink()
                    removed.append(path)
                except FileNotFoundError:
                    pass
    except Timeout:
        pass  # a save is running: its own temp files are not strays; next time
    if removed:
        log.info("removed %d temp files left by an interrupted save in %s", len(removed),
                 directory)
    return removed


def describe_temp_files(paths: list[Path]) -> str:
    """The one wording of stray temp files, with the space they take."""
    size = 0
    for path in paths:
        try:
            size += path.stat().st_size
        except OSError:
            pass
    return f"{len(paths)} temp files ({size / 1e6:.1f} MB) left by an interrupted save"


def _temp_files(directory: Path) -> list[Path]:
    return sorted(p for pattern in TEMP_PATTERNS for p in directory.glob(pattern))


@contextmanager
def _save_lock(directory: Path, timeout: float) -> Iterator[None]:
    """Held by every save (and by temp-file cleanup): flock, so a killed holder lets go."""
    with FileLock(str(directory / SAVE_LOCK), timeout=timeout):
        yield


def _write_index_temp(path: Path, index: faiss.Index) -> tuple[str, int, str]:
    """``index`` streamed into a new fsynced temp file next to ``path``: (name, size, checksum)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    state: dict = {"crc": 0, "size": 0, "error": None}
    try:
        with os.fdopen(fd, "wb") as f:
            def write(chunk) -> int:
                chunk = bytes(chunk)
                try:
                    f.write(chunk)
                except OSError as e:  # faiss would turn it into a RuntimeError
                    state["error"] = e
                    raise
                state["crc"] = zlib.crc32(chunk, state["crc"])
                state["size"] += len(chunk)
                return len(chunk)
            try:
                writer = faiss.PyCallbackIOWriter(write)
                faiss.write_index(index, writer)
                del writer  # flushes its buffer into ``write``
            except RuntimeError:
                if state["error"] is not None:
                    raise state["error"] from None
                raise
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp, state["size"], f"crc32:{state['crc']:08x}"


def _write_temp(path: Path, data) -> str:
    """``data`` in a new fsynced temp file next to ``path``; its name."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Make the renames themselves durable."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@dataclass(frozen=True)
class Delta:
    """What changed since a base was built: its copies of the ``changed`` ids are stale; the
    current vectors among them are ``ids`` / ``vectors`` (sorted by id)."""
    changed: np.ndarray
    ids: np.ndarray
    vectors: np.ndarray
    version: int             # the store's vectors_version that base + delta answer for
    seq: int                 # the change log position they cover

    def __len__(self) -> int:
        return len(self.changed)


FetchVectors = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # ids -> (ids, vectors)


class SearchIndex:
    """A base index (loaded, mapped or built; mirrored to the GPU when faiss has one) and the
    delta of rows changed since, searched together so that the result is what an index built
    from the store now would answer. ``fetch`` reads stored vectors by id (an exact filtered
    search over an index that does not keep its vectors exactly)."""

    def __init__(self, index: faiss.Index, stamp: Stamp, delta: Delta | None = None,
                 fetch: FetchVectors | None = None):
        self.cpu = index
        self.stamp = stamp
        self.delta = delta
        self.fetch = fetch
        self.gpu = None
        self._len: int | None = None
        if gpu_count() > 0 and index.ntotal:
            try:
                self.gpu = faiss.index_cpu_to_all_gpus(index)
            except RuntimeError as e:  # pragma: no cover - depends on the GPU build
                log.warning("cannot move the index to the GPU (%s); searching on the CPU", e)

    def with_delta(self, delta: Delta | None) -> "SearchIndex":
        """The same base with another delta (the base, and its GPU copy, are shared)."""
        other = SearchIndex.__new__(SearchIndex)
        other.__dict__.update(self.__dict__, delta=delta, _len=None)
        return other

    @property
    def kind(self) -> str:
        return self.stamp.kind

    @cached_property
    def spec(self) -> IndexSpec | None:
        """The base's spec (None: stamped before specs, an exact flat or IVF-Flat index);
        parsed once (twice a search cost 12 us of a 0.3 ms 1M query)."""
        return spec_of(self.stamp)

    @property
    def rerank(self) -> int:
        """Candidates a base search re-scores exactly from the stored vectors (0: none)."""
        spec = self.spec
        return spec.rerank if spec is not None and self.fetch is not None else 0

    @property
    def device(self) -> str:
        return "gpu" if self.gpu is not None else "cpu"

    @property
    def version(self) -> int:
        """The store's vectors_version this index answers for."""
        return self.delta.version if self.delta is not None else self.stamp.vectors_version

    @property
    def pending(self) -> int:
        """Changed rows not yet folded into the base."""
        return len(self.delta) if self.delta is not None else 0

    def __len__(self) -> int:
        """Vectors it answers with: the base's, less its stale copies, plus the delta's."""
        if self._len is None:
            changed = self._changed()
            stale = sum(1 for i in changed if self._base_holds(int(i)))
            self._len = self.cpu.ntotal - stale + (len(self.delta.ids) if self.delta else 0)
        return self._len

    def _changed(self) -> np.ndarray:
        return self.delta.changed if self.delta is not None else np.zeros(0, np.int64)

    def _base_holds(self, row_id: int) -> bool:
        try:
            self.cpu.reconstruct(row_id)
        except RuntimeError:
            return False
        return True

    def reconstruct(self, row_id: int) -> np.ndarray:
        """The vector it holds for ``row_id``; RuntimeError if none."""
        row_id = int(row_id)
        changed = self._changed()
        if len(changed) and _contains(changed, row_id):
            pos = np.searchsorted(self.delta.ids, row_id)
            if pos < len(self.delta.ids) and self.delta.ids[pos] == row_id:
                return self.delta.vectors[pos].copy()
            raise RuntimeError(f"id {row_id} is not in the index")
        return self.cpu.reconstruct(row_id)

    # ---- search ----------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one query vector; ``allowed`` restricts to those ids (the
        best k among them at any selectivity: few are searched exactly)."""
        faiss.omp_set_num_threads(SEARCH_THREADS)  # per calling thread (OpenMP semantics)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        if k <= 0 or (allowed is not None and len(allowed) == 0):
            return _EMPTY
        if allowed is not None:
            allowed = ann.unique_ids(allowed)
        return _merge(k, self._search_base(q, k, allowed), self._search_delta(q, k, allowed))

    def _search_base(self, q: np.ndarray, k: int, allowed: np.ndarray | None):
        changed = self._changed()
        if allowed is None:
            return self._ann(q, k, exclude=changed)
        if len(changed):
            allowed = allowed[~np.isin(allowed, changed)]
        if len(allowed) == 0:
            return _EMPTY
        if self.kind != "flat" and len(allowed) <= EXACT_FILTER_LIMIT:
            return _top_k(q, k, *self._vectors_of(allowed))
        return self._ann(q, k, only=allowed)

    def _search_delta(self, q: np.ndarray, k: int, allowed: np.ndarray | None):
        if self.delta is None or not len(self.delta.ids):
            return _EMPTY
        ids, vectors = self.delta.ids, self.delta.vectors
        if allowed is not None:
            keep = np.isin(ids, allowed)
            ids, vectors = ids[keep], vectors[keep]
        return _top_k(q, k, ids, vectors)

    def _ann(self, q: np.ndarray, k: int, exclude: np.ndarray | None = None,
             only: np.ndarray | None = None):
        """The base's best ``k``; a compressed kind takes its best ``rerank`` candidates and
        re-scores them exactly from the stored vectors (:func:`ann.rerank`)."""
        n = self.cpu.ntotal
        k = min(k, n if only is None else len(only))
        if k <= 0:
            return _EMPTY
        depth = min(max(k, self.rerank), n if only is None else len(only))
        scores, ids = self._candidates(q, depth, exclude, only)
        if self.rerank:
            return ann.rerank(q[0], k, ids, self.fetch)
        return scores[:k], ids[:k]

    def _candidates(self, q: np.ndarray, depth: int, exclude: np.ndarray | None,
                    only: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = self.cpu.ntotal
        excluded = 0 if exclude is None else len(exclude)
        if only is None and self.gpu is not None and excluded <= GPU_MARGIN_MAX:
            scores, ids = self.gpu.search(q, min(n, depth + excluded))  # no GPU selectors
            scores, ids = _drop(scores[0], ids[0], exclude)
            return scores[:depth], ids[:depth]
        if only is None and not excluded:
            scores, ids = self.cpu.search(q, depth)
        else:
            # a bitmap when the ids are dense enough (building an IDSelectorBatch for half of
            # 1M rows took 186 ms a query, a bitmap 3.7 ms: bench/results/index_choice.md)
            inner, _alive = ann.make_selector(only if only is not None else exclude)
            sel = inner if only is not None else faiss.IDSelectorNot(inner)
            share = 1.0 if only is None else len(only) / max(n, 1)
            scores, ids = self.cpu.search(q, depth, params=_params(self.cpu, sel, share))
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _vectors_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors of ``ids`` the base holds (rows it left out are passed over): from
        the index when it keeps them exactly, else from the store."""
        if not stores_exact_vectors(self.cpu) and self.fetch is not None:
            return self.fetch(ids)
        try:
            return ids, self.cpu.reconstruct_batch(np.ascontiguousarray(ids, np.int64))
        except RuntimeError:  # some are not in the index: one at a time
            kept, vecs = [], []
            for i in ids:
                try:
                    vecs.append(self.cpu.reconstruct(int(i)))
                except RuntimeError:
                    continue
                kept.append(int(i))
            if not kept:
                return np.zeros(0, np.int64), np.zeros((0, self.cpu.d), np.float32)
            return np.asarray(kept, np.int64), np.stack(vecs)


_EMPTY = (np.zeros(0, np.float32), np.zeros(0, np.int64))


def _contains(sorted_ids: np.ndarray, row_id: int) -> bool:
    pos = np.searchsorted(sorted_ids, row_id)
    return bool(pos < len(sorted_ids) and sorted_ids[pos] == row_id)


def _drop(scores: np.ndarray, ids: np.ndarray, exclude: np.ndarray | None):
    keep = ids >= 0
    if exclude is not None and len(exclude):
        keep &= ~np.isin(ids, exclude)
    return scores[keep], ids[keep]


def _top_k(q: np.ndarray, k: int, ids: np.ndarray, vectors: np.ndarray):
    """Exact top-k of ``vectors`` (stored under ``ids``) for the query."""
    if not len(ids):
        return _EMPTY
    scores = ann.inner(vectors, q[0])
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order].astype(np.float32), np.asarray(ids, np.int64)[order]


def _merge(k: int, *parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The best k of several (scores, ids) results, best first."""
    parts = [p for p in parts if len(p[1])]
    if len(parts) <= 1:
        return parts[0] if parts else _EMPTY
    scores = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    order = np.argsort(-scores, kind="stable")[:k]
    return scores[order], ids[order]


def _params(index: faiss.Index, sel, share: float) -> faiss.SearchParameters:
    """Search parameters carrying ``sel``; an IVF probes more lists when the selector keeps a
    ``share`` of the rows (the lists it probes hold that many fewer candidates)."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        return faiss.SearchParametersPreTransform(index_params=_params(inner.index, sel, share),
                                                  sel=sel)
    if isinstance(inner, faiss.IndexIVF):
        nprobe = min(inner.nlist, max(1, int(math.ceil(inner.nprobe / max(share, 1e-9)))))
        return faiss.SearchParametersIVF(sel=sel, nprobe=nprobe)
    return faiss.SearchParameters(sel=sel)
