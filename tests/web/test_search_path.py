"""The server searches through Library.search_with_timings (one search path): its encoder is
the server's micro-batching one, and what it answers is what the library answers."""

from __future__ import annotations

from fastapi.testclient import TestClient

from searchkit import Library
from searchkit.web import create_app


class CountingEncoder:
    def __init__(self, inner):
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.texts: list[str] = []

    def fingerprint(self):
        return self.inner.fingerprint()

    def encode_texts(self, texts):
        self.texts += list(texts)
        return self.inner.encode_texts(texts)

    def preprocess(self, image):
        return self.inner.preprocess(image)

    def encode_pixels(self, pixels):
        return self.inner.encode_pixels(pixels)


def test_web_search_goes_through_the_library_with_the_servers_encoder(web_lib, tiny_encoder,
                                                                       monkeypatch):
    enc = CountingEncoder(tiny_encoder)
    lib = Library.open(web_lib.library.directory, encoder=enc)
    app = create_app(lib)
    calls = []
    real = lib.search_with_timings

    def spy(query, k, filters=None, threshold=None, encoder=None, **options):
        calls.append((query, k, encoder))
        return real(query, k, filters, threshold, encoder=encoder, **options)
    monkeypatch.setattr(lib, "search_with_timings", spy)
    with TestClient(app) as client:
        r = client.get("/api/search", params={"q": "a red photo", "not": "blue", "k": 4})
    assert r.status_code == 200
    [(query, k, encoder)] = calls
    assert k == 4 and encoder is app.state.searcher.encoder  # the micro-batcher
    assert enc.texts == ["a red photo", "blue"]  # one query: its text and its negative
    expected = real(query, 4).hits
    assert [h["path"] for h in r.json()["hits"]] == [h.path for h in expected]
    assert set(r.json()["timings"]) >= {"encode_ms", "faiss_ms", "sqlite_ms", "total_ms"}

