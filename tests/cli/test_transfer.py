"""`searchkit import` / `searchkit export`: exit codes, one-line errors, names printed literally."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from searchkit.cli.main import app
from searchkit.parquet_io import FINGERPRINT_KEY, MODEL_KEY
from tests.helpers import make_photos


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_clip_dir):
    base = tmp_path_factory.mktemp("transfer")
    make_photos(base / "photos", 5)
    lib = base / "lib"
    r = run("index", base / "photos", "--library", lib, "--model", tiny_clip_dir)
    assert r.exit_code == 0, r.output
    out = base / "emb.parquet"
    r = run("export", out, "--library", lib)
    assert r.exit_code == 0, r.output
    return base, lib, out


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(r, *words):
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for w in words:
        assert w in lines[0], r.output


def status(lib):
    return json.loads(run("status", "--json", "--library", lib).stdout)


def model_of(lib):
    st = status(lib)
    return {MODEL_KEY: st["model_name"], FINGERPRINT_KEY: st["model_fingerprint"]}, st["dim"]


def test_export_and_import_into_a_new_library(indexed, tmp_path):
    _, lib, out = indexed
    r = run("import", out, "--library", tmp_path / "new", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert (report["added"], report["bad"], report["absent"]) == (5, 0, 0)
    st = status(tmp_path / "new")
    assert st["indexed"] == 5 and st["index_state"] == "fresh"
    assert st["model_fingerprint"] == status(lib)["model_fingerprint"]
    r = run("import", out, "--library", tmp_path / "new")
    assert r.exit_code == 0 and "added 0, updated 0, unchanged 5" in r.output


def test_import_of_a_missing_file_is_one_line_and_makes_no_library(tmp_path):
    r = run("import", tmp_path / "nope.parquet", "--library", tmp_path / "lib")
    assert_one_line_error(r, "nope.parquet", "no such file")
    assert not (tmp_path / "lib").exists()


def test_import_of_a_file_that_is_not_parquet_is_one_line(indexed, tmp_path):
    _, lib, _ = indexed
    f = tmp_path / "notes.parquet"
    f.write_text("path,vector\n/a.jpg,1\n")
    assert_one_line_error(run("import", f, "--library", lib), "not a Parquet file")


def test_import_without_the_model_keys_is_refused_unless_told(indexed, tmp_path):
    _, lib, _ = indexed
    meta, dim = model_of(lib)
    v = np.ones(dim, np.float32) / np.sqrt(dim)
    f = tmp_path / "bare.parquet"
    pq.write_table(pa.table({"path": ["/cluster/a.jpg"], "vector": [v.tolist()]}), f)
    before = status(lib)["indexed"]
    assert_one_line_error(run("import", f, "--library", lib), "--no-model-check")
    assert status(lib)["indexed"] == before
    r = run("import", f, "--library", lib, "--no-model-check")
    assert r.exit_code == 0 and "not on this machine 1" in r.output
    st = status(lib)
    assert st["indexed"] == before + 1 and st["absent_files"]["absent"] == 1
    assert "absent    1 of" in run("status", "--library", lib).output


def test_import_of_another_models_vectors_is_one_line_with_the_reindex_hint(indexed,
                                                                           tmp_path):
    _, lib, _ = indexed
    meta, dim = model_of(lib)
    f = tmp_path / "other.parquet"
    table = pa.table({"path": ["/a.jpg"], "vector": [[1.0] + [0.0] * (dim - 1)]})
    pq.write_table(table.replace_schema_metadata({**meta, MODEL_KEY: "other-model"}), f)
    assert_one_line_error(run("import", f, "--library", lib), "other-model", "--reindex")


def test_bad_rows_are_listed_with_their_names_shown_literally(indexed, tmp_path):
    _, lib, _ = indexed
    meta, dim = model_of(lib)
    f = tmp_path / "bad.parquet"
    table = pa.table({"path": ["/x/evil\x1b[31m\n.jpg"], "vector": [[float("nan")] * dim]})
    pq.write_table(table.replace_schema_metadata(meta), f)
    r = run("import", f, "--library", lib)
    assert r.exit_code == 0 and "bad rows skipped 1" in r.output
    assert "row 0: vector has NaN or infinite values: /x/evil\\x1b[31m\\n.jpg" in r.output
    assert "\x1b" not in r.output


def test_export_does_not_replace_a_file_unless_forced(indexed):
    _, lib, out = indexed
    assert_one_line_error(run("export", out, "--library", lib), "--force")
    r = run("export", out, "--library", lib, "--force", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["rows"] == status(lib)["indexed"]
