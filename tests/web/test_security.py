"""Security: the token, traversal, and hostile uploads (always a clear 4xx, never a 5xx)."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from searchkit.web import WebConfig, create_app

from .conftest import id_of, jpeg_bytes

TOKEN = "correct horse battery staple"


@pytest.fixture(scope="module")
def locked(web_lib):
    app = create_app(web_lib.library, WebConfig(token=TOKEN))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def small_cap(web_lib):
    app = create_app(web_lib.library, WebConfig(max_upload_bytes=100_000, max_pixels=1_000_000))
    return TestClient(app, raise_server_exceptions=False)


ROUTES = ["/api/search?q=x", "/api/status", "/api/images/1", "/api/images/1/thumb",
          "/api/images/1/file", "/static/app.js", "/openapi.json", "/docs", "/nowhere"]


def test_every_route_needs_the_token(locked):
    for url in ROUTES:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": "Basic " + TOKEN}):
            r = locked.get(url, headers=headers)
            assert r.status_code == 401, (url, headers)
            assert r.headers["www-authenticate"].startswith("Bearer")
    r = locked.post("/api/search", files={"image": ("a", jpeg_bytes())})
    assert r.status_code == 401


def test_the_right_token_opens_every_route(locked):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for url in ROUTES[:-1]:
        assert locked.get(url, headers=auth).status_code == 200, url
    assert locked.get("/nowhere", headers=auth).status_code == 404


def test_browser_login_sets_a_cookie_for_the_page(web_lib):
    c = TestClient(create_app(web_lib.library, WebConfig(token=TOKEN)))
    r = c.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.post("/login", data={"token": "nope"}).status_code == 401
    assert c.get("/api/status").status_code == 401
    r = c.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert c.get("/api/status").status_code == 200 and c.get("/").status_code == 200


def test_no_token_configured_means_open(client):
    assert client.get("/api/status").status_code == 200


@pytest.mark.parametrize("url", [
    "/api/images/../../etc/passwd", "/api/images/..%2F..%2Fetc%2Fpasswd/file",
    "/api/images/%2e%2e/file", "/api/images/1/../../../../etc/passwd",
    "/api/images/-1/file", "/api/images/1e3/file", "/api/images/0x10/file",
    "/api/images/99999999999999999999999999/file", "/api/images/9223372036854775807/thumb",
    "/api/images/%2Fetc%2Fpasswd", "/api/images/1/file/../../../../etc/passwd",
    "/static/../../../etc/passwd", "/static/..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/%2e%2e/app.py", "/etc/passwd", "/api/images/1;/etc/passwd/file",
    "/api/file?path=/etc/passwd",
])
def test_traversal_and_bad_ids_are_404(client, url):
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code, r.text[:100])
    assert b"root:" not in r.content and b"def create_app" not in r.content


def test_skipped_or_gone_files_are_not_served(tmp_path, tiny_encoder):
    from searchkit.indexer import Indexer
    from searchkit import Library
    from tests.helpers import solid
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "bad.jpg").write_text("not an image")
    good = solid(tmp_path / "p" / "good.png", (1, 2, 3))
    lib = Library.open(tmp_path / "lib", encoder=tiny_encoder, create=True)
    Indexer(lib).run([str(tmp_path / "p")])
    c = TestClient(create_app(lib), raise_server_exceptions=False)
    bad = id_of(lib, tmp_path / "p" / "bad.jpg")
    assert c.get(f"/api/images/{bad}/file").status_code == 404
    i = id_of(lib, good)
    good.unlink()
    assert c.get(f"/api/images/{i}/file").status_code == 404
    assert c.get(f"/api/images/{i}/thumb").status_code == 404


def _png(size) -> bytes:
    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG")
    return buf.getvalue()


def test_oversized_upload_is_413_before_parsing(small_cap):
    big = b"\xff\xd8\xff" + b"\0" * 200_000
    r = small_cap.post("/api/search", files={"image": ("a.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and "too large" in r.json()["detail"]


def test_streamed_oversized_body_is_413(small_cap):
    def chunks():
        for _ in range(50):
            yield b"x" * 10_000
    r = small_cap.post("/api/search", content=chunks(),
                       headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413


def test_upload_just_under_the_cap_is_accepted(small_cap):
    data = jpeg_bytes(size=(64, 64))
    assert len(data) < 100_000
    r = small_cap.post("/api/search", files={"image": ("a.jpg", data)})
    assert r.status_code == 200


@pytest.mark.parametrize("name,data,code", [
    ("text.jpg", b"hello, I am not an image", 415),
    ("empty.jpg", b"", 400),
    ("script.png", b"<script>alert(1)</script>", 415),
    ("pdf.jpg", b"%PDF-1.4\n%...", 415),
    ("truncated.jpg", jpeg_bytes(size=(300, 300))[:200], 400),
    ("magic-only.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400),
])
def test_bogus_uploads_are_clear_4xx(small_cap, name, data, code):
    r = small_cap.post("/api/search", files={"image": (name, data, "image/jpeg")})
    assert r.status_code == code, r.text
    assert r.json()["detail"]


def test_decompression_bomb_is_refused(small_cap):
    bomb = _png((4000, 4000))  # 16 MP in a few kB; the cap here is 1 MP
    assert len(bomb) < 100_000
    r = small_cap.post("/api/search", files={"image": ("bomb.png", bomb)})
    assert r.status_code == 413 and "too large" in r.json()["detail"]


def test_content_decides_not_the_name_or_type(small_cap, web_lib):
    png_bytes = web_lib.png.read_bytes()
    r = small_cap.post("/api/search",
                       files={"image": ("photo.jpg", png_bytes, "application/pdf")})
    assert r.status_code == 200
    assert r.json()["hits"][0]["path"] == str(web_lib.png)


def test_image_field_must_be_a_file(small_cap):
    r = small_cap.post("/api/search", data={"image": "not a file"})
    assert 400 <= r.status_code < 500


def serve_app(monkeypatch, web_lib, *args, env=None):
    """Run `searchkit serve ARGS` with uvicorn faked out: (result, app, host, port)."""
    import uvicorn
    from typer.testing import CliRunner

    from searchkit.cli.main import app
    seen = {}

    def fake_run(asgi, host, port, **kw):
        seen.update(app=asgi, host=host, port=port)
    monkeypatch.setattr(uvicorn, "run", fake_run)
    r = CliRunner().invoke(app, ["serve", "--library", str(web_lib.library.directory), *args],
                           env={"SEARCHKIT_TOKEN": "", **(env or {})})
    return r, seen.get("app"), seen.get("host"), seen.get("port")


def test_serve_warns_off_loopback_and_takes_the_token_from_env(monkeypatch, web_lib):
    r, asgi, host, port = serve_app(monkeypatch, web_lib, "--host", "0.0.0.0", "--port", "9",
                                    env={"SEARCHKIT_TOKEN": "from-env"})
    assert r.exit_code == 0, r.output
    assert "warning: binding to 0.0.0.0" in r.output and (host, port) == ("0.0.0.0", 9)
    c = TestClient(asgi)
    assert c.get("/api/status").status_code == 401
    assert c.get("/api/status", headers={"Authorization": "Bearer from-env"}).status_code == 200
    r, _, host, _ = serve_app(monkeypatch, web_lib)
    assert r.exit_code == 0 and "warning" not in r.output and host == "127.0.0.1"


def test_loopback_server_refuses_foreign_host_headers(monkeypatch, web_lib):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the library."""
    _, asgi, _, _ = serve_app(monkeypatch, web_lib)
    c = TestClient(asgi, base_url="http://127.0.0.1:8000")
    assert c.get("/api/status").status_code == 200
    assert c.get("/api/status", headers={"Host": "localhost:8000"}).status_code == 200
    assert c.get("/api/status", headers={"Host": "[::1]:8000"}).status_code == 200
    assert c.get("/api/status", headers={"Host": "evil.example"}).status_code == 400


