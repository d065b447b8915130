"""Embedding on Ray (``searchkit index --executor ray [--ray-address ADDR]``, needs searchkit[ray]).

The driver lists and plans the files, then reads and hashes the files to read in threads with
the run's content-hash claims, exactly as the local executor does: unchanged, moved, copied and
unreadable files are decided there and then. The files that claimed a new content go to a Ray
Data actor pool (``map_batches`` with :class:`EmbedActor`, which loads the model once per actor,
on a GPU when the cluster has them): each actor reads, decodes and preprocesses its batch and
embeds it with :func:`~searchkit.indexer.executors.embed_batch`, the local executor's batch
function. Vectors stream back to the driver, which decides and writes them through the run as it
does locally, a transaction every ``COMMIT_EVERY`` files.

So a worker that dies costs only the batch it held (Ray restarts the actor and runs that batch
again), and an interrupted run loses only what it had not committed: the next run finds the
committed files unchanged and embeds the rest. Workers read the files by the driver's paths (on
a cluster: a filesystem every node mounts at the same place) and check each file's content hash
against the driver's; a file changed in between is skipped with a reason, and the next run sees
its new mtime and reads it again.

Without an address, a Ray instance is started on this machine for the run (loopback only, no
dashboard, usage stats off, its logs in a temporary folder) and shut down after it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from searchkit.encoders.registry import load_encoder
from searchkit.errors import ModelMismatchError, SearchkitError

from .executors import ProgressFn, RayOptions, embed_batch
from .prepare import Decoder, Prepared, WorkItem, prepare_in_order
from .run import ENCODE_BATCH
from .scan import FileStat

if TYPE_CHECKING:
    from searchkit.encoders.base import Encoder

    from .run import IndexRun

log = logging.getLogger(__name__)

INSTALL_HINT = "the ray executor needs Ray: pip install 'searchkit[ray]'"
GPU_BATCH = 128            # images per batch on a GPU actor (--ray-batch-size)
CPUS_PER_ACTOR = 4         # at most, for decoding and (without a GPU) encoding
LOCAL_OBJECT_STORE_BYTES = 512 * 2**20   # paths in, vectors out: little goes through it
OUR_ERROR = re.compile(r"^searchkit\.[\w.]*Error: (.+)$", re.MULTILINE)
NOTICE = re.compile(r"^\[[^\]]* [WEF] [^\]]*\] \S+: (.+)$", re.MULTILINE)  # a C++ warning/error
CHANGED = "changed while it was being indexed (the next run reads it again)"
# a local Ray instance stays on this machine: loopback addresses, no usage report, no dashboard
LOCAL_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# ^ RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is Ray's switch that keeps a node on 127.0.0.1
# (ray._private.services.get_node_ip_address); else it binds the machine's address.
QUIET_ENV = {"RAY_BACKEND_LOG_LEVEL": "fatal"}  # Ray's C++ notices off the user's terminal
CONNECT_TIMEOUT_S = 10     # an unreachable --ray-address fails after this (Ray waits minutes)
TASK_RETRIES = 3           # a batch whose actor died is run again, at most this many times

EncoderFactory = Callable[..., "Encoder"]   # (model name, device=...) -> Encoder


class RayUnavailableError(SearchkitError):
    """``--executor ray`` without Ray installed."""


class RayRunError(SearchkitError):
    """The Ray cluster could not be reached, or its workers failed."""


def import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as e:
        raise RayUnavailableError(INSTALL_HINT) from e
    return ray


# ---- the worker side -------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbedJob:
    """What each actor needs to embed like the driver: the library's model, checked by its
    weights' fingerprint, and how large an image may be."""
    model: str
    fingerprint: str
    max_pixels: int
    device: str               # "cuda" on a GPU actor, else "cpu"
    decode_threads: int
    factory: EncoderFactory = load_encoder

    def load(self) -> "Encoder":
        encoder = self.factory(self.model, device=self.device)
        if encoder.fingerprint() != self.fingerprint:
            raise ModelMismatchError(
                f"model {self.model!r} on a Ray worker is not the library's (weights "
                f"fingerprint {encoder.fingerprint()[:12]} != {self.fingerprint[:12]}): give the "
                "workers the same model files")
        return encoder


@dataclass(frozen=True)
class Embedded:
    """An actor's answer for one file: its image's metadata and vector, or why it has none."""
    meta: Any = None
    vector: np.ndarray | None = None
    error: str | None = None


