"""The torch-free query path: a composite model's encoders exported to ONNX."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from searchkit.indexer import Indexer
from searchkit import Library, Query
from searchkit.encoders import fast_query, load_encoder
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
    photos = make_photos(tmp_path / "photos", 6)
    lib = Library.open(tmp_path / "lib", model=str(model_dir), create=True)
    lib.photos = photos
    Indexer(lib).run([str(tmp_path / "photos")])
    assert lib.prepare_fast_queries()
    return lib


def test_export_matches_torch_and_is_reused(model_dir, tmp_path):
    enc = load_encoder(str(model_dir))
    entry = fast_query.export(enc, str(model_dir))
    assert entry is not None and (entry / fast_query.TEXT_FILE).is_file()
    fast = fast_query.load(str(model_dir), enc.fingerprint())
    assert isinstance(fast, fast_query.FastQueryEncoder)
    got, want = fast.encode_texts(TEXTS), enc.encode_texts(TEXTS)
    assert got.shape == want.shape == (len(TEXTS), enc.dim)
    np.testing.assert_allclose(got, want, atol=1e-5)
    images = [Image.open(p) for p in make_photos(tmp_path / "q", 3, size=(50, 31))]
    np.testing.assert_allclose(fast.encode_images(images), enc.encode_images(images), atol=1e-5)
    assert fast.encode_texts([]).shape == fast.encode_images([]).shape == (0, enc.dim)
    mtime = (entry / fast_query.TEXT_FILE).stat().st_mtime_ns
    assert fast_query.export(enc, str(model_dir)) == entry  # present: not exported again
    assert (entry / fast_query.TEXT_FILE).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("kind", ["text", "image", "both"])
def test_queries_use_it_and_rank_like_torch(indexed, kind):
    photo = indexed.photos[2]
    q = Query(texts=[("a red photo", 1.0)] if kind != "image" else [],
              images=[(str(photo), 0.7)] if kind != "text" else [])
    fresh = Library.open(indexed.directory)
    assert fresh.status().queries == "onnx"
    fast_hits = fresh.search(q, k=6)
    assert isinstance(fresh._query_encoder(), fast_query.FastQueryEncoder)
    assert fresh._encoder is None  # torch model never loaded
    torch_hits = Library.open(indexed.directory, encoder=indexed.encoder).search(q, k=6)
    assert [h.path for h in fast_hits] == [h.path for h in torch_hits]
    np.testing.assert_allclose([h.score for h in fast_hits], [h.score for h in torch_hits],
                               atol=1e-5)


def test_a_damaged_export_falls_back_to_torch_and_is_redone(indexed):
    entry = fast_query.load(indexed.info.model_name, indexed.info.model_fingerprint).directory
    (entry / fast_query.TEXT_FILE).write_bytes(b"not an onnx model")  # e.g. a torn write
    fresh = Library.open(indexed.directory)
    hits = fresh.search(Query.text("red"), k=6)
    want = Library.open(indexed.directory, encoder=indexed.encoder).search(Query.text("red"), k=6)
    assert [h.path for h in hits] == [h.path for h in want]
    assert fresh._encoder is not None and not entry.exists()  # torch answered; entry dropped
    assert fresh.prepare_fast_queries() and (entry / fast_query.TEXT_FILE).is_file()


def test_classify_on_the_export_matches_torch(indexed, model_dir):
    from searchkit.classify import classify_images
    fast = fast_query.load(str(model_dir))  # no library: the model's files are the key
    assert fast is not None and fast.logit_scale > 0
    labels = ["red", "green", "blue", "a photo"]
    got, _ = classify_images(fast, indexed.photos, labels)
    want, _ = classify_images(indexed.encoder, indexed.photos, labels)
    assert [p.label for p in got] == [p.label for p in want]
    np.testing.assert_allclose([p.probability for p in got], [p.probability for p in want],
                               atol=1e-4)


def test_changed_model_falls_back_to_torch(indexed, model_dir):
    info = indexed.info
    assert fast_query.load(info.model_name, info.model_fingerprint) is not None
    assert fast_query.load(info.model_name, "another-fingerprint") is None
    heads = model_dir / HEADS_FILE
    heads.write_bytes(heads.read_bytes() + b" ")  # any change to a weights file
    assert fast_query.load(info.model_name, info.model_fingerprint) is None


def test_disabled_or_missing_runtime(indexed, monkeypatch):
    info = indexed.info
    monkeypatch.setenv(fast_query.DISABLE_ENV, "0")
    assert fast_query.load(info.model_name, info.model_fingerprint) is None
    assert indexed.status().queries == "torch"
    assert not indexed.prepare_fast_queries()
    monkeypatch.delenv(fast_query.DISABLE_ENV)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    assert fast_query.load(info.model_name, info.model_fingerprint) is None


def test_hub_models_are_not_exported(tiny_clip_dir, tiny_encoder, tmp_path):
    assert not fast_query.supported(str(tiny_clip_dir))
    assert fast_query.export(tiny_encoder, str(tiny_clip_dir)) is None
    assert fast_query.load(str(tiny_clip_dir), tiny_encoder.fingerprint()) is None
    lib = Library.open(tmp_path / "lib", model=str(tiny_clip_dir), create=True,
                       encoder=tiny_encoder)
    lib = Library.open(lib.directory)
    assert not lib.prepare_fast_queries()
    assert lib._encoder is None  # the hub model was not loaded just to find that out


@pytest.mark.parametrize("side", ["encode_texts", "encode_pixels"])
def test_a_bad_export_is_not_kept(tmp_path, monkeypatch, side):
    model_dir = make_tiny_composite(tmp_path / "other", seed=7)  # weights no other test exports
    enc = load_encoder(str(model_dir))
    real = getattr(fast_query.FastQueryEncoder, side)
    # the exported file computes something else than the torch modules it came from
    monkeypatch.setattr(fast_query.FastQueryEncoder, side, lambda self, x: -real(self, x))
    assert fast_query.export(enc, str(model_dir)) is None
    assert fast_query.load(str(model_dir), enc.fingerprint()) is None
    assert not [p for p in fast_query.cache_root().iterdir() if p.name.startswith(".export-")]


def test_unwritable_cache_only_turns_the_fast_path_off(model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv(fast_query.CACHE_ENV, str(blocker))  # the cache dir cannot be created
    enc = load_encoder(str(model_dir))
    assert fast_query.export(enc, str(model_dir)) is None
    assert fast_query.load(str(model_dir), enc.fingerprint()) is None


def test_prune_keeps_the_most_recently_used(tmp_path, monkeypatch):
    import os
    monkeypatch.setenv(fast_query.CACHE_ENV, str(tmp_path / "cache"))
    root = fast_query.cache_root()
    for i in range(4):
        (root / f"e{i}").mkdir(parents=True)
        (root / f"e{i}" / fast_query.META_FILE).write_text("{}")
        os.utime(root / f"e{i}" / fast_query.META_FILE, (1000 + i, 1000 + i))
    (root / ".export-abc").mkdir()  # in progress: no meta yet, never removed
    os.utime(root / "e0" / fast_query.META_FILE, (2000, 2000))  # e0 was used last
    removed = fast_query.prune(keep=2)
    assert sorted(p.name for p in removed) == ["e1", "e2"]
    assert sorted(p.name for p in root.iterdir()) == [".export-abc", "e0", "e3"]


@pytest.mark.integration
@pytest.mark.parametrize("args", [["search", "red"], ["similar", "PHOTO"],
                                  ["classify", "PHOTO", "--labels", "red,blue",
                                   "--model", "MODEL"]])
def test_cli_queries_do_not_import_torch(indexed, args):
    photo = indexed.photos[0]
    fill = {"PHOTO": str(photo), "MODEL": indexed.info.model_name}
    argv = ["searchkit", *[fill.get(a, a) for a in args], "--json"]
    if args[0] != "classify":
        argv += ["--library", str(indexed.directory)]
    code = (f"import sys; from searchkit.cli.main import main; sys.argv = {argv!r}\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    hits = json.loads(run.stdout)
    assert len(hits) == (1 if args[0] == "classify" else 6)
    if args[0] == "similar":
        assert hits[0]["path"] == str(photo)
