"""The HTTP API through FastAPI's TestClient: searches, filters, images by id, status."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from searchkit import Query

from .conftest import id_of

HIT_FIELDS = {"id", "path", "score", "width", "height", "date", "format", "taken_at",
              "modified_at", "thumb_url", "image_url"}


def names(res) -> set[str]:
    return {Path(h["path"]).name for h in res.json()["hits"]}


def test_text_search_returns_sorted_hits_with_metadata(client, web_lib):
    r = client.get("/api/search", params={"q": "a red photo", "k": 5})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert len(hits) == 5
    assert HIT_FIELDS <= set(hits[0])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    expected = web_lib.library.search(Query.text("a red photo"), k=5)
    assert [h["id"] for h in hits] == [h.id for h in expected]
    assert [h["key"] for h in hits] == [str(h.id) for h in expected]  # the page's (63-bit ids)
    assert set(r.json()["timings"]) == {"queue_ms", "encode_ms", "faiss_ms", "sqlite_ms",
                                        "total_ms"}


def test_upload_finds_the_same_image_first(client, web_lib):
    target = web_lib.photos[3]
    r = client.post("/api/search", params={"k": 3},
                    files={"image": ("whatever.bin", target.read_bytes(), "text/plain")})
    assert r.status_code == 200, r.text
    top = r.json()["hits"][0]
    assert top["path"] == str(target) and top["score"] == pytest.approx(1.0, abs=1e-4)


def test_combined_weights_and_negatives_match_the_library(client, web_lib):
    target = web_lib.photos[1]
    r = client.post("/api/search", params={"k": 6},
                    data={"q": "orange", "text_weight": "0.7", "image_weight": "0.3",
                          "not": ["blue", "text"], "not_weight": "0.4"},
                    files={"image": ("q.jpg", target.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    q = Query(texts=[("orange", 0.7)], images=[(target, 0.3)],
              negatives=[("blue", 0.4), ("text", 0.4)])
    expected = web_lib.library.search(q, k=6)
    got = r.json()["hits"]
    assert [h["id"] for h in got] == [h.id for h in expected]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in expected], abs=1e-5)


def test_more_like_this_uses_the_stored_vector(client, web_lib):
    i = id_of(web_lib.library, web_lib.png)
    r = client.get("/api/search", params={"like": i, "k": 2})
    assert r.status_code == 200
    assert r.json()["hits"][0]["id"] == i
    assert r.json()["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_filters_restrict_the_search(client, web_lib):
    pngs = client.get("/api/search", params={"q": "x", "k": 50, "format": "png"})
    assert names(pngs) == {"blue.png", "old.png"}
    folder = client.get("/api/search", params={"q": "x", "k": 50,
                                               "folder": str(web_lib.root / "cam")})
    assert names(folder) == {"rotated.jpg"}
    old = client.get("/api/search", params={"q": "x", "k": 50, "date_field": "modified",
                                            "before": "2000-01-01"})
    assert names(old) == {"old.png"}
    recent = client.get("/api/search", params={"q": "x", "k": 50, "date_field": "modified",
                                               "after": "2001-01-01"})
    assert "old.png" not in names(recent) and len(recent.json()["hits"]) == 12
    wide = client.get("/api/search", params={"q": "x", "k": 50, "min_width": 60})
    assert names(wide) == {"blue.png"}
    glob = client.get("/api/search", params={"q": "x", "k": 50, "glob": "*/shots/*"})
    assert names(glob) == {"blue.png", "old.png"}


def test_k_and_threshold(client):
    assert len(client.get("/api/search", params={"q": "x", "k": 1}).json()["hits"]) == 1
    r = client.get("/api/search", params={"q": "x", "k": 50, "threshold": 0.99})
    assert r.status_code == 200 and all(h["score"] >= 0.99 for h in r.json()["hits"])
    assert client.get("/api/search", params={"q": "x", "k": 100000}).status_code == 400


def test_thumbnail_is_made_once_cached_and_upright(client, web_lib):
    i = id_of(web_lib.library, web_lib.rotated)
    thumbs = client.app.state.thumbs
    for cached in Path(web_lib.library.directory, "thumbs").rglob(f"{i}-*.jpg"):
        cached.unlink()  # an earlier test (the browser's) may have made it: start uncached
    before = thumbs.made
    first = client.get(f"/api/images/{i}/thumb")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(first.content))
    assert im.size[0] < im.size[1]  # stored 60x40 with orientation 6: shown 40 wide, 60 high
    second = client.get(f"/api/images/{i}/thumb")
    assert second.content == first.content
    assert thumbs.made == before + 1
    assert list(Path(web_lib.library.directory, "thumbs").rglob(f"{i}-*.jpg"))


def test_thumbnail_fits_its_size(client, web_lib):
    i = id_of(web_lib.library, web_lib.png)
    im = Image.open(io.BytesIO(client.get(f"/api/images/{i}/thumb").content))
    assert im.size == (64, 32)  # never enlarged
    assert max(im.size) <= client.app.state.config.thumb_size


def test_full_image_and_metadata_by_id(client, web_lib):
    i = id_of(web_lib.library, web_lib.png)
    r = client.get(f"/api/images/{i}/file")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == web_lib.png.read_bytes()
    meta = client.get(f"/api/images/{i}").json()
    assert meta["path"] == str(web_lib.png) and (meta["width"], meta["height"]) == (64, 32)
    assert meta["format"] == "PNG" and meta["thumb_url"] == f"/api/images/{i}/thumb"


def test_status(client, web_lib):
    st = client.get("/api/status").json()
    assert st["indexed"] == 13 and st["roots"] == [str(web_lib.root)]
    assert set(st["formats"]) == {"JPEG", "PNG"} and st["index_state"] in ("fresh", "stale")


def test_page_and_its_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
        assert asset in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN


def test_bad_queries_are_clear_4xx(client):
    cases = [({}, 400), ({"q": "   "}, 400), ({"q": "x", "k": 0}, 422),
             ({"q": "x", "text_weight": "nan"}, 422), ({"q": "x", "after": "2020-13-45"}, 422),
             ({"q": "x", "format": "exe"}, 422), ({"like": 987654}, 400),
             ({"q": "x", "date_field": "mtime"}, 422), ({"q": "x" * 5000}, 422)]
    for params, code in cases:
        r = client.get("/api/search", params=params)
        assert r.status_code == code, (params, r.text)
        assert r.json()["detail"]


def test_post_without_any_term_is_400(client):
    r = client.post("/api/search", data={"not_weight": "1"})
    assert r.status_code == 400 and "empty query" in r.json()["detail"]


def test_new_index_run_is_reflected_while_serving(tmp_path, tiny_encoder):
    """Another process (here: another Library object) indexes more files: the next request
    sees them, without restarting the server."""
    from fastapi.testclient import TestClient

    from searchkit.indexer import Indexer
    from searchkit import Library
    from searchkit.web import create_app
    from tests.helpers import make_photos, solid
    make_photos(tmp_path / "p", 3)
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(tmp_path / "p")])
    client = TestClient(create_app(lib))
    assert len(client.get("/api/search", params={"q": "x", "k": 50}).json()["hits"]) == 3
    solid(tmp_path / "p" / "new.png", (1, 2, 3), (30, 30))
    other = Library.open(tmp_path / "lib", encoder=tiny_encoder)
    Indexer(other).run()
    hits = client.get("/api/search", params={"q": "x", "k": 50}).json()["hits"]
    assert len(hits) == 4 and "new.png" in {Path(h["path"]).name for h in hits}


def test_concurrent_requests_agree_with_serial_ones(client, web_lib):
    from concurrent.futures import ThreadPoolExecutor
    img = web_lib.photos[0].read_bytes()

    def one(i: int):
        if i % 2:
            r = client.get("/api/search", params={"q": f"query {i % 5}", "k": 4})
        else:
            r = client.post("/api/search", params={"k": 4}, files={"image": ("a", img)})
        return i, r.status_code, [h["id"] for h in r.json()["hits"]]
    serial = {i: one(i) for i in range(10)}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, [i % 10 for i in range(64)]))
    for i, code, ids in results:
        assert code == 200 and ids == serial[i][2]


def test_out_of_range_ids_are_refused_not_crashed(client):
    """Found by the fuzzer: ids beyond SQLite's integer range reached the database."""
    for like in ("9223372036854775808", "-1"):
        r = client.get("/api/search", params={"like": like})
        assert r.status_code == 422, r.text
        r = client.post("/api/search", data={"like": like})
        assert r.status_code == 422, r.text


def test_api_docs_page_needs_no_cdn(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "https://" not in docs.text and "http://" not in docs.text
    if "swagger-ui-bundle.js" in docs.text:  # with swagger-ui-bundle installed
        assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert "/api/search" in client.get("/openapi.json").json()["paths"]
