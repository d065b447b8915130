"""`searchkit check`, like `git fsck`: verify a library and, with ``repair``, fix what can be
fixed without losing a stored row.

Checked, in order (a step that finds the library unreadable stops the ones that need it):
the database file (SQLite ``quick_check``), the meta rows and schema version, the change log's
triggers, every ok row's vector (length, finite, unit norm) and whether its file is still on
disk, the saved index with the changes logged since it was built against the store (the whole
file's checksum, stamp, count, and a probe of stored vectors), and temp files left by a killed
save. Repair: meta counters that can be recomputed, the change log's triggers, damaged vectors
marked so that the next index run encodes their files again, the index rebuilt, stray temp
files removed.
A damaged database file is not repaired here: it is restored from a backup.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import index as faiss_index
from .errors import LibraryDamagedError, SearchkitError
from .library import Library
from .local_engine import LocalEngine, write_lock
from .store import META_INTS, META_KEYS, SCHEMA_VERSION, Store, sound_vectors

MAX_EXAMPLES = 5     # paths shown per finding
PROBE_ROWS = 64      # stored vectors compared with the saved index


@dataclass(frozen=True)
class Finding:
    """One thing found. A problem is damage; a note is not (a stale cache, a file gone)."""
    area: str                     # "store", "meta", "vectors", "index", "temp files", "files"
    message: str
    problem: bool = True
    repaired: str | None = None   # what the repair did about it
    repairable: bool = True       # whether `check --repair` can fix it
    examples: list[str] = field(default_factory=list)   # a few paths, to print literally

    @property
    def remains(self) -> bool:
        return self.problem and self.repaired is None


@dataclass
class CheckReport:
    directory: str
    repair: bool
    checked: list[str] = field(default_factory=list)   # what was verified, in words
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No damage left (after the repair, if one was asked for)."""
        return not any(f.remains for f in self.findings)

    def to_json(self) -> dict:
        return dict(asdict(self), healthy=self.healthy)


@dataclass
class _Scan:
    """One pass over the ok rows."""
    rows: int = 0
    sound_ids: list[np.ndarray] = field(default_factory=list)
    bad: dict[int, str] = field(default_factory=dict)
    bad_paths: list[str] = field(default_factory=list)
    missing: int = 0
    missing_paths: list[str] = field(default_factory=list)

    def ids(self) -> np.ndarray:
        return np.concatenate(self.sound_ids) if self.sound_ids else np.zeros(0, np.int64)


def check_library(directory: str | Path, repair: bool = False) -> CheckReport:
    """Verify the library in ``directory`` (and repair it). Raises only when there is no
    library there or, with ``repair``, when an index run holds it."""
    directory = Path(directory).expanduser()
    store = LocalEngine(directory)
    if not store.path.is_file() or store.path.stat().st_size == 0:
        raise SearchkitError(f"no library at {directory} (no {store.path.name} there)")
    report = CheckReport(str(directory), repair)
    with write_lock(directory) if repair else nullcontext():
        if not (_check_store(store, report) and _check_meta(store, report, repair)):
            return report
        library = Library(store)
        migrated = library.info.schema_version == SCHEMA_VERSION  # else: read only, older
        rebuild = migrated and _check_log(store, report, repair)
        scan = _scan_rows(store, library.info.dim)
        report.checked.append(f"{scan.rows} indexed images: vectors and files on disk")
        _report_vectors(store, scan, report, repair)
        _report_missing_files(scan, report)
        _check_temp_files(directory, report, repair)
        if migrated:  # the saved index is read with the change log, which migration adds
            _check_index(library, scan, report, repair, rebuild)
    return report


# ---- the database file and its meta rows ---------------------------------------------------
def _check_store(store: Store, report: CheckReport) -> bool:
    report.checked.append(f"{store.path.name} structure (SQLite quick_check)")
    try:
        if not store.exists():
            report.findings.append(Finding("store", f"{store.path.name} holds no library",
                                           repairable=False))
            return False
        errors = store.quick_check()
        if errors:
            raise store.damaged(f"{store.path.name} fails SQLite's check "
                                f"({'; '.join(errors[:3])})", restore=True)
    except LibraryDamagedError as e:
        report.findings.append(Finding("store", str(e), repairable=False))
        return False
    return True


