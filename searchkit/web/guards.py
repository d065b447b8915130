"""ASGI middleware: bearer-token auth on every request, and a cap on request bodies."""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie

TOKEN_COOKIE = "searchkit_token"
LOGIN_PATH = "/login"


async def _send_json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def presented_token(scope) -> str | None:
    """The token a request carries: ``Authorization: Bearer T`` or the login cookie."""
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    cookie = _header(scope, b"cookie")
    if cookie:
        try:
            jar = SimpleCookie(cookie)
        except Exception:  # a malformed cookie header is no token
            return None
        if TOKEN_COOKIE in jar:
            return jar[TOKEN_COOKIE].value
    return None


def token_ok(presented: str | None, token: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode("utf-8", "replace"),
                                                         token.encode("utf-8"))


class TokenAuth:
    """Every request needs the token, except the login form that sets the cookie."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] == LOGIN_PATH or \
                token_ok(presented_token(scope), self.token):
            return await self.app(scope, receive, send)
        accept = _header(scope, b"accept") or ""
        if scope["method"] == "GET" and scope["path"] == "/" and "text/html" in accept:
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", LOGIN_PATH.encode()),
                                    (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await _send_json(send, 401, "missing or wrong token: send 'Authorization: Bearer TOKEN'",
                         [(b"www-authenticate", b'Bearer realm="searchkit"')])


class BodyLimit:
    """Refuse (413) a request body over ``limit`` bytes, declared or streamed, before any
    parser gets past the limit.

    The body is passed through as it arrives, never held here (a held copy of every upload
    would stay in memory for the whole request, on top of the parser's). A declared
    Content-Length over the limit is refused at once; a body that streams past it (chunked, or
    longer than declared) is answered 413 there, the app sees the client leave, and what the
    app then answers or raises is dropped.
    """

    def __init__(self, app, limit: int, message: str = "request too large"):
        self.app = app
        self.limit = limit
        self.message = message

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.limit
            except ValueError:
                return await _send_json(send, 400, "bad Content-Length header")
            if too_big:
                return await _send_json(send, 413, self.message)
        received, started, answered = 0, False, False

        async def counted():
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            msg = await receive()
            received += len(msg.get("body", b"")) if msg["type"] == "http.request" else 0
            if received > self.limit:
                answered = True
                if not started:
                    await _send_json(send, 413, self.message)
                return {"type": "http.disconnect"}
            return msg

        async def guarded(msg):
            nonlocal started
            if answered and not started:
                return
            started = True
            await send(msg)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not answered:
                raise