class EmbedActor:
    """The callable class of the actor pool: the encoder is built once per actor."""

    def __init__(self, job: EmbedJob):
        self.encoder = job.load()
        self.decoder = Decoder(self.encoder, job.max_pixels)
        self.threads = job.decode_threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Columns ``index``, ``path``, ``hash`` in; ``index``, ``vector``, ``result`` out."""
        results = embed_files(self.encoder, self.decoder, list(batch["path"]),
                              list(batch["hash"]), self.threads)
        return to_columns(batch["index"], results, self.encoder.dim)


def embed_files(encoder: "Encoder", decoder: Decoder, paths: list[str], hashes: list[str],
                threads: int) -> list[Embedded]:
    """Read, check, decode and embed the files at ``paths`` (whose contents the driver hashed
    as ``hashes``)."""
    expected = dict(zip(paths, hashes))

    def decode(item: WorkItem) -> Prepared:
        return decoder.prepare(item, lambda it, h: h == expected[it.stat.path])
    items = [WorkItem(FileStat(p, 0, 0), None) for p in paths]
    preps = list(prepare_in_order(items, decode, max(1, min(threads, len(items)))))
    decoded = [p for p in preps if p.pixels is not None]
    vectors = iter(embed_batch(encoder, decoded) if decoded else [])
    return [Embedded(p.meta, next(vectors)) if p.pixels is not None
            else Embedded(error=p.error or CHANGED) for p in preps]


def to_columns(index: np.ndarray, results: list[Embedded], dim: int) -> dict[str, np.ndarray]:
    """A batch of results as Ray Data columns: vectors (zeros where none) and, pickled, each
    file's metadata and error (records Arrow cannot hold as they are)."""
    vectors = np.zeros((len(results), dim), dtype=np.float32)
    for i, r in enumerate(results):
        if r.vector is not None:
            vectors[i] = r.vector
    blobs = np.array([pickle.dumps((r.meta, r.error)) for r in results], dtype=object)
    return {"index": np.asarray(index, dtype=np.int64), "vector": vectors, "result": blobs}


def from_columns(batch: dict[str, np.ndarray]) -> Iterator[tuple[int, Embedded]]:
    for i, vector, blob in zip(batch["index"], batch["vector"], batch["result"]):
        meta, error = pickle.loads(blob)  # written by our own actors (to_columns)
        yield int(i), Embedded(meta, None if error else np.asarray(vector), error)


