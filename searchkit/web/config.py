"""Server settings as one typed record, built by the entry point and passed in."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Iterable

from ..errors import SearchkitError

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
    # Host headers accepted (None: any); `serve` sets them with `allowed_hosts()` below.
    allowed_hosts: tuple[str, ...] | None = None
    decode_slots: int | None = None       # images decoded at once (default: one per core)

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + MAX_FORM_OVERHEAD


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
HOST_PATTERN = re.compile(r"\*|(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
PROBE_ADDRESS = ("192.0.2.1", 9)     # TEST-NET-1: a UDP connect picks the outgoing address,
                                     # sends nothing


def allowed_hosts(bind: str, token: bool, extra: Iterable[str] = ()) -> tuple[str, ...] | None:
    """The Host headers a server bound to ``bind`` answers (DNS rebinding guard).

    Without a token there is always a list: the loopback names, the bind address, and for a
    non-loopback bind this machine's own names and addresses, plus ``extra`` (``serve
    --allow-host``, also given with a token to keep the check). A page on evil.example that
    rebinds its name to this machine sends ``Host: evil.example`` and gets 400. With a token
    and no ``extra``: any Host, since such a page cannot present the token (the login cookie
    belongs to the real origin), and proxies and LAN names keep working.
    """
    extra = tuple(_host_pattern(h) for h in extra)
    if token and not extra:
        return None
    names = [*LOOPBACK_HOSTS, *host_forms(bind)]
    if not is_loopback(bind):
        names += machine_hosts()
    return tuple(dict.fromkeys(n.lower() for n in [*names, *extra]))


def _host_pattern(name: str) -> str:
    """A host name, an address (IPv6 in brackets), ``*.domain`` or ``*`` (any host)."""
    forms = host_forms(name.strip().lower())
    if len(forms) != 1 or not HOST_PATTERN.fullmatch(forms[0]):
        raise SearchkitError(f"--allow-host {name!r} is not a host name: give a name "
                             "(photos.lan), an address, *.domain, or * for any")
    return forms[0]


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_forms(address: str) -> list[str]:
    """How ``address`` appears in a Host header (IPv6 in brackets); none for 0.0.0.0 or ::."""
    bare = address.strip("[]")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return [address] if address else []
    if ip.is_unspecified:
        return []
    return [f"[{ip}]"] if ip.version == 6 else [str(ip)]


def machine_hosts() -> list[str]:
    """This machine's names and the addresses they resolve to, and its outgoing address."""
    names = []
    for name in {socket.gethostname(), socket.getfqdn()}:
        names.append(name)
        try:
            names += [str(info[4][0]) for info in socket.getaddrinfo(name, None)]
        except OSError:
            pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(PROBE_ADDRESS)
            names.append(s.getsockname()[0])
    except OSError:
        pass
    return [form for n in names for form in host_forms(n)]
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
