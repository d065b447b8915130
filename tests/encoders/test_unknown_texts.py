"""Texts a model knows no token of (emoji, a 10,000-letter word) all encode to one vector: the
encoders say which they are, so a search can warn instead of answering silently."""

from __future__ import annotations

import numpy as np
import pytest

from searchkit import Library, Query
from searchkit.encoders import load_encoder
from searchkit.testing import make_tiny_composite

TEXTS = ["😀🎉", "x" * 10_000, "a red cat", "zzz", "cat 😀", "\x01\x02"]
UNKNOWN = [True, True, False, True, False, True]


@pytest.fixture(scope="module")
def composite_dir(tmp_path_factory):
    return make_tiny_composite(tmp_path_factory.mktemp("unknown") / "model")


def test_wordpiece_encoder_flags_texts_made_only_of_unknown_tokens(composite_dir):
    enc = load_encoder(str(composite_dir))
    assert enc.unknown_texts(TEXTS) == UNKNOWN
    vecs = enc.encode_texts(["😀🎉", "x" * 10_000, "zzz"])  # each one [UNK] token
    assert np.allclose(vecs, vecs[0], atol=1e-6)  # why it matters: one vector for them all


def test_an_encoder_without_a_tokenizer_check_flags_nothing(tiny_encoder):
    assert tiny_encoder.unknown_texts(TEXTS) == [False] * len(TEXTS)


def test_library_names_unknown_terms_on_the_torch_free_path_too(composite_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from searchkit.indexer import Indexer
    from tests.helpers import make_photos
    make_photos(tmp_path / "photos", 3)
    lib = Library.open(tmp_path / "lib", model=str(composite_dir), create=True)
    Indexer(lib).run([str(tmp_path / "photos")])
    assert lib.prepare_fast_queries()
    fresh = Library.open(tmp_path / "lib")  # a new process's view: queries on ONNX
    query = Query(texts=[("😀🎉", 1.0)], negatives=[("cat", 0.5), ("zzz", 0.5)])
    assert fresh.unknown_terms(query) == ["😀🎉", "zzz"]
    assert fresh._encoder is None  # answered without loading the torch model
