"""The FAISS index: a cache derived from the store, rebuilt whenever it does not match.

Ids are row ids; the metric is inner product on L2-normalised vectors (cosine). Exact (flat)
while small, IVF above ``IVF_THRESHOLD`` rows (see ``bench/bench_search.py`` for where the two
cross). Saved atomically (temp file, fsync, rename) with a JSON stamp of what it was built from.
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
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
STAMP_FILE = "index.json"
SAVE_LOCK = "index.lock"
SAVE_LOCK_TIMEOUT_S = 60     # a save waits this long for another process's save to finish
TEMP_PATTERNS = (INDEX_FILE + ".*.tmp", STAMP_FILE + ".*.tmp")
IVF_THRESHOLD = 50_000       # rows; below it exact search is fast enough (bench_search.py)
IVF_LISTS_PER_SQRT = 4       # nlist = 4 * sqrt(n), the usual FAISS guidance
IVF_NPROBE = 16
TRAIN_SAMPLE_PER_LIST = 64
RETRAIN_RATIO = 2.0          # reuse a trained IVF quantizer until the size changes this much
SEARCH_THREADS = 1           # one query is too small to split; parallelism is across queries


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


@dataclass(frozen=True)
class Saved:
    """An index read back from disk, verified against its stamp."""
    index: faiss.Index
    stamp: Stamp


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


def choose_kind(n: int, threshold: int = IVF_THRESHOLD) -> str:
    return "flat" if n < threshold else "ivf"


@dataclass(frozen=True)
class Built:
    """A new index and what its stamp records of it."""
    index: faiss.Index
    kind: str
    trained_count: int       # rows its IVF quantizer was trained on (0: flat)


def rebuild(ids: np.ndarray, vectors: np.ndarray, previous: Saved | None = None,
            threshold: int = IVF_THRESHOLD) -> Built:
    """An index over ``vectors`` whose kind follows their number. An IVF ``previous`` lends
    its trained quantizer (no k-means) while :func:`reusable` says so: the one place that
    decides whether a quantizer is reused."""
    n, dim = _shape(vectors)
    kind = choose_kind(n, threshold)
    if kind == "flat":
        return Built(build(ids, vectors, kind), kind, 0)
    if reusable(previous, dim, n):
        return Built(build(ids, vectors, kind, trained=previous.index), kind,
                     _trained_count(previous.stamp))
    return Built(build(ids, vectors, kind), kind, n)


def reusable(previous: Saved | None, dim: int, n: int) -> bool:
    """Whether ``previous`` can lend its IVF quantizer to an index of ``n`` vectors of ``dim``:
    same dimension, and ``n`` within ``RETRAIN_RATIO`` of the rows it was trained on."""
    if previous is None or previous.index.d != dim or kind_of(previous.index) != "ivf":
        return False
    trained_count = _trained_count(previous.stamp)
    return trained_count > 0 and 1 / RETRAIN_RATIO <= n / trained_count <= RETRAIN_RATIO


def _trained_count(stamp: Stamp) -> int:
    return stamp.trained_count or stamp.count  # stamps written before trained_count: count


def _shape(vectors: np.ndarray) -> tuple[int, int]:
    return vectors.shape if vectors.ndim == 2 else (0, vectors.shape[-1])


def build(ids: np.ndarray, vectors: np.ndarray, kind: str | None = None,
          threshold: int = IVF_THRESHOLD, trained: faiss.Index | None = None) -> faiss.Index:
    """A new CPU index over ``vectors`` (float32, normalised) with the given ids. An IVF
    index reuses the coarse quantizer of ``trained`` when given (whether to is
    :func:`rebuild`'s decision), else trains one."""
    n, dim = _shape(vectors)
    kind = kind or choose_kind(n, threshold)
    if kind == "flat":
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "ivf" and trained is not None:
        index = faiss.clone_index(trained)
        index.reset()
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


def kind_of(index: faiss.Index) -> str:
    return "ivf" if isinstance(faiss.downcast_index(index), faiss.IndexIVF) else "flat"


def save(index: faiss.Index, stamp: Stamp, directory: Path) -> None:
    """Write index and stamp atomically, under the save lock: a crash leaves the old pair or
    the new one (or, between the two renames, a pair whose checksum does not match: rebuilt).
    Raises OSError (a full disk, a read-only library, the lock held too long)."""
    directory = Path(directory)
    data = faiss.serialize_index(index)
    record = dict(asdict(stamp), size=int(data.size), checksum=checksum(data))
    with _save_lock(directory, SAVE_LOCK_TIMEOUT_S):
        tmps = []
        try:
            tmps.append(_write_temp(directory / INDEX_FILE, data))
            tmps.append(_write_temp(directory / STAMP_FILE, json.dumps(record).encode()))
            os.replace(tmps[0], directory / INDEX_FILE)
            os.replace(tmps[1], directory / STAMP_FILE)
        except BaseException:
            for tmp in tmps:
                _unlink(tmp)
            raise
    _fsync_dir(directory)


def load(directory: Path) -> Saved | None:
    """The saved index and its stamp; None if there is none (or only one of the pair, or a
    stamp written before checksums); DamagedIndexError if they do not read back as written."""
    directory = Path(directory)
    try:
        return _load_pair(directory)
    except DamagedIndexError:
        pass  # perhaps a save replaced the pair between our two reads: look again
    try:
        with _save_lock(directory, SAVE_LOCK_TIMEOUT_S):  # no save is half-way through now
            return _load_pair(directory)
    except OSError:  # a read-only library (nobody saves into it), or a save that hangs
        return _load_pair(directory)


def _load_pair(directory: Path) -> Saved | None:
    stamp_bytes = _read(directory / STAMP_FILE)
    if stamp_bytes is None:
        return None
    stamp, size, digest = _parse_stamp(stamp_bytes)
    if digest is None:
        return None
    data = _read(directory / INDEX_FILE)
    if data is None:
        return None
    if len(data) != size:
        raise DamagedIndexError(f"{INDEX_FILE} has {len(data)} bytes, its stamp says {size}")
    if checksum(data) != digest:
        raise DamagedIndexError(f"{INDEX_FILE} does not match its checksum")
    return Saved(_deserialize(data, stamp), stamp)


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
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        raise DamagedIndexError(f"{INDEX_FILE} cannot be read ({e})") from None
    if index.ntotal != stamp.count or index.d != stamp.dim or kind_of(index) != stamp.kind:
        raise DamagedIndexError(f"{INDEX_FILE} holds {index.ntotal} vectors of dimension "
                                f"{index.d}, its stamp says {stamp.count} of {stamp.dim}")
    return index


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


class SearchIndex:
    """A loaded index, mirrored to the GPU when faiss has one."""

    def __init__(self, index: faiss.Index, stamp: Stamp):
        self.cpu = index
        self.stamp = stamp
        self.gpu = None
        if gpu_count() > 0 and index.ntotal:
            try:
                self.gpu = faiss.index_cpu_to_all_gpus(index)
            except RuntimeError as e:  # pragma: no cover - depends on the GPU build
                log.warning("cannot move the index to the GPU (%s); searching on the CPU", e)

    @property
    def kind(self) -> str:
        return self.stamp.kind

    @property
    def device(self) -> str:
        return "gpu" if self.gpu is not None else "cpu"

    def __len__(self) -> int:
        return self.cpu.ntotal

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for one query vector; ``allowed`` restricts to those ids."""
        faiss.omp_set_num_threads(SEARCH_THREADS)  # per calling thread (OpenMP semantics)
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        k = min(k, self.cpu.ntotal if allowed is None else len(allowed))
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        if allowed is None:
            index = self.gpu if self.gpu is not None else self.cpu
            scores, ids = index.search(q, k)
        else:  # ID selectors run on the CPU index
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64))
            params = (faiss.SearchParametersIVF(sel=sel, nprobe=self._nprobe())
                      if self.kind == "ivf" else faiss.SearchParameters(sel=sel))
            scores, ids = self.cpu.search(q, k, params=params)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]

    def _nprobe(self) -> int:
        return faiss.extract_index_ivf(self.cpu).nprobe

    def reconstruct(self, row_id: int) -> np.ndarray:
        return self.cpu.reconstruct(int(row_id))