# ---- the driver side -------------------------------------------------------------------------
@dataclass(frozen=True)
class Pool:
    """The actor pool for a cluster: how many actors, what each holds, images per batch."""
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    batch_size: int

    @classmethod
    def for_cluster(cls, resources: dict[str, float], options: RayOptions) -> "Pool":
        """One actor per GPU when there are GPUs, else actors of up to ``CPUS_PER_ACTOR`` cores
        (``options`` may set the number of actors, which then share the GPUs and cores, and
        the batch size)."""
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        actors = options.actors or (gpus or max(1, cpus // min(cpus, CPUS_PER_ACTOR)))
        batch = options.batch_size or (GPU_BATCH if gpus else ENCODE_BATCH)
        return cls(actors, min(1.0, gpus / actors), min(CPUS_PER_ACTOR, cpus / actors), batch)

    @property
    def threads(self) -> int:
        """Decoding threads in an actor."""
        return max(1, int(self.cpus_per_actor))


class RayExecutor:
    """Reads and hashes on the driver, embeds in a Ray Data actor pool, writes on the driver."""

    def __init__(self, options: RayOptions = RayOptions(), factory: EncoderFactory = load_encoder):
        """``factory`` builds the model in each actor (default: the registry's)."""
        if options.batch_size is not None and options.batch_size < 1:
            raise SearchkitError("--ray-batch-size must be at least 1")
        if options.actors is not None and options.actors < 1:
            raise SearchkitError("--ray-actors must be at least 1")
        if options.address:
            check_reachable(options.address)  # before anything is read or written
        self.ray = import_ray()
        self.options = options
        self.factory = factory

    def execute(self, run: "IndexRun", work: list[WorkItem], workers: int,
                progress: ProgressFn) -> None:
        done = 0
        claimed: list[Prepared] = []
        for prep in prepare_in_order(work, run.prepare_unencoded, workers):
            if run.holds_claim(prep):
                claimed.append(prep)  # a new content: embedded on Ray, decided below
                continue
            run.decide(prep)
            done += 1
            progress(done, len(work))
        if not claimed:
            return
        with ray_session(self.ray, self.options.address):
            for i, result in self._embedded(run, claimed):
                run.decide(_with(claimed[i], result))
                done += 1
                progress(done, len(work))

    def _embedded(self, run: "IndexRun",
                  claimed: list[Prepared]) -> Iterator[tuple[int, Embedded]]:
        """Each claimed file's result, as the actors finish their batches (any order)."""
        ray = self.ray
        pool = Pool.for_cluster(ray.cluster_resources(), self.options)
        job = EmbedJob(run.encoder.name, run.encoder.fingerprint(), run.limits.max_pixels,
                       "cuda" if pool.gpus_per_actor else "cpu", pool.threads, self.factory)
        rows = [{"index": i, "path": p.item.stat.path, "hash": p.content_hash}
                for i, p in enumerate(claimed)]
        blocks = math.ceil(len(rows) / pool.batch_size)  # a block per batch: a retry redoes one
        with warnings.catch_warnings():  # ray_remote_args_fn: deprecated, still the only way
            warnings.filterwarnings("ignore", message=".*ray_remote_args_fn")
            ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
                EmbedActor, fn_constructor_args=(job,), batch_size=pool.batch_size,
                compute=ray.data.ActorPoolStrategy(size=pool.actors),
                num_gpus=pool.gpus_per_actor, num_cpus=pool.cpus_per_actor,
                batch_format="numpy", ray_remote_args_fn=_retries)
        log.info("embedding %d files on Ray: %s", len(rows), pool)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                yield from from_columns(batch)
        except ray.exceptions.RayError as e:
            raise _worker_error(e) from e


def _retries() -> dict[str, int]:
    """Ray Data would run a batch again forever: a file that kills its worker every time must
    end the run (``max_task_retries`` has no named argument in Ray 2.60-2.63)."""
    return {"max_task_retries": TASK_RETRIES}


def _with(prep: Prepared, result: Embedded) -> Prepared:
    """The driver's record of a claimed file, completed with its actor's answer."""
    if result.error is not None:
        return dataclasses.replace(prep, error=result.error)
    return dataclasses.replace(prep, meta=result.meta, vector=result.vector)


def _worker_error(e: Exception) -> SearchkitError:
    """A failure on the workers as one line: a searchkit error as it is, else its last line."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, SearchkitError):
        return cause
    ours = OUR_ERROR.findall(str(cause or e))  # raised in an actor's constructor: text only
    return RayRunError(f"a Ray worker failed: {ours[-1] if ours else _line(cause or e, -1)}")


def _line(e: BaseException, which: int) -> str:
    """The first (0) or last (-1) line of what ``e`` says, or its type when it says nothing."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[which] if lines else type(e).__name__


@contextmanager
def ray_session(ray: Any, address: str | None) -> Iterator[None]:
    """Ray for one run: the cluster at ``address``, or a local instance on this machine's cores;
    shut down at the end, also on error. A session the caller started is theirs to end."""
    if ray.is_initialized():
        yield
        return
    temp = tempfile.mkdtemp(prefix="searchkit-ray-")
    try:
        with _environ(QUIET_ENV if address else {**QUIET_ENV, **LOCAL_ENV}), \
                _local_only() if not address else nullcontext(), _worker_errors_logged():
            try:
                _connect(ray, address, temp)
                with _quiet(ray):
                    yield
            finally:
                ray.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _connect(ray: Any, address: str | None, temp: str) -> None:
    quiet = {"logging_level": logging.CRITICAL, "log_to_driver": False}
    notices = os.path.join(temp, "init.log")
    try:
        with _stderr_to(notices):  # Ray's C++ notices: its log level, connection retries
            if address:
                check_reachable(address)  # else Ray waits minutes
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, _temp_dir=temp,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        what = f"reach the Ray cluster at {address}" if address else "start a local Ray instance"
        raise RayRunError(f"cannot {what}: {_line(e, 0)}{_last_notice(notices)}") from e


def _last_notice(path: str) -> str:
    """Ray's last C++ notice in ``path`` (why it could not connect: an authentication token
    missing, ...), as `` (notice)``; empty when there is none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            found = NOTICE.findall(f.read())
    except OSError:
        return ""
    return f" ({found[-1].strip()})" if found else ""


@contextmanager
def _worker_errors_logged() -> Iterator[None]:
    """Ray's driver prints its workers' errors on stdout, tracebacks and all, even for a batch
    it runs again (which would break ``--json``): during a run they go to this module's log,
    one line each (the whole text at debug level)."""
    from ray._private import worker
    printed = worker.print_to_stdstream

    def to_log(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") != "raylet":
            printed(data, ignore_prefix)
            return
        for text in data.get("lines", []):
            log.info("on Ray: %s", text.split(" Error: ")[0].strip().splitlines()[0])
            log.debug("on Ray: %s", text)
    worker.print_to_stdstream = to_log
    try:
        yield
    finally:
        worker.print_to_stdstream = printed


def check_reachable(address: str) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address must take a connection within
    ``CONNECT_TIMEOUT_S``; other forms (``auto``) are left to Ray."""
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise RayRunError(f"cannot reach the Ray cluster at {address}: "
                          f"{e.strerror or type(e).__name__}") from e


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment (for the processes Ray starts), put back afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _local_only() -> Iterator[None]:
    """The driver's own copy of Ray's loopback switch (read at import; :data:`LOCAL_ENV` sets
    it for the processes Ray starts), put back afterwards."""
    from ray._private import ray_constants
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


@contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """This process's stderr (the file descriptor: C++ writes there too) into ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as f:
            os.dup2(f.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def _quiet(ray: Any) -> Iterator[None]:
    """No progress bars and no log lines from Ray during the run: the CLI shows progress, and
    a failure reaches the caller as one error (:func:`_worker_error`)."""
    ray.data.DataContext.get_current().enable_progress_bars = False
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