def test_serve_answers_requests_for_its_own_loopback_address(monkeypatch, web_lib):
    r, asgi, _, _ = serve_app(monkeypatch, web_lib, "--host", "127.0.0.2")
    assert r.exit_code == 0, r.output
    c = TestClient(asgi, base_url="http://127.0.0.2:8000")
    assert c.get("/api/status").status_code == 200
    assert c.get("/api/status", headers={"Host": "127.0.0.2"}).status_code == 200
    assert c.get("/api/status", headers={"Host": "evil.example:8000"}).status_code == 400


def test_open_bind_without_token_still_refuses_foreign_host_headers(monkeypatch, web_lib):
    import socket
    r, asgi, _, _ = serve_app(monkeypatch, web_lib, "--host", "0.0.0.0",
                              "--allow-host", "Photos.LAN")
    assert r.exit_code == 0, r.output
    assert "answering only Host" in r.output and "photos.lan" in r.output
    c = TestClient(asgi)
    for foreign in ("evil.example", "evil.example:8000", "testserver", "203.0.113.7"):
        assert c.get("/api/status", headers={"Host": foreign}).status_code == 400, foreign
    for own in (socket.gethostname(), "photos.lan:8000", "127.0.0.1:8000", "localhost"):
        assert c.get("/api/status", headers={"Host": own}).status_code == 200, own


def test_token_server_checks_hosts_only_when_asked(monkeypatch, web_lib):
    auth = {"Authorization": "Bearer t0k"}
    _, asgi, _, _ = serve_app(monkeypatch, web_lib, "--host", "0.0.0.0", "--token", "t0k")
    assert TestClient(asgi).get("/api/status", headers={**auth, "Host": "photos.example"}
                                ).status_code == 200
    _, asgi, _, _ = serve_app(monkeypatch, web_lib, "--host", "0.0.0.0", "--token", "t0k",
                              "--allow-host", "photos.lan")
    c = TestClient(asgi)
    assert c.get("/api/status", headers={**auth, "Host": "photos.example"}).status_code == 400
    assert c.get("/api/status", headers={**auth, "Host": "photos.lan"}).status_code == 200


@pytest.mark.parametrize("bad", ["a b", "foo*", "http://x", ""])
def test_bad_allow_host_is_one_line(monkeypatch, web_lib, bad):
    r, asgi, _, _ = serve_app(monkeypatch, web_lib, "--allow-host", bad)
    assert r.exit_code != 0 and asgi is None
    assert "--allow-host" in r.output and "Traceback" not in r.output


def test_page_sends_a_content_security_policy(client):
    r = client.get("/")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
