"""The server's threads share one Library: encoder calls never overlap, thumbnails are made
once however many requests ask for them at the same time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from searchkit import Library
from searchkit.web import WebConfig, create_app

from .conftest import id_of


class OverlapDetector:
    """Wraps an encoder; records whether two threads were ever inside it at once, and how many
    calls and items it saw."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.inside = 0
        self.overlapped = False
        self.calls = 0
        self.items = 0
        self._guard = threading.Lock()

    def fingerprint(self):
        return self.inner.fingerprint()

    def _enter(self):
        with self._guard:
            self.inside += 1
            self.calls += 1
            self.overlapped |= self.inside > 1

    def _leave(self):
        with self._guard:
            self.inside -= 1

    def encode_texts(self, texts):
        self._enter()
        try:
            time.sleep(0.005)  # widen the window a race would need
            self.items += len(texts)
            return self.inner.encode_texts(texts)
        finally:
            self._leave()

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def encode_pixels(self, pixels):
        self._enter()
        try:
            time.sleep(0.005)
            self.items += len(pixels)
            return self.inner.encode_pixels(pixels)
        finally:
            self._leave()


def test_encoder_calls_are_serialised(web_lib, tiny_encoder):
    enc = OverlapDetector(tiny_encoder)
    lib = Library.open(web_lib.library.directory, encoder=enc)
    client = TestClient(create_app(lib), raise_server_exceptions=False)
    img = web_lib.photos[2].read_bytes()

    def one(i):
        if i % 2:
            return client.get("/api/search", params={"q": f"q{i}"}).status_code
        return client.post("/api/search", files={"image": ("a", img)}).status_code
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(40)))
    assert codes == [200] * 40
    assert enc.items == 40 and 1 <= enc.calls <= 40  # queries that queued ride together
    assert not enc.overlapped


def test_a_thumbnail_is_made_once_under_concurrent_requests(web_lib, tmp_path):
    app = create_app(web_lib.library, WebConfig(thumb_dir=str(tmp_path / "thumbs")))
    client = TestClient(app)
    i = id_of(web_lib.library, web_lib.photos[5])
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: client.get(f"/api/images/{i}/thumb").content,
                               range(16)))
    assert len(set(bodies)) == 1 and bodies[0][:3] == b"\xff\xd8\xff"
    assert app.state.thumbs.made == 1
    assert len(list((tmp_path / "thumbs").rglob("*.jpg"))) == 1


def test_batched_encoding_gives_the_same_vectors(tiny_encoder):
    import numpy as np

    from searchkit.web.batching import BatchingEncoder
    enc = BatchingEncoder(tiny_encoder)
    texts = [f"a photo of thing number {i}" + " long" * (i % 4) for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: enc.encode_texts([t])[0], texts))
    expected = tiny_encoder.encode_texts(texts)
    assert np.allclose(np.stack(got), expected, atol=1e-5)
    assert enc.encode_texts([]).shape == (0, tiny_encoder.dim)


def test_an_encoder_error_reaches_every_caller_of_the_batch(tiny_encoder):
    import pytest

    from searchkit.web.batching import BatchingEncoder

    class Broken:
        name, dim = "broken", 4

        def encode_texts(self, texts):
            time.sleep(0.01)
            raise RuntimeError("boom")

        def encode_pixels(self, pixels):
            raise RuntimeError("boom")
    enc = BatchingEncoder(Broken())

    def call(_):
        with pytest.raises(RuntimeError, match="boom"):
            enc.encode_texts(["x"])
        return True
    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(call, range(12)))