def _check_meta(store: Store, report: CheckReport, repair: bool) -> bool:
    """Meta rows present, numeric where they must be, ``dim`` the length of the stored
    vectors, a schema this code knows. False when the checks below cannot run."""
    report.checked.append("meta rows and schema version")
    for key, what in _meta_problems(store):
        fix = _meta_fix(store, key)
        if fix is None:
            report.findings.append(Finding("meta", what + f"; restore {store.path} from a "
                                           "backup, or index again into a new library",
                                           repairable=False))
            return False
        report.findings.append(Finding("meta", what, repaired=f"set {key} to {fix}"
                                       if repair else None))
        if not repair:
            return False
        store.set_meta(key, fix)
    version = int(store.get_meta("schema_version"))
    if version > SCHEMA_VERSION:
        report.findings.append(Finding("meta", f"schema version {version} is newer than this "
                                               f"searchkit ({SCHEMA_VERSION}): upgrade searchkit",
                                       repairable=False))
        return False
    if version < SCHEMA_VERSION:
        if repair:
            store.migrate()
        report.findings.append(Finding(
            "meta", f"schema version {version}: migrated to {SCHEMA_VERSION} when opened",
            problem=False, repaired="migrated" if repair else None))
    return True


def _meta_problems(store: Store) -> list[tuple[str, str]]:
    """(key, what is wrong) for each meta row that is missing, not a number, or (dim) not
    the length most stored vectors have."""
    meta = store.meta()
    problems = []
    for key in META_KEYS:
        value = meta.get(key)
        if value is None or (key in META_INTS and not _is_int(value)):
            problems.append((key, f"meta {key!r} is " + ("missing" if value is None
                                                           else f"{value[:40]!r}")))
    if not any(key == "dim" for key, _ in problems):
        seen = _dim_from_vectors(store)
        if seen is not None and seen != int(meta["dim"]):
            problems.append(("dim", f"meta 'dim' is {meta['dim']}, but stored vectors have "
                                    f"{seen} values"))
    return problems


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _meta_fix(store: Store, key: str) -> int | None:
    """The value a damaged meta row can be given back, if it can be recomputed."""
    if key == "vectors_version":  # any new value: every cached index becomes stale
        return _fresh_version(store)
    if key == "dim":
        return _dim_from_vectors(store)
    if key == "schema_version":  # the version whose columns the tables have
        return next((v for v in range(SCHEMA_VERSION, 0, -1) if store.schema_matches(v)), None)
    return None


def _fresh_version(store: Store) -> int:
    try:
        saved = faiss_index.read_stamp(store.directory, verify=False)
    except faiss_index.DamagedIndexError:
        saved = None
    return (saved.stamp.vectors_version if saved else 0) + 1


def _check_log(store: Store, report: CheckReport, repair: bool) -> bool:
    """The change log's table and triggers (without them the saved index would miss changes);
    whether the index must be rebuilt because they were missing."""
    report.checked.append("change log triggers")
    if store.log_complete():
        return False
    if repair:
        store.restore_log()
    report.findings.append(Finding(
        "store", "the change log's triggers are missing: the saved index may not know of "
                 "changes made since", repaired="recreated the change log" if repair else None))
    return True


