"""Server settings as one typed record, built by the entry point and passed in."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024
DEFAULT_MAX_UPLOAD = 20 * MB
DEFAULT_MAX_PIXELS = 50_000_000      # an uploaded query image larger than this is refused
DEFAULT_THUMB_SIZE = 320             # longest side of a cached thumbnail, in pixels
DEFAULT_MAX_K = 500
MAX_FORM_OVERHEAD = 64 * 1024        # multipart headers and text fields around the upload
THUMB_DIR = "thumbs"


@dataclass(frozen=True)
class WebConfig:
    token: str | None = None              # bearer token required on every request when set
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS
    thumb_size: int = DEFAULT_THUMB_SIZE
    max_k: int = DEFAULT_MAX_K
    thumb_dir: str | None = None          # default: <library>/thumbs
    # Host headers accepted (None: any). `serve` on loopback sets the loopback names, so a web
    # page elsewhere cannot reach the library through DNS rebinding.
    allowed_hosts: tuple[str, ...] | None = None

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + MAX_FORM_OVERHEAD


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
