"""`searchkit check [--repair]` and damaged libraries at the command line: one line, never a
traceback, and nothing stored lost."""

import json

import pytest
from typer.testing import CliRunner

from searchkit.cli.main import app
from searchkit.indexer import Indexer
from searchkit import Library, Query
from searchkit.check import check_library
from tests import damage
from tests.cli.test_cli import assert_one_line_error
from tests.helpers import make_photos


@pytest.fixture
def lib(tmp_path, tiny_encoder):
    make_photos(tmp_path / "photos", 8)
    library = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(library).run([str(tmp_path / "photos")])
    return library


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def ok_rows(lib) -> int:
    return Library.open(lib.directory, encoder=lib.encoder).status().indexed


def test_check_on_a_healthy_library_exits_0(lib):
    r = run("check", "--library", lib.directory)
    assert r.exit_code == 0, r.output
    assert "library is healthy" in r.output and "problem" not in r.output
    report = json.loads(run("check", "--library", lib.directory, "--json").stdout)
    assert report["healthy"] and report["findings"] == []


def test_check_finds_and_repair_fixes_damage_without_losing_a_row(lib, tmp_path):
    photos = sorted((tmp_path / "photos").rglob("*.jpg"))
    damage.set_vector(lib, str(photos[0]), "short")
    damage.damage_index(lib, "id map")
    (lib.directory / "index.json.k1ll3d.tmp").write_bytes(b"partial")
    photos[1].unlink()
    r = run("status", "--library", lib.directory)
    assert r.exit_code == 0 and ", damaged" in r.output  # the index line
    assert "problem   the saved index is damaged" in r.output
    assert "problem   1 temp files" in r.output and "(see searchkit check)" in r.output
    rows = ok_rows(lib)

    r = run("check", "--library", lib.directory)
    assert r.exit_code == 1, r.output
    for needle in ("problem   vectors: 1 indexed images have a damaged vector",
                   "problem   index: the saved index is damaged",
                   "problem   temp files: 1 temp files", "note      files: 1 indexed files",
                   repr(str(photos[0]))[1:-1], repr(str(photos[1]))[1:-1],
                   "problems remain: 3 (searchkit check --repair fixes them)"):
        assert needle in r.output, (needle, r.output)

    r = run("check", "--repair", "--library", lib.directory)
    assert r.exit_code == 0, r.output
    assert "marked 1 images to be encoded again" in r.output
    assert "rebuilt the index" in r.output and "removed 1 temp files" in r.output
    assert not list(lib.directory.glob("*.tmp")) and ok_rows(lib) == rows  # nothing deleted
    # the row waits for the next index run, which encodes it again (and drops the gone file)
    r = run("check", "--library", lib.directory)
    assert r.exit_code == 1 and "already marked: run searchkit index" in r.output
    assert run("index", "--library", lib.directory).exit_code == 0
    assert run("check", "--library", lib.directory).exit_code == 0
    again = Library.open(lib.directory, encoder=lib.encoder)
    assert again.search(Query.image(photos[0]), k=1)[0].path == str(photos[0])


@pytest.mark.parametrize("key", ["vectors_version", "dim", "schema_version"])
def test_meta_that_is_not_a_number_is_one_line_then_repaired(lib, key):
    damage.set_meta(lib, key, "NaN-ish")
    r = run("search", "a photo", "--library", lib.directory)
    assert_one_line_error(r)
    assert "is damaged" in r.output and "check --repair" in r.output
    assert run("check", "--library", lib.directory).exit_code == 1
    r = run("check", "--repair", "--library", lib.directory)
    assert r.exit_code == 0 and f"set {key} to" in r.output, r.output
    r = run("search", "a photo", "--library", lib.directory, "--json")
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 8


def test_dim_that_disagrees_with_the_stored_vectors_is_found_and_repaired(lib):
    dim = lib.info.dim
    damage.set_meta(lib, "dim", str(dim - 1))
    r = run("check", "--library", lib.directory)
    assert r.exit_code == 1
    assert f"meta 'dim' is {dim - 1}, but stored vectors have {dim} values" in r.output
    r = run("check", "--repair", "--library", lib.directory)
    assert r.exit_code == 0 and f"set dim to {dim}" in r.output, r.output
    assert "damaged vector" not in r.output  # no row was marked for the wrong dim
    assert run("search", "a photo", "--library", lib.directory).exit_code == 0


@pytest.mark.parametrize("how", ["truncated", "bad header"])
@pytest.mark.parametrize("command", [["search", "a photo"], ["status"], ["index"],
                                     ["similar", "PHOTO"]])
def test_damaged_database_is_one_line_for_every_command(lib, tmp_path, how, command):
    (damage.truncate_db if how == "truncated" else damage.break_db_header)(lib)
    photo = next((tmp_path / "photos").rglob("*.jpg"))
    r = run(*[photo if a == "PHOTO" else a for a in command], "--library", lib.directory)
    assert_one_line_error(r)
    assert "is damaged" in r.output and "restore" in r.output
    r = run("check", "--repair", "--library", lib.directory)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "problem   store:" in r.output and "problems remain: 1\n" in r.output


def test_full_disk_during_index_is_one_line_and_resumes(small_pages, lib, tmp_path,
                                                      monkeypatch):
    from searchkit import store
    make_photos(tmp_path / "photos" / "new", 40, offset=200)
    with lib.store.engine.connect() as c:
        pages = c.exec_driver_sql("PRAGMA page_count").scalar()
    pragmas = store._set_pragmas

    def full_disk(dbapi_conn, record):  # the disk holds exactly what is there now
        pragmas(dbapi_conn, record)
        dbapi_conn.execute(f"PRAGMA max_page_count={pages}")
    monkeypatch.setattr(store, "_set_pragmas", full_disk)
    r = run("index", "--library", lib.directory)
    assert_one_line_error(r)
    assert "no space left" in r.output
    monkeypatch.undo()
    assert ok_rows(lib) == 8
    assert run("index", "--library", lib.directory).exit_code == 0 and ok_rows(lib) == 48


@pytest.mark.parametrize("command", [["search", "x"], ["status"], ["check"], ["check",
                                                                               "--repair"]])
def test_commands_on_a_folder_that_is_not_a_library_create_nothing(tmp_path, command):
    folder = tmp_path / "photos"
    make_photos(folder, 2)
    before = sorted(folder.rglob("*"))
    r = run(*command, "--library", folder)
    assert_one_line_error(r)
    assert "no library" in r.output
    assert sorted(folder.rglob("*")) == before


def test_check_report_is_typed_and_says_what_it_checked(lib):
    report = check_library(lib.directory)
    assert report.healthy and not report.repair
    assert any("quick_check" in c for c in report.checked)
    assert any("8 indexed images" in c for c in report.checked)