def _dim_from_vectors(store: Store) -> int | None:
    """The length more than half of a sample of ok rows' vectors have, if any."""
    sample = next(store.ok_rows(chunk=1000), [])
    lengths = [len(v) // 4 for _, _, v in sample if v and len(v) % 4 == 0]
    if not lengths:
        return None
    values, counts = np.unique(lengths, return_counts=True)
    return int(values[np.argmax(counts)]) if counts.max() * 2 > len(sample) else None


# ---- rows: vectors and files ---------------------------------------------------------------
def _scan_rows(store: Store, dim: int) -> _Scan:
    scan = _Scan()
    for chunk in store.ok_rows():
        ids, paths, blobs = zip(*chunk)
        sound = sound_vectors(list(ids), list(blobs), dim)
        scan.rows += len(chunk)
        scan.sound_ids.append(sound.ids)
        scan.bad.update(sound.bad)
        by_id = dict(zip(ids, paths))
        scan.bad_paths += [by_id[i] for i in list(sound.bad)[:MAX_EXAMPLES - len(scan.bad_paths)]]
        for path in paths:
            if not os.path.exists(path):
                scan.missing += 1
                if len(scan.missing_paths) < MAX_EXAMPLES:
                    scan.missing_paths.append(path)
    return scan


def _report_vectors(store: Store, scan: _Scan, report: CheckReport, repair: bool) -> None:
    if not scan.bad:
        return
    reasons = sorted(set(scan.bad.values()))
    message = (f"{len(scan.bad)} indexed images have a damaged vector ({'; '.join(reasons[:3])})"
               "; they are left out of search until encoded again")
    waiting = store.awaiting_reencoding()
    if waiting and not repair:
        message += f" ({waiting} already marked: run searchkit index)"
    repaired = None
    if repair:
        store.mark_for_reencoding(sorted(scan.bad))
        repaired = (f"marked {len(scan.bad)} images to be encoded again: run "
                    f"searchkit index --library {store.directory}")
    report.findings.append(Finding("vectors", message, repaired=repaired,
                                   examples=scan.bad_paths))


def _report_missing_files(scan: _Scan, report: CheckReport) -> None:
    if scan.missing:
        report.findings.append(Finding(
            "files", f"{scan.missing} indexed files are no longer on disk (moved, deleted or "
                     "on a drive not mounted); the next index run drops those under its "
                     "folders, `searchkit forget FOLDER` drops a folder",
            problem=False, examples=scan.missing_paths))


# ---- the derived files -----------------------------------------------------------------------
def _check_temp_files(directory: Path, report: CheckReport, repair: bool) -> None:
    report.checked.append("temp files")
    strays = faiss_index.stray_temp_files(directory)
    if not strays:
        return
    repaired = None
    if repair:
        removed = faiss_index.remove_stray_temp_files(directory)
        repaired = f"removed {len(removed)} temp files" if removed else None
    report.findings.append(Finding("temp files", faiss_index.describe_temp_files(strays),
                                   repaired=repaired,
                                   examples=[p.name for p in strays[:MAX_EXAMPLES]]))


def _check_index(library: Library, scan: _Scan, report: CheckReport, repair: bool,
                 rebuild: bool = False) -> None:
    report.checked.append("saved index against the store (checksum, stamp, count, probe)")
    finding = _index_finding(library, scan)
    if finding is None and not rebuild:
        return
    if repair:
        library.update_index(rebuild=True)
        if finding is not None and library.index_state(verify=True) == "fresh":
            finding = Finding(finding.area, finding.message, finding.problem,
                              repaired=f"rebuilt the index from {library.store.path.name} "
                                       f"({len(scan.ids())} vectors)")
    if finding is not None:
        report.findings.append(finding)


def _index_finding(library: Library, scan: _Scan) -> Finding | None:
    state = library.saved_index_state(verify=True)
    if state.damage is not None:
        return Finding("index", f"the saved index is damaged ({state.damage})")
    if state.state == "missing":
        return Finding("index", "no saved index (the next search builds it)", problem=False)
    if state.state == "stale":
        return Finding("index", "the saved index is older than the store's change log (the "
                                "next index run rebuilds it)", problem=False)
    try:
        live = library.saved_index(verify=False)  # its checksum was just verified
    except faiss_index.DamagedIndexError as e:
        return Finding("index", f"the saved index is damaged ({e})")
    ids = scan.ids()
    if live is None or len(live) != len(ids):
        held = 0 if live is None else len(live)
        return Finding("index", f"the saved index holds {held} vectors, the store "
                                f"{len(ids)} sound ones")
    wrong = _probe(library, live, ids)
    if wrong:
        return Finding("index", f"the saved index disagrees with the store on {wrong} of the "
                                f"vectors probed")
    return None


def _probe(library: Library, index, ids: np.ndarray) -> int:
    """How many of a spread of stored vectors the index does not hold exactly."""
    sample = ids[np.linspace(0, len(ids) - 1, min(PROBE_ROWS, len(ids)), dtype=int)]
    stored = library.store.vectors_of(sample)
    return faiss_index.probe(index, stored.ids, stored.vectors) + len(sample) - len(stored.ids)
