"""GET /api/dupes (issue 14): groups with thumbnails by id, options checked, filters applied,
a changed library looked at again; the page's duplicates view; a search hit's copy count."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from searchkit import dupes
from searchkit.web import create_app
from tests.test_dupes import FakeEncoder, at_cosine, ids_by_path, make_library, row, unit


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return make_library(tmp_path_factory.mktemp("dupes-web") / "lib", [
        row("/a/big.jpg", unit(0), "ha", size=3000, wh=(800, 600)),
        row("/b/c.jpg", unit(0), "ha", size=3000, wh=(800, 600)),
        row("/a/small.jpg", at_cosine(0.995, 0, 1), "hs", size=500, wh=(200, 150)),
        row("/a/x.jpg", unit(3), "hx"), row("/b/x again.jpg", unit(3), "hx"),
        row("/a/alone.jpg", unit(6), "hz")], encoder=FakeEncoder())


@pytest.fixture(scope="module")
def api(lib):
    with TestClient(create_app(lib), raise_server_exceptions=False) as c:
        yield c


def paths(body) -> list[set[str]]:
    return [{m["path"] for m in g["members"]} for g in body["groups"]]


def test_dupes_lists_the_groups_largest_first_with_thumbnails_by_id(api, lib):
    r = api.get("/api/dupes")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["threshold"] == dupes.DEFAULT_THRESHOLD and body["keep_rule"] == "largest"
    assert paths(body) == [{"/a/big.jpg", "/b/c.jpg", "/a/small.jpg"},
                           {"/a/x.jpg", "/b/x again.jpg"}]
    first = body["groups"][0]
    assert first["kind"] == "mixed" and first["files"] == 3
    ids = ids_by_path(lib)
    m = first["members"][0]
    assert m["keep"] and first["keep"] == m["id"]
    assert m["thumb_url"] == f"/api/images/{m['id']}/thumb"
    assert m["image_url"] == f"/api/images/{m['id']}/file"
    assert {x["id"] for x in first["members"]} == {ids[p] for p in paths(body)[0]}
    assert body["groups_total"] == 2 and body["redundant"] == 3


def test_dupes_options_and_filters_are_applied(api):
    body = api.get("/api/dupes", params={"threshold": 0.999, "keep": "shortest-path"}).json()
    assert paths(body)[0] == {"/a/big.jpg", "/b/c.jpg"}  # small.jpg is at 0.995
    assert body["groups"][0]["members"][0]["path"] == "/b/c.jpg"
    body = api.get("/api/dupes", params={"folder": "/a"}).json()
    assert paths(body) == [{"/a/big.jpg", "/a/small.jpg"}]
    body = api.get("/api/dupes", params={"exact_only": "true", "limit": 1}).json()
    assert paths(body) == [{"/a/big.jpg", "/b/c.jpg"}] and body["groups_total"] == 2


@pytest.mark.parametrize("params", [{"threshold": 1.5}, {"threshold": -0.1},
                                    {"threshold": "nan"}, {"threshold": "x"}, {"k": 0},
                                    {"k": dupes.MAX_K + 1}, {"keep": "biggest"},
                                    {"limit": 0}, {"after": "2024-13"}])
def test_bad_dupes_parameters_are_a_422_naming_them(api, params):
    r = api.get("/api/dupes", params=params)
    assert r.status_code == 422, r.text
    name = "folder" if "folder" in params else next(iter(params))
    assert r.json()["detail"].startswith(name), r.text


def test_a_changed_library_is_looked_at_again(tmp_path):
    lib = make_library(tmp_path / "lib", [row("/p/a.jpg", unit(0), "ha"),
                                          row("/p/b.jpg", unit(2), "hb")])
    with TestClient(create_app(lib)) as c:
        assert c.get("/api/dupes").json()["groups"] == []
        lib.store.upsert_rows([row("/p/a2.jpg", unit(0), "ha")])
        assert paths(c.get("/api/dupes").json()) == [{"/p/a.jpg", "/p/a2.jpg"}]


def test_a_search_hit_carries_its_copy_count(api, lib):
    like = ids_by_path(lib)["/a/big.jpg"]
    r = api.get("/api/search", params={"like": like, "k": 6})
    assert r.status_code == 200, r.text
    counts = {h["path"]: h["duplicates"] for h in r.json()["hits"]}
    assert counts["/a/big.jpg"] == 1 and counts["/b/c.jpg"] == 1
    assert counts["/a/small.jpg"] == 0 and counts["/a/alone.jpg"] == 0


def test_the_page_has_the_duplicates_view_wired_to_the_api(api):
    page = api.get("/")
    assert page.status_code == 200
    assert 'id="dupes-view"' in page.text and 'href="#dupes"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in page.text and "http" not in page.text.split("<body>")[1]
    js = api.get("/static/app.js").text
    assert '"/api/dupes?"' in js and "m.thumb_url" in js
    assert "innerHTML" not in js  # names are set as text, never parsed as markup


def test_the_dupes_route_is_in_the_openapi_schema(api):
    schema = api.get("/openapi.json").json()
    params = {p["name"] for p in schema["paths"]["/api/dupes"]["get"]["parameters"]}
    assert {"threshold", "k", "keep", "exact_only", "limit", "folder", "format"} <= params
