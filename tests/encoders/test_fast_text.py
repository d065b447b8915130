"""The torch-free text query path: a composite model's text side exported to ONNX."""

import json
import subprocess
import sys

import numpy as np
import pytest

from indexer import Indexer
from searchkit import Library, Query
from searchkit.encoders import fast_text, load_encoder
from searchkit.encoders.composite import HEADS_FILE, make_tiny_composite
from tests.helpers import make_photos

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TEXTS = ["red", "a red bicycle leaning on a wall", "", "blue " * 200]


@pytest.fixture
def model_dir(tmp_path):
    return make_tiny_composite(tmp_path / "model")


@pytest.fixture
def indexed(tmp_path, model_dir):
    """A library of a few images on the tiny composite, its fast path exported."""
    make_photos(tmp_path / "photos", 6)
    lib = Library.open(tmp_path / "lib", model=str(model_dir), create=True)
    Indexer(lib).run([str(tmp_path / "photos")])
    assert lib.prepare_fast_queries()
    return lib


def test_export_matches_torch_and_is_reused(model_dir):
    enc = load_encoder(str(model_dir))
    entry = fast_text.export(enc, str(model_dir))
    assert entry is not None and (entry / fast_text.MODEL_FILE).is_file()
    fast = fast_text.load(str(model_dir), enc.fingerprint())
    assert isinstance(fast, fast_text.FastTextEncoder)
    got, want = fast.encode_texts(TEXTS), enc.encode_texts(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), enc.dim)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert fast.encode_texts([]).shape == (0, enc.dim)
    mtime = (entry / fast_text.MODEL_FILE).stat().st_mtime_ns
    assert fast_text.export(enc, str(model_dir)) == entry  # present: not exported again
    assert (entry / fast_text.MODEL_FILE).stat().st_mtime_ns == mtime


def test_text_query_uses_it_and_ranks_like_torch(indexed):
    fresh = Library.open(indexed.directory)
    assert fresh.status().text_queries == "onnx"
    q = Query.text("a red photo")
    assert isinstance(fresh._query_encoder(q), fast_text.FastTextEncoder)
    fast_hits = fresh.search(q, k=6)
    torch_hits = Library.open(indexed.directory, encoder=indexed.encoder).search(q, k=6)
    assert [h.path for h in fast_hits] == [h.path for h in torch_hits]
    np.testing.assert_allclose([h.score for h in fast_hits], [h.score for h in torch_hits],
                               atol=1e-5)
    # an image term needs the image tower: torch
    assert not isinstance(fresh._query_encoder(Query.image(fast_hits[0].path)),
                          fast_text.FastTextEncoder)


def test_changed_model_falls_back_to_torch(indexed, model_dir):
    info = indexed.info
    assert fast_text.load(info.model_name, info.model_fingerprint) is not None
    assert fast_text.load(info.model_name, "another-fingerprint") is None
    heads = model_dir / HEADS_FILE
    heads.write_bytes(heads.read_bytes() + b" ")  # any change to a weights file
    assert fast_text.load(info.model_name, info.model_fingerprint) is None


def test_disabled_or_missing_runtime(indexed, monkeypatch):
    info = indexed.info
    monkeypatch.setenv(fast_text.DISABLE_ENV, "0")
    assert fast_text.load(info.model_name, info.model_fingerprint) is None
    assert indexed.status().text_queries == "torch"
    assert not indexed.prepare_fast_queries()
    monkeypatch.delenv(fast_text.DISABLE_ENV)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert fast_text.load(info.model_name, info.model_fingerprint) is None


def test_hub_models_are_not_exported(tiny_clip_dir, tiny_encoder):
    assert fast_text.export(tiny_encoder, str(tiny_clip_dir)) is None
    assert fast_text.load(str(tiny_clip_dir), tiny_encoder.fingerprint()) is None


def test_a_bad_export_is_not_kept(tmp_path, monkeypatch):
    model_dir = make_tiny_composite(tmp_path / "other", seed=7)  # weights no other test exports
    enc = load_encoder(str(model_dir))
    real = enc.encode_texts
    monkeypatch.setattr(enc, "encode_texts", lambda texts: -real(texts))  # torch disagrees
    assert fast_text.export(enc, str(model_dir)) is None
    assert fast_text.load(str(model_dir), enc.fingerprint()) is None
    assert not [p for p in fast_text.cache_root().iterdir() if p.name.startswith(".export-")]


def test_cli_text_search_does_not_import_torch(indexed):
    code = ("import sys, json; from cli.main import main; sys.argv = ['searchkit', 'search', "
            f"'red', '--library', {str(indexed.directory)!r}, '--json'];\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    hits = json.loads(run.stdout)
    assert len(hits) == 6
