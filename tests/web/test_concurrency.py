"""The server's threads share one Library: encoder calls never overlap, queries that queue
during a pass ride together in the next, uploads decode a bounded number at a time, thumbnails
are made once however many requests ask for them at the same time.

Concurrency is arranged with events (a fake encoder that blocks until the test has queued what
it needs), never with sleeps; WAIT only stops a broken build from hanging the suite."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from searchkit import Library
from searchkit.web import WebConfig, create_app

from .conftest import id_of

WAIT = 60  # seconds: only a broken build ever waits this long


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
    assert enc.items == 40 and not enc.overlapped


class GatedEncoder:
    """Wraps an encoder: the first text pass and every preprocess block until released;
    records the size of each text pass and how many preprocess calls are inside at once."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.first_pass = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []
        self.cv = threading.Condition()
        self.inside = self.peak = 0

    def fingerprint(self):
        return self.inner.fingerprint()

    def encode_texts(self, texts):
        self.batches.append(len(texts))
        if len(self.batches) == 1:
            self.first_pass.set()
            assert self.release.wait(WAIT)
        return self.inner.encode_texts(texts)

    def encode_pixels(self, pixels):
        return self.inner.encode_pixels(pixels)

    def preprocess(self, image):
        with self.cv:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            self.cv.notify_all()
        try:
            assert self.release.wait(WAIT)
            return self.inner.preprocess(image)
        finally:
            with self.cv:
                self.inside -= 1


def gated_client(web_lib, tiny_encoder, config=None):
    enc = GatedEncoder(tiny_encoder)
    app = create_app(Library.open(web_lib.library.directory, encoder=enc), config)
    return enc, app, TestClient(app, raise_server_exceptions=False)


def test_queries_that_queue_during_a_pass_ride_in_the_next_one(web_lib, tiny_encoder):
    enc, app, client = gated_client(web_lib, tiny_encoder)
    queued = 7

    def search(q):
        return client.get("/api/search", params={"q": q}).status_code
    with ThreadPoolExecutor(queued + 1) as pool:
        first = pool.submit(search, "first")
        assert enc.first_pass.wait(WAIT)
        rest = [pool.submit(search, f"query {i}") for i in range(queued)]
        all_queued = app.state.searcher.encoder.wait_pending_texts(queued, WAIT)
        enc.release.set()
        codes = [f.result() for f in [first, *rest]]
    assert all_queued and codes == [200] * (queued + 1)
    assert enc.batches == [1, queued]  # one pass for everything that waited


def test_concurrent_uploads_decode_at_most_the_slots_at_once(web_lib, tiny_encoder):
    """The memory bound under upload load: with 2 slots, 6 concurrent uploads have 2 images
    decoded and preprocessing while 4 wait for a slot (before reading their upload)."""
    enc, app, client = gated_client(web_lib, tiny_encoder, WebConfig(decode_slots=2))
    slots = app.state.decode_slots
    img = web_lib.photos[4].read_bytes()

    def upload(_):
        return client.post("/api/search", files={"image": ("a.jpg", img)}).status_code
    with ThreadPoolExecutor(6) as pool:
        results = pool.map(upload, range(6))
        four_wait = slots.wait_for(lambda s: s.waiting == 4, WAIT)
        with enc.cv:
            two_inside = enc.cv.wait_for(lambda: enc.inside == 2, WAIT)
        inside_then = enc.inside
        enc.release.set()
        codes = list(results)
    assert four_wait and two_inside and inside_then == 2
    assert codes == [200] * 6 and enc.peak == 2 and slots.busy == 0



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
