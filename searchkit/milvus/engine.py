"""The Milvus engine: one library in a Milvus collection (a server, or a Milvus Lite file),
behind :class:`searchkit.engine.Engine`, with the meaning of the local engine.

- **Rows** live in the collection ``COLLECTION``, one entity per file, keyed by
  :func:`~searchkit.milvus.schema.path_key` (a stable 63-bit hash of the path): every write is
  an ``upsert``, so a retried or resumed index run replaces rows and never duplicates them. A
  row id seen by users (hits, ``--like``) is that key.
- **Moves** (a stored file found at a new path) write the row at its new key first and delete
  the old key after: a crash in between leaves one extra row under the old path, whose file
  is gone, so the next run removes it. Deletions come last in every batch.
- **Consistency**: the first read of a collection by an engine is ``Strong`` (it sees every
  write made before, by any process), the later ones ``Session`` (they see this engine's own
  writes, and others' within moments). Milvus's default, ``Bounded``, hid fresh writes for
  seconds; ``Strong`` on every read cost 200 ms a request on the 2.3 server (its time tick),
  ``Session`` 1.5-3 ms.
- **Meta** (the model a library is bound to, its folders, ``vectors_version``, the index
  choice) lives in a small collection ``COLLECTION__searchkit_meta``; a mismatch with the
  model is the library's ``ModelMismatchError``, as for a local library.
- **Index** by size (:func:`~searchkit.milvus.schema.choose_index`): FLAT (exact) below 50k
  rows like the local engine, IVF_SQ8 (nlist=4 sqrt(n), nprobe scanning ~32k rows) above; a
  filtered search counts the rows its filter keeps first (one ``count(*)`` query, ~1 ms) and
  probes ``nprobe / share kept`` lists, as the local engine does, so that it finds the best
  ``k`` rows the filter keeps (recall@10 0.99 at every share, bench/results/milvus.md).
  :meth:`update_index` rebuilds the index when the size crosses a threshold, or when the
  library has another kind (HNSW, chosen by earlier versions), and flushes after, so that the
  last rows get indexed too. Milvus Lite stays FLAT at any size: its filtered HNSW search lost
  recall (0.57).
- **Reads of many rows** walk the key space in ranges of about ``SCAN_CHUNK`` rows (a Milvus
  query returns at most 16,384): bounded memory, no query iterator needed, any server.
- **The write lock** is a file on this machine, in the library's state folder
  (``$SEARCHKIT_STATE_DIR/milvus/`` or the user cache folder's ``searchkit/milvus/``, one
  folder per server, database and collection): writers on different machines are not locked
  against each other, but upserts by path keep the collection consistent.
- Not available on Milvus libraries: text read in images (``--ocr``, ``--text-contains``) and
  ``searchkit check``; some filters need a newer server (:mod:`searchkit.milvus.filters`).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np

from ..engine import EngineIndex, IndexMaintenance
from ..locks import is_locked, write_lock
from ..errors import LibraryDamagedError, SearchkitError
from ..paths import is_under
from ..store import (STATUS_OK, STATUS_SKIPPED, Changes, File, FileRow, LibraryInfo, RowState,
                     SoundVectors, sound_vectors)
from . import schema
from .config import MilvusLocation, MilvusSettings, state_dir
from .filters import (Dialect, all_of, keys_in, literal, path_under, search_expression,
                      status_is, unavailable)
from .schema import FLAT_MAX_ROWS, IVF_SCAN_ROWS, ROW_FIELDS, VECTOR, IndexChoice

if TYPE_CHECKING:
    from ..query import Filters

log = logging.getLogger(__name__)

STRONG = "Strong"
SESSION = "Session"
QUERY_WINDOW = 16_384          # the most rows (and the largest k) one Milvus request returns
SCAN_CHUNK = 8_192             # rows a range of a scan holds on average
KEY_CHUNK = 1_000              # keys an "id in [...]" request names
WRITE_CHUNK = 1_000            # entities an upsert sends
KEY_SPACE = 2 ** 63            # keys are in [0, 2**63)
META_INTS = ("schema_version", "dim", "vectors_version")
META_KEYS = ("model_name", "model_fingerprint") + META_INTS
INDEX_META = "index"
INDEX_CHOICE_TTL_S = 30.0      # how long a search trusts the index choice it read
KIND_NAMES = {schema.FLAT: "flat", schema.HNSW: "hnsw", schema.IVF_SQ8: "ivf-sq8",
              schema.IVF_FLAT: "ivf-flat"}


class MilvusEngine:
    """A library in a Milvus collection (see the module docstring)."""

    def __init__(self, where: MilvusLocation, settings: MilvusSettings, client,
                 flat_max_rows: int = FLAT_MAX_ROWS, ivf_scan_rows: int = IVF_SCAN_ROWS,
                 exact_on_lite: bool = True):
        self.location = where.location
        self.where = where
        self.settings = settings
        self.client = client
        self.files = where.collection
        self.meta_collection = schema.meta_name(where.collection)
        self.flat_max_rows = flat_max_rows
        self.ivf_scan_rows = ivf_scan_rows
        self.exact_on_lite = exact_on_lite
        self.dialect = Dialect.of(self._call(client.get_server_version), where.is_lite)
        self.state_dir = state_dir() / where.state_name(settings.db or "default")
        self._loaded: set[str] = set()
        self._caught_up: set[str] = set()    # collections read with Strong consistency once
        self._choice: tuple[float, IndexChoice, int] | None = None   # (read at, choice, ok rows)
        self._unflushed = False                # rows written since the last flush
        self._dim: int | None = None

    # ---- calls ---------------------------------------------------------------------------
    def _call(self, method, *args, **kwargs):
        """One pymilvus call; its failure as one SearchkitError line."""
        from pymilvus.exceptions import MilvusException
        try:
            return method(*args, **kwargs)
        except MilvusException as e:
            message = getattr(e, "message", None) or str(e)
            raise SearchkitError(f"Milvus library {self.location}: "
                                 f"{' '.join(str(message).split())}") from None

    def _ready(self, name: str) -> None:
        """Load a collection once (a server searches and queries loaded collections only)."""
        if name not in self._loaded:
            self._call(self.client.load_collection, name, timeout=self.settings.timeout)
            self._loaded.add(name)

    def _query(self, name: str, expr: str, fields: list[str], limit: int | None = None
               ) -> list[dict]:
        self._ready(name)
        kwargs = {"limit": limit} if limit is not None else {}
        return list(self._read(name, self.client.query, name, filter=expr,
                               output_fields=fields, timeout=self.settings.timeout, **kwargs))

    def _read(self, name: str, method, *args, **kwargs):
        """A read of collection ``name``: Strong the first time, then Session."""
        level = SESSION if name in self._caught_up else STRONG
        result = self._call(method, *args, consistency_level=level, **kwargs)
        self._caught_up.add(name)
        return result

    def _count(self, expr: str) -> int:
        rows = self._query(self.files, expr, ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _scan(self, expr: str, fields: list[str], chunk: int = SCAN_CHUNK
              ) -> Iterator[list[dict]]:
        """Every row ``expr`` keeps, in ranges of keys of about ``chunk`` rows each, by key."""
        total = self._count(expr)
        if not total:
            return
        step = math.ceil(KEY_SPACE / max(1, math.ceil(total / max(1, chunk))))
        for lo in range(0, KEY_SPACE, step):
            yield from self._scan_range(expr, fields, lo, min(lo + step, KEY_SPACE))

    def _scan_range(self, expr: str, fields: list[str], lo: int, hi: int
                    ) -> Iterator[list[dict]]:
        bounds = [f"id >= {lo}"] + ([f"id < {hi}"] if hi < KEY_SPACE else [])
        rows = self._query(self.files, all_of([expr, *bounds]), fields, limit=QUERY_WINDOW)
        if len(rows) >= QUERY_WINDOW and hi - lo > 1:   # more than a query returns: halve
            mid = (lo + hi) // 2
            yield from self._scan_range(expr, fields, lo, mid)
            yield from self._scan_range(expr, fields, mid, hi)
        elif rows:
            yield sorted(rows, key=lambda r: r["id"])

    def _by_keys(self, keys: Iterable[int], fields: list[str], expr: str | None = None
                 ) -> list[dict]:
        """The rows at these keys (within ``expr``)."""
        keys = sorted({int(k) for k in keys})
        out: list[dict] = []
        for start in range(0, len(keys), KEY_CHUNK):
            cond = keys_in(keys[start:start + KEY_CHUNK])
            out += self._query(self.files, all_of([cond] + ([expr] if expr else [])), fields,
                               limit=QUERY_WINDOW)
        return out

    def _upsert(self, name: str, entities: list[dict]) -> None:
        self._ready(name)
        self._unflushed |= name == self.files and bool(entities)
        for start in range(0, len(entities), WRITE_CHUNK):
            self._call(self.client.upsert, name, entities[start:start + WRITE_CHUNK],
                       timeout=self.settings.timeout)

    def _delete(self, keys: Iterable[int]) -> None:
        keys = sorted({int(k) for k in keys})
        self._ready(self.files)
        self._unflushed |= bool(keys)
        for start in range(0, len(keys), KEY_CHUNK):
            self._call(self.client.delete, self.files, ids=keys[start:start + KEY_CHUNK],
                       timeout=self.settings.timeout)

    # ---- the model it is bound to ----------------------------------------------------------
    def exists(self) -> bool:
        if not self._call(self.client.has_collection, self.meta_collection):
            return False
        return "model_name" in self._meta(["model_name"])

    def create(self, model_name: str, fingerprint: str, dim: int) -> None:
        """Make the collections (a half-made library of ours is completed) and bind them."""
        if not self._call(self.client.has_collection, self.meta_collection):
            if self._call(self.client.has_collection, self.files):
                raise SearchkitError(f"collection {self.files} exists and is no searchkit "
                                     f"library: name another collection in {self.location}")
            self._create_meta()
        if self._call(self.client.has_collection, self.files):
            self._drop_files()   # ours, with no model bound yet: nothing was written to it
        self._create_files(dim, IndexChoice(schema.FLAT))
        self._set_meta({"schema_version": schema.SCHEMA_VERSION, "dim": dim,
                        "vectors_version": 0, INDEX_META: IndexChoice(schema.FLAT).record(),
                        "model_fingerprint": fingerprint})
        self._set_meta({"model_name": model_name})   # last: the library exists from here
        self._dim = dim

    def migrate(self) -> None:
        version = self.info().schema_version
        if version > schema.SCHEMA_VERSION:
            raise SearchkitError(f"library {self.location} has schema version {version}, "
                                 f"newer than this searchkit ({schema.SCHEMA_VERSION}): "
                                 "upgrade searchkit")

    def info(self) -> LibraryInfo:
        meta = self._meta(list(META_KEYS))
        for key in META_KEYS:
            if key not in meta:
                raise self.damaged(f"meta has no {key!r}")
        return LibraryInfo(meta["model_name"], meta["model_fingerprint"],
                           self._int(meta, "dim"), self._int(meta, "schema_version"))

    def damaged(self, what: str) -> LibraryDamagedError:
        return LibraryDamagedError(
            f"library {self.location} is damaged: {what}; drop the collections {self.files} "
            f"and {self.meta_collection} (or name another collection) and index again")

    def rebind(self, model_name: str, fingerprint: str, dim: int) -> None:
        """Bind to another model: the files collection is made again for ``dim`` (every row
        dropped; the folders stay), then the meta says so. A crash in between leaves an empty
        collection bound to the old model, which the next index run rebinds."""
        self._drop_files()
        self._create_files(dim, IndexChoice(schema.FLAT))
        self._set_meta({"model_name": model_name, "model_fingerprint": fingerprint,
                        "dim": dim, INDEX_META: IndexChoice(schema.FLAT).record()})
        self._dim = dim
        self._bump()

    def _dimension(self) -> int:
        if self._dim is None:
            self._dim = self.info().dim
        return self._dim

    # ---- collections ---------------------------------------------------------------------
    def _create_meta(self) -> None:
        from pymilvus import DataType, MilvusClient
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_meta_fields(s, DataType)
        self._create(self.meta_collection, s, IndexChoice(schema.FLAT))

    def _create_files(self, dim: int, choice: IndexChoice) -> None:
        from pymilvus import DataType, MilvusClient
        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_fields(s, dim, DataType)
        self._create(self.files, s, choice)

    def _create(self, name: str, collection_schema, choice: IndexChoice) -> None:
        self._call(self.client.create_collection, name, schema=collection_schema,
                   consistency_level=STRONG, timeout=self.settings.timeout)
        self._create_index(name, choice)
        self._ready(name)

    def _create_index(self, name: str, choice: IndexChoice) -> None:
        """Build the vector index; a server is waited for (Milvus Lite builds it at once and
        has no call to wait with)."""
        self._call(self.client.create_index, name, self._index_params(choice),
                   timeout=self.settings.timeout, sync=not self.where.is_lite)

    def _index_params(self, choice: IndexChoice):
        params = self.client.prepare_index_params()
        params.add_index(field_name=VECTOR, index_type=choice.kind, metric_type=schema.METRIC,
                         params=choice.build_params())
        return params

    def _drop_files(self) -> None:
        if self._call(self.client.has_collection, self.files):
            self._call(self.client.drop_collection, self.files)
        self._loaded.discard(self.files)

    # ---- meta ----------------------------------------------------------------------------
    def _meta(self, keys: list[str]) -> dict[str, str]:
        expr = f"key in [{', '.join(map(literal, keys))}]"
        return {r["key"]: r["value"]
                for r in self._query(self.meta_collection, expr, ["key", "value"],
                                     limit=len(keys))}

    def _set_meta(self, values: dict[str, object]) -> None:
        if INDEX_META in values:
            self._choice = None
        zero = [0.0] * schema.META_DIM
        self._upsert(self.meta_collection, [{"key": k, "value": str(v), VECTOR: zero}
                                            for k, v in values.items()])

    def _int(self, meta: dict[str, str], key: str) -> int:
        try:
            return int(meta[key])
        except KeyError:
            raise self.damaged(f"meta has no {key!r}") from None
        except ValueError:
            raise self.damaged(f"meta {key!r} is {meta[key][:40]!r}, not a number") from None

    def vectors_version(self) -> int:
        return self._int(self._meta(["vectors_version"]), "vectors_version")

    def _bump(self) -> None:
        """Change ``vectors_version`` (after every write; caches of derived results key on
        it). Two writers on different machines may both set the same next number: their
        writes are both kept all the same."""
        self._set_meta({"vectors_version": self.vectors_version() + 1})

    # ---- writers -------------------------------------------------------------------------
    def writer(self) -> AbstractContextManager[None]:
        return write_lock(self.state_dir, self.location)

    def is_busy(self) -> bool:
        return is_locked(self.state_dir)

    # ---- folders -------------------------------------------------------------------------
    def roots(self) -> list[str]:
        prefix = schema.ROOT_KEY
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        expr = f"key >= {literal(prefix)} and key < {literal(after)}"
        rows = self._query(self.meta_collection, expr, ["key"], limit=QUERY_WINDOW)
        return sorted(r["key"][len(prefix):] for r in rows)

    def add_roots(self, paths: list[str], now: float) -> None:
        known = set(self.roots())
        self._set_meta({schema.ROOT_KEY + p: now for p in dict.fromkeys(paths) if p not in known})

    def forget(self, root: str) -> int:
        """Drop a folder and every row under it; returns the number of rows removed."""
        keys = [r["id"] for rows in self._scan(path_under(root), ["id"]) for r in rows]
        self._delete(keys)
        gone = [schema.ROOT_KEY + r for r in self.roots() if is_under(r, root)]
        if gone:
            self._call(self.client.delete, self.meta_collection, ids=gone,
                       timeout=self.settings.timeout)
        self._bump()
        return len(keys)

    # ---- what an index run plans against, and writes ---------------------------------------
    def rows_under(self, roots: list[str]) -> dict[str, RowState]:
        fields = ["id", *schema.ROW_STATE_FIELDS]
        out: dict[str, RowState] = {}
        for root in roots:
            for rows in self._scan(path_under(root), fields):
                out.update((r["path"], schema.row_state_of(r)) for r in rows)
        return out

    def content_hashes(self) -> set[str]:
        expr = all_of([status_is(STATUS_OK), 'content_hash != ""'])
        return {r["content_hash"] for rows in self._scan(expr, ["content_hash"]) for r in rows}

    def row_with_content(self, content_hash: str) -> FileRow | None:
        expr = all_of([status_is(STATUS_OK), f"content_hash == {literal(content_hash)}"])
        rows = self._query(self.files, expr, ROW_FIELDS + [VECTOR], limit=1)
        return schema.file_row_of(rows[0]) if rows else None

    def apply(self, changes: Changes) -> None:
        """Write ``changes``: new and moved rows and touches first (upserts; the latest
        change of a path wins, in :meth:`Store.apply`'s order), deletions after, so that a
        crash in between leaves rows the next run removes, never a lost one."""
        if changes.ocr:
            raise unavailable("text read in images (index --ocr)", self.dialect)
        dim = self._dimension()
        deleted = {int(i) for i in changes.deletes}
        gone = set(deleted)
        writes: dict[int, dict] = {}
        key_of: dict[int, int] = {}   # a row's key after this batch's moves
        stored = {r["id"]: r for r in self._by_keys(
            [m.id for m in changes.moves] + [t.id for t in changes.touches],
            ROW_FIELDS + [VECTOR])}
        for m in changes.moves:
            old = stored.get(m.id)
            if old is not None and m.id not in deleted:
                key_of[m.id] = schema.path_key(m.path)
                writes[key_of[m.id]] = dict(old, id=key_of[m.id], path=m.path, size=m.size,
                                            mtime_ns=m.mtime_ns)
                gone.add(m.id)
        for t in changes.touches:
            key = key_of.get(t.id, t.id)
            old = writes.get(key) or stored.get(t.id)
            if old is not None and t.id not in deleted:
                writes[key] = dict(old, size=t.size, mtime_ns=t.mtime_ns)
        for row in changes.upserts:
            e = schema.entity(row, dim)   # ValueError: this row's values (the writer's case)
            writes[e["id"]] = e
        self._upsert(self.files, list(writes.values()))
        self._delete(gone - set(writes))
        self._bump()

    def skipped(self) -> list[File]:
        rows = [schema.file_of(r) for chunk in self._scan(status_is(STATUS_SKIPPED), ROW_FIELDS)
                for r in chunk]
        return sorted(rows, key=lambda f: f.path)

    # ---- import and export -----------------------------------------------------------------
    def rows_at(self, paths: list[str]) -> dict[str, FileRow]:
        wanted = set(paths)
        rows = self._by_keys((schema.path_key(p) for p in wanted), ROW_FIELDS + [VECTOR])
        return {r["path"]: schema.file_row_of(r) for r in rows if r["path"] in wanted}

    def upsert_rows(self, rows: list[FileRow]) -> None:
        if not rows:
            return
        dim = self._dimension()
        self._upsert(self.files, list({e["id"]: e for e in (schema.entity(r, dim)
                                                             for r in rows)}.values()))
        self._bump()

    def export_rows(self, chunk: int = 10_000) -> Iterator[list[File]]:
        """The ok rows with their vectors, by key. (Writers elsewhere go on meanwhile: a row
        they write during the export may or may not be in it.)"""
        for rows in self._scan(status_is(STATUS_OK), ROW_FIELDS + [VECTOR], chunk):
            yield [schema.file_of(r) for r in rows]

    # ---- reading ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        counts = {s: self._count(status_is(s)) for s in (STATUS_OK, STATUS_SKIPPED)}
        return {s: n for s, n in counts.items() if n}

    def get_files(self, ids: list[int]) -> dict[int, File]:
        return {int(r["id"]): schema.file_of(r) for r in self._by_keys(ids, ROW_FIELDS)}

    def get_file(self, file_id: int) -> File | None:
        rows = self._by_keys([file_id], ROW_FIELDS + [VECTOR])
        return schema.file_of(rows[0]) if rows else None

    def formats(self) -> list[str]:
        """The formats of the indexed files: one query per format found (no full scan)."""
        found: list[str] = []
        while True:
            conds = [status_is(STATUS_OK), 'format != ""']
            if found:
                conds.append(f"not (format in [{', '.join(map(literal, found))}])")
            rows = self._query(self.files, all_of(conds), ["format"], limit=1)
            if not rows:
                return sorted(found)
            found.append(rows[0]["format"])

    def vectors_of(self, ids: np.ndarray) -> SoundVectors:
        rows = sorted(self._by_keys(np.asarray(ids, dtype=np.int64).tolist(), ["id", VECTOR],
                                    status_is(STATUS_OK)), key=lambda r: r["id"])
        return sound_vectors([int(r["id"]) for r in rows],
                             [schema.vector_blob(dict(r, status=STATUS_OK)) for r in rows],
                             self._dimension())

    def content_copies(self, hashes: list[str]) -> dict[str, int]:
        wanted = sorted({h for h in hashes if h})
        out: dict[str, int] = defaultdict(int)
        for start in range(0, len(wanted), KEY_CHUNK):
            part = ", ".join(map(literal, wanted[start:start + KEY_CHUNK]))
            expr = all_of([status_is(STATUS_OK), f"content_hash in [{part}]"])
            for rows in self._scan(expr, ["content_hash"]):
                for r in rows:
                    out[r["content_hash"]] += 1
        return dict(out)

    def sample_ok_paths(self, n: int) -> list[str]:
        """Up to ``n`` ok rows' paths drawn at random: keys are hashes of paths, so the rows
        in a range of keys are a random sample (a range expected to hold ``2n``, first ``n``)."""
        ok = status_is(STATUS_OK)
        total = self._count(ok)
        if total <= n:
            return [r["path"] for rows in self._scan(ok, ["path"]) for r in rows]
        width = min(KEY_SPACE, math.ceil(KEY_SPACE * 2 * n / total))
        lo = random.Random(total).randrange(0, KEY_SPACE - width + 1)
        rows = [r for chunk in self._scan_range(ok, ["path"], lo, lo + width) for r in chunk]
        return [r["path"] for r in rows[:n]]

    # ---- duplicates (searchkit.dupes) ------------------------------------------------------
    def count_ok(self, filters: "Filters | None" = None) -> int:
        return self._count(search_expression(filters, self.dialect))

    def duplicate_contents(self, filters: "Filters | None" = None) -> list[list[int]]:
        expr = all_of([search_expression(filters, self.dialect), 'content_hash != ""'])
        by_hash: dict[str, list[int]] = defaultdict(list)
        for rows in self._scan(expr, ["id", "content_hash"]):
            for r in rows:
                by_hash[r["content_hash"]].append(int(r["id"]))
        return [sorted(ids) for _, ids in sorted(by_hash.items()) if len(ids) > 1]

    def content_vectors(self, filters: "Filters | None" = None, chunk: int = 10_000
                        ) -> Iterator[list[tuple[int, str | None, bytes | None]]]:
        """(id, content_hash, vector) of every ok row within ``filters``, by id, in chunks."""
        expr = search_expression(filters, self.dialect)
        for rows in self._scan(expr, ["id", "content_hash", "status", VECTOR], chunk):
            yield [(int(r["id"]), r["content_hash"] or None, schema.vector_blob(r))
                   for r in rows]

    # ---- search ----------------------------------------------------------------------------
    def search(self, vector: np.ndarray, k: int, filters: "Filters | None" = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` (at most 16,384, Milvus's limit) ok rows within ``filters``: the
        filter is part of the Milvus search, not applied after it."""
        expr = search_expression(filters, self.dialect)
        k = min(int(k), QUERY_WINDOW)
        if k <= 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        self._ready(self.files)
        choice = self._index_choice()
        kept = self._share_kept(expr, choice)
        if not kept:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        hits = self._read(self.files, self.client.search, self.files,
                          data=[np.asarray(vector, dtype=np.float32).tolist()], limit=k,
                          filter=expr, output_fields=[],
                          search_params={"metric_type": schema.METRIC,
                                         "params": choice.search_params(k, kept)},
                          timeout=self.settings.timeout)[0]
        return (np.asarray([h["distance"] for h in hits], dtype=np.float32),
                np.asarray([h["id"] for h in hits], dtype=np.int64))

    def warm(self) -> None:
        self._ready(self.files)
        self._ready(self.meta_collection)

    def _index_choice(self, fresh: bool = False) -> IndexChoice:
        """The index the library has (how to search it), read again after
        ``INDEX_CHOICE_TTL_S`` (an index run elsewhere may rebuild it) or when ``fresh``."""
        now = time.monotonic()
        if fresh or self._choice is None or now - self._choice[0] > INDEX_CHOICE_TTL_S:
            choice = IndexChoice.of(self._meta([INDEX_META]).get(INDEX_META))
            ok = 0 if choice.kind == schema.FLAT else self._count(status_is(STATUS_OK))
            self._choice = (now, choice, ok)
        return self._choice[1]

    def _share_kept(self, expr: str, choice: IndexChoice) -> float:
        """The share of the ok rows that ``expr`` keeps (0 when none), counted on an
        approximate index only (an exact one searches every row a filter keeps anyway); the
        ok rows' number is read with the index choice."""
        if choice.kind == schema.FLAT or expr == status_is(STATUS_OK):
            return 1.0
        matching = self._count(expr)
        return matching / max(matching, self._choice[2] if self._choice else 0, 1)

    def _wanted_index(self) -> tuple[int, IndexChoice]:
        """The index for the library's size; Milvus Lite stays exact (FLAT), since it filters
        an HNSW search after the graph walk (filtered recall 0.57 measured, issue 13)."""
        n = self._count(status_is(STATUS_OK))
        if self.where.is_lite and self.exact_on_lite:
            return n, IndexChoice(schema.FLAT)
        return n, schema.choose_index(n, self.flat_max_rows, self.ivf_scan_rows)

    def update_index(self, rebuild: bool = False) -> IndexMaintenance:
        """Rebuild the index when the library's size calls for another kind (or when asked),
        on a server after a flush of every row (sealed, they are all indexed before the
        collection is loaded again; else the last rows stayed in the growing segment, searched
        without the index); else, on a server, flush the rows this engine wrote (about 3 s on
        the 2.3 server, so a run that changed nothing skips it)."""
        t0 = time.perf_counter()
        current = self._index_choice(fresh=True)
        n, wanted = self._wanted_index()
        if rebuild or wanted.kind != current.kind:
            self._flush(force=True)        # first: the index is built on every row, then loaded
            self._rebuild_index(wanted)
            return IndexMaintenance("rebuilt", n, f"{n} rows: {current.kind} -> {wanted.kind}",
                                    time.perf_counter() - t0)
        if not self._flush():
            return IndexMaintenance("none")
        return IndexMaintenance("flushed", 0, "", time.perf_counter() - t0)

    def _flush(self, force: bool = False) -> bool:
        """Seal the rows this engine wrote (every row when ``force``), on a server (Lite has
        no segments); whether it flushed."""
        if self.where.is_lite or not (self._unflushed or force):
            return False
        self._call(self.client.flush, self.files, timeout=self.settings.timeout)
        self._unflushed = False
        return True

    def _rebuild_index(self, choice: IndexChoice) -> None:
        """Drop the vector index and build ``choice`` (the collection is released meanwhile:
        searches wait for the load)."""
        self._call(self.client.release_collection, self.files, timeout=self.settings.timeout)
        self._loaded.discard(self.files)
        self._call(self.client.drop_index, self.files, VECTOR, timeout=self.settings.timeout)
        self._create_index(self.files, choice)
        self._set_meta({INDEX_META: choice.record()})
        self._ready(self.files)

    def index(self) -> EngineIndex:
        current = self._index_choice(fresh=True)
        n, wanted = self._wanted_index()
        pending = 0
        if not self.where.is_lite:
            described = self._call(self.client.describe_index, self.files, VECTOR) or {}
            pending = int(described.get("pending_index_rows", 0) or 0)
        return EngineIndex(KIND_NAMES.get(current.kind, current.kind.lower()),
                           "fresh" if wanted.kind == current.kind else "stale", pending,
                           device=self.dialect.name)

    def problems(self) -> list[str]:
        """What is wrong, cheaply (``searchkit status``)."""
        if not self._call(self.client.has_collection, self.files):
            return [f"the collection {self.files} is missing: index again to fill it"]
        current = self._index_choice(fresh=True)
        n, wanted = self._wanted_index()
        if wanted.kind != current.kind:
            return [f"the vector index is {current.kind} but {n} indexed images call for "
                    f"{wanted.kind}; the next index run rebuilds it"]
        return []

    # ---- what only the local engine has ----------------------------------------------------
    def ocr_on(self) -> bool:
        return False

    def local(self, feature: str):
        raise SearchkitError(f"{feature} is not available on Milvus libraries "
                             f"({self.location})")

    def close(self) -> None:
        try:
            self.client.close()
        except Exception as e:  # closing a broken connection must not hide what broke it
            log.debug("closing the Milvus client: %s", e)
