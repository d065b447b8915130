"""A library written by schema 2 opens with schema 3 (the change log, issue 12) without losing
a row, and the index it saved before the log existed stays in use (no rebuild at 1M rows)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from searchkit import Library, Query, store
from searchkit.check import check_library
from searchkit.index import STAMP_FILE
from searchkit.indexer import Indexer
from searchkit.store import LOG_TRIGGERS, Store
from tests.helpers import make_photos
from tests.indexer.test_upgrade_v1 import table


def as_schema_2(directory: Path) -> None:
    """What schema 2 left: no change log, an index stamp without a log position."""
    c = sqlite3.connect(directory / "library.db")
    for name in LOG_TRIGGERS:
        c.execute(f"DROP TRIGGER {name}")
    c.execute("DROP TABLE changes")
    c.execute("DELETE FROM sqlite_sequence WHERE name = 'changes'")
    c.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    c.commit()
    c.close()
    stamp = json.loads((directory / STAMP_FILE).read_text())
    del stamp["changes_seq"]
    (directory / STAMP_FILE).write_text(json.dumps(stamp))


@pytest.fixture
def v2(tmp_path, tiny_encoder) -> tuple[Path, Path]:
    folder = tmp_path / "photos"
    make_photos(folder / "a", 6)
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(folder / "a")])
    lib.store.engine.dispose()
    as_schema_2(lib.directory)
    return lib.directory, folder


def test_v2_library_opens_as_v3_with_every_row_and_its_saved_index(v2, tiny_encoder,
                                                                     monkeypatch):
    directory, folder = v2
    before = table(directory)
    lib = Library.open(directory, encoder=tiny_encoder)
    assert lib.info.schema_version == store.SCHEMA_VERSION
    assert lib.store.schema_matches() and lib.store.log_complete()
    assert table(directory) == before   # ids and vectors too
    assert lib.index_state() == "fresh"
    monkeypatch.setattr(Store, "all_vectors", lambda self: pytest.fail("rebuilt"))
    assert len(lib.search(Query.text("x"), k=50)) == 6
    monkeypatch.undo()
    make_photos(folder / "b", 3, offset=40)  # the first change after the upgrade
    Indexer(lib).run([str(folder / "b")])
    again = Library.open(directory, encoder=tiny_encoder)
    assert len(again.search(Query.text("x"), k=50)) == 9 and again.index_state() == "fresh"


def test_check_notes_a_v2_library_and_repair_migrates_it(v2):
    directory, _ = v2
    report = check_library(directory)
    assert report.healthy and not Store(directory).log_complete()  # read only
    assert check_library(directory, repair=True).healthy
    assert Store(directory).log_complete() and check_library(directory).findings == []


def test_a_change_log_without_its_triggers_is_found_and_repaired(v2, tiny_encoder):
    directory, folder = v2
    Library.open(directory, encoder=tiny_encoder)   # migrated
    c = sqlite3.connect(directory / "library.db")
    c.execute("DROP TRIGGER files_log_delete")
    c.commit()
    c.close()
    report = check_library(directory)
    assert not report.healthy and any("triggers are missing" in f.message
                                      for f in report.findings)
    assert check_library(directory, repair=True).healthy
    assert Store(directory).log_complete() and check_library(directory).findings == []
